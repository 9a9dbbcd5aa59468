"""What a table holds, as hashes PostgreSQL computes: recorded in a bundle, checked after every load.

A backup records, in pg_dump's snapshot, each table's row count, a hash of its rows and one
hash per column (``read``). After a restore, a rollback or a promote, from the dump or from
the json, the rebuilt tables are hashed the same way and compared (``differences``): a table
whose content differs fails the run, naming the table and a column that differs. Row counts
alone would pass a load that changed every value of a column.

How a hash is made, and why:

- one scan per table, all in SQL: no row leaves the server;
- each row's text (``ROW(...)::text``, columns in name order so that a database built by
  another migration history, whose columns stand in another order, hashes the same), hashed
  with ``hashtextextended`` and summed: the order rows are read in does not matter;
- per column, the same over that column's values, plus how many are not NULL;
- the settings row text depends on (time zone, float digits, interval and date styles) are
  fixed for the transaction, so two sessions print the same rows the same way;
- columns a json cannot keep are left out, by name (``leave_out``): the ids of an implicit
  many-to-many table's rows, which a fixture does not carry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from pydantic import BaseModel, Field

# Row text depends on these settings (a timestamptz prints in the session's TimeZone, a float
# with extra_float_digits...): fixed so that two sessions hash the same rows the same way.
STABLE_OUTPUT = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


class TableContent(BaseModel):
    """One table's content, as hashes."""

    rows: int = Field(description="Exact row count.")
    content: str = Field(description="Order-independent hash of every row's text, columns in name order.")
    columns: dict[str, str] = Field(description="Per column: values that are not NULL, and the hash of their text.")
    left_out: list[str] = Field(default_factory=list, description="Columns not hashed: what a json cannot keep.")


@contextlib.contextmanager
def stable_output(conn: psycopg.Connection) -> Iterator[None]:
    """Fix the settings row text depends on, for the current transaction only, and put them back
    after (a caller's snapshot transaction goes on with its own settings)."""
    names = list(STABLE_OUTPUT)
    before = conn.execute(
        sql.SQL("SELECT {}").format(sql.SQL(", ").join(sql.SQL("current_setting({})").format(sql.Literal(n)) for n in names))
    ).fetchone()
    for name, value in STABLE_OUTPUT.items():
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])
    try:
        yield
    finally:
        if conn.info.transaction_status == TransactionStatus.INTRANS:
            for name, value in zip(names, before):
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])


def _columns(conn: psycopg.Connection, qualified: str) -> list[str]:
    schema, name = qualified.split(".", 1)
    return [
        row[0]
        for row in conn.execute(
            """SELECT a.attname FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attname""",
            [schema, name],
        )
    ]


def _query(qualified: str, columns: list[str]) -> sql.Composed:
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns)) if columns else sql.SQL("''")
    parts = [sql.SQL("count(*)"), sql.SQL("coalesce(sum(hashtextextended({}, 0)), 0)").format(row)]
    for column in columns:
        value = sql.SQL("{}::text").format(sql.Identifier(column))
        parts.append(sql.SQL("count({})").format(sql.Identifier(column)))
        parts.append(sql.SQL("coalesce(sum(hashtextextended({}, 0)), 0)").format(value))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), sql.Identifier(*qualified.split(".", 1)))


def table_content(conn: psycopg.Connection, qualified: str, *, leave_out: tuple[str, ...] | list[str] = ()) -> TableContent:
    """The hashes of one table (``schema.name``), in the caller's transaction with stable output."""
    columns = [c for c in _columns(conn, qualified) if c not in leave_out]
    values = conn.execute(_query(qualified, columns)).fetchone()
    per_column = {column: f"{values[2 + 2 * i]}:{values[3 + 2 * i]}" for i, column in enumerate(columns)}
    return TableContent(rows=values[0], content=str(values[1]), columns=per_column, left_out=sorted(set(leave_out)))


def read(conn: psycopg.Connection, tables: list[str], *, leave_out: dict[str, list[str]] | None = None) -> dict[str, TableContent]:
    """The hashes of every table of ``tables`` (``schema.name``) that exists, from one snapshot: the
    caller's transaction when it has one (a backup's exported snapshot), else one opened here."""
    leave_out = leave_out or {}
    result = {}
    with one_snapshot(conn), stable_output(conn):
        for table in tables:
            schema, name = table.split(".", 1)
            if conn.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, name).as_string(conn)]).fetchone()[0]:
                result[table] = table_content(conn, table, leave_out=leave_out.get(table, ()))
    return result


@contextlib.contextmanager
def one_snapshot(conn: psycopg.Connection) -> Iterator[None]:
    """The caller's transaction (and its snapshot) when there is one, else one read-only,
    repeatable-read transaction for the block."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield  # the caller's transaction, and its snapshot
        return
    autocommit, isolation = conn.autocommit, conn.isolation_level
    conn.autocommit = True  # so transaction() below opens exactly one BEGIN ... COMMIT
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            yield
    finally:
        conn.isolation_level = isolation
        conn.autocommit = autocommit


def differences(expected: dict[str, TableContent], actual: dict[str, TableContent]) -> list[str]:
    """One line per table of ``expected`` whose content ``actual`` does not have, naming a column
    that differs (or the count); empty when every table holds what was recorded."""
    found = []
    for table, want in sorted(expected.items()):
        have = actual.get(table)
        if have is None:
            found.append(f"{table} is missing")
        elif have.rows != want.rows:
            found.append(f"{table} has {have.rows} rows, the source {want.rows}")
        elif have.content != want.content:
            columns = [c for c in sorted(want.columns) if have.columns.get(c) != want.columns[c]]
            extra = sorted(set(have.columns) - set(want.columns))
            if columns:
                others = f" (and {len(columns) - 1} more columns)" if len(columns) > 1 else ""
                found.append(f"{table}: column {columns[0]} differs from the source{others}")
            elif extra:
                found.append(f"{table}: it has a column the source had not ({extra[0]})")
            else:
                found.append(f"{table}: its rows differ from the source's (the same values per column, in other rows)")
    return found
