"""db.json written by PostgreSQL itself, in the snapshot pg_dump reads.

``dumpdata`` costs 20-40 times ``pg_dump`` and reads each model in its own autocommit
transaction, so a busy database gives a db.json that matches neither itself nor the dump.
Here each model is one ``COPY (SELECT json_build_object(...) FROM table ORDER BY pk) TO
STDOUT``, run on the caller's connection, which already stands in the exported snapshot, and
streamed block by block into the file: no per-row Python, flat memory.

What each column becomes follows Django's serializer, so that plain ``manage.py loaddata``
reads the file and Django's Deserializer parses it to the objects dumpdata's would give
(``FieldPlan.kind``, decided by the probe, says how). Where the two differ, the SQL side is
the more faithful one: datetimes keep their microseconds, JSON numbers their digits, and a
many-to-many list holds every row of the join table, also those the target's default manager
hides. A FileField's NULL stays ``null`` (Django writes ``""``).

A model the renderer cannot write the way Django does (``ModelInfo.slow_reason``: a field
with its own ``value_to_string``, a type squashkit does not know, a multi-dimensional array...)
is serialized by Django, in the project, in the same snapshot (``inproject/serialize.py``),
and its lines are spliced in at its place.

The file keeps db.json's shape: a JSON array, one object per line, the separating comma at the
head of every line but the first (``read_counts`` reads both this and the older trailing-comma
shape). Content types and permissions head it in natural-key form, as ``write_fixture`` does.
A JSON ``null`` stored in a nullable jsonb column is told apart from SQL NULL by an extra
top-level key, ``"squashkit_json_null": [field, ...]``, which loaddata ignores.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

from squashkit import bundlefiles, progress
from squashkit.errors import OperationFailed
from squashkit.fixture import NaturalKeys, _dumps, _identifier
from squashkit.postgres import resolve_table
from squashkit.project import FieldPlan, ManagePy, ModelInfo, run_runner

JSON_NULL_KEY = "squashkit_json_null"
# What PostgreSQL prints must not depend on the server's or the role's defaults.
SESSION = {
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",  # '-1 days +23:59:55', which Django's parse_duration reads
    "DateStyle": "ISO, MDY",
    "extra_float_digits": "1",  # shortest exact float text
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}
# to_json escapes every control character, so no line holds these bytes: CSV mode with them as
# quote and delimiter writes each value verbatim (text mode would double every backslash).
_COPY_OUT = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')")


def write_fixture_sql(
    conn: psycopg.Connection,
    models: list[ModelInfo],
    destination: Path,
    *,
    keys: NaturalKeys | None = None,
    slow_lines: dict[str, Path] | None = None,
    naive_time_zone: str | None = None,
    recipients: list | None = None,
    compress: bool = False,
    progress_total: int | None = None,
) -> Counter:
    """Write db.json for ``models`` (dumpdata's order, excludes and unmanaged models already
    left out) from ``conn``, and count its objects by model.

    ``conn`` stands in a transaction the caller opened (the backup's repeatable-read snapshot);
    the session settings this needs are set for the transaction and put back afterwards.
    ``keys`` heads the file with the content types and permissions and writes references to
    them by natural key; ``slow_lines`` holds, per model with a ``slow_reason``, the file
    ``serialize_slow_models`` wrote for it. ``naive_time_zone``: the project's TIME_ZONE when
    USE_TZ is False (``ProjectInfo.naive_time_zones``). ``recipients`` and ``compress``: how the
    file is sealed on its way to the disk (``bundlefiles.open_write``).
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        raise ValueError("write_fixture_sql reads inside the caller's snapshot transaction; none is open")
    slow_lines = slow_lines or {}
    settings = {**SESSION, "TimeZone": naive_time_zone or "UTC"}
    saved = {name: conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0] for name in settings}
    counts: Counter = Counter()
    try:
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", [name, value])
        with bundlefiles.open_write(destination, recipients, compress=compress) as out:
            out.write(b"[\n")
            lines = _Lines(out)
            for obj in keys.header_objects() if keys else []:
                lines.write(b"," + _dumps(obj) + b"\n")
                counts[obj["model"]] += 1
            for model in models:
                if model.slow_reason:
                    counts[model.label] = _splice(lines, model, slow_lines.get(model.label), keys)
                else:
                    query = _model_query(conn, model, keys, naive=naive_time_zone is not None)
                    with conn.cursor() as cursor, cursor.copy(query) as copy:
                        for block in copy:
                            counts[model.label] += lines.write(bytes(block))
                            progress.update(destination.name, counts.total(), progress_total, "rows")
            out.write(b"]\n")
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            for name, value in saved.items():
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])
    return +counts


class _Lines:
    """Writes whole lines that each start with the separating comma, except the very first object."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.first = True

    def write(self, block: bytes) -> int:
        if not block:
            return 0
        if self.first:
            block = block[1:]  # the first object of the array takes no comma
            self.first = False
        self.out.write(block)
        return block.count(b"\n")


def _splice(lines: _Lines, model: ModelInfo, path: Path | None, keys: NaturalKeys | None) -> int:
    """Copy the lines Django wrote for a slow model, with content types and permissions by natural key."""
    if path is None:
        raise OperationFailed(f"{model.label} must be serialized by Django ({model.slow_reason}) but its lines are missing")
    count = 0
    rewrite = model.natural_key_fields if keys else {}
    with path.open("rb") as source:
        for raw in source:
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            if rewrite:
                line = _dumps(keys.rewrite(json.loads(line), rewrite))
            lines.write(b"," + line + b"\n")
            count += 1
    return count


# --- one model's query ------------------------------------------------------------------------------


def _model_query(conn: psycopg.Connection, model: ModelInfo, keys: NaturalKeys | None, *, naive: bool) -> sql.Composed:
    """``COPY (SELECT ',' || <object> FROM table m ORDER BY m.pk) TO STDOUT`` for one model."""
    table = resolve_table(conn, model.db_table)
    if table is None or model.pk is None:
        raise OperationFailed(f"{model.label}: table {model.db_table} not found, so it cannot be written to the fixture")
    column = sql.SQL("m.{}").format
    natural = _natural_tables(keys)
    pk = _value(model.pk.target_kind or model.pk.kind, column(sql.Identifier(model.pk.column)), naive)
    members = []
    for field in model.fields:
        members += [sql.Literal(field.name), _field_value(field, column(sql.Identifier(field.column)), natural, naive)]
    for m2m in model.m2m:
        members += [sql.Literal(m2m.name), _m2m_value(conn, model, m2m, natural, naive)]
    build = sql.SQL("json_build_object('model', {}, 'pk', {}, 'fields', json_build_object({}){})").format
    obj = build(sql.Literal(model.label), pk, sql.SQL(", ").join(members), sql.SQL(""))
    json_nulls = [f for f in model.fields if f.kind == "json" and f.null]
    if json_nulls:
        # Only rows holding a JSON null in a nullable column carry the extra key; the
        # condition picks one of two objects, so the others cost nothing more.
        is_null = [sql.SQL("jsonb_typeof({}::jsonb) = 'null'").format(column(sql.Identifier(f.column))) for f in json_nulls]
        names = [sql.SQL("CASE WHEN {} THEN {} END").format(test, sql.Literal(f.name)) for test, f in zip(is_null, json_nulls)]
        marker = sql.SQL(", {}, to_json(array_remove(ARRAY[{}]::text[], NULL))").format(
            sql.Literal(JSON_NULL_KEY), sql.SQL(", ").join(names)
        )
        marked = build(sql.Literal(model.label), pk, sql.SQL(", ").join(members), marker)
        obj = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(sql.SQL(" OR ").join(is_null), marked, obj)
    select = sql.SQL("SELECT ',' || {}::text FROM {} m ORDER BY m.{}").format(
        obj, _identifier(table), sql.Identifier(model.pk.column)
    )
    return _COPY_OUT.format(select)


def _natural_tables(keys: NaturalKeys | None) -> dict[str, sql.Composable]:
    if keys is None or keys.content_type_table is None:
        return {}
    tables = {"contenttype": _identifier(keys.content_type_table)}
    if keys.permission_table:
        tables["permission"] = _identifier(keys.permission_table)
    return tables


def _field_value(field: FieldPlan, column: sql.Composable, natural: dict[str, sql.Composable], naive: bool) -> sql.Composable:
    if field.kind == "fk" and field.natural in natural:
        return _natural_value(field.natural, column, natural)
    return _value(field.target_kind if field.kind == "fk" else field.kind, column, naive, field.base_kind)


def _natural_value(kind: str, column: sql.Composable, natural: dict[str, sql.Composable]) -> sql.Composable:
    """A content type as [app_label, model], a permission as [codename, app_label, model]; an id
    that names nothing stays an id (as ``NaturalKeys.rewrite`` leaves it)."""
    if kind == "contenttype":
        lookup = sql.SQL("(SELECT json_build_array(c.app_label, c.model) FROM {} c WHERE c.id = {})").format(
            natural["contenttype"], column
        )
    else:
        lookup = sql.SQL(
            "(SELECT json_build_array(p.codename, c.app_label, c.model) FROM {} p JOIN {} c ON c.id = p.content_type_id "
            "WHERE p.id = {})"
        ).format(natural["permission"], natural["contenttype"], column)
    return sql.SQL("coalesce({}, to_json({}))").format(lookup, column)


def _value(kind: str, column: sql.Composable, naive: bool, base_kind: str | None = None) -> sql.Composable:
    """The JSON Django's serializer writes for a column of this kind (design: docs fast-fixture.md §3)."""
    if kind == "float":
        # to_json writes -0 (a JSON integer zero) and "NaN"/"Infinity" as strings; Django reads
        # the strings, and "-0" keeps the sign that JSON's -0 loses on the way back.
        return sql.SQL("CASE WHEN {0} = 0 AND {0}::text = '-0' THEN '\"-0\"'::json ELSE to_json({0}) END").format(column)
    if kind in ("decimal", "duration"):
        return sql.SQL("{}::text").format(column)  # a JSON number would become a float
    if kind == "datetime" and naive:
        return sql.SQL("{}::timestamp").format(column)  # USE_TZ = False: local time, no offset
    if kind == "binary":
        return sql.SQL("translate(encode({}, 'base64'), E'\\n', '')").format(column)
    if kind == "json":
        return sql.SQL("{}::jsonb").format(column)  # a json column would keep its raw newlines
    if kind == "array" and base_kind == "bool":
        # bool::text is 'true', which BooleanField.to_python refuses; Django writes str(True).
        return sql.SQL(
            "CASE WHEN {0} IS NOT NULL THEN to_json(ARRAY(SELECT CASE WHEN e THEN 'True' WHEN NOT e THEN 'False' END "
            "FROM unnest({0}) WITH ORDINALITY u(e, n) ORDER BY n))::text END"
        ).format(column)
    if kind == "array":
        element = sql.SQL("timestamp[]" if base_kind == "datetime" and naive else "text[]")
        return sql.SQL("to_json({}::{}::text[])::text").format(column, element)
    if kind == "hstore":
        return sql.SQL("to_json({})::text").format(column)
    if kind == "range":
        return _range_value(column, naive and base_kind == "datetime")
    if kind == "geometry":
        return sql.SQL("{}::text").format(column)  # HEXEWKB; to_json would give GeoJSON
    return column  # plain, bool, date, time, datetime, file: to_json's own form


def _range_value(column: sql.Composable, naive: bool) -> sql.Composable:
    bound = sql.SQL("{}::timestamp::text" if naive else "{}::text").format
    lower, upper = bound(sql.SQL("lower({})").format(column)), bound(sql.SQL("upper({})").format(column))
    return sql.SQL(
        "CASE WHEN {0} IS NULL THEN NULL WHEN isempty({0}) THEN '{{\"empty\": true}}' "
        "ELSE json_build_object('bounds', CASE WHEN lower_inc({0}) THEN '[' ELSE '(' END "
        "|| CASE WHEN upper_inc({0}) THEN ']' ELSE ')' END, 'lower', {1}, 'upper', {2})::text END"
    ).format(column, lower, upper)


def _m2m_value(conn: psycopg.Connection, model: ModelInfo, m2m, natural: dict[str, sql.Composable], naive: bool) -> sql.Composable:
    """The owner's list of target pks, read from the join table itself: a default manager that
    filters the targets cannot hide links here (dumpdata's list would lose them)."""
    through = resolve_table(conn, m2m.through_table)
    if through is None:
        raise OperationFailed(f"{model.label}.{m2m.name}: table {m2m.through_table} not found")
    target = sql.SQL("t.{}").format(sql.Identifier(m2m.target_column))
    if m2m.natural in natural:
        element = _natural_value(m2m.natural, target, natural)
    else:
        element = _value(m2m.target_kind, target, naive)
    return sql.SQL("(SELECT coalesce(json_agg({} ORDER BY {}), '[]'::json) FROM {} t WHERE t.{} = m.{})").format(
        element, target, _identifier(through), sql.Identifier(m2m.source_column), sql.Identifier(model.pk.column)
    )


# --- the slow path: Django's serializer, in the project, in the same snapshot -----------------------


def serialize_slow_models(
    manage: ManagePy, alias: str, models: list[ModelInfo], snapshot_id: str | None, directory: Path
) -> dict[str, Path]:
    """Have the project serialize ``models`` with Django's serializer (``inproject/serialize.py``)
    inside the exported snapshot ``snapshot_id``; return each model's file of lines for
    ``write_fixture_sql(slow_lines=...)``.

    The snapshot must still be held by the connection that exported it. None (a hot standby,
    where no snapshot can be exported) reads the database as it is now.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = {model.label: directory / f"{model.label}.jsonl" for model in models}
    if not models:
        return files
    arguments = {"alias": alias, "snapshot": snapshot_id, "models": {label: str(path) for label, path in files.items()}}
    labels = ", ".join(files)
    run_runner(manage, "serialize", arguments, what=f"Django's serializer for {labels}")
    return files


def slow_models(models: list[ModelInfo]) -> dict[str, str]:
    """label -> why, for the models Django itself must write and read (for the log and the manifest)."""
    return {model.label: model.slow_reason for model in models if model.slow_reason}


def iter_fixture_objects(path: Path) -> Iterator[dict]:
    """Every object of a db.json, one line at a time (either comma shape), for tests and checks."""
    with bundlefiles.open_read(path) as handle:
        for raw in handle:
            line = raw.strip().strip(b",")
            if line and line not in (b"[", b"]"):
                yield json.loads(line)
