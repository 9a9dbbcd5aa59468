"""db.json written by SQL (``jsonfixture``) and loaded by SQL (``jsonload``).

The promises: the SQL-made fixture parses, through Django's own Deserializer, to the objects
Django's serializer writes, except where Django's are wrong (a many-to-many link to a row the
target's default manager hides, a custom field that does not survive dumpdata + loaddata) or
differs by design (FileField NULL stays null, not ""); plain ``manage.py loaddata`` reads it;
and the SQL loader gives back the source's rows exactly, table for table, with its sequences.

The source is sample_project's ``fieldtypes`` app (SAMPLE_FIELDTYPES=1): one model per field
type Django and contrib.postgres ship, seeded with the values a fixture gets wrong, and the
seeded sample_project itself. GIS fields are not covered: this machine has no PostGIS.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from squashkit import config as config_module
from squashkit import postgres
from squashkit.bundle import read_manifest
from squashkit.errors import OperationFailed
from squashkit.fixture import NaturalKeys, put_back_ids, read_counts, read_ids, tables_filled, write_fixture
from squashkit.jsonfixture import iter_fixture_objects, serialize_slow_models, write_fixture_sql
from squashkit.jsonload import deserialize_slow_models, load_fixture_fast, load_fixture_sql
from squashkit.project import ManagePy, ProjectInfo, dumpdata, introspect, manage_py
from tests.conftest import (
    SAMPLE,
    SampleDatabase,
    create_database,
    drop_database,
    manage,
    project_env,
    sequences,
    squashkit,
    table_fingerprints,
    unique_name,
    write_config,
)

FIELDTYPES = {"SAMPLE_FIELDTYPES": "1"}
# loaddata sets many-to-many lists through the target's default manager: the field-type app's
# scoped manager lets it only inside a scope, as the app's own commands would run it.
IN_SCOPE = {**FIELDTYPES, "FIELDTYPES_TENANT": "*"}
COMPARE = Path(__file__).with_name("fastjson_compare.py")
NOT_IN_FIXTURE = ("django_admin_log", "django_session", "django_migrations")


class Source:
    """A database, its project as squashkit sees it, and a bundle of it (manifest, contenttypes.json, Django's db.json)."""

    def __init__(self, pg, name: str, directory: Path, extra: dict[str, str]):
        self.pg, self.name, self.extra = pg, name, extra
        self.database = SampleDatabase(pg, name)
        self.manage, self.project = project_of(pg, name, directory / "config", extra)
        config = write_config(directory, {"dev": {"DATABASE_URL": self.database.url(), **extra}})
        result = squashkit("--config", str(config), "backup", "--env", "dev", "--no-compress")
        assert result.code == 0, result.stderr
        self.bundle = Path(result.stdout.strip().splitlines()[-1])
        self.entry = read_manifest(self.bundle).alias("default")
        self.fast = directory / "fast.json"
        self.counts, self.slow = render(self, self.fast)
        self.django = django_fixture(self, directory / "django.json")

    def bundle_with(self, fixture: Path, directory: Path) -> Path:
        """A copy of the bundle whose db.json is ``fixture``."""
        copy = directory / "bundle"
        shutil.copytree(self.bundle, copy)
        shutil.copyfile(fixture, copy / "db.json")
        return copy


def project_of(pg, dbname: str, directory: Path, extra: dict[str, str]) -> tuple[ManagePy, ProjectInfo]:
    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(directory, {"dev": {"DATABASE_URL": SampleDatabase(pg, dbname).url(), **extra}})
    config = config_module.load(path)
    env_name, environment = config.environment("dev")
    target = manage_py(config, env_name, environment)
    return target, introspect(target)


def django_fixture(source: Source, destination: Path) -> Path:
    """db.json as Django writes it (squashkit's files before they were rendered by SQL): dumpdata
    --all as jsonl, full-precision datetimes, content types and permissions by natural key."""
    project = source.project
    excludes = [*project.installed_excludes([]), *project.unmanaged_models("default")]
    models = project.dumped_models("default", excludes)
    jsonl = destination.with_suffix(".jsonl")
    # Outside a scope, the field-type app's scoped manager refuses dumpdata's many-to-many query:
    # like an application's own commands, this one runs in a scope that sees every tenant.
    scoped = source.manage.model_copy(update={"env": {**source.manage.env, "FIELDTYPES_TENANT": "*"}})
    dumpdata(scoped, "default", jsonl, excludes)
    with postgres.connect(project.connection("default")) as conn:
        keys = NaturalKeys.read(conn)
    write_fixture(jsonl, destination, keys, {m.label: m.natural_key_fields for m in models if m.natural_key_fields})
    return destination


def render(source: Source, destination: Path):
    """db.json by SQL, as backup will write it: one snapshot, slow models by Django inside it."""
    project = source.project
    excludes = [*project.installed_excludes([]), *project.unmanaged_models("default")]
    models = project.dumped_models("default", excludes)
    with postgres.connect(project.connection("default")) as conn, postgres.snapshot(conn) as snapshot_id:
        keys = NaturalKeys.read(conn)
        slow = [m for m in models if m.slow_reason]
        lines = serialize_slow_models(source.manage, "default", slow, snapshot_id, destination.parent / "slow")
        counts = write_fixture_sql(conn, models, destination, keys=keys, slow_lines=lines)
    return counts, {m.label: m.slow_reason for m in slow}


def compare(pg, dbname: str, left: Path, right: Path, output: Path, extra: dict[str, str]) -> dict:
    """Parse both files with Django's Deserializer in the project (tests/fastjson_compare.py)."""
    arguments = {"left": str(left), "right": str(right), "output": str(output), "sources": True}
    code = (
        f"import runpy; runpy.run_path({str(COMPARE)!r}, init_globals={{'FASTJSON_COMPARE': {arguments!r}}}, "
        "run_name='__fastjson_compare__')"
    )
    manage(pg, dbname, "shell", "-c", code, **extra)
    return json.loads(output.read_text())


def fresh(pg, prefix: str, extra: dict[str, str]) -> str:
    name = create_database(pg, unique_name(prefix))
    manage(pg, name, "migrate", "-v", "0", **extra)
    return name


def assert_same_rows(source: str, target: str, pg, project: ProjectInfo) -> None:
    """Every table the fixture fills equals the source's: ids included, except the implicit join
    tables' own (a fixture holds a many-to-many as a list on its owner)."""
    join_tables = {model.db_table for app in project.apps for model in app.models if model.auto_created}
    with psycopg.connect(**pg.conninfo(source)) as before, psycopg.connect(**pg.conninfo(target)) as after:
        exact_before, exact_after = table_fingerprints(before, skip=NOT_IN_FIXTURE), table_fingerprints(after, skip=NOT_IN_FIXTURE)
        natural_before = table_fingerprints(before, natural=True, skip=NOT_IN_FIXTURE)
        natural_after = table_fingerprints(after, natural=True, skip=NOT_IN_FIXTURE)
        seq_before, seq_after = sequences(before), sequences(after)
    assert set(exact_after) == set(exact_before)
    for table in exact_before:
        if table.split(".", 1)[1] in join_tables:
            assert natural_after[table] == natural_before[table], table
        else:
            assert exact_after[table] == exact_before[table], table
    seq_before.pop("public.django_migrations_id_seq")
    seq_after.pop("public.django_migrations_id_seq")
    assert seq_after == seq_before


# --- the field types --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fieldtypes(pg, tmp_path_factory):
    name = fresh(pg, "fieldtypes_source", FIELDTYPES)
    manage(pg, name, "seed_fieldtypes", **FIELDTYPES)
    yield Source(pg, name, tmp_path_factory.mktemp("fieldtypes"), FIELDTYPES)
    drop_database(pg, name)


def test_every_field_type_parses_to_what_django_writes_except_where_django_is_wrong(pg, fieldtypes, tmp_path):
    source = fieldtypes
    django = source.django
    assert read_counts(source.fast) == read_counts(django) == source.counts
    labels = {m.label for app in source.project.apps if app.label == "fieldtypes" for m in app.models if not m.auto_created}
    assert labels <= set(source.counts), labels - set(source.counts)

    result = compare(pg, source.name, source.fast, django, tmp_path / "compare.json", FIELDTYPES)
    differences = {(model, field) for model, pk, field, *_ in result["differences"]}
    assert differences == {
        ("fieldtypes.watcher", "watches"),  # links to rows the target's default manager hides
        ("fieldtypes.jsonlistmodel", "watches"),  # the same, for a model Django writes (the slow path keeps them)
        ("fieldtypes.commalistmodel", "tags"),  # Django writes str(list): [] comes back as ["[]"]
        ("fieldtypes.filemodel", "value"),  # NULL: Django writes "", SQL keeps null
    }
    # The SQL side is the one that matches the database, field for field; Django's is off exactly there.
    assert [row for row in result["against_rows"] if row[3] == "left"] == []
    wrong = {(model, field) for model, pk, field, side, *_ in result["against_rows"] if side == "right"}
    assert wrong == differences
    hidden = [row for row in result["differences"] if row[0] == "fieldtypes.watcher" and row[1] == "2"]
    assert hidden == [["fieldtypes.watcher", "2", "watches", "['2', '4']", "[]"]]


def test_the_sql_fixture_keeps_what_a_python_round_trip_loses(fieldtypes):
    lines = fieldtypes.fast.read_text(encoding="utf-8")
    assert "12345678901234567890.5" in lines and '"scale": 1.10' in lines  # JSON numbers as stored
    assert '"2024-01-01T02:11:59.123456+00:00"' in lines  # microseconds
    assert '"-0"' in lines and '"NaN"' in lines and '"-Infinity"' in lines
    assert '"123456789012345678901234.5678901234"' in lines
    assert '"squashkit_json_null" : ["value"]' in lines  # JSON null in a nullable column, told apart from SQL NULL
    base64 = [line for line in lines.split("\n") if '"fieldtypes.binarymodel", "pk" : 3' in line]
    assert len(base64) == 1 and "\\n" not in base64[0]  # 256 bytes in one base64 line


def test_models_only_django_can_write_are_reported_with_their_reason(fieldtypes):
    assert fieldtypes.slow == {
        "fieldtypes.nestedarraymodel": "field grid is a multi-dimensional array",
        "fieldtypes.jsonlistmodel": "field tags (JsonListField) overrides value_to_string",
    }
    plans = {m.label: m for app in fieldtypes.project.apps for m in app.models}
    comma = plans["fieldtypes.commalistmodel"]
    assert comma.slow_reason is None and comma.fields[0].kind == "plain"  # only from_db_value/to_python/get_prep_value
    restaurant = plans["fieldtypes.italianrestaurant"]
    assert restaurant.pk.column == "restaurant_ptr_id" and [f.name for f in restaurant.fields] == ["serves_gnocchi"]
    grant = plans["fieldtypes.grant"]
    assert grant.fields[0].natural == "contenttype" and grant.m2m[0].natural == "permission"
    generated = {f.name: f.generated for f in plans["fieldtypes.generatedmodel"].fields}
    assert generated == {"a": False, "b": False, "name": False, "total": True, "lowered": True}


def test_rows_written_after_the_snapshot_are_in_neither_part_of_the_fixture(pg, fieldtypes, tmp_path):
    """SQL and Django (the slow path, in the project's own process) both read the exported snapshot."""
    name = create_database(pg, unique_name("fieldtypes_snapshot"), template=fieldtypes.name)
    try:
        manage_copy, project = project_of(pg, name, tmp_path / "config", FIELDTYPES)
        excludes = [*project.installed_excludes([]), *project.unmanaged_models("default")]
        models = project.dumped_models("default", excludes)
        with postgres.connect(project.connection("default")) as conn, postgres.snapshot(conn) as snapshot_id:
            with psycopg.connect(**pg.conninfo(name), autocommit=True) as writer:
                writer.execute("INSERT INTO fieldtypes_jsonlistmodel (tags) VALUES ('late')")
                writer.execute("INSERT INTO fieldtypes_charmodel (value) VALUES ('late')")
            lines = serialize_slow_models(manage_copy, "default", [m for m in models if m.slow_reason], snapshot_id, tmp_path)
            counts = write_fixture_sql(conn, models, tmp_path / "db.json", keys=NaturalKeys.read(conn), slow_lines=lines)
        assert counts == fieldtypes.counts
        assert "late" not in (tmp_path / "db.json").read_text(encoding="utf-8")
    finally:
        drop_database(pg, name)


def test_a_default_manager_that_refuses_queries_outside_a_scope_neither_hides_rows_nor_fails_the_backup(pg, fieldtypes):
    """django-scopes' managers raise outside a scope; dumpdata reads many-to-many lists through the
    target's default manager, even with --all, so it fails on the whole database. The backup reads
    the tables: every row and every link is in db.json."""
    objects = list(iter_fixture_objects(fieldtypes.bundle / "db.json"))
    with psycopg.connect(**pg.conninfo(fieldtypes.name)) as conn:
        rows = conn.execute("SELECT count(*) FROM fieldtypes_scoped").fetchone()[0]
        links = conn.execute("SELECT count(*) FROM fieldtypes_scopednote_also").fetchone()[0]
    assert rows == len([o for o in objects if o["model"] == "fieldtypes.scoped"]) == 2
    assert links == sum(len(o["fields"]["also"]) for o in objects if o["model"] == "fieldtypes.scopednote") == 4
    plain = subprocess.run(
        [sys.executable, str(SAMPLE / "manage.py"), "dumpdata", "--all", "fieldtypes"],
        cwd=SAMPLE, env=project_env(pg, fieldtypes.name, **FIELDTYPES), capture_output=True, text=True,
    )
    assert plain.returncode != 0 and "only visible inside a tenant scope" in plain.stderr


def test_plain_loaddata_reads_the_sql_fixture(pg, fieldtypes, tmp_path):
    """Everything but one object: a JSON null in a NOT NULL column, which loaddata saves as SQL NULL
    (Django's own db.json holds the same object and fails the same way)."""
    lines = fieldtypes.fast.read_text(encoding="utf-8").split("\n")
    unloadable = [line for line in lines if '"required" : null' in line]
    assert len(unloadable) == 1
    fixture = tmp_path / "db.json"
    fixture.write_text("\n".join(line for line in lines if line not in unloadable) + "\n", encoding="utf-8")
    target = fresh(pg, "fieldtypes_loaddata", FIELDTYPES)
    try:
        with psycopg.connect(**pg.conninfo(target), autocommit=True) as conn:  # as load_fixture step 1
            conn.execute("DELETE FROM auth_permission")
            conn.execute("DELETE FROM django_content_type")
        manage(pg, target, "loaddata", str(fixture), **IN_SCOPE)
        with psycopg.connect(**pg.conninfo(fieldtypes.name)) as before, psycopg.connect(**pg.conninfo(target)) as after:
            expected = table_fingerprints(before, natural=True, skip=NOT_IN_FIXTURE)
            actual = table_fingerprints(after, natural=True, skip=NOT_IN_FIXTURE)
        differ = sorted(table for table in expected if expected[table] != actual[table])
        # loaddata's own losses: FileField NULL becomes "", -0.0 becomes 0 (the ORM sends the literal
        # -0.0, which PostgreSQL reads as numeric), JSON numbers pass through float, and the NOT NULL
        # JSON null was left out.
        assert differ == ["public.fieldtypes_filemodel", "public.fieldtypes_floatmodel", "public.fieldtypes_jsonmodel"]
    finally:
        drop_database(pg, target)


def test_the_sql_loader_gives_back_every_row_and_sequence(pg, fieldtypes, tmp_path):
    target = fresh(pg, "fieldtypes_fastload", FIELDTYPES)
    try:
        manage_target, project = project_of(pg, target, tmp_path / "config", FIELDTYPES)
        bundle = fieldtypes.bundle_with(fieldtypes.fast, tmp_path)
        lines: list[str] = []
        counts = load_fixture_fast(manage_target, project.connection("default"), bundle, fieldtypes.entry, project, lines.append)
        assert_same_rows(fieldtypes.name, target, pg, project)
        assert counts["fieldtypes.jsonlistmodel"] == 3 and counts["fieldtypes.nestedarraymodel"] == 2
        assert any("models read by Django" in line and "fieldtypes.jsonlistmodel" in line for line in lines)
        # The values a Python round trip changes, as the source holds them.
        query = "SELECT id, value::text, required::text, value IS NULL FROM fieldtypes_jsonmodel ORDER BY id"
        with psycopg.connect(**pg.conninfo(fieldtypes.name)) as before, psycopg.connect(**pg.conninfo(target)) as after:
            rows = before.execute(query).fetchall()
            assert after.execute(query).fetchall() == rows
            assert ("null", "null", False) in [row[1:] for row in rows] and any(row[3] for row in rows)
            tags = "SELECT tags FROM fieldtypes_commalistmodel ORDER BY id"
            assert after.execute(tags).fetchall() == before.execute(tags).fetchall() == [("a,b",), ("",), ("with space",)]
    finally:
        drop_database(pg, target)


def test_the_sql_loader_reads_the_fixture_django_wrote(pg, fieldtypes, tmp_path):
    """Django's own db.json (Django's forms for every field) loads too, to what loaddata gives, except
    that its NaN and Infinity floats are not JSON: those are refused, in one line."""
    django = fieldtypes.django
    lines = django.read_text(encoding="utf-8").split("\n")
    # What loaddata cannot load either (a JSON null in a NOT NULL column), and bare NaN/Infinity.
    kept = [line for line in lines if '"required": null' not in line and not re.search(r": -?(NaN|Infinity)\b", line)]
    assert len(kept) == len(lines) - 4
    fixture = tmp_path / "django.json"
    fixture.write_text("\n".join(kept) + "\n", encoding="utf-8")
    by_sql, by_loaddata = fresh(pg, "fieldtypes_djangofile", FIELDTYPES), fresh(pg, "fieldtypes_djangoref", FIELDTYPES)
    try:
        manage_target, project = project_of(pg, by_sql, tmp_path / "config", FIELDTYPES)
        models = [m for app in project.apps for m in app.models if "default" in m.dumped_on]
        ids = read_ids(fieldtypes.bundle / "contenttypes.json")
        slow = [m for m in models if m.slow_reason]
        rows = deserialize_slow_models(manage_target, "default", fixture, slow, tmp_path / "slow.jsonl")
        with pytest.raises(OperationFailed, match='failed: invalid input syntax for type json .*"NaN".* only loaddata reads'):
            load_fixture_fast(manage_target, project.connection("default"), fieldtypes.bundle_with(django, tmp_path / "django"),
                              fieldtypes.entry, project, print)
        with psycopg.connect(**pg.conninfo(by_sql), autocommit=True) as conn:
            with conn.transaction():
                put_back_ids(conn, tables_filled(fieldtypes.entry, ids), ids)
                load_fixture_sql(conn, fixture, models, slow_rows=rows)
        with psycopg.connect(**pg.conninfo(by_loaddata), autocommit=True) as conn:
            conn.execute("DELETE FROM auth_permission")
            conn.execute("DELETE FROM django_content_type")
        manage(pg, by_loaddata, "loaddata", str(fixture), **IN_SCOPE)
        with psycopg.connect(**pg.conninfo(by_sql)) as a, psycopg.connect(**pg.conninfo(by_loaddata)) as b:
            left, right = table_fingerprints(a, natural=True, skip=NOT_IN_FIXTURE), table_fingerprints(b, natural=True, skip=NOT_IN_FIXTURE)
        assert sorted(t for t in left if left[t] != right[t]) == []
    finally:
        drop_database(pg, by_sql)
        drop_database(pg, by_loaddata)


def test_a_natural_key_naming_nothing_fails_and_leaves_the_target_unchanged(pg, fieldtypes, tmp_path):
    text = fieldtypes.fast.read_text(encoding="utf-8")
    assert text.count('"content_type" : ["fieldtypes", "grant"]') == 1
    broken = tmp_path / "broken.json"
    broken.write_text(text.replace('"content_type" : ["fieldtypes", "grant"]', '"content_type" : ["fieldtypes", "nosuch"]'))
    target = fresh(pg, "fieldtypes_broken", FIELDTYPES)
    try:
        manage(pg, target, "seed_fieldtypes", **FIELDTYPES)  # something to keep
        manage_target, project = project_of(pg, target, tmp_path / "config", FIELDTYPES)
        with psycopg.connect(**pg.conninfo(target)) as conn:
            before, sequences_before = table_fingerprints(conn), sequences(conn)
        bundle = fieldtypes.bundle_with(broken, tmp_path)
        with pytest.raises(OperationFailed) as raised:
            load_fixture_fast(manage_target, project.connection("default"), bundle, fieldtypes.entry, project, lambda line: None)
        message = str(raised.value)
        assert "\n" not in message
        assert 'fieldtypes.grant pk 1: field content_type names the content type ["fieldtypes", "nosuch"]' in message
        with psycopg.connect(**pg.conninfo(target)) as conn:
            assert table_fingerprints(conn) == before
            assert sequences(conn) == sequences_before
    finally:
        drop_database(pg, target)


# --- sample_project ---------------------------------------------------------------------------------


TRIGGERS = "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"
# A trigger on a table whose rows a migration made (the load deletes them, which leaves deferred
# checks pending there): were it to fire during the load, every name would change.
TOUCH = """CREATE FUNCTION touch_name() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.name := NEW.name || ' (touched)'; RETURN NEW; END $$;
           CREATE TRIGGER touch_name BEFORE INSERT ON orders_shippingmethod FOR EACH ROW EXECUTE FUNCTION touch_name()"""


def fresh_sample_target(pg, prefix: str) -> str:
    """sample_project migrated, with the source's extra trigger."""
    name = fresh(pg, prefix, {})
    with psycopg.connect(**pg.conninfo(name), autocommit=True) as conn:
        conn.execute(TOUCH)
    return name


@pytest.fixture(scope="module")
def sample(pg, seeded_template, tmp_path_factory):
    name = create_database(pg, unique_name("fastjson_sample"), template=seeded_template)
    with psycopg.connect(**pg.conninfo(name), autocommit=True) as conn:
        # A row its table's trigger would have changed (it trims tag names): a load that fires
        # triggers gives it back otherwise; pg_restore, which creates triggers after the data, does not.
        conn.execute("ALTER TABLE catalog_tag DISABLE TRIGGER catalog_tag_trim_name")
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('  untrimmed, as the source holds it  ')")
        conn.execute("ALTER TABLE catalog_tag ENABLE TRIGGER catalog_tag_trim_name")
        conn.execute(TOUCH)
    yield Source(pg, name, tmp_path_factory.mktemp("fastjson-sample"), {})
    drop_database(pg, name)


def test_on_sample_project_the_sql_fixture_parses_as_dumpdata_and_loads_every_row(pg, sample, tmp_path):
    django = sample.django
    assert sample.slow == {}
    assert read_counts(sample.fast) == read_counts(django) == sample.counts == sample.entry.json_objects
    result = compare(pg, sample.name, sample.fast, django, tmp_path / "compare.json", {})
    assert result["differences"] == [] and result["against_rows"] == []
    assert result["objects"][0] == sum(sample.counts.values())

    target = fresh_sample_target(pg, "fastjson_sample_load")
    try:
        manage_target, project = project_of(pg, target, tmp_path / "config", {})
        bundle = sample.bundle_with(sample.fast, tmp_path / "sql")
        load_fixture_fast(manage_target, project.connection("default"), bundle, sample.entry, project, lambda line: None)
        assert_same_rows(sample.name, target, pg, project)
        with psycopg.connect(**pg.conninfo(sample.name)) as before, psycopg.connect(**pg.conninfo(target)) as after:
            triggers = before.execute(TRIGGERS).fetchall()
            assert after.execute(TRIGGERS).fetchall() == triggers and ("catalog_tag", "catalog_tag_trim_name", "O") in triggers
    finally:
        drop_database(pg, target)


def test_on_sample_project_the_sql_loader_reads_dumpdata_s_fixture(pg, sample, tmp_path):
    target = fresh_sample_target(pg, "fastjson_sample_dumpdata")
    try:
        manage_target, project = project_of(pg, target, tmp_path / "config", {})
        bundle = sample.bundle_with(sample.django, tmp_path / "django")
        load_fixture_fast(manage_target, project.connection("default"), bundle, sample.entry, project, lambda line: None)
        assert_same_rows(sample.name, target, pg, project)
    finally:
        drop_database(pg, target)
