"""The schema the migrations build, compared with the real database: real differences apart from rename leftovers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from squashkit import schema
from squashkit.errors import BadInput, OperationFailed
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy
from tests.conftest import OWNER, OWNER_PASSWORD, SAMPLE, admin, create_database, drop_database, project_env, unique_name


def params_for(pg, dbname: str) -> ConnectionParams:
    return ConnectionParams(dbname=dbname, user=OWNER, password=OWNER_PASSWORD, host=pg.host, port=pg.port)


def manage_for(pg, dbname: str, project: Path = SAMPLE) -> ManagePy:
    env = {**project_env(pg, dbname), "DJANGO_SETTINGS_MODULE": "sample_project.settings"}
    return ManagePy(python=sys.executable, script=project / "manage.py", cwd=project, env=env)


def copy_project(tmp_path: Path) -> Path:
    """sample_project copied, its symlinked migrations folder included: tests change the copy, never the repo."""
    return Path(shutil.copytree(SAMPLE, tmp_path / "project", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")))


def database_exists(pg, name: str) -> bool:
    with admin(pg) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


@pytest.fixture
def empty_databases(pg):
    """Two empty databases to build the same schema in two ways."""
    names = [create_database(pg, unique_name("schema")) for _ in range(2)]
    yield names
    for name in names:
        drop_database(pg, name)


def build(pg, dbname: str, statements: str) -> schema.Schema:
    with admin(pg, dbname) as conn:
        conn.execute(statements)
        return schema.snapshot(conn)


def test_migrated_database_matches_what_its_migrations_build(pg, sample_db):
    diff = schema.drift(manage_for(pg, sample_db.name), "default", params_for(pg, sample_db.name))
    assert diff.matches, diff.render()
    assert diff.real == []
    assert diff.render().startswith("the schemas match")
    assert not database_exists(pg, schema.scratch_name(sample_db.name))

    # The comparison looked at something: the sample's objects are in the snapshot.
    with sample_db.connect() as conn:
        snap = schema.snapshot(conn)
    assert snap.tables["catalog_product"].columns["price"].type == "numeric(10,2)"
    assert "catalog_productstats" in snap.views
    assert any("gin_trgm_ops" in index.definition for index in snap.indexes)
    assert "pg_trgm" in snap.extensions
    assert "django_migrations" not in snap.tables
    assert not any(s.owned_by and s.owned_by.startswith("django_migrations.") for s in snap.sequences)


def test_hand_changes_are_real_differences(pg, sample_db):
    with sample_db.connect() as conn:
        conn.execute("ALTER TABLE catalog_product ADD COLUMN note text")
        conn.execute("DROP INDEX catalog_product_name_trgm")
        conn.execute("ALTER TABLE orders_order ALTER COLUMN reference SET DEFAULT 'SO-?'")

    diff = schema.drift(manage_for(pg, sample_db.name), "default", params_for(pg, sample_db.name))

    assert not diff.matches
    found = {(d.kind, d.name): d for d in diff.real}
    assert set(found) == {("column", "catalog_product.note"), ("index", "catalog_product_name_trgm"), ("column", "orders_order.reference")}
    assert found["column", "catalog_product.note"].expected is None
    assert found["column", "catalog_product.note"].actual == "text"
    assert found["index", "catalog_product_name_trgm"].actual is None
    assert "USING gin (name gin_trgm_ops)" in found["index", "catalog_product_name_trgm"].expected
    assert found["column", "orders_order.reference"].expected == "character varying(20) NOT NULL"
    assert found["column", "orders_order.reference"].actual == "character varying(20) NOT NULL DEFAULT 'SO-?'::character varying"
    rendered = diff.render()
    assert "extra column catalog_product.note text" in rendered
    assert "missing index catalog_product_name_trgm on catalog_product" in rendered
    assert "- orders_order.reference character varying(20) NOT NULL  (expected)" in rendered
    assert "+ orders_order.reference character varying(20) NOT NULL DEFAULT 'SO-?'::character varying  (actual)" in rendered


def test_column_order_does_not_matter(pg, empty_databases):
    first, second = empty_databases
    one = build(pg, first, "CREATE TABLE shop_item (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', price numeric(10,2))")
    other = build(pg, second, "CREATE TABLE shop_item (price numeric(10,2), name text NOT NULL DEFAULT 'x', id serial PRIMARY KEY)")
    assert schema.compare(one, other).matches
    assert schema.compare(one, other).cosmetic == []

    # The same comparison does see a column that really differs.
    with admin(pg, second) as conn:
        conn.execute("ALTER TABLE shop_item ALTER COLUMN price TYPE numeric(12,2)")
        changed = schema.snapshot(conn)
    diff = schema.compare(one, changed)
    assert [(d.name, d.expected, d.actual) for d in diff.real] == [("shop_item.price", "numeric(10,2)", "numeric(12,2)")]


def test_renamed_table_leftovers_are_cosmetic(pg, empty_databases):
    fresh, renamed = empty_databases
    expected = build(pg, fresh, """
        CREATE TABLE catalog_product (id serial PRIMARY KEY, name varchar(200) NOT NULL, category_id int);
        CREATE INDEX catalog_product_category_id_35bf920b ON catalog_product (category_id);
        CREATE UNIQUE INDEX catalog_product_name_key ON catalog_product (name)""")
    # Created under its old name, then renamed as RenameModel does: the pkey, the serial's sequence
    # (and so the column's nextval default) and the hash-suffixed index keep the old names.
    actual = build(pg, renamed, """
        CREATE TABLE catalog_item (id serial PRIMARY KEY, name varchar(200) NOT NULL, category_id int);
        CREATE INDEX catalog_item_category_id_1a2b3c4d ON catalog_item (category_id);
        CREATE UNIQUE INDEX catalog_item_name_key ON catalog_item (name);
        ALTER TABLE catalog_item RENAME TO catalog_product""")

    diff = schema.compare(expected, actual)

    assert diff.matches, diff.render()
    assert {(d.kind, d.name, d.actual_name) for d in diff.cosmetic} == {
        ("primary key", "catalog_product_pkey", "catalog_item_pkey"),
        ("sequence", "catalog_product_id_seq", "catalog_item_id_seq"),
        ("index", "catalog_product_category_id_35bf920b", "catalog_item_category_id_1a2b3c4d"),
        ("index", "catalog_product_name_key", "catalog_item_name_key"),
    }
    assert "cosmetic" in diff.render() and "catalog_item_pkey" in diff.render()
    # The sequence a table owns is not the one another table owns: that is real.
    with admin(pg, renamed) as conn:
        conn.execute("ALTER SEQUENCE catalog_item_id_seq OWNED BY NONE")
        orphaned = schema.snapshot(conn)
    assert not schema.compare(expected, orphaned).matches


def test_view_trigger_and_function_definitions_are_compared(pg, empty_databases):
    first, second = empty_databases
    ddl = """
        CREATE TABLE t (id int PRIMARY KEY, n int);
        CREATE VIEW v AS SELECT id FROM t WHERE n > {limit};
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := {limit}; RETURN NEW; END $$;
        CREATE TRIGGER t_touch BEFORE {event} ON t FOR EACH ROW EXECUTE FUNCTION touch()"""
    expected = build(pg, first, ddl.format(limit=1, event="INSERT"))
    actual = build(pg, second, ddl.format(limit=2, event="UPDATE"))

    diff = schema.compare(expected, actual)

    # The trigger fires on another event: not the same definition under another name, a real difference.
    assert {(d.kind, d.name) for d in diff.real} == {("view", "v"), ("function", "public.touch()"), ("trigger", "t_touch")}
    assert diff.cosmetic == []
    assert "- view v:" in diff.render() and "+ trigger t_touch on t:" in diff.render()


def test_scratch_database_is_dropped_when_migrate_fails(pg, sample_db, tmp_path):
    project = copy_project(tmp_path)
    (project / "analytics" / "migrations" / "0003_broken.py").write_text(
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('analytics', '0002_pageview_referrer')]\n"
        "    operations = [migrations.RunSQL('SELECT 1/0')]\n"
    )
    scratch = schema.scratch_name(sample_db.name)

    with pytest.raises(OperationFailed, match="division by zero"):
        schema.migrations_schema(manage_for(pg, sample_db.name, project), "default", params_for(pg, sample_db.name))

    assert not database_exists(pg, scratch)


def test_scratch_database_is_like_the_real_one_and_dropped_on_interrupt(pg, sample_db):
    params = params_for(pg, sample_db.name)
    with pytest.raises(KeyboardInterrupt):
        with schema.scratch_database(params) as name:
            with psycopg.connect(**pg.conninfo(name)) as conn:
                owner, encoding = conn.execute(
                    "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
                ).fetchone()
                extensions = {row[0] for row in conn.execute("SELECT extname FROM pg_extension")}
                tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            raise KeyboardInterrupt
    assert name == f"{sample_db.name}__squashkit_scratch"
    assert (owner, encoding) == (OWNER, "UTF8")
    assert "pg_trgm" in extensions  # the real database has it
    assert tables == 0
    assert not database_exists(pg, name)


def test_existing_scratch_database_is_refused_not_reused(pg, sample_db):
    leftover = create_database(pg, schema.scratch_name(sample_db.name))
    try:
        with pytest.raises(BadInput, match=leftover):
            with schema.scratch_database(params_for(pg, sample_db.name)):
                pytest.fail("a leftover scratch database was reused")
        assert database_exists(pg, leftover)  # refused, and never dropped: it may be someone's
    finally:
        drop_database(pg, leftover)


def test_scratch_names_fit_postgresql_and_stay_distinct():
    assert schema.scratch_name("shop") == "shop__squashkit_scratch"
    long_a, long_b = "x" * 60 + "_a", "x" * 60 + "_b"
    names = {schema.scratch_name(long_a), schema.scratch_name(long_b)}
    assert len(names) == 2
    assert all(len(name.encode()) <= 63 and name.endswith("__squashkit_scratch") for name in names)
    assert len(schema.scratch_name("é" * 40).encode()) <= 63


def test_squashed_migrations_lose_what_makemigrations_cannot_write(pg, sample_db, tmp_path):
    """What squash will compare before ``migrate --fake``: fresh 0001_initial files against the database."""
    project = copy_project(tmp_path)
    for folder in ("catalog/migrations", "orders/migrations", "analytics/migrations", "migration_store/community"):
        for path in (project / folder).glob("0*.py"):
            path.unlink()
    subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "catalog", "orders", "community", "analytics", "-v", "0"],
        cwd=project, env=project_env(pg, sample_db.name), check=True, capture_output=True,
    )
    params = params_for(pg, sample_db.name)

    expected = schema.migrations_schema(manage_for(pg, sample_db.name, project), "default", params)
    with sample_db.connect() as conn:
        diff = schema.compare(expected, schema.snapshot(conn))

    # The view, the trigger and its function came from RunSQL, which makemigrations does not
    # write again: real losses (squash carries them over; see test_squash_proof).
    assert sorted((d.kind, d.name) for d in diff.real if d.expected is None) == sorted(
        [("view", "catalog_productstats"), ("trigger", "catalog_tag_trim_name"), ("function", next(
            d.name for d in diff.real if d.kind == "function"))]
    ), [(d.kind, d.name, d.expected) for d in diff.real]
    # AlterField(unique=True) named its constraint with a hash; CreateModel names it _key.
    assert ("unique", "orders_order_reference_key", "orders_order_reference_d902bed1_uniq") in {
        (d.kind, d.name, d.actual_name) for d in diff.cosmetic
    }
    # Nor is TrigramExtension written again: on a database without pg_trgm the new files fail.
    with pytest.raises(OperationFailed, match="gin_trgm_ops"):
        schema.migrations_schema(manage_for(pg, sample_db.name, project), "default", params, copy_extensions=False)
    assert not database_exists(pg, schema.scratch_name(sample_db.name))


def test_an_index_check_and_view_read_back_from_a_restore_are_the_same_objects(pg, empty_databases):
    # Found on wagtail: its UniqueConstraint(condition=Q(status__in=[...])) on a varchar is printed by
    # pg_dump in a form PostgreSQL, once it parses it again, prints with the casts elsewhere.
    migrated, restored = empty_databases
    tables = "CREATE TABLE flow (id serial PRIMARY KEY, status varchar(50) NOT NULL, object_id varchar(255) NOT NULL)"
    expected = build(pg, migrated, tables + """;
        CREATE UNIQUE INDEX unique_in_progress ON flow (object_id) WHERE status IN ('in_progress', 'needs_changes');
        ALTER TABLE flow ADD CONSTRAINT flow_status_known CHECK (status IN ('in_progress', 'done'));
        CREATE VIEW flow_open AS SELECT id FROM flow WHERE status IN ('in_progress', 'needs_changes')""")
    with admin(pg, migrated) as conn:
        expected.round_trips = schema.round_trips(conn, expected)
        dumped = [conn.execute("SELECT pg_get_indexdef('unique_in_progress'::regclass)").fetchone()[0],
                  "ALTER TABLE flow ADD CONSTRAINT flow_status_known "
                  + conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'flow_status_known'").fetchone()[0],
                  "CREATE VIEW flow_open AS " + conn.execute("SELECT pg_get_viewdef('flow_open'::regclass)").fetchone()[0]]
    actual = build(pg, restored, tables + ";\n" + ";\n".join(dumped))  # what pg_restore runs

    assert expected.round_trips, "this server prints the partial index the same way again: nothing to prove"
    assert schema.compare(expected, actual).matches, schema.compare(expected, actual).render()
    assert not schema.compare(expected.model_copy(update={"round_trips": {}}), actual).matches

    # A real difference is still one.
    with admin(pg, restored) as conn:
        conn.execute("DROP INDEX unique_in_progress")
        conn.execute("CREATE UNIQUE INDEX unique_in_progress ON flow (object_id) WHERE status IN ('in_progress')")
        changed = schema.snapshot(conn)
    assert [d.name for d in schema.compare(expected, changed).real] == ["unique_in_progress"]


def test_a_disabled_trigger_is_a_real_difference(pg, empty_databases):
    # Found on a wagtail project: ALTER TABLE ... DISABLE TRIGGER by hand was not seen, and a squash
    # faked migrations that create the trigger enabled over a database where it never fires.
    first, second = empty_databases
    ddl = """
        CREATE TABLE t (id int PRIMARY KEY, n int);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := 1; RETURN NEW; END $$;
        CREATE TRIGGER t_touch BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION touch()"""
    expected = build(pg, first, ddl)
    actual = build(pg, second, ddl + ";\nALTER TABLE t DISABLE TRIGGER t_touch")

    diff = schema.compare(expected, actual)

    assert [(d.kind, d.name) for d in diff.real] == [("trigger", "t_touch")]
    assert diff.real[0].actual.endswith("(disabled)") and not diff.real[0].expected.endswith("(disabled)")
    with admin(pg, second) as conn:
        conn.execute("ALTER TABLE t ENABLE TRIGGER t_touch")
        assert schema.compare(expected, schema.snapshot(conn)).matches


def test_each_difference_says_the_statement_that_brings_the_database_to_what_the_files_build():
    from squashkit import drift
    from squashkit.schema import Difference, SchemaDiff

    real = [
        Difference(kind="index", name="t_a_idx", table="t", expected="CREATE INDEX ON public.t USING btree (a)", actual=None),
        Difference(kind="index", name="t_b_like", table="t", expected=None, actual="CREATE INDEX ON public.t USING btree (b varchar_pattern_ops)"),
        Difference(kind="index", name="u_c", table="s.u", expected="CREATE UNIQUE INDEX ON s.u USING btree (c)", actual="CREATE UNIQUE INDEX ON s.u USING btree (c, d)"),
        Difference(kind="check", name="t_positive", table="t", expected="CHECK ((n > 0))", actual=None),
        Difference(kind="unique", name="t_old_key", table="t", expected=None, actual="UNIQUE (a)"),
        Difference(kind="column", name="t.note", table="t", expected=None, actual="text"),
        Difference(kind="column", name="t.size", table="t", expected="integer NOT NULL", actual=None),
        Difference(kind="column", name="t.kind", table="t", expected="character varying(10)", actual="text"),
        Difference(kind="trigger", name="t_audit", table="t", expected=None, actual="CREATE TRIGGER BEFORE INSERT ON public.t ..."),
    ]
    assert drift.ddl_for(SchemaDiff(real=real)) == [
        'CREATE INDEX CONCURRENTLY "t_a_idx" ON public.t USING btree (a);',
        'DROP INDEX CONCURRENTLY "t_b_like";',
        'DROP INDEX CONCURRENTLY "s"."u_c";',
        'CREATE UNIQUE INDEX CONCURRENTLY "u_c" ON s.u USING btree (c);',
        'ALTER TABLE "t" ADD CONSTRAINT "t_positive" CHECK ((n > 0));',
        'ALTER TABLE "t" DROP CONSTRAINT "t_old_key";',
        'ALTER TABLE "t" DROP COLUMN "note";',
        'ALTER TABLE "t" ADD COLUMN "size" integer NOT NULL;',
        'DROP TRIGGER "t_audit" ON "t";',
    ]
    hint = drift.refusal_hint(SchemaDiff(real=real))
    assert "no statement is suggested for column t.kind" in hint  # a type change is the user's to plan
