"""Fill a freshly migrated, empty database with deterministic sample data.

``--rows N`` is the number of products; every other table scales with it. The
same N always gives the same rows, byte for byte, on any machine: values come
from a ``random.Random`` with a fixed seed, dates from a fixed epoch, and the
rows are inserted in a fixed order, so a fresh database hands out the same ids.

The data is meant to trip up a backup tool: unicode in every script (and emoji,
RTL text, ZWJ sequences), COPY's special characters (tabs, newlines,
backslashes), NULLs in every nullable column, ~100 KB texts, JSON with nested
nulls, generic relations to products and orders, and activity-log rows whose
``user_id`` names a deleted user (the column has no foreign key constraint).

And what a JSON fixture reloaded into a freshly migrated database gets wrong:

- timestamps with microseconds (Django's JSON encoder keeps milliseconds);
- rows a migration created and staff changed since: orders 0007 creates the shipping
  methods 'standard', 'express' and 'legacy'; here 'legacy' is deleted and 'standard'
  replaced by a new row (a new id, the same unique code), so a fresh ``migrate`` holds a
  row the data no longer has and another that collides with it;
- gaps in the ids, the highest ones included (the last comments are deleted), so each
  sequence stands above max(id) and a reload that resets sequences hands those ids out again;
- a stale content type: a model deleted long ago (catalog.legacyitem), whose permission
  a group still holds.
"""

import json
import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

from analytics.models import PageView
from catalog.models import Category, Product, Tag
from community.models import ActivityLog, Comment, Review
from orders.models import Order, OrderLine, ShippingMethod

SEED = 20240229
# Every timestamp is EPOCH plus a random offset: now() would differ between runs.
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
ONE_YEAR = 365 * 24 * 3600

# make_password("sample-password", salt="squashkitsample"). Hashing is slow on
# purpose (a million PBKDF2 rounds), far too slow to do once per user.
PASSWORD_HASH = "pbkdf2_sha256$1000000$squashkitsample$b8OZwRh+xYzLystSHrLEnIi6qyPpeIf9bYo8w1WnCic="

LARGE_TEXT_CHARS = 100_000
# Every LARGE_EVERY-th product description and comment body is a large text.
LARGE_EVERY = 250

# fmt: off
WORDS = [
    "quality", "durable", "handmade", "classic", "compact", "premium", "lightweight",
    "waterproof", "organic", "vintage", "ergonomic", "wireless", "recycled", "portable",
    "the", "and", "with", "for", "every", "day", "perfect", "gift", "design", "fits",
    "café", "naïve", "façade", "Straße", "Zoë", "smörgåsbord", "mañana", "crème brûlée",
    "日本語", "東京", "こんにちは", "中文字符", "한국어", "Привет", "Ελληνικά", "ქართული",
    "مرحبا بالعالم", "שָׁלוֹם", "हिन्दी", "ภาษาไทย", "½", "™", "Ω", "∑", "→", "€",
    "🚀", "🎉", "😀", "👍🏽", "👩‍👩‍👧", "🇫🇷", "🏳️‍🌈",
    # COPY and shell escaping traps: quotes, backslashes, tabs, newlines, CRLF.
    'a "quoted" word', "it's", "back\\slash", "C:\\Temp\\new", "tab\there", "line\nbreak",
    "crlf\r\nend", "100%", "<b>bold</b>", "'; DROP TABLE catalog_product; --", "\\N",
]

# Names are single-line: control characters stay in descriptions and JSON.
NAME_WORDS = [word for word in WORDS if word.isprintable()]

FIRST_NAMES = [
    "Zoë", "José", "Søren", "Łukasz", "Aoife", "Chloé", "Mohammed", "محمد", "Yuki",
    "由紀", "Олег", "Νίκος", "Ngozi", "Björn", "Siobhán", "Dương", "Priya", "प्रिया",
    "Noa", "נועה", "Ana", "Emma", "Liam", "Oliver", "",
]
LAST_NAMES = [
    "Müller", "O'Brien", "García Márquez", "Nguyễn", "Øvergård", "山田", "Иванова",
    "Παπαδόπουλος", "عبد الله", "כהן", "Smith", "Kowalski", "van der Berg", "",
]
CATEGORY_NAMES = [
    "Kitchen", "Garden & Outdoor", "Books", "Küchenbedarf", "家電", "ألعاب", "Électronique",
    "Toys 🧸", "Sports", "Music", "Office", "Health", "Pets 🐾", "Ropa y calzado",
]
TAG_NAMES = [
    "new", "sale", "eco", "bestseller", "limited", "gift-idea", "ñandú", "限定", "🔥hot",
    "clearance", "bundle", "refurbished", "vegan", "local", "imported",
]
COUNTRIES = ["FR", "DE", "JP", "EG", "IL", "IE", "VN", "US", "BR", "IN"]
CITIES = ["Paris", "München", "大阪", "القاهرة", "תל אביב", "Dún Laoghaire", "Hà Nội", "São Paulo"]
REFERRERS = [
    "https://www.example.com/",
    "https://search.example.org/?q=caf%C3%A9",
    "https://social.example.net/p/123",
    "https://例え.テスト/ページ",
]

ORDER_STATUSES = [Order.Status.PENDING, Order.Status.PAID, Order.Status.SHIPPED, Order.Status.CANCELLED]
ORDER_STATUS_WEIGHTS = [1, 3, 5, 1]

GROUP_PERMISSIONS = {
    "Catalog editors": [
        "catalog.add_product", "catalog.change_product", "catalog.view_product",
        "catalog.add_category", "catalog.change_category", "catalog.view_category",
        "catalog.add_tag", "catalog.change_tag", "catalog.view_tag",
    ],
    "Customer support": [
        "orders.view_order", "orders.change_order", "orders.view_orderline",
        "community.view_review", "community.view_comment", "community.change_comment",
    ],
    "Warehouse": ["orders.view_order", "orders.change_order", "orders.view_orderline", "catalog.view_product"],
    "Modération 🛡️": [
        "community.view_review", "community.delete_review", "community.view_comment",
        "community.change_comment", "community.delete_comment", "community.view_activitylog",
    ],
}
# Granted to staff one by one, not through a group.
DIRECT_PERMISSIONS = [
    "catalog.delete_product", "orders.delete_order", "community.delete_review", "auth.view_user",
]
# fmt: on

MAIN_MODELS = [User, Group, Category, Tag, Product, Order, OrderLine, Review, Comment, ActivityLog]
# Tables migrations fill (orders 0007): shown in the summary, not required to be empty.
MIGRATION_FILLED_MODELS = [ShippingMethod]

# A model deleted long ago: its content type, permission and group outlive it.
STALE_CONTENT_TYPE = ("catalog", "legacyitem")
STALE_PERMISSION = ("archive_legacyitem", "Can archive legacy item")
STALE_GROUP = "Legacy archivists"

# Every DELETED_COMMENT_EVERY-th comment is deleted, and the DELETED_LAST_COMMENTS last ones.
DELETED_COMMENT_EVERY = 37
DELETED_LAST_COMMENTS = 3


@dataclass(frozen=True)
class Scale:
    """How many rows of each kind ``--rows N`` asks for."""

    products: int

    @property
    def categories(self):
        return max(4, self.products // 40)

    @property
    def tags(self):
        return max(8, self.products // 50)

    @property
    def users(self):
        return max(10, self.products // 4)

    @property
    def departed_users(self):
        return max(2, self.products // 100)

    @property
    def orders(self):
        return max(5, self.products // 2)

    @property
    def reviews(self):
        return max(5, self.products // 2)

    @property
    def comments(self):
        return max(5, self.products // 2)

    @property
    def activity(self):
        return max(10, self.products)

    @property
    def page_views(self):
        return max(10, 2 * self.products)


class Command(BaseCommand):
    help = "Fill an empty database with deterministic sample data; --rows sets the number of products."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, required=True, help="Number of products; other tables scale with it.")
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="Database alias for the main apps (default: %(default)s). "
            "Analytics rows go where the router sends them.",
        )

    def handle(self, *args, rows, database, **options):
        if rows < 1:
            raise CommandError("--rows must be at least 1.")
        if database not in connections.databases:
            raise CommandError(f"No database alias {database!r} in settings.DATABASES.")
        if not router.allow_migrate_model(database, Product):
            raise CommandError(f"The router keeps the main apps out of database {database!r}.")
        analytics_alias = router.db_for_write(PageView)

        self._check_empty(database, MAIN_MODELS)
        self._check_empty(analytics_alias, [PageView])

        seeder = Seeder(random.Random(SEED), Scale(rows), database)
        with transaction.atomic(using=database):
            seeder.seed_main()
        with transaction.atomic(using=analytics_alias):
            seeder.seed_analytics(analytics_alias)

        seeded = {database: [*MAIN_MODELS, *MIGRATION_FILLED_MODELS]}
        seeded.setdefault(analytics_alias, []).append(PageView)
        for alias, models in seeded.items():
            self.stdout.write(f"Seeded database {alias!r}:")
            for table, count in _table_counts(alias, models):
                self.stdout.write(f"  {table:<32} {count:>8}")

    def _check_empty(self, alias, models):
        existing = set(connections[alias].introspection.table_names())
        missing = [model._meta.db_table for model in models if model._meta.db_table not in existing]
        if missing:
            raise CommandError(
                f"Database {alias!r} has no table {', '.join(missing)}: "
                f"run `manage.py migrate --database {alias}` first."
            )
        filled = [model._meta.db_table for model in models if model._default_manager.using(alias).exists()]
        if filled:
            raise CommandError(
                f"Database {alias!r} already holds data ({', '.join(filled)}). "
                "seed_data only fills an empty, freshly migrated database."
            )


def _table_counts(alias, models):
    """Row counts of the models' tables and of their many-to-many tables."""
    tables = []
    for model in models:
        tables.append(model._meta.db_table)
        tables.extend(field.remote_field.through._meta.db_table for field in model._meta.local_many_to_many)
    with connections[alias].cursor() as cursor:
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            yield table, cursor.fetchone()[0]


class Seeder:
    """Generates the rows, drawing every random value from one ``Random``, and COPYs them in.

    The order of the draws is part of the output: reordering the steps below
    changes the data for a given N.

    Rows are plain tuples written with ``COPY ... FROM STDIN``, not model instances saved
    with ``bulk_create``: building ~170,000 instances and compiling them into INSERTs took
    most of the time (16 s for ``--rows 20000``). The ids are the ones ``bulk_create`` would
    have been handed: reserved as one block from the table's own sequence, so the sequence
    ends exactly where it would have. The few rows that run through Django's own logic (the
    stale permission, the shipping methods a migration made, the cascading delete of users)
    still go through the ORM.
    """

    def __init__(self, rng: random.Random, scale: Scale, alias: str):
        self.rng = rng
        self.scale = scale
        self.alias = alias

    # Helpers ----------------------------------------------------------------

    def insert(self, model, fields, rows, *, alias=None):
        """COPY ``rows`` (tuples of the values of ``fields``, attnames) into ``model``'s table; their ids.

        Values are what the database stores: JSON as text (``json.dumps``, as Django's
        JSONField sends it), aware datetimes, Decimals, None for NULL.
        """
        if not rows:
            return []
        connection = connections[alias or self.alias]
        table = model._meta.db_table
        columns = {field.attname: field.column for field in model._meta.concrete_fields}
        with connection.cursor() as cursor:
            # A block of ids from the sequence, as one bulk_create of len(rows) objects takes them.
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), nextval(pg_get_serial_sequence(%s, 'id')) + %s - 1)",
                [connection.ops.quote_name(table)] * 2 + [len(rows)],
            )
            last = cursor.fetchone()[0]
            ids = range(last - len(rows) + 1, last + 1)
            names = ", ".join(connection.ops.quote_name(name) for name in ["id", *(columns[f] for f in fields)])
            with cursor.copy(f"COPY {connection.ops.quote_name(table)} ({names}) FROM STDIN") as copy:
                for pk, row in zip(ids, rows):
                    copy.write_row((pk, *row))
        return list(ids)

    def moment(self):
        """A time in the year after EPOCH, to the microsecond."""
        return EPOCH + timedelta(seconds=self.rng.randrange(ONE_YEAR), microseconds=self.rng.randrange(10**6))

    def sentence(self, low=4, high=16):
        text = " ".join(self.rng.choices(WORDS, k=self.rng.randint(low, high)))
        return text[:1].upper() + text[1:] + "."

    def paragraph(self):
        return " ".join(self.sentence() for _ in range(self.rng.randint(1, 4)))

    def large_text(self):
        parts, size = [], 0
        while size < LARGE_TEXT_CHARS:
            part = self.paragraph()
            parts.append(part)
            size += len(part) + 2
        return "\n\n".join(parts)

    def maybe(self, probability, value):
        """``value`` with the given probability, else None (a NULL in the database)."""
        return value if self.rng.random() < probability else None

    def some_user(self):
        """Mostly a live user's id; sometimes nobody (NULL), sometimes one about to be deleted."""
        who = self.rng.random()
        if who < 0.1:
            return None
        if who < 0.15:
            return self.rng.choice(self.departed)
        return self.rng.choice(self.users)

    def ip_address(self):
        kind = self.rng.random()
        if kind < 0.15:
            return None
        if kind < 0.8:
            return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))
        return f"2001:db8::{self.rng.getrandbits(16):x}:{self.rng.getrandbits(16):x}"

    # Main database ----------------------------------------------------------

    def seed_main(self):
        self.seed_users()
        self.seed_stale_permission()
        self.seed_catalog()
        self.seed_shipping_methods()
        self.seed_orders()
        self.seed_community()
        self.remove_departed_users()

    def seed_users(self):
        rng, scale = self.rng, self.scale
        total = scale.users + scale.departed_users
        departed = set(rng.sample(range(1, total), scale.departed_users))
        users = []
        for i in range(total):
            joined = self.moment()
            username = "admin" if i == 0 else f"user{i:06d}"
            # The arguments are drawn in this order: keep it (see the class docstring).
            first_name = rng.choice(FIRST_NAMES)
            last_name = rng.choice(LAST_NAMES)
            email = "" if rng.random() < 0.05 else f"{username}@example.com"
            is_staff = i == 0 or rng.random() < 0.03
            is_active = i == 0 or rng.random() < 0.97
            last_login = self.maybe(0.7, joined + timedelta(seconds=rng.randrange(ONE_YEAR)))
            users.append((username, PASSWORD_HASH, first_name, last_name, email, is_staff, i == 0, is_active, joined, last_login))
        fields = ["username", "password", "first_name", "last_name", "email", "is_staff", "is_superuser", "is_active",
                  "date_joined", "last_login"]
        ids = self.insert(User, fields, users)
        staff = [user[5] for user in users]
        self.departed = [pk for i, pk in enumerate(ids) if i in departed]
        self.users = [pk for i, pk in enumerate(ids) if i not in departed]

        permissions = {
            f"{app_label}.{codename}": pk
            for pk, app_label, codename in Permission.objects.using(self.alias).values_list(
                "pk", "content_type__app_label", "codename"
            )
        }
        names = list(GROUP_PERMISSIONS)
        groups = self.insert(Group, ["name"], [(name,) for name in names])
        self.insert(
            Group.permissions.through,
            ["group_id", "permission_id"],
            [(group, permissions[perm]) for group, name in zip(groups, names) for perm in GROUP_PERMISSIONS[name]],
        )

        memberships, grants = [], []
        for user, is_staff in zip(ids[1:], staff[1:]):
            if rng.random() < 0.3:
                for group in rng.sample(groups, rng.randint(1, 2)):
                    memberships.append((user, group))
            if is_staff:
                for name in rng.sample(DIRECT_PERMISSIONS, rng.randint(1, 3)):
                    grants.append((user, permissions[name]))
        self.insert(User.groups.through, ["user_id", "group_id"], memberships)
        self.insert(User.user_permissions.through, ["user_id", "permission_id"], grants)

    def seed_stale_permission(self):
        """A content type and permission of a model the code no longer has, still held by a group."""
        app_label, model = STALE_CONTENT_TYPE
        codename, name = STALE_PERMISSION
        content_type, _ = ContentType.objects.db_manager(self.alias).get_or_create(app_label=app_label, model=model)
        permission, _ = Permission.objects.using(self.alias).get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        group = Group.objects.using(self.alias).create(name=STALE_GROUP)
        group.permissions.add(permission)
        members = self.rng.sample(self.users, min(3, len(self.users)))
        self.insert(User.groups.through, ["user_id", "group_id"], [(user, group.pk) for user in members])

    def seed_catalog(self):
        rng, scale = self.rng, self.scale

        # Parents must have ids before children can point at them: one insert per level.
        roots = max(2, scale.categories // 5)
        middle = (scale.categories - roots) // 2
        names = iter(_numbered(CATEGORY_NAMES, scale.categories))
        levels = [self.insert(Category, ["name", "parent_id"], [(next(names), None) for _ in range(roots)])]
        for size in (middle, scale.categories - roots - middle):
            parents = levels[-1]
            children = [(next(names), rng.choice(parents)) for _ in range(size)]
            levels.append(self.insert(Category, ["name", "parent_id"], children))
        categories = [category for level in levels for category in level]

        tags = self.insert(Tag, ["name"], [(name,) for name in _numbered(TAG_NAMES, scale.tags)])

        products, prices = [], []
        for i in range(scale.products):
            if i % LARGE_EVERY == LARGE_EVERY - 1:
                description = self.large_text()
            elif rng.random() < 0.1:
                description = ""
            else:
                description = self.paragraph()
            # A few above a million, which needed 0004_alter_product_price's wider column.
            cents = rng.randint(100_000_000, 9_999_999_999) if rng.random() < 0.01 else rng.randint(50, 50_000)
            name = f"{rng.choice(NAME_WORDS)} {rng.choice(NAME_WORDS)} {i}"
            price = Decimal(cents).scaleb(-2)
            category = rng.choice(categories)
            attributes = json.dumps(self.product_attributes())
            is_active = rng.random() < 0.9
            products.append((name, description, price, category, attributes, is_active, self.moment()))
            prices.append(price)
        fields = ["name", "description", "price", "category_id", "attributes", "is_active", "created_at"]
        # (id, price): what orders and reviews need of a product.
        self.products = list(zip(self.insert(Product, fields, products), prices))
        del products
        self.insert(
            Product.tags.through,
            ["product_id", "tag_id"],
            [(product, tag) for product, _ in self.products for tag in rng.sample(tags, rng.choice([0, 0, 1, 2, 3, 4]))],
        )

    def product_attributes(self):
        rng = self.rng
        if rng.random() < 0.2:
            return {}
        attributes = {
            "color": rng.choice(["red", "bleu", "緑", "أسود", None]),
            "weight_g": rng.randint(1, 25_000),
            "dimensions_cm": [round(rng.uniform(1, 200), 1) for _ in range(3)],
            "origin": {"country": rng.choice(COUNTRIES), "city": rng.choice(CITIES)},
        }
        if rng.random() < 0.3:
            attributes["notes"] = self.sentence()
        return attributes

    def seed_shipping_methods(self):
        """Edit the methods migration 0007 created, as staff would have over the years."""
        rng = self.rng
        methods = ShippingMethod.objects.using(self.alias)
        methods.filter(code="legacy").delete()
        # Replaced, not edited: the new row has a new id and the same unique code.
        methods.filter(code="standard").delete()
        methods.create(code="standard", name="Standard (tracked)", price=Decimal("5.50"), cutoff_time=time(15, 30))
        methods.filter(code="express").update(name="Express 24h 🚀")
        methods.create(
            code="pickup",
            name="Pick-up in store",
            price=Decimal("0.00"),
            # A cut-off to the microsecond: times lose them through Django's JSON encoder too.
            cutoff_time=time(17, 45, 30, rng.randrange(1, 10**6)),
        )
        self.shipping_methods = list(methods.order_by("pk").values_list("pk", flat=True))

    def seed_orders(self):
        rng, scale = self.rng, self.scale
        orders, references = [], []
        for i in range(scale.orders):
            created = self.moment()
            # i + 1 is also the id in a fresh database, matching the format of 0003's backfill.
            reference = f"SO-{created:%Y}-{i + 1:06d}"
            user = rng.choice(self.users)
            status = rng.choices(ORDER_STATUSES, ORDER_STATUS_WEIGHTS)[0]
            note = self.sentence() if rng.random() < 0.2 else ""
            address = self.maybe(0.85, self.address())
            shipping_method = self.maybe(0.8, rng.choice(self.shipping_methods))
            orders.append((reference, user, str(status), created, note, None if address is None else json.dumps(address), shipping_method))
            references.append(reference)
        fields = ["reference", "user_id", "status", "created_at", "note", "shipping_address", "shipping_method_id"]
        # (id, reference): what comments and the activity log need of an order.
        self.orders = list(zip(self.insert(Order, fields, orders), references))
        del orders

        lines = []
        for order, _ in self.orders:
            count = rng.choices([1, 2, 3, 4], [4, 3, 2, 1])[0]
            for product, price in rng.sample(self.products, min(count, len(self.products))):
                unit_price = price
                if rng.random() < 0.2:
                    unit_price = (unit_price * Decimal("0.9")).quantize(Decimal("0.01"))
                quantity = 100 if rng.random() < 0.01 else rng.randint(1, 5)
                lines.append((order, product, quantity, unit_price))
        self.insert(OrderLine, ["order_id", "product_id", "quantity", "unit_price"], lines)

    def address(self):
        rng = self.rng
        return {
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}".strip(),
            "line1": f"{rng.randint(1, 250)} {rng.choice(WORDS)}",
            "line2": None,
            "city": rng.choice(CITIES),
            "postcode": f"{rng.randint(1000, 99999)}",
            "country": rng.choice(COUNTRIES),
        }

    def seed_community(self):
        rng, scale = self.rng, self.scale

        reviews, reviewed = [], set()
        while len(reviews) < scale.reviews:
            (product, _), author = rng.choice(self.products), rng.choice(self.users)
            if (product, author) in reviewed:
                continue
            reviewed.add((product, author))
            rating = rng.choices([1, 2, 3, 4, 5], [1, 1, 2, 4, 5])[0]
            title = self.sentence(2, 6) if rng.random() < 0.7 else ""
            reviews.append((product, author, rating, title, self.paragraph(), self.moment()))
        self.insert(Review, ["product_id", "author_id", "rating", "title", "body", "created_at"], reviews)
        del reviews, reviewed

        contenttypes = ContentType.objects.db_manager(self.alias)
        product_type, order_type = contenttypes.get_for_model(Product).pk, contenttypes.get_for_model(Order).pk
        comments = []
        for i in range(scale.comments):
            if rng.random() < 0.6:
                content_type, (target, _) = product_type, rng.choice(self.products)
            else:
                content_type, (target, _) = order_type, rng.choice(self.orders)
            # Departed users' comments lose their author (SET_NULL) when the users go.
            author = self.some_user()
            body = self.large_text() if i % LARGE_EVERY == LARGE_EVERY - 1 else self.paragraph()
            is_public = rng.random() < 0.95
            comments.append((content_type, target, author, body, is_public, self.moment()))
        fields = ["content_type_id", "object_id", "author_id", "body", "is_public", "created_at"]
        ids = self.insert(Comment, fields, comments)
        del comments
        # Deleted comments leave gaps in the ids, the highest ones included: the sequence
        # stands above max(id), and those ids must never be handed out again.
        deleted = [pk for i, pk in enumerate(ids) if i % DELETED_COMMENT_EVERY == DELETED_COMMENT_EVERY - 1]
        deleted += ids[-DELETED_LAST_COMMENTS:]
        Comment.objects.using(self.alias).filter(pk__in=deleted).delete()

        # Every departed user's last entry is their deletion, so each leaves a dangling id.
        entries = []
        for user in self.departed:
            details = {"reason": rng.choice(["gdpr", "request", "spam"])}
            entries.append((user, "account_deleted", details, self.ip_address(), self.moment()))
        for _ in range(scale.activity - len(entries)):
            user = self.some_user()
            action, details = self.activity_details()
            entries.append((user, action, details, self.ip_address(), self.moment()))
        entries.sort(key=lambda entry: entry[4])  # stable: equal times keep their order
        self.insert(
            ActivityLog,
            ["user_id", "action", "details", "ip_address", "created_at"],
            [(user, action, json.dumps(details), ip, created) for user, action, details, ip, created in entries],
        )

    def activity_details(self):
        rng = self.rng
        action = rng.choice(["login", "logout", "view_product", "search", "order_placed", "review_posted"])
        if action == "login":
            return action, {"method": rng.choice(["password", "sso", "magic-link"])}
        if action == "view_product":
            return action, {"product_id": rng.choice(self.products)[0]}
        if action == "search":
            return action, {"query": " ".join(rng.choices(WORDS, k=rng.randint(1, 3))), "page": rng.randint(1, 5)}
        if action == "order_placed":
            _, reference = rng.choice(self.orders)
            return action, {"order": reference, "coupon": self.maybe(0.1, "WELCOME10")}
        if action == "review_posted":
            return action, {"product_id": rng.choice(self.products)[0], "rating": rng.randint(1, 5)}
        return action, {}

    def remove_departed_users(self):
        # Through the ORM, for Django's cascades: their reviews, memberships and grants go, their
        # comments lose the author (SET_NULL). ActivityLog.user is DO_NOTHING without a
        # constraint: their ids stay behind there.
        User.objects.using(self.alias).filter(pk__in=self.departed).delete()

    # Analytics database -----------------------------------------------------

    def seed_analytics(self, alias):
        rng = self.rng
        views = []
        for _ in range(self.scale.page_views):
            product_id = rng.choice(self.products)[0]
            session_key = f"{rng.getrandbits(128):032x}"
            referrer = self.maybe(0.6, rng.choice(REFERRERS))
            views.append((product_id, f"/products/{product_id}/", session_key, referrer, self.moment()))
        views.sort(key=lambda view: view[4])
        self.insert(PageView, ["product_id", "path", "session_key", "referrer", "viewed_at"], views, alias=alias)


def _numbered(names, count):
    """``count`` distinct names: the list, then the list again with " 2", " 3"... appended."""
    return [names[i % len(names)] + (f" {i // len(names) + 1}" if i >= len(names) else "") for i in range(count)]
