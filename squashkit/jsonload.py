"""db.json loaded by PostgreSQL itself: one COPY, then one INSERT ... SELECT per model, in one transaction.

``loaddata`` saves one object at a time through the ORM (about 15 times slower than
``pg_restore``) and reads every JSON number as a Python float. Here the file is staged with
``COPY`` as it is (no per-row Python) and parsed by PostgreSQL into jsonb, which keeps numbers
exactly; each model is then one ``INSERT INTO table (columns) SELECT ...`` that converts every
value to its column's real type, read from the target's catalog (its implicit
many-to-many rows in the same statement). Values are the columns' own (``jsonfixture`` writes them so), so
the rows come back equal to the source's, also where a Python round trip would change them: a
custom field that does not survive dumpdata + loaddata, a JSON null in a NOT NULL column,
-0.0, a numeric's scale, a JSON number no float holds. Files Django wrote (an older db.json, or
a model's lines from the slow path) load too: each conversion also reads Django's forms.

What loaddata does and this does not: send ``pre_save``/``post_save`` (raw) and
``m2m_changed`` signals, and run ``Model(**data)`` (a field missing from an object gets its
database default, not its Python one). It is meant for a database just migrated whose tables
the caller emptied (``fixture.empty_tables``), so every object is an INSERT: a pk twice in the
file fails on the primary key instead of the last one winning.

Models whose values only Django can read (``ModelInfo.slow_reason``) are turned into column
texts by Django in the project (``inproject/deserialize.py``, run before the transaction) and
inserted here with the same casts, in the same transaction.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel

from squashkit import bundlefiles
from squashkit.bundle import AliasBackup
from squashkit.errors import OperationFailed
from squashkit.fixture import (
    CONTENT_TYPE,
    PERMISSION,
    _identifier,
    _pg_error,
    put_back_ids,
    read_ids,
    require_tables,
    restore_sequences,
    set_sequence,
    tables_filled,
    verify_loaded,
)
from squashkit.jsonfixture import JSON_NULL_KEY
from squashkit.postgres import ConnectionParams, connect, read_sequences, resolve_table
from squashkit.project import FieldPlan, M2MPlan, ManagePy, ModelInfo, ProjectInfo, run_runner

_COPY_IN = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
CHUNK = 1 << 20


class Column(BaseModel):
    """One column of the target table, as its catalog describes it."""

    type: tuple[str, str]  # schema and name of its type: every value is cast to it
    not_null: bool
    generated: bool


def load_fixture_fast(
    manage: ManagePy,
    params: ConnectionParams,
    bundle_dir: Path,
    entry: AliasBackup,
    project: ProjectInfo,
    log: Callable[[str], None],
) -> Counter:
    """``fixture.load_fixture`` with PostgreSQL doing the loading: same arguments (plus the target
    project's description), same result, one transaction for steps 1 to 4.

    0. The slow models' rows are made by Django first, outside the transaction
       (``deserialize_slow_models``). Then, in one transaction:
    1. Switch off the user triggers of the tables the fixture fills (``triggers_off``: why).
    2. Empty those tables and put the source's content types and permissions back with their
       ids (``load_fixture`` steps 1-2; why: its docstring).
    3. Load the fixture (``load_fixture_sql``), checking every deferred constraint at its end,
       so a broken reference fails here, named; then the triggers back on.
    4. Put the sequences where the source had them (``load_fixture`` step 4).
    5. Verify every table's content (or row count) against the manifest.
    A failure before the commit leaves the target as it was, its sequences included.
    """
    fixture = bundle_dir / entry.json_file
    if not fixture.is_file():
        raise OperationFailed(f"{fixture} is missing")
    ids = read_ids(bundle_dir / entry.contenttypes_file) if entry.contenttypes_file else None
    tables = tables_filled(entry, ids)
    models = [m for app in project.apps for m in app.models if entry.alias in m.dumped_on]
    where = f"[{entry.alias}]"
    slow = [m for m in models if m.slow_reason and m.label in entry.json_objects]
    with tempfile.TemporaryDirectory(prefix="squashkit-load-") as private:
        slow_rows = None
        if slow:
            log(f"{where} {len(slow)} models read by Django: " + "; ".join(f"{m.label} ({m.slow_reason})" for m in slow))
            slow_rows = deserialize_slow_models(manage, entry.alias, fixture, slow, Path(private) / "slow.jsonl")
        with connect(params, autocommit=True) as conn:
            require_tables(conn, tables, params.dbname)
            log(f"{where} loading {entry.json_file} with SQL, in one transaction")
            # A rollback leaves the rows as they were but not the sequences the inserts drew from
            # (join-table ids): those are put back by hand when the load fails.
            before = read_sequences(conn)
            try:
                with conn.transaction():
                    disabled = triggers_off(conn, tables)
                    put_back_ids(conn, tables, ids)
                    counts = load_fixture_sql(
                        conn, fixture, models, slow_rows=slow_rows, ids_restored=ids is not None,
                        naive_time_zone=project.naive_time_zones.get(entry.alias),
                    )
                    triggers_on(conn, disabled)
                    exact, skipped = restore_sequences(conn, entry.facts.sequences, set(tables))
            except (psycopg.Error, OperationFailed) as exc:
                _put_back(conn, before)
                if isinstance(exc, OperationFailed):
                    raise
                why = _pg_error(exc)
                if isinstance(exc, psycopg.errors.InvalidTextRepresentation) and "type json" in why:
                    why += "; dumpdata writes NaN and Infinity floats as bare words, which only loaddata reads"
                raise OperationFailed(f"loading {entry.json_file} into {params.dbname} failed: {why}") from None
            log(f"{where} {sum(counts.values())} objects loaded; {exact} sequences set to the source's values")
            if skipped:
                log(f"{where} note: {len(skipped)} sequences of the source do not exist here (e.g. {skipped[0]})")
            held = verify_loaded(conn, tables, entry)
            log(f"{where} verified: {len(tables)} tables hold the source's {held}")
    return counts


def _put_back(conn: psycopg.Connection, sequences: dict) -> None:
    """After a failed load: the sequences as they were (a rollback does not undo nextval)."""
    try:
        for name, state in sequences.items():
            set_sequence(conn, name, state)
    except psycopg.Error:
        pass  # the connection is gone: the load's own error is the one to report


def deserialize_slow_models(manage: ManagePy, alias: str, fixture: Path, models: list[ModelInfo], output: Path) -> Path:
    """Have the project read ``models``' objects from ``fixture`` with Django and write their
    column values (``inproject/deserialize.py``) for ``load_fixture_sql(slow_rows=...)``."""
    arguments = {
        "alias": alias,
        "fixture": str(fixture),
        "output": str(output),
        "models": {model.label: model.natural_key_fields for model in models},
    }
    run_runner(manage, "deserialize", arguments, what=f"reading {', '.join(m.label for m in models)} with Django")
    return output


def load_fixture_sql(
    conn: psycopg.Connection,
    fixture: Path,
    models: list[ModelInfo],
    *,
    slow_rows: Path | None = None,
    ids_restored: bool = True,
    naive_time_zone: str | None = None,
) -> Counter:
    """Insert every object of ``fixture`` (one object a line) into the tables of ``models``,
    inside the caller's transaction; return the objects inserted per model.

    The target tables must be empty (``fixture.empty_tables``). Content types and permissions
    at the head of the file are skipped when their rows were put back with their ids
    (``ids_restored``); references to them by natural key are resolved against those rows, and
    one that names nothing fails, naming the object and the field. ``slow_rows``: what
    ``deserialize_slow_models`` wrote for the models with a ``slow_reason``. Raises
    ``psycopg.Error`` (the caller's transaction is then to be rolled back) or ``OperationFailed``.
    """
    plans = {model.label: model for model in models}
    _session(conn, naive_time_zone)
    _create_functions(conn, plans)
    present = _stage(conn, fixture, list(plans))
    header = {CONTENT_TYPE, PERMISSION} & set(present)
    if header and not ids_restored:
        raise OperationFailed(f"{fixture.name} holds content types and permissions: their ids file is needed to load it with SQL")
    unknown = sorted(set(present) - set(plans) - header)
    if unknown:
        raise OperationFailed(f"{fixture.name} holds objects of {', '.join(unknown)}, which the project does not define here")
    loaded = [plans[label] for label in present if label not in header]
    counts: Counter = Counter()
    for model in models:
        if model in loaded and not model.slow_reason:
            counts[model.label] = _insert_model(conn, model)
    if slow_rows is not None:
        counts.update(_insert_slow_rows(conn, slow_rows))
    missing = [model.label for model in loaded if model.slow_reason and not counts[model.label]]
    if missing:
        raise OperationFailed(f"{', '.join(missing)} must be read by Django, but no rows were made for them")
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    conn.execute("DROP TABLE squashkit_fx_lines")
    return counts


def _session(conn: psycopg.Connection, naive_time_zone: str | None) -> None:
    """How text becomes values must not depend on the server's defaults (for the transaction only)."""
    settings = {"TimeZone": naive_time_zone or "UTC", "IntervalStyle": "postgres", "DateStyle": "ISO, MDY"}
    for name, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])


# Helpers for the conversions, in the session's own temporary schema (gone with the session).
# A value whose shape is not one a writer makes becomes a text the final cast rejects, loudly.
_UNWRAP = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_unwrap(v jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
       SELECT CASE jsonb_typeof(v) WHEN 'string' THEN (v #>> '{}')::jsonb ELSE v END $$"""

# A value inside a range or hstore literal: double-quoted, backslash and quote escaped.
_QUOTE = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_quote(x text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
       SELECT '"' || replace(replace(x, chr(92), chr(92) || chr(92)), '"', chr(92) || '"') || '"' $$"""

# ArrayField: Django's JSON string of element texts, or a JSON array.
_TEXT_ARRAY = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_text_array(v jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
       SELECT CASE
         WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
         WHEN jsonb_typeof(pg_temp.squashkit_unwrap(v)) = 'array' THEN ARRAY(
           SELECT e FROM jsonb_array_elements_text(pg_temp.squashkit_unwrap(v)) WITH ORDINALITY a(e, n) ORDER BY n)
         ELSE ('not an array: ' || v::text)::text[] END $$"""

# HStoreField: Django's JSON string of an object, or an object; NULL values stay NULL.
_HSTORE_TEXT = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_hstore_text(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
       SELECT CASE
         WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
         WHEN jsonb_typeof(pg_temp.squashkit_unwrap(v)) = 'object' THEN (
           SELECT coalesce(string_agg(
             pg_temp.squashkit_quote(key) || '=>' || coalesce(pg_temp.squashkit_quote(value), 'NULL'), ', '), '')
           FROM jsonb_each_text(pg_temp.squashkit_unwrap(v)))
         ELSE 'not an object: ' || v::text END $$"""

# Range fields: Django's {"bounds", "lower", "upper"} or {"empty": true}, as a string or
# an object, or a [lower, upper] pair (Django reads it with the default bounds).
_RANGE_TEXT = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_range_text(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
       SELECT CASE
         WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
         WHEN jsonb_typeof(r) = 'object' AND coalesce((r ->> 'empty')::boolean, false) THEN 'empty'
         WHEN jsonb_typeof(r) = 'object' THEN left(coalesce(r ->> 'bounds', '[)'), 1)
           || coalesce(pg_temp.squashkit_quote(r ->> 'lower'), '') || ','
           || coalesce(pg_temp.squashkit_quote(r ->> 'upper'), '') || right(coalesce(r ->> 'bounds', '[)'), 1)
         WHEN jsonb_typeof(r) = 'array' THEN '[' || coalesce(pg_temp.squashkit_quote(r ->> 0), '') || ','
           || coalesce(pg_temp.squashkit_quote(r ->> 1), '') || ')'
         ELSE 'not a range: ' || v::text END
       FROM (SELECT pg_temp.squashkit_unwrap(v) AS r) s $$"""
# Natural keys, resolved against the rows the target holds now (the source's, put back with their
# ids); one that names nothing stops the load, naming the object and the field.
_CONTENT_TYPE_LOOKUP = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_contenttype(natural_key jsonb, owner text, owner_pk jsonb,
         owner_field text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
       DECLARE found bigint;
       BEGIN
         SELECT c.id INTO found FROM {content_types} c WHERE c.app_label = natural_key ->> 0 AND c.model = natural_key ->> 1;
         IF found IS NULL THEN
           RAISE EXCEPTION '% pk %: field % names the content type %, which this database does not have',
             owner, owner_pk, owner_field, natural_key;
         END IF;
         RETURN found;
       END $$"""
_PERMISSION_LOOKUP = """CREATE OR REPLACE FUNCTION pg_temp.squashkit_permission(natural_key jsonb, owner text, owner_pk jsonb,
         owner_field text) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
       DECLARE found bigint;
       BEGIN
         SELECT p.id INTO found FROM {permissions} p JOIN {content_types} c ON c.id = p.content_type_id
         WHERE p.codename = natural_key ->> 0 AND c.app_label = natural_key ->> 1 AND c.model = natural_key ->> 2;
         IF found IS NULL THEN
           RAISE EXCEPTION '% pk %: field % names the permission %, which this database does not have',
             owner, owner_pk, owner_field, natural_key;
         END IF;
         RETURN found;
       END $$"""


def _create_functions(conn: psycopg.Connection, plans: dict[str, ModelInfo]) -> None:
    conn.execute(_UNWRAP)
    conn.execute(_QUOTE)
    conn.execute(_TEXT_ARRAY)
    conn.execute(_HSTORE_TEXT)
    conn.execute(_RANGE_TEXT)
    content_types = plans.get(CONTENT_TYPE) and resolve_table(conn, plans[CONTENT_TYPE].db_table)
    permissions = plans.get(PERMISSION) and resolve_table(conn, plans[PERMISSION].db_table)
    if content_types:
        conn.execute(sql.SQL(_CONTENT_TYPE_LOOKUP).format(content_types=_identifier(content_types)))
    if content_types and permissions:
        conn.execute(
            sql.SQL(_PERMISSION_LOOKUP).format(content_types=_identifier(content_types), permissions=_identifier(permissions))
        )


# The model label of a line, read from its head without parsing it: both writers put "model"
# first, so it is the fourth field between double quotes (``,{"model" : "app.model", ...``).
_LABEL = sql.SQL("split_part(left(doc, 400), '\"', 4)")


def _stage(conn: psycopg.Connection, fixture: Path, labels: list[str]) -> dict[str, int]:
    """COPY the file's lines as they are, indexed by model label; return the objects per label
    (``labels``: those the project defines).

    Lines are stored uncompressed (STORAGE EXTERNAL), so the large ones cost no compression
    and their head is read without the rest. Each line is parsed into jsonb once, by the
    INSERT of its model (``_objects``): keeping parsed jsonb in a table would compress it again.
    """
    conn.execute("CREATE TEMP TABLE squashkit_fx_lines (doc text) ON COMMIT DROP")
    conn.execute("ALTER TABLE squashkit_fx_lines ALTER doc SET STORAGE EXTERNAL")
    with conn.cursor() as cursor, cursor.copy("COPY squashkit_fx_lines (doc) FROM STDIN " + _COPY_IN) as copy:
        with bundlefiles.open_read(fixture) as source:
            while chunk := source.read(CHUNK):
                copy.write(chunk)
    conn.execute(sql.SQL("CREATE INDEX ON squashkit_fx_lines (({}))").format(_LABEL))
    conn.execute("ANALYZE squashkit_fx_lines")
    stray = conn.execute(
        sql.SQL("SELECT left(doc, 60) FROM squashkit_fx_lines WHERE {} = '' AND btrim(doc) NOT IN ('[', ']', '') LIMIT 1").format(_LABEL)
    ).fetchone()
    if stray:
        raise OperationFailed(f"{fixture.name} is not one object a line beginning with its model: {stray[0]!r}")
    # Per model through the index; a label no model has is found by the slower full count only
    # when the total says some line was not counted.
    known = sql.SQL(
        "SELECT label, (SELECT count(*) FROM squashkit_fx_lines WHERE {} = label) FROM unnest(%s::text[]) label"
    ).format(_LABEL)
    counts = {label: n for label, n in conn.execute(known, [labels]).fetchall() if n}
    total = conn.execute("SELECT count(*) FROM squashkit_fx_lines WHERE octet_length(doc) > 1").fetchone()[0]  # not [ ]
    if total != sum(counts.values()):
        every = sql.SQL("SELECT {0}, count(*) FROM squashkit_fx_lines WHERE {0} <> '' GROUP BY 1").format(_LABEL)
        counts = dict(conn.execute(every).fetchall())
    return counts


def _objects(label: str) -> sql.Composed:
    """One model's objects as rows ``(pk, fields, json_null)``, each line parsed once (OFFSET 0
    keeps PostgreSQL from parsing it again for every column that reads it)."""
    return sql.SQL(
        "SELECT d -> 'pk' AS pk, d -> 'fields' AS fields, d -> {} AS json_null FROM "
        "(SELECT btrim(doc, ', ')::jsonb AS d FROM squashkit_fx_lines WHERE {} = {} OFFSET 0) p"
    ).format(sql.Literal(JSON_NULL_KEY), _LABEL, sql.Literal(label))


def triggers_off(conn: psycopg.Connection, tables: list[str]) -> list[tuple[str, str, str]]:
    """Switch off the user triggers of ``tables`` (schema.name) until ``triggers_on``, inside the
    caller's transaction, before they are emptied and filled.

    pg_restore loads the data before it creates the triggers; so must this: the rows must come
    back as the source holds them (a BEFORE trigger would change them), and a trigger that
    writes elsewhere (an audit table the fixture fills too) would write twice. Before anything
    else, because PostgreSQL refuses to alter a table with deferred checks pending. Tables this
    role does not own keep theirs. Returns (table, trigger, state) for ``triggers_on``.
    """
    rows = conn.execute(
        """SELECT n.nspname || '.' || c.relname, t.tgname, t.tgenabled FROM pg_trigger t
           JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND n.nspname || '.' || c.relname = ANY(%s)
             AND pg_has_role(c.relowner, 'USAGE')
           ORDER BY 1, 2""",
        [tables],
    ).fetchall()
    for table, trigger, _state in rows:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(_identifier(table), sql.Identifier(trigger)))
    return rows


def triggers_on(conn: psycopg.Connection, disabled: list[tuple[str, str, str]]) -> None:
    """Each trigger back as it was (after ``SET CONSTRAINTS ALL IMMEDIATE``: nothing may be pending)."""
    how = {"O": sql.SQL("ENABLE"), "A": sql.SQL("ENABLE ALWAYS"), "R": sql.SQL("ENABLE REPLICA")}
    for table, trigger, state in disabled:
        conn.execute(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(_identifier(table), how[state], sql.Identifier(trigger)))


def _columns(conn: psycopg.Connection, table: str) -> dict[str, Column]:
    rows = conn.execute(
        """SELECT a.attname, tn.nspname, t.typname, a.attnotnull, a.attgenerated <> ''
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
        [_identifier(table).as_string(conn)],
    ).fetchall()
    return {name: Column(type=(schema, typname), not_null=not_null, generated=generated)
            for name, schema, typname, not_null, generated in rows}


def _target(conn: psycopg.Connection, db_table: str, label: str) -> tuple[sql.Composable, dict[str, Column]]:
    table = resolve_table(conn, db_table)
    if table is None:
        raise OperationFailed(f"{label}: table {db_table} not found; migrate the database before loading")
    return _identifier(table), _columns(conn, table)


def _column(columns: dict[str, Column], name: str, label: str) -> Column:
    if name not in columns:
        raise OperationFailed(f"{label}: column {name} not found; migrate the database before loading")
    return columns[name]


def _cast(text: sql.Composable, column: Column) -> sql.Composable:
    return sql.SQL("({})::{}").format(text, sql.Identifier(*column.type))


def _insert_model(conn: psycopg.Connection, model: ModelInfo) -> int:
    """One statement per model: its rows, and the join rows of its implicit many-to-many lists
    (in the same statement, so each line is parsed once); returns the rows of the model."""
    table, columns = _target(conn, model.db_table, model.label)
    names, values = [sql.Identifier(model.pk.column)], [_cast(sql.SQL("f.pk #>> '{}'"), _column(columns, model.pk.column, model.label))]
    for field in model.fields:
        column = _column(columns, field.column, model.label)
        if field.generated or column.generated:
            continue  # PostgreSQL computes it, as loaddata leaves it
        names.append(sql.Identifier(field.column))
        values.append(_convert(model.label, field, column))
    links = [
        sql.SQL(", {} AS ({})").format(sql.Identifier(f"m2m_{number}"), _m2m_insert(conn, model, m2m))
        for number, m2m in enumerate(model.m2m)
    ]
    query = sql.SQL("WITH f AS ({}){} INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM f").format(
        _objects(model.label), sql.SQL("").join(links), table, sql.SQL(", ").join(names), sql.SQL(", ").join(values)
    )
    return conn.execute(query).rowcount


def _convert(label: str, field: FieldPlan, column: Column) -> sql.Composable:
    """The jsonb value ``f.fields -> name`` as a value of its column, for each kind (both the
    forms jsonfixture writes and those Django writes)."""
    value = sql.SQL("f.fields -> {}").format(sql.Literal(field.name))
    text = sql.SQL("f.fields ->> {}").format(sql.Literal(field.name))
    if field.kind == "fk" and field.natural:
        return _natural(value, text, field.natural, label, sql.SQL("f.pk"), field.name, column)
    if field.kind == "binary":
        return sql.SQL("decode({}, 'base64')").format(text)
    if field.kind == "json":
        # JSON null is a value in a NOT NULL column, and in a nullable one where the writer said so.
        if column.not_null:
            null = sql.SQL("'null'::jsonb")
        else:
            null = sql.SQL("CASE WHEN f.json_null ? {} THEN 'null'::jsonb END").format(sql.Literal(field.name))
        return _cast(sql.SQL("CASE WHEN jsonb_typeof({0}) = 'null' THEN {1} ELSE {0} END").format(value, null), column)
    if field.kind in ("array", "hstore", "range"):
        function = {"array": "squashkit_text_array", "hstore": "squashkit_hstore_text", "range": "squashkit_range_text"}
        return _cast(sql.SQL("pg_temp.{}({})").format(sql.Identifier(function[field.kind]), value), column)
    return _cast(text, column)  # scalars: PostgreSQL reads the text the renderer or Django wrote


def _natural(value, text, kind: str, label: str, pk: sql.Composable, name: str, column: Column) -> sql.Composable:
    """A content type or permission given by natural key (a list) or, dangling, by id."""
    function = sql.Identifier(f"squashkit_{kind}")
    return _cast(
        sql.SQL("CASE WHEN jsonb_typeof({}) = 'array' THEN pg_temp.{}({}, {}, {}, {})::text ELSE {} END").format(
            value, function, value, sql.Literal(label), pk, sql.Literal(name), text
        ),
        column,
    )


def _m2m_insert(conn: psycopg.Connection, model: ModelInfo, m2m: M2MPlan) -> sql.Composed:
    """The join rows of one implicit many-to-many, from each owner's list in ``f`` (their own ids are new)."""
    table, columns = _target(conn, m2m.through_table, f"{model.label}.{m2m.name}")
    source = _column(columns, m2m.source_column, m2m.through_table)
    target = _column(columns, m2m.target_column, m2m.through_table)
    element = sql.SQL("e.v")
    if m2m.natural:
        value = _natural(element, sql.SQL("e.v #>> '{}'"), m2m.natural, model.label, sql.SQL("f.pk"), m2m.name, target)
    else:
        value = _cast(sql.SQL("e.v #>> '{}'"), target)
    return sql.SQL("INSERT INTO {} ({}, {}) SELECT {}, {} FROM f CROSS JOIN LATERAL jsonb_array_elements(f.fields -> {}) e(v)").format(
        table, sql.Identifier(m2m.source_column), sql.Identifier(m2m.target_column),
        _cast(sql.SQL("f.pk #>> '{}'"), source), value, sql.Literal(m2m.name),
    )


def _insert_slow_rows(conn: psycopg.Connection, path: Path) -> Counter:
    """Insert the rows Django made for the slow models: each text cast to its column's type."""
    conn.execute("CREATE TEMP TABLE squashkit_slow (d jsonb) ON COMMIT DROP")
    with conn.cursor() as cursor, cursor.copy("COPY squashkit_slow (d) FROM STDIN " + _COPY_IN) as copy:
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                copy.write(chunk)
    groups = conn.execute("SELECT d ->> 'table', min(d ->> 'model') FROM squashkit_slow GROUP BY 1 ORDER BY 1").fetchall()
    for db_table, label in groups:
        table, columns = _target(conn, db_table, label)
        natural = dict(conn.execute(
            "SELECT DISTINCT n.key, n.value ->> 0 FROM squashkit_slow, jsonb_each(d -> 'natural') n WHERE d ->> 'table' = %s",
            [db_table],
        ).fetchall())
        names = [row[0] for row in conn.execute(
            "SELECT DISTINCT k FROM squashkit_slow, jsonb_object_keys(d -> 'values') k WHERE d ->> 'table' = %s", [db_table]
        )]
        names += [name for name in natural if name not in names]
        values = []
        for name in names:
            column = _column(columns, name, db_table)
            text = sql.SQL("s.d -> 'values' ->> {}").format(sql.Literal(name))
            if name in natural:
                key = sql.SQL("s.d -> 'natural' -> {} -> 1").format(sql.Literal(name))
                function = sql.Identifier(f"squashkit_{natural[name]}")
                text = sql.SQL("CASE WHEN s.d -> 'natural' ? {} THEN pg_temp.{}({}, s.d ->> 'model', s.d -> 'pk', {})::text ELSE {} END").format(
                    sql.Literal(name), function, key, sql.Literal(name), text
                )
            values.append(_cast(text, column))
        query = sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM squashkit_slow s WHERE s.d ->> 'table' = {}").format(
            table, sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(values), sql.Literal(db_table)
        )
        conn.execute(query)
    counts = Counter(dict(conn.execute(
        "SELECT d ->> 'model', count(*) FROM squashkit_slow WHERE (d ->> 'object')::boolean GROUP BY 1"
    ).fetchall()))
    conn.execute("DROP TABLE squashkit_slow")
    return counts
