"""Fill the fieldtypes models with deterministic rows that trip up a JSON fixture.

Every model gets a NULL row where its column allows one, and the values a fixture gets wrong:
non-BMP unicode and COPY's special characters, bytes with NULs longer than one base64 line,
microseconds, NaN, infinities and -0.0, decimals with more digits than a float holds and
``0E-10``, negative, sub-second and multi-day durations, empty arrays and NULL elements, JSON
null beside SQL NULL and numbers beyond float precision, hstore NULL values, empty, infinite and
half-open ranges; and relations: a ``to_field`` key, a self-reference cycle, multi-table
inheritance three levels deep, a text primary key, odd column names, an explicit through
model, many-to-many links to rows the target's default manager hides, a default manager that
refuses to run outside a scope, and content type and permission references.

``--copies N`` repeats the scalar rows N times (for timing).
"""

import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db.backends.postgresql.psycopg_any import DateRange, DateTimeTZRange, NumericRange
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.db.models import JSONField, Value

from fieldtypes import models as m

UTC = timezone.utc
MOMENT = datetime(2024, 1, 1, 2, 11, 59, 123456, tzinfo=UTC)
TEXTS = [
    "",
    "plain",
    "unicode é ß 漢字 😀 𝄞 \u200d\u2028 end",
    'back\\slash "quote" \\n not a newline',
    "newline\nand\ttab and \r carriage",
    "control \x01 and \x02 and \x1f",
    "single ' quote; DROP TABLE x; --",
    "  spaces around  ",
    "[]",
    "x" * 300,
]
BINARIES = [b"", b"\x00", bytes(range(256)), b"\x00\x01\x02\xff" * 30, b"short"]
FLOATS = [0.1, -0.0, 0.0, math.nan, math.inf, -math.inf, 1e16, 1.7976931348623157e308, 5e-324, 123456.789, -2.5]
DECIMALS = [
    Decimal("123456789012345678901234.5678901234"),
    Decimal("0E-10"),
    Decimal("-0.0000000001"),
    Decimal("12.5"),
    Decimal("0"),
    Decimal("-99999999999999999999999999999.9999999999"),
]
DURATIONS = [
    timedelta(0),
    timedelta(seconds=-5),
    timedelta(days=-3, seconds=1),
    timedelta(microseconds=1),
    timedelta(microseconds=-500),
    timedelta(days=3, hours=4, microseconds=500),
    timedelta(days=400, seconds=86399, microseconds=999999),
]
DATETIMES = [
    MOMENT,
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 3, 31, 1, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2024, 10, 27, 0, 59, 59, 999000, tzinfo=UTC),
]
JSON_VALUES = [
    {"nested": {"list": [1, 2.5, None, "x", True], "deep": {"a": [], "b": {}}}, "unicode": "😀 \u0001"},
    [],
    {},
    "a string scalar",
    0,
    -0.5,
    True,
    [None, {"k": None}],
]
UUIDS = [uuid.UUID(int=n * 0x1111_1111_1111_1111) for n in range(1, 5)]


class Command(BaseCommand):
    help = "Seed the fieldtypes models with deterministic tricky rows."

    def add_arguments(self, parser):
        parser.add_argument("--copies", type=int, default=1)

    @transaction.atomic
    def handle(self, *args, copies, **options):
        for _ in range(copies):
            self.scalars()
        self.composites()
        self.relations()

    def scalars(self):
        def each(model, values):
            model.objects.bulk_create([model(value=value) for value in [*values, None]])

        each(m.AutoPkModel, [1, -1])
        each(m.SmallAutoPkModel, [2])
        each(m.BigIntegerModel, [2**63 - 1, -(2**63), 0])
        each(m.BinaryModel, BINARIES)
        each(m.BooleanModel, [True, False])
        each(m.CharModel, TEXTS)
        each(m.DateModel, [date(2024, 2, 29), date(1, 1, 1), date(9999, 12, 31)])
        each(m.DateTimeModel, DATETIMES)
        each(m.DecimalModel, DECIMALS)
        each(m.DurationModel, DURATIONS)
        each(m.EmailModel, ["a@example.com", "ünï@example.org"])
        each(m.FileModel, ["uploads/a.txt", "", "uploads/ü space.pdf"])
        # FileField saves None as "": only an update writes SQL NULL (dumpdata writes "" for both).
        m.FileModel.objects.filter(pk=m.FileModel.objects.create(value="uploads/to-null").pk).update(value=None)
        each(m.FilePathModel, ["/tmp/a", ""])
        each(m.FloatModel, FLOATS)
        each(m.GenericIPAddressModel, ["192.168.0.1", "::1", "2001:db8::ff00:42:8329"])
        each(m.IntegerModel, [-(2**31), 2**31 - 1, 0])
        each(m.PositiveBigIntegerModel, [2**63 - 1, 0])
        each(m.PositiveIntegerModel, [2**31 - 1])
        each(m.PositiveSmallIntegerModel, [32767, 0])
        each(m.SlugModel, ["a-slug", "ünicode-slug"])
        each(m.SmallIntegerModel, [-32768, 32767])
        each(m.TextModel, [*TEXTS, "long " * 20000])
        each(m.TimeModel, [time(2, 11, 59, 123456), time(0, 0), time(23, 59, 59, 999999)])
        each(m.URLModel, ["https://example.com/ä?q=1&r=\"x\"", "http://[::1]:8000/"])
        each(m.HStoreModel, [{"a": "1", "b": None, "ü": "😀", 'q"uote': "back\\slash", "": "empty key"}, {}])
        each(m.IntegerRangeModel, [
            NumericRange(1, 10), NumericRange(1, 10, "(]"), NumericRange(None, 5), NumericRange(empty=True),
            NumericRange(None, None),
        ])
        each(m.BigIntegerRangeModel, [NumericRange(-(2**62), 2**62), NumericRange(3, None, "[]")])
        each(m.DecimalRangeModel, [
            NumericRange(Decimal("1.5"), Decimal("2.25"), "(]"), NumericRange(Decimal("0E-10"), None, "[)"),
            NumericRange(empty=True),
        ])
        each(m.DateTimeRangeModel, [
            DateTimeTZRange(MOMENT, MOMENT + timedelta(days=1, microseconds=1), "(]"), DateTimeTZRange(None, MOMENT),
        ])
        each(m.DateRangeModel, [DateRange(date(2024, 1, 1), date(2024, 12, 31)), DateRange(date(2024, 1, 1), None, "[]")])

    def composites(self):
        m.JSONModel.objects.bulk_create([m.JSONModel(value=value, required=value) for value in JSON_VALUES])
        m.JSONModel.objects.create(value=None, required={"sql": "NULL beside"})
        # JSON null, in a nullable column and in a NOT NULL one: a value, not SQL NULL.
        m.JSONModel.objects.create(value=Value(None, JSONField()), required=Value(None, JSONField()))
        with connection.cursor() as cursor:  # numbers no float holds, and a scale Python would drop
            cursor.execute(
                "INSERT INTO fieldtypes_jsonmodel (value, required) VALUES (%s::jsonb, %s::jsonb)",
                ['{"big": 12345678901234567890.5, "scale": 1.10, "tiny": 1e-400}', "[1.000, -0]"],
            )
        m.ArrayModel.objects.bulk_create([
            m.ArrayModel(
                integers=[1, None, 3], texts=["a", None, 'we"ird\\', "", "NULL", "{}", "with,comma", "😀"],
                decimals=[Decimal("0E-10"), Decimal("1.50"), None], moments=[MOMENT, None],
                flags=[True, False, None], floats=[-0.0, math.nan, math.inf, 0.1],
            ),
            m.ArrayModel(integers=[], texts=[], decimals=[], moments=[], flags=[], floats=[]),
            m.ArrayModel(),
        ])
        m.NestedArrayModel.objects.bulk_create([m.NestedArrayModel(grid=[[1, 2], [3, 4]]), m.NestedArrayModel(grid=[])])
        for n, (a, b) in enumerate([(1, 2), (-5, 5), (2**30, 2**30 - 1)]):
            m.GeneratedModel.objects.create(a=a, b=b, name=f"Name {n} ÄÖ")
        m.CommaListModel.objects.bulk_create([m.CommaListModel(tags=t) for t in (["a", "b"], [], ["with space"])])
        m.JsonListModel.objects.bulk_create([m.JsonListModel(tags=t) for t in (["a", "b"], [], ["x"])])

    def relations(self):
        first, second = m.UUIDModel.objects.create(id=UUIDS[0], value=UUIDS[1]), m.UUIDModel.objects.create(id=UUIDS[2])
        first.other = second
        first.save()
        m.UUIDModel.objects.create(id=UUIDS[3], value=None, other=first)

        alpha = m.Slugged.objects.create(slug="alpha")
        m.Slugged.objects.create(slug="beta")
        m.ToFieldRef.objects.bulk_create([m.ToFieldRef(target=alpha), m.ToFieldRef(target=None)])

        a, b = m.Node.objects.create(name="a"), m.Node.objects.create(name="b")
        a.parent, b.parent = b, a
        a.save()
        b.save()
        m.Node.objects.create(name="root")

        m.Place.objects.create(name="just a place")
        m.Restaurant.objects.create(name="a restaurant", serves_pizza=True)
        m.ItalianRestaurant.objects.create(name="an italian one", serves_pizza=True, serves_gnocchi=True)

        plain = m.CustomPk.objects.create(code="A-1", label="plain")
        m.CustomPk.objects.create(code='ü "quoted", pk', label="odd")
        m.DbColumn.objects.bulk_create([m.DbColumn(value=1, ref=plain), m.DbColumn(value=2, ref=None)])

        ann, bob = m.Person.objects.create(name="Ann"), m.Person.objects.create(name="Bob")
        chess = m.Club.objects.create(name="chess")
        m.Club.objects.create(name="empty")
        m.Membership.objects.create(person=ann, club=chess, joined=date(2020, 1, 1))
        m.Membership.objects.create(person=bob, club=chess, joined=date(2021, 6, 30))

        hideables = [m.Hideable.objects.create(name=f"h{n}", hidden=n % 2 == 1) for n in range(4)]
        everything, hidden_only = m.Watcher.objects.create(name="all"), m.Watcher.objects.create(name="hidden only")
        m.Watcher.objects.create(name="none")
        everything.watches.through.objects.bulk_create(
            [everything.watches.through(watcher=everything, hideable=h) for h in hideables]
            + [everything.watches.through(watcher=hidden_only, hideable=h) for h in hideables if h.hidden]
        )

        scoped = [m.Scoped._base_manager.create(tenant=t, note=f"{t} note") for t in ("one", "two")]
        notes = m.ScopedNote.objects.bulk_create([m.ScopedNote(scoped=s, text="about " + s.tenant) for s in scoped])
        m.ScopedNote.also.through.objects.bulk_create(
            [m.ScopedNote.also.through(scopednote_id=note.id, scoped_id=s.id) for note in notes for s in scoped]
        )

        grant_type = ContentType.objects.get_for_model(m.Grant)
        grant = m.Grant.objects.create(content_type=grant_type, object_id=1)
        grant.permissions.set(Permission.objects.filter(content_type__app_label="fieldtypes").order_by("id")[:3])
        m.Grant.objects.create(content_type=ContentType.objects.get_for_model(m.Place), object_id=2)

        listed = m.JsonListModel.objects.order_by("id").first()
        listed.content_type = grant_type
        listed.save()
        listed.permissions.set(Permission.objects.filter(content_type=grant_type))
        listed.watches.through.objects.bulk_create([listed.watches.through(jsonlistmodel=listed, hideable=h) for h in hideables])
