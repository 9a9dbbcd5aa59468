"""Promote drift guard: did prod take writes since dev was refreshed from it?

The story it protects: dev is refreshed from prod (``promote prod-to-dev``), people work on
dev for a week, then ``promote dev-to-prod`` replaces prod with dev. Every order, signup or
edit prod took during that week would be dropped without a word. So:

1. when dev is refreshed from prod, squashkit records prod's fingerprint
   (``record``: ``<backup_dir>/lineage/dev.json``);
2. before dev is promoted over prod, squashkit takes prod's fingerprint again and
   ``require_unchanged`` refuses, one line plus the ``--force`` hint, when it differs;
   ``changes`` says what differs, table by table, for the log.

A fingerprint is, per user table, its exact row count and an order-independent hash of its
rows, both computed by PostgreSQL in one pass (``md5`` of each row's text, summed as two
64-bit halves): no row leaves the server, a VACUUM FREEZE, a restart or a different physical
order gives the same value, and any inserted, deleted or updated row changes it.

What is left out, and why: ``django_session`` only. Sessions are written on every login
and many page views, so on a live prod it changes within minutes and a guard that always
fires is a guard people learn to ``--force``; losing them only logs users out, which
replacing the database does anyway. Everything else counts: ``django_admin_log`` changes
only when someone edits through the admin (the edit itself shows up in its own table too,
and the log line says who), and ``django_migrations`` changes only when prod was migrated,
which is a schema change dev's promotion would silently undo.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from squashkit import content, postgres
from squashkit.errors import BadInput

FORMAT_VERSION = 1
DIRECTORY = "lineage"

# Tables whose writes never block a promotion (see the module docstring).
IGNORED_TABLES = ("django_session",)

# Count and content of one table in one scan. Each row's md5 is split in two 64-bit halves,
# each summed as numeric (no overflow): a sum does not depend on the order rows are read in.
_TABLE_PRINT = """
SELECT count(*),
       coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text,
       coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text
FROM (SELECT md5(t::text) AS h FROM {table} AS t) AS hashed
"""


class TableFingerprint(BaseModel):
    """One table's row count and content hash."""

    schema_name: str = Field(description="Schema of the table.")
    name: str = Field(description="Table name.")
    rows: int = Field(description="Exact row count.")
    content: str = Field(description="Order-independent hash of every row's text: two sums of 64-bit md5 halves.")

    @property
    def label(self) -> str:
        """``name`` for a table in public, else ``schema.name``: what a person reads in a message."""
        return self.name if self.schema_name == "public" else f"{self.schema_name}.{self.name}"


class Fingerprint(BaseModel):
    """What a database holds, table by table, at one moment (one snapshot)."""

    database: str = Field(description="current_database() when it was taken.")
    taken_at: datetime = Field(description="UTC time it was taken.")
    ignored: list[str] = Field(description="Table names left out (their writes never count as drift).")
    tables: list[TableFingerprint] = Field(description="Every user table outside extensions, by schema and name.")

    def by_table(self) -> dict[tuple[str, str], TableFingerprint]:
        return {(table.schema_name, table.name): table for table in self.tables}


class Lineage(BaseModel):
    """``<backup_dir>/lineage/<target_env>.json``: target_env was last refreshed from source_env."""

    format_version: int = FORMAT_VERSION
    source_env: str = Field(description="The environment the data came from (prod in prod-to-dev).")
    target_env: str = Field(description="The environment that received it (dev).")
    database: str = Field(description="The source's database name.")
    bundle: str | None = Field(description="The source's bundle the refresh restored.")
    recorded_at: datetime = Field(description="UTC time the record was written.")
    fingerprint: Fingerprint = Field(description="The source's fingerprint when its bundle was taken.")


# --- taking a fingerprint ---------------------------------------------------------------------------


def fingerprint(conn: psycopg.Connection, *, ignore: tuple[str, ...] = IGNORED_TABLES) -> Fingerprint:
    """Every user table's row count and content hash, all from one snapshot.

    Inside a transaction (``postgres.snapshot``, so it matches a backup) that transaction's
    snapshot is used; otherwise one repeatable-read, read-only transaction is opened for it.
    ``ignore`` holds table names (any schema) or ``schema.name`` to leave out.
    """
    tables = []
    with content.one_snapshot(conn):
        database = conn.execute("SELECT current_database()").fetchone()[0]
        with content.stable_output(conn):
            for schema, name in postgres.user_tables(conn):
                if name in ignore or f"{schema}.{name}" in ignore:
                    continue
                query = sql.SQL(_TABLE_PRINT).format(table=sql.Identifier(schema, name))
                rows, high, low = conn.execute(query).fetchone()
                tables.append(TableFingerprint(schema_name=schema, name=name, rows=rows, content=f"{high}:{low}"))
    return Fingerprint(
        database=database,
        taken_at=datetime.now(timezone.utc).replace(microsecond=0),
        ignored=sorted(ignore),
        tables=tables,
    )


# --- comparing ----------------------------------------------------------------------------------


def changes(recorded: Fingerprint, current: Fingerprint) -> list[str]:
    """What differs between two fingerprints of one database, one line per table, for people.

    e.g. ``orders_order: 1,200 -> 1,203 rows``, ``catalog_product: same count, contents changed``,
    ``new table x``, ``table y dropped``. Empty when nothing differs.
    """
    lines = []
    if recorded.database != current.database:
        lines.append(f"database {recorded.database} is now {current.database}")
    before, after = recorded.by_table(), current.by_table()
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old is None:
            lines.append(f"new table {new.label} ({new.rows:,} rows)")
        elif new is None:
            lines.append(f"table {old.label} dropped (had {old.rows:,} rows)")
        elif old.rows != new.rows:
            lines.append(f"{new.label}: {old.rows:,} -> {new.rows:,} rows")
        elif old.content != new.content:
            lines.append(f"{new.label}: same count, contents changed")
    return lines


def require_unchanged(
    backup_dir: Path,
    *,
    source_env: str,
    target_env: str,
    current: Fingerprint,
    force: bool = False,
) -> list[str]:
    """Refuse to promote ``source_env`` over ``target_env`` when the target took writes since
    the source was last refreshed from it: promoting would silently drop them.

    ``current`` is the target's fingerprint now. Returns what changed (empty when nothing did,
    or when there is no record of the source being refreshed from the target, so nothing to
    hold it to); with ``force`` it returns the changes instead of refusing, for the log.
    """
    recorded = read(backup_dir, source_env)
    if recorded is None or recorded.source_env != target_env:
        return []
    found = changes(recorded.fingerprint, current)
    if found and not force:
        shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise BadInput(
            f"{target_env} took writes since {source_env} was refreshed from it "
            f"({recorded.fingerprint.taken_at:%Y-%m-%d %H:%M} UTC): {shown}. Promoting would lose them: "
            f"refresh {source_env} first (promote {target_env}-to-{source_env}), or pass --force to replace them anyway"
        )
    return found


# --- the record on disk ------------------------------------------------------------------------------


def path_for(backup_dir: Path, target_env: str) -> Path:
    return Path(backup_dir) / DIRECTORY / f"{target_env}.json"


def record(
    backup_dir: Path,
    *,
    source_env: str,
    target_env: str,
    database: str,
    fingerprint: Fingerprint,
    bundle: Path | str | None,
) -> Path:
    """Write ``<backup_dir>/lineage/<target_env>.json`` (0600, directory 0700) atomically: a
    crash leaves the previous record or the new one, never half a file."""
    entry = Lineage(
        source_env=source_env,
        target_env=target_env,
        database=database,
        bundle=str(bundle) if bundle is not None else None,
        recorded_at=datetime.now(timezone.utc).replace(microsecond=0),
        fingerprint=fingerprint,
    )
    destination = path_for(backup_dir, target_env)
    destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target_env}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:  # mkstemp creates it 0600
            handle.write(entry.model_dump_json(indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(destination.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return destination


def read(backup_dir: Path, target_env: str) -> Lineage | None:
    """The record of ``target_env``'s last refresh, or None when there is none."""
    path = path_for(backup_dir, target_env)
    if not path.is_file():
        return None
    try:
        return Lineage.model_validate_json(path.read_text())
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise BadInput(
            f"{path} is damaged ({str(exc).splitlines()[0]}): delete it to promote without the drift check"
        ) from None
