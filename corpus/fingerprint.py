"""What a database holds, per table, computed here and not by squashkit: the corpus checks
squashkit's own verification against an independent one.

A table's fingerprint is its row count and the md5 of its rows' text (columns in name order, so
that two migration histories that put columns in another order hash the same), the rows sorted
by that text. The output settings row text depends on are fixed for the session.
``django_migrations`` is fingerprinted apart, as the set of (app, name) it records: its ids and
applied times are not data a user wrote.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

STABLE = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "topology", "tiger", "tiger_data")
MIGRATIONS = "django_migrations"


def connect(dbname: str) -> psycopg.Connection:
    conn = psycopg.connect(dbname=dbname, autocommit=True)
    for name, value in STABLE.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    return conn


def tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
           ORDER BY 1, 2""",
        [list(SYSTEM_SCHEMAS)],
    ).fetchall()


def columns(conn: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str, bool]]:
    """(name, type, not null) of every column, in name order."""
    return conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1""",
        [schema, table],
    ).fetchall()


def table_fingerprint(conn: psycopg.Connection, schema: str, table: str, *, without_ids: bool = False) -> str:
    """Its row count and md5; ``without_ids``: leaving out ``id`` and every ``*_id`` column, to tell
    rows that differ only by the ids a build happened to give them."""
    names = [name for name, _type, _nn in columns(conn, schema, table)
             if not (without_ids and (name == "id" or name.endswith("_id")))]
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(n) for n in names))
    query = sql.SQL("SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '-') FROM (SELECT {} AS r FROM {}.{}) t").format(
        row, sql.Identifier(schema), sql.Identifier(table)
    )
    count, digest = conn.execute(query).fetchone()
    if without_ids:
        return f"{count} rows {digest[:12]}"
    return f"{count} rows {digest[:12]} {table_fingerprint(conn, schema, table, without_ids=True).split()[-1]}"


def database(dbname: str) -> dict[str, str]:
    """{schema.table: "N rows md5"} for every table, and {"migrations:<schema>": sorted app.name list}."""
    result: dict[str, str] = {}
    with connect(dbname) as conn:
        for schema, table in tables(conn):
            key = f"{schema}.{table}"
            if table == MIGRATIONS:
                rows = conn.execute(
                    sql.SQL("SELECT app || '.' || name FROM {}.{} ORDER BY 1").format(sql.Identifier(schema), sql.Identifier(table))
                ).fetchall()
                result[f"migrations:{key}"] = "\n".join(r[0] for r in rows)
            else:
                result[key] = table_fingerprint(conn, schema, table)
    return result


def schema(dbname: str) -> dict[str, str]:
    """{schema.table: its columns with type and nullability}: what two fresh builds must share."""
    with connect(dbname) as conn:
        return {
            f"{s}.{t}": "; ".join(f"{n} {ty}{' not null' if nn else ''}" for n, ty, nn in columns(conn, s, t))
            for s, t in tables(conn)
        }


def extension_tables(dbname: str) -> set[str]:
    """schema.table of the tables an extension owns (PostGIS's spatial_ref_sys): CREATE EXTENSION
    makes them, so a dump leaves their rows out."""
    with connect(dbname) as conn:
        return {f"{s}.{t}" for s, t in conn.execute(
            """SELECT n.nspname, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind IN ('r', 'p')""")}


def data_only(fingerprint: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fingerprint.items() if not k.startswith("migrations:")}


def first_difference(expected: dict[str, str], actual: dict[str, str], *, what: str = "") -> str | None:
    """None when equal, else one line naming the first table that differs and how."""
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            return f"{what}{key} missing"
        if key not in expected:
            return f"{what}{key} extra"
        if expected[key] != actual[key]:
            if not key.startswith("migrations:") and expected[key].split()[::3] == actual[key].split()[::3]:
                continue  # the same rows but for their ids: see ids_only_differences
                old, new = set(expected[key].split("\n")), set(actual[key].split("\n"))
                gone, more = sorted(old - new), sorted(new - old)
                return f"{what}{key}: {len(gone)} rows gone (e.g. {gone[:1]}), {len(more)} new (e.g. {more[:1]})"
            return f"{what}{key}: expected {short(expected[key])}, got {short(actual[key])}"
    return None


def short(value: str) -> str:
    return " ".join(value.split()[:3])


def ids_only_differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Tables whose rows are the same once ``id`` and ``*_id`` columns are left out, but not with them
    (an implicit many-to-many table's ids, which a json does not keep; ids a build gives in another order)."""
    return sorted(k for k in set(expected) & set(actual) if not k.startswith("migrations:")
                  and expected[k] != actual[k] and expected[k].split()[::3] == actual[k].split()[::3])


def total_rows(fingerprint: dict[str, str]) -> int:
    return sum(int(v.split()[0]) for k, v in fingerprint.items() if not k.startswith("migrations:"))


def differing_tables(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Every table whose rows differ between two fingerprints, each marked "(ids only)" when the
    rows are the same once ``id`` and ``*_id`` columns are left out."""
    a, b = data_only(a), data_only(b)
    found = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            found.append(f"{key} ({'missing' if key not in b else 'extra'} in the second)")
        elif a[key] != b[key]:
            same = a[key].split()[::3] == b[key].split()[::3]
            found.append(f"{key} ({'ids only' if same else short(a[key]) + ' vs ' + short(b[key])})")
    return found
