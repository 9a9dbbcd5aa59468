"""The rows of ``django_migrations`` a squash replaces: read, saved, rewritten and put back.

A squash changes two things: the project's migration files, and the rows of django_migrations
that name them. The tables and their rows stay exactly as they are. So a squash ends with one
short transaction per database (``rewrite``): lock django_migrations against a concurrent
``migrate``, read the project apps' rows, delete them and record the new files as applied.
Third-party apps' rows are left as they are: their files do not change. Nothing else is locked,
no session is ended, and writes go on.

The rows it replaces are saved, with their ids and times, before anything is deleted: in the
run's journal and in the bundle (``history.json``, beside the tarball of the old files), so the
squash can be undone without touching the data (``put_back``, used by the undo, ``resume`` and
``squashkit rollback BUNDLE --migrations-only``).

Whether a transaction committed is read back from the rows themselves (``state``): while the
replaced ids are all there and nothing else, it did not; once the table holds the names the
squash wrote instead, it did. A killed run therefore never has to guess.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from squashkit import postgres
from squashkit.errors import BadInput, OperationFailed, first_line

FILE = "history.json"
FORMAT_VERSION = 1
TABLE = "django_migrations"  # unqualified, found through the search_path as Django finds it
# A migrate running elsewhere holds the table; waiting longer would hold up whoever queues behind us.
LOCK_TIMEOUT = "10s"

State = Literal["before", "after", "unknown"]


class Row(BaseModel):
    """One row of django_migrations."""

    id: int | None = Field(None, description="Its id; None for a row not written yet (the sequence numbers it).")
    app: str
    name: str
    applied: datetime | None = Field(None, description="When it was applied; None: the time of the transaction that writes it.")


class AliasHistory(BaseModel):
    """What a squash changed in one database's django_migrations."""

    alias: str
    database: str
    before: list[Row] = Field(description="The project apps' rows the squash replaced, ids and times included.")
    after: list[tuple[str, str]] = Field(description="(app, name) of the rows it wrote, in the order it wrote them.")


class SavedHistory(BaseModel):
    """``history.json`` in the bundle a squash used: what ``rollback --migrations-only`` puts back."""

    format_version: int = FORMAT_VERSION
    run: str = Field(description="The squash run that wrote it.")
    environment: str
    apps: list[str] = Field(description="The project's own apps: only their rows were replaced.")
    databases: list[AliasHistory]


def names(rows: list[Row]) -> list[tuple[str, str]]:
    return sorted((row.app, row.name) for row in rows)


# --- the statements, as the plan prints them and the steps send them -------------------------------


def lock_statement() -> sql.Composed:
    """Keeps a concurrent ``migrate`` from recording a row mid-rewrite; readers are not blocked."""
    return sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(TABLE))


def timeout_statement() -> sql.Composed:
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT))


def select_statement(apps: list[str]) -> sql.Composed:
    return sql.SQL("SELECT id, app, name, applied FROM {} WHERE app = ANY({}::text[]) ORDER BY id").format(
        sql.Identifier(TABLE), sql.Literal(apps))


def delete_statement(apps: list[str]) -> sql.Composed:
    return sql.SQL("DELETE FROM {} WHERE app = ANY({}::text[])").format(sql.Identifier(TABLE), sql.Literal(apps))


def insert_new_statement(table: sql.Identifier = sql.Identifier(TABLE)) -> sql.Composed:
    """New rows, numbered by the sequence in the order given, applied at the transaction's time."""
    return sql.SQL(
        "INSERT INTO {} (app, name, applied) SELECT app, name, now() "
        "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS new (app, name, position) ORDER BY position"
    ).format(table)


def insert_saved_statement(table: sql.Identifier = sql.Identifier(TABLE)) -> sql.Composed:
    """Saved rows with their own ids and times (the sequence is already past them)."""
    return sql.SQL(
        "INSERT INTO {} (id, app, name, applied) SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[])"
    ).format(table)


# --- reading and writing ----------------------------------------------------------------------------


def found(conn: psycopg.Connection) -> tuple[str | None, list[Row]]:
    """(schema.name of the django_migrations this connection's search_path finds, as Django finds it,
    and all its rows with their ids and times, in the order they were applied); (None, []) without one."""
    where = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = to_regclass('django_migrations')"""
    ).fetchone()
    if not where:
        return None, []
    query = sql.SQL("SELECT id, app, name, applied FROM {} ORDER BY applied, id").format(sql.Identifier(*where))
    return ".".join(where), [Row(id=i, app=a, name=n, applied=t) for i, a, n, t in conn.execute(query)]


def recorded_rows(entry) -> list[Row]:
    """The rows of a bundle's entry (a ``bundle.AliasBackup``) to put back: its applied migrations,
    with the ids and times it recorded (bundles before format 6 recorded neither: the sequence
    numbers them, applied now)."""
    saved = {(row.app, row.name): row for row in entry.migration_rows}
    return [saved.get((app, name)) or Row(app=app, name=name) for app, name in entry.facts.applied_migrations]


def replace_all(conn: psycopg.Connection, table: str, rows: list[Row]) -> None:
    """``table`` (schema.name of a django_migrations) emptied and given ``rows``, in the caller's
    transaction: those with an id keep it (and their time), the sequence is set past them, and rows
    without one are numbered after them, applied now."""
    schema, name = table.split(".", 1)
    qualified = sql.Identifier(schema, name)
    conn.execute(sql.SQL("TRUNCATE {}").format(qualified))
    saved = [row for row in rows if row.id is not None]
    if saved:
        conn.execute(insert_saved_statement(qualified),
                     [[r.id for r in saved], [r.app for r in saved], [r.name for r in saved], [r.applied for r in saved]])
    conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), coalesce((SELECT max(id) FROM {}), 0) + 1, false)")
                 .format(sql.Literal(qualified.as_string(conn)), qualified))
    new = [row for row in rows if row.id is None]
    if new:
        conn.execute(insert_new_statement(qualified), [[r.app for r in new], [r.name for r in new]])


def exists(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0])


def read(conn: psycopg.Connection, apps: list[str]) -> list[Row]:
    """The rows of ``apps``, oldest first."""
    return [Row(id=i, app=a, name=n, applied=t) for i, a, n, t in conn.execute(select_statement(apps))]


@contextlib.contextmanager
def _locked(params: postgres.ConnectionParams) -> Iterator[psycopg.Connection]:
    """A transaction holding django_migrations: committed by the caller, rolled back on any error
    (and by the server if this process dies before the commit)."""
    with postgres.connect(params, autocommit=False) as conn:
        try:
            conn.execute(timeout_statement())
            conn.execute(lock_statement())
            yield conn
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise


def state(conn: psycopg.Connection, apps: list[str], before: list[Row], after: list[tuple[str, str]]) -> State:
    """Whether django_migrations holds the rows a squash replaced (``before``: by id), the names it
    wrote (``after``), or something else (someone migrated since)."""
    current = read(conn, apps)
    if sorted(row.id for row in current) == sorted(row.id for row in before) and names(current) == names(before):
        return "before"
    if names(current) == sorted(after) and not {row.id for row in before} & {row.id for row in current}:
        return "after"
    return "unknown"


def rewrite(
    databases: dict[str, postgres.ConnectionParams], apps: list[str], new: dict[str, list[tuple[str, str]]],
    announce: Callable[[dict[str, list[Row]], dict[str, list[tuple[str, str]]]], None],
) -> None:
    """The squash's last change: per database, in one transaction, the rows of ``apps`` replaced by
    ``new[alias]`` (the new files, as a real migrate recorded them), for the apps that had rows
    there: an app a database never recorded stays unrecorded.

    All transactions hold their lock before ``announce(before, after)`` saves the rows they will
    replace (journal and bundle); only then is anything deleted. Each database commits on its
    own: ``state`` tells afterwards which did.
    """
    with contextlib.ExitStack() as stack:
        conns = {alias: stack.enter_context(_locked(params)) for alias, params in databases.items()}
        before = {alias: read(conn, apps) for alias, conn in conns.items()}
        after = {alias: [(a, n) for a, n in new[alias] if a in {row.app for row in before[alias]}] for alias in conns}
        announce(before, after)
        for alias, conn in conns.items():
            conn.execute(delete_statement(apps))
            if after[alias]:
                conn.execute(insert_new_statement(), [[a for a, _ in after[alias]], [n for _, n in after[alias]]])
            conn.commit()


def put_back(
    params: postgres.ConnectionParams, apps: list[str], rows: list[Row], replacing: list[tuple[str, str]],
    announce: Callable[[list[Row]], None] | None = None,
) -> bool:
    """``rows`` (saved with their ids) back in place of the rows named ``replacing``, in one
    transaction; False when they are there already. Any other content is refused, nothing changed:
    someone migrated since, and putting the rows back would hide that. ``announce`` gets the rows
    about to be replaced, locked, before anything is deleted (to journal them)."""
    with _locked(params) as conn:
        found = state(conn, apps, rows, replacing)
        if found == "before":
            conn.rollback()
            return False
        current = read(conn, apps)
        if found == "unknown":
            raise OperationFailed(
                f"django_migrations of {params.dbname} holds {len(current)} rows of the project's apps that are neither those "
                "squashkit saved nor those it wrote (a migrate ran since?): nothing was changed there"
            )
        if announce is not None:
            announce(current)
        conn.execute(delete_statement(apps))
        if rows:
            conn.execute(insert_saved_statement(), [[r.id for r in rows], [r.app for r in rows], [r.name for r in rows],
                                                    [r.applied for r in rows]])
        conn.commit()
    return True


def current_state(params: postgres.ConnectionParams, apps: list[str], before: list[Row], after: list[tuple[str, str]]) -> State:
    with postgres.connect(params) as conn:
        return state(conn, apps, before, after) if exists(conn) else "unknown"


# --- the copy in the bundle ---------------------------------------------------------------------------


def save(bundle_dir: Path, saved: SavedHistory) -> Path:
    """``history.json`` into the bundle, atomically and on disk before the rows are deleted (0600, like the bundle)."""
    path = bundle_dir / FILE
    partial = bundle_dir / f".{FILE}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(saved.model_dump_json(indent=2))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    directory = os.open(bundle_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load(bundle_dir: Path) -> SavedHistory:
    """The bundle's ``history.json``; bad input when the bundle has none (no squash used it) or it is damaged."""
    path = bundle_dir / FILE
    if not path.is_file():
        raise BadInput(
            f"{bundle_dir} holds no {FILE}: no squash rewrote django_migrations with it as its undo "
            "(use squashkit rollback BUNDLE to put the whole database back); nothing was changed"
        )
    try:
        return SavedHistory.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} cannot be read ({first_line(exc)}): nothing was changed") from None


def forget(bundle_dir: Path, run: str) -> None:
    """Remove the bundle's ``history.json`` written by ``run``, once that run's rows are back as before."""
    path = bundle_dir / FILE
    with contextlib.suppress(BadInput, OSError):
        if load(bundle_dir).run == run:
            path.unlink()
