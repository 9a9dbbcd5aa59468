"""What regenerated migrations would forget is found, judged, refused or carried over (issue 5).

Each test works on its own copy of sample_project and a seeded database of its own; the
carried migrations are proven by a real ``migrate`` of the regenerated files into an empty
database, not by reading them.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from squashkit import carry, losses
from squashkit.errors import BadInput
from squashkit.steps import delete_migrations
from squashkit.project import ManagePy, ProjectInfo, introspect
from tests.conftest import SAMPLE, create_database, drop_database, project_env, unique_name

OWN_APPS = ("catalog", "orders", "community", "analytics")


@dataclass
class Copy:
    """A copy of sample_project, its manage.py pointed at a seeded database of its own."""

    root: Path
    database: str
    manage: ManagePy
    project: ProjectInfo


@pytest.fixture
def copy(pg, seeded_template, tmp_path) -> Copy:
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    database = create_database(pg, unique_name("losses"), template=seeded_template)
    env = {**project_env(pg, database), "DJANGO_SETTINGS_MODULE": "sample_project.settings", "PYTHONUNBUFFERED": "1"}
    manage = ManagePy(python=sys.executable, script=root / "manage.py", cwd=root, env=env)
    yield Copy(root, database, manage, introspect(manage))
    drop_database(pg, database)


def verdicts(report: losses.LossReport) -> dict[tuple[str, int], tuple[str, str]]:
    return {(op.file, op.index): (op.kind, op.verdict) for op in report.operations}


def test_scan_lists_what_regenerated_migrations_would_forget(copy):
    report = losses.scan(copy.manage, copy.project)

    assert verdicts(report) == {
        ("catalog/migrations/0005_enable_pg_trgm.py", 0): ("extension", "carried"),
        ("catalog/migrations/0008_productstats_view.py", 0): ("run_sql", "carried"),
        ("catalog/migrations/0009_tag_name_trigger.py", 0): ("run_sql", "carried"),
        ("orders/migrations/0003_populate_order_reference.py", 0): ("run_python", "lost"),
        ("orders/migrations/0007_create_shipping_methods.py", 0): ("run_python", "carried"),
    }
    by_migration = {op.migration: op for op in report.operations}
    assert by_migration["0008_productstats_view"].creates == ["view catalog_productstats"]
    assert by_migration["0009_tag_name_trigger"].creates == [
        "function catalog_tag_trim_name", "trigger catalog_tag_trim_name on catalog_tag",
    ]
    extension = by_migration["0005_enable_pg_trgm"]
    assert extension.carry.where == "first_migration" and "pg_trgm is trusted" in extension.note
    # Written against an Order whose reference was still optional and which had no shipping fields.
    assert "orders.Order" in by_migration["0003_populate_order_reference"].reason
    assert "field reference changed since" in by_migration["0003_populate_order_reference"].reason
    shipping = by_migration["0007_create_shipping_methods"].carry
    assert [d.name for d in shipping.definitions] == ["METHODS", "create_methods", "delete_methods"]
    assert {"import datetime", "from decimal import Decimal"} <= set(shipping.imports)

    text = losses.render(report)
    assert "4 carried, 1 lost, 0 not needed" in text
    for op in report.operations:
        assert op.file in text


def test_scan_judges_sql_by_what_the_database_still_has(pg, copy):
    with psycopg.connect(**pg.conninfo(copy.database), autocommit=True) as conn:
        conn.execute("DROP VIEW catalog_productstats")
        conn.execute("CREATE EXTENSION dblink")  # untrusted: only a superuser may create it
    (copy.root / "catalog" / "migrations" / "0011_housekeeping.py").write_text(
        "from django.contrib.postgres.operations import CreateExtension\nfrom django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [('catalog', '0010_product_shipping_method')]\n\n"
        "    operations = [\n"
        "        migrations.RunSQL(\"UPDATE catalog_product SET description = btrim(description)\", migrations.RunSQL.noop),\n"
        "        migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),\n"
        "        migrations.RunSQL('CREATE INDEX catalog_product_price_idx ON catalog_product (price); GRANT SELECT ON catalog_product TO PUBLIC'),\n"
        "        migrations.SeparateDatabaseAndState(state_operations=[]),\n"
        "        CreateExtension('dblink'),\n"
        "    ]\n"
    )
    report = losses.scan(copy.manage, copy.project)

    found = verdicts(report)
    assert found[("catalog/migrations/0008_productstats_view.py", 0)] == ("run_sql", "not_needed")  # the view was dropped
    housekeeping = {index: verdict for (file, index), verdict in found.items() if "0011_housekeeping" in file}
    assert housekeeping == {
        0: ("run_sql", "lost"),  # changes rows
        1: ("run_python", "not_needed"),
        2: ("run_sql", "lost"),  # a GRANT squashkit cannot check
        3: ("separate_database_and_state", "not_needed"),
        4: ("extension", "carried"),
    }
    dblink = next(op for op in report.operations if op.summary == "CreateExtension dblink")
    assert "dblink needs a superuser" in dblink.note and "TEMPLATE" in dblink.note


PICKUP_MIGRATION = """from django.db import migrations

# The same names as 0007's, as every data migration has: carried into one file, these are renamed.
METHODS = [{"code": "pickup", "name": "Pick-up in store", "price": "0.00"}]


def create_methods(apps, schema_editor):
    ShippingMethod = apps.get_model("orders", "ShippingMethod")
    for method in METHODS:
        ShippingMethod.objects.using(schema_editor.connection.alias).create(**method)


class Migration(migrations.Migration):

    dependencies = [('orders', '0007_create_shipping_methods')]

    operations = [migrations.RunPython(create_methods, migrations.RunPython.noop)]
"""


def test_carried_migrations_build_an_empty_database_with_view_trigger_extension_and_rows(pg, copy):
    (copy.root / "orders" / "migrations" / "0008_pickup.py").write_text(PICKUP_MIGRATION)
    report = losses.scan(copy.manage, copy.project)
    delete_migrations(copy.project, lambda message: None)
    copy.manage.run("makemigrations", *OWN_APPS, what="makemigrations")

    written = carry.carry_over(report, copy.project)

    assert sorted(str(path.relative_to(copy.root)) for path in written) == [
        "catalog/migrations/0001_initial.py",  # the extension, before the models
        "catalog/migrations/0003_squashkit_carried.py",  # after catalog 0002_initial (the FK back to orders)
        "orders/migrations/0002_squashkit_carried.py",
    ]
    carried_orders = (copy.root / "orders" / "migrations" / "0002_squashkit_carried.py").read_text()
    assert "def create_methods_0008(" in carried_orders and "METHODS_0008 = [" in carried_orders
    scratch = create_database(pg, unique_name("losses_empty"))  # owned by the non-superuser project role
    try:
        copy.manage.on({"default": scratch}).run("migrate", "-v", "0", what="migrate of the carried migrations")
        with psycopg.connect(**pg.conninfo(scratch), autocommit=True) as conn:
            assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
            assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'catalog_productstats'").fetchone() == ("v",)
            assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'catalog_tag_trim_name'").fetchone() == (1,)
            assert conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'catalog_tag_trim_name' AND tgrelid = 'catalog_tag'::regclass"
            ).fetchone() == (1,)
            assert conn.execute("INSERT INTO catalog_tag (name) VALUES ('  sale  ') RETURNING name").fetchone() == ("sale",)
            methods = conn.execute("SELECT code, name, price::text, is_active FROM orders_shippingmethod ORDER BY id").fetchall()
            assert methods == [
                ("standard", "Standard", "4.90", True), ("express", "Express", "12.90", True), ("legacy", "Legacy post", "0.00", False),
                ("pickup", "Pick-up in store", "0.00", True),
            ]
        [(passed, crash)] = copy.manage.on({"default": scratch}).checks(("makemigrations", "--check", "--dry-run"), what="check")
        assert passed and crash is None
    finally:
        drop_database(pg, scratch)


def test_require_nothing_lost_refuses_the_lost_data_migration(copy):
    report = losses.scan(copy.manage, copy.project)

    with pytest.raises(BadInput) as refused:
        losses.require_nothing_lost(report, accept_loss=False)

    message = str(refused.value)
    assert "orders/migrations/0003_populate_order_reference.py" in message and "--accept-loss" in message
    assert "0007_create_shipping_methods" not in message and "\n" not in message
    losses.require_nothing_lost(report, accept_loss=True)
    kept = report.model_copy(update={"operations": [op for op in report.operations if op.verdict != "lost"]})
    losses.require_nothing_lost(kept, accept_loss=False)


REBUILD_TRIGGER_MIGRATION = """from django.db import migrations, models

TRIGGER = '''
CREATE TRIGGER catalog_tag_trim_name
BEFORE INSERT OR UPDATE OF name ON catalog_tag
FOR EACH ROW EXECUTE FUNCTION catalog_tag_trim_name()
'''
DROP = "DROP TRIGGER catalog_tag_trim_name ON catalog_tag"


class Migration(migrations.Migration):

    dependencies = [('catalog', '0010_product_shipping_method')]

    # PostgreSQL refuses to change the type of a column a trigger names: drop it, alter, create it again.
    operations = [
        migrations.RunSQL(DROP, reverse_sql=TRIGGER),
        migrations.RunSQL("SELECT 1", reverse_sql=migrations.RunSQL.noop, elidable=True),
        migrations.RunSQL(TRIGGER, reverse_sql=DROP),
    ]
"""


def test_a_trigger_dropped_and_created_again_is_carried_with_its_drop_and_builds_once(pg, copy):
    # Found on a wagtail project: an AlterField between a DROP TRIGGER and the same CREATE TRIGGER.
    (copy.root / "catalog" / "migrations" / "0011_rebuild_trigger.py").write_text(REBUILD_TRIGGER_MIGRATION)
    report = losses.scan(copy.manage, copy.project)
    rebuild = {index: verdict for (file, index), verdict in verdicts(report).items() if "0011_rebuild_trigger" in file}
    assert rebuild == {0: ("run_sql", "carried"), 1: ("run_sql", "not_needed"), 2: ("run_sql", "carried")}
    drop = next(op for op in report.operations if op.migration == "0011_rebuild_trigger" and op.index == 0)
    assert drop.carry.where == "carried_migration" and "trigger catalog_tag_trim_name on catalog_tag" in drop.reason

    delete_migrations(copy.project, lambda message: None)
    copy.manage.run("makemigrations", *OWN_APPS, what="makemigrations")
    carry.carry_over(report, copy.project)
    scratch = create_database(pg, unique_name("losses_rebuild"))
    try:
        copy.manage.on({"default": scratch}).run("migrate", "-v", "0", what="migrate of the carried migrations")
        with psycopg.connect(**pg.conninfo(scratch), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'catalog_tag_trim_name'").fetchone() == (1,)
            assert conn.execute("INSERT INTO catalog_tag (name) VALUES ('  sale  ') RETURNING name").fetchone() == ("sale",)
    finally:
        drop_database(pg, scratch)
