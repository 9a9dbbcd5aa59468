"""Talking to PostgreSQL: connections, catalog facts, and creating, renaming and dropping databases.

Rules this module keeps for everyone else:
- a password never leaves ``ConnectionParams`` except to libpq (client programs get it
  through ``clients.client_env``'s private passfile, never on a command line);
- identifiers are quoted by ``psycopg.sql.Identifier``, values travel as parameters;
- a client program's exit code and stderr are always checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from squashkit.errors import BadInput, OperationFailed

# Django OPTIONS keys that are libpq connection parameters, with their environment variable.
LIBPQ_OPTIONS = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "service": "PGSERVICE",
    "passfile": "PGPASSFILE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
}


class ConnectionParams(BaseModel):
    """How to reach one database, taken from a Django ``DATABASES`` entry. Never prints its password."""

    dbname: str = Field(description="Database name (Django's NAME).")
    user: str | None = Field(None, description="Role (USER); libpq's default when empty.")
    password: SecretStr | None = Field(None, description="PASSWORD; kept out of argv, logs and manifests.")
    host: str | None = Field(None, description="HOST; libpq's default (PGHOST or the socket) when empty.")
    port: int | None = Field(None, description="PORT.")
    options: dict[str, str] = Field(default_factory=dict, description="libpq parameters from OPTIONS.")

    @classmethod
    def from_django(cls, settings: dict) -> ConnectionParams:
        options = {
            key: str(value)
            for key, value in (settings.get("OPTIONS") or {}).items()
            if key in LIBPQ_OPTIONS and value is not None
        }
        port = settings.get("PORT")
        return cls(
            dbname=settings.get("NAME") or "",
            user=settings.get("USER") or None,
            password=settings.get("PASSWORD") or None,
            host=settings.get("HOST") or None,
            port=int(port) if port not in (None, "") else None,
            options=options,
        )

    def with_dbname(self, dbname: str) -> ConnectionParams:
        return self.model_copy(update={"dbname": dbname})

    def describe(self) -> str:
        """``user@host:port/dbname`` for messages; never the password."""
        host = self.host or os.environ.get("PGHOST") or "local socket"
        port = self.port or os.environ.get("PGPORT") or 5432
        user = self.user or os.environ.get("PGUSER") or "(default user)"
        return f"{user}@{host}:{port}/{self.dbname}"

    def psycopg_kwargs(self) -> dict:
        kwargs: dict = {"dbname": self.dbname, **self.options}
        for key in ("user", "host", "port"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        kwargs.setdefault("connect_timeout", "10")
        kwargs.setdefault("application_name", "squashkit")
        return kwargs


# --- connections ------------------------------------------------------------------------------


def _explain(exc: psycopg.OperationalError, params: ConnectionParams) -> str:
    """Turn libpq's multi-line error into one line that says what to do."""
    text = str(exc).strip()
    where = params.describe()
    if "password authentication failed" in text:
        return f"wrong password for {where} (check the environment's DATABASE settings)"
    if "no password supplied" in text:
        return f"{where} needs a password and none was given"
    if re.search(r'database ".*" does not exist', text):
        return f"database {params.dbname!r} does not exist on {where} (create it, or check NAME)"
    if re.search(r'role ".*" does not exist', text):
        return f"role {params.user!r} does not exist on {where}"
    if "Connection refused" in text or "could not connect" in text or "timeout expired" in text or "could not translate host" in text:
        return f"cannot reach the PostgreSQL server for {where}: is it running, and are HOST/PORT right?"
    last = [line for line in text.splitlines() if line.strip()]
    return f"cannot connect to {where}: {last[-1] if last else text}"


@contextlib.contextmanager
def connect(params: ConnectionParams, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """A psycopg connection; connection failures become one-line ``BadInput`` errors."""
    try:
        conn = psycopg.connect(**params.psycopg_kwargs(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise BadInput(_explain(exc, params)) from None
    try:
        yield conn
    finally:
        conn.close()


# --- catalog facts ----------------------------------------------------------------------------


class TableCount(BaseModel):
    schema_name: str = Field(alias="schema", description="Schema of the table.")
    name: str = Field(description="Table name.")
    rows: int = Field(description="Exact row count (count(*)) at backup time.")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"


class SequenceState(BaseModel):
    """One sequence as ``setval(name, last_value, is_called)`` would put it back."""

    last_value: int
    is_called: bool = Field(description="False: nextval returns last_value itself (never used yet, or reset).")
    owned_by: str | None = Field(
        None, description="schema.table.column of the serial or identity column that owns it; None for a free sequence."
    )


class DatabaseFacts(BaseModel):
    """What a database is, read in one transaction (the same snapshot pg_dump uses)."""

    server_version: str = Field(description="server_version, e.g. '15.18 (Debian ...)'.")
    server_version_num: int = Field(description="server_version_num, e.g. 150018.")
    encoding: str
    collate: str
    ctype: str
    owner: str = Field(description="The database's owner role.")
    extensions: dict[str, str] = Field(description="Installed extensions and their versions.")
    schemas: list[str] = Field(description="Non-system schemas.")
    tables: list[TableCount] = Field(description="Every ordinary table outside system schemas and extensions.")
    applied_migrations: list[tuple[str, str]] = Field(
        description="(app, name) rows of django_migrations, in the order they were applied."
    )
    django_migrations_table: str | None = Field(
        None, description="schema.name of django_migrations, if the database has one."
    )
    sequences: dict[str, SequenceState] = Field(
        default_factory=dict,
        description="Every sequence outside system schemas and extensions, by schema.name. Sequences are not "
        "transactional: each was read after the snapshot was taken, so it is at least as far as any id the snapshot holds.",
    )


_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname <> ALL(%(system)s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

# Sequences and the column each belongs to: 'a' links a serial's sequence to its column,
# 'i' an identity column's.
_SEQUENCES = """
SELECT n.nspname, c.relname, tn.nspname, t.relname, a.attname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE c.relkind = 'S'
  AND n.nspname <> ALL(%(system)s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e
                  WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
ORDER BY n.nspname, c.relname
"""


def database_locale(conn: psycopg.Connection, dbname: str) -> tuple[str, str, str] | None:
    """(encoding, collate, ctype) of a database, or None when it does not exist."""
    return conn.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s", [dbname]
    ).fetchone()


def installed_extensions(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT extname FROM pg_extension ORDER BY extname")]


def user_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(schema, table) of every ordinary user table outside system schemas and extensions, sorted."""
    return [(schema, name) for schema, name in conn.execute(_TABLES, {"system": list(_SYSTEM_SCHEMAS)}).fetchall()]


def _count_rows(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(schema, table, exact row count) of every ordinary user table outside extensions."""
    counted = []
    for schema, name in user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        counted.append((schema, name, conn.execute(query).fetchone()[0]))
    return counted


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """``schema.table -> rows`` for every ordinary user table outside extensions."""
    return {f"{schema}.{name}": rows for schema, name, rows in _count_rows(conn)}


def read_facts(conn: psycopg.Connection) -> DatabaseFacts:
    """Everything the manifest records about a database, from the connection's current snapshot."""
    one = conn.execute(
        """SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                  pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_get_userbyid(d.datdba)
           FROM pg_database d WHERE d.datname = current_database()"""
    ).fetchone()
    extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY extname").fetchall())
    schemas = [
        row[0]
        for row in conn.execute(
            """SELECT nspname FROM pg_namespace
               WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%' ORDER BY nspname""",
            [list(_SYSTEM_SCHEMAS)],
        )
    ]
    tables = [TableCount(schema=schema, name=name, rows=rows) for schema, name, rows in _count_rows(conn)]
    from squashkit import history  # history reads and writes through this module

    migrations_table, recorded = history.found(conn)
    applied = [(row.app, row.name) for row in recorded]
    return DatabaseFacts(
        server_version=one[0],
        server_version_num=one[1],
        encoding=one[2],
        collate=one[3],
        ctype=one[4],
        owner=one[5],
        extensions=extensions,
        schemas=schemas,
        tables=tables,
        applied_migrations=applied,
        django_migrations_table=migrations_table,
        sequences=read_sequences(conn),
    )


def read_sequences(conn: psycopg.Connection) -> dict[str, SequenceState]:
    """Every sequence outside system schemas and extensions, by schema.name, where it stands now."""
    sequences = {}
    for schema, name, table_schema, table, column in conn.execute(_SEQUENCES, {"system": list(_SYSTEM_SCHEMAS)}).fetchall():
        query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
        last_value, is_called = conn.execute(query).fetchone()
        sequences[f"{schema}.{name}"] = SequenceState(
            last_value=last_value,
            is_called=is_called,
            owned_by=f"{table_schema}.{table}.{column}" if column else None,
        )
    return sequences


def django_quoted(db_table: str) -> str:
    """A model's db_table quoted exactly as Django quotes it (``quote_name``): in double quotes,
    nothing escaped, so ``'data"."places_site'`` (the schema hack) names ``"data"."places_site"``."""
    return db_table if db_table.startswith('"') and db_table.endswith('"') else f'"{db_table}"'


def resolve_table(conn: psycopg.Connection, db_table: str) -> str | None:
    """``schema.name`` of a Django model's db_table as this connection's search_path sees it (and
    as Django sees it: a db_table naming its schema is found in that schema)."""
    quoted = django_quoted(db_table)
    row = conn.execute(
        """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = to_regclass(%s)""",
        [quoted],
    ).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def snapshot(conn: psycopg.Connection) -> Iterator[str | None]:
    """Hold a repeatable-read transaction and export its snapshot, so pg_dump sees what we count.

    Yields the snapshot id for ``pg_dump --snapshot``, or None where export is impossible
    (a hot standby); then the dump and the counts may differ if the database is being written.
    """
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            try:
                snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            except psycopg.errors.FeatureNotSupported:
                snapshot_id = None
            yield snapshot_id
    finally:
        conn.autocommit = True


@contextlib.contextmanager
def in_snapshot(params: ConnectionParams, snapshot_id: str) -> Iterator[psycopg.Connection]:
    """Another connection that sees exactly what the exporting one sees (``SET TRANSACTION
    SNAPSHOT``): several readers of one moment, side by side. The exporting transaction must
    still be open when this starts."""
    with connect(params, autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            yield conn


# --- recreating a database ----------------------------------------------------------------------


class Session(BaseModel):
    """Another session connected to a database we are about to drop."""

    pid: int
    user: str | None
    application: str | None
    client: str | None

    def describe(self) -> str:
        return f"pid {self.pid} ({self.user or '?'}, {self.application or 'no application name'}, {self.client or 'local'})"


def other_sessions(conn: psycopg.Connection, dbname: str) -> list[Session]:
    rows = conn.execute(
        """SELECT pid, usename, application_name, client_addr::text FROM pg_stat_activity
           WHERE datname = %s AND pid <> pg_backend_pid()""",
        [dbname],
    ).fetchall()
    return [Session(pid=pid, user=user, application=app or None, client=client) for pid, user, app, client in rows]


def sessions_we_cannot_end(conn: psycopg.Connection, dbname: str) -> list[Session]:
    """Other sessions on ``dbname`` that the current user has no right to terminate."""
    rows = conn.execute(
        """SELECT pid, usename, application_name, client_addr::text FROM pg_stat_activity
           WHERE datname = %s AND pid <> pg_backend_pid() AND usesysid IS NOT NULL
             AND NOT pg_has_role(current_user, usesysid, 'USAGE')
             AND NOT (pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
                      AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = usesysid))""",
        [dbname],
    ).fetchall()
    return [Session(pid=pid, user=user, application=app or None, client=client) for pid, user, app, client in rows]


def database_exists(conn: psycopg.Connection, dbname: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone() is not None


def drop_database(conn: psycopg.Connection, dbname: str, *, attempts: int = 10) -> None:
    """End the other sessions we may end, then drop the database, waiting briefly for the rest.

    Not ``DROP DATABASE ... WITH (FORCE)``: for a user who is not a superuser, FORCE fails
    outright when an autovacuum worker happens to be in the database ("must be a member of the
    role whose process is being terminated"), while a plain DROP makes autovacuum step aside.
    Sessions of other roles that we may not end make the drop fail with their names.
    """
    _retry_while_in_use(conn, [dbname], lambda: conn.execute(drop_database_statement(dbname)), attempts, "it was not dropped")


def end_sessions(conn: psycopg.Connection, dbname: str) -> None:
    """Terminate the other sessions on ``dbname`` that the current user may end."""
    conn.execute(
        """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = %s AND pid <> pg_backend_pid() AND usesysid IS NOT NULL
             AND (pg_has_role(current_user, usesysid, 'USAGE')
                  OR (pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
                      AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = usesysid)))""",
        [dbname],
    )


def _retry_while_in_use(conn: psycopg.Connection, dbnames: list[str], act, attempts: int, outcome: str) -> None:
    """End the sessions we may end on ``dbnames`` and ``act``; retry while new sessions keep arriving."""
    for attempt in range(attempts):
        for dbname in dbnames:
            end_sessions(conn, dbname)
        try:
            act()
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                sessions = [s.describe() for dbname in dbnames for s in other_sessions(conn, dbname)]
                raise OperationFailed(
                    f"database {' and '.join(dbnames)} is still in use by sessions squashkit may not end "
                    f"({', '.join(sessions) or 'sessions now gone'}): stop them or configure an admin connection; {outcome}"
                ) from None
            time.sleep(0.5)


def database_comment(conn: psycopg.Connection, dbname: str) -> str | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [dbname]
    ).fetchone()
    return row[0] if row else None


def comment_on_database(conn: psycopg.Connection, dbname: str, text: str | None) -> None:
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(text)))


def swap_databases(conn: psycopg.Connection, *, live: str, new: str, previous: str, comment: str, attempts: int = 10) -> bool:
    """In one transaction: ``live`` becomes ``previous`` (when it exists) and ``new`` becomes ``live``.

    ALTER DATABASE ... RENAME is transactional, so the live name is missing for no reader:
    either both renames happen or neither. Returns whether there was a live database to keep.
    """
    had_live = database_exists(conn, live)

    def rename() -> None:
        with conn.transaction():
            if had_live:
                conn.execute(rename_database_statement(live, previous))
                comment_on_database(conn, previous, comment)
            conn.execute(rename_database_statement(new, live))
            comment_on_database(conn, live, None)

    _retry_while_in_use(conn, [live, new] if had_live else [new], rename, attempts, "nothing was renamed")
    return had_live


def exchange_databases(conn: psycopg.Connection, *, live: str, kept: str, spare: str, comment: str, attempts: int = 10) -> None:
    """In one transaction, ``kept`` takes the live name and the live database the kept one's
    (through the unused name ``spare``): a rollback to the kept database that loses nothing."""

    def exchange() -> None:
        with conn.transaction():
            conn.execute(rename_database_statement(live, spare))
            conn.execute(rename_database_statement(kept, live))
            conn.execute(rename_database_statement(spare, kept))
            comment_on_database(conn, kept, comment)
            comment_on_database(conn, live, None)

    _retry_while_in_use(conn, [live, kept], exchange, attempts, "nothing was renamed")


def rename_database_statement(old: str, new: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))


def drop_database_statement(dbname: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname))


def create_database_statement(dbname: str, owner: str, encoding: str, collate: str, ctype: str) -> sql.Composed:
    """CREATE DATABASE from template0 with the source's encoding and locale, owned by the target's user."""
    return sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(dbname), sql.Identifier(owner), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
    )


def create_extension_statement(name: str) -> sql.Composed:
    return sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))


def create_extension(params: ConnectionParams, admin: ConnectionParams | None, name: str) -> None:
    """CREATE EXTENSION in ``params``' database as its user, else through the admin connection.

    Untrusted extensions need a superuser; the user's own attempt comes first so that a
    trusted one (pg_trgm) is owned by the user, as on the source.
    """
    statement = create_extension_statement(name)
    try:
        with connect(params) as conn:
            conn.execute(statement)
        return
    except psycopg.errors.InsufficientPrivilege:
        if admin is None:
            raise OperationFailed(
                f"extension {name} needs a superuser: configure an admin connection for this environment"
            ) from None
    with connect(admin.with_dbname(params.dbname)) as conn:
        conn.execute(statement)


def extension_tables(conn: psycopg.Connection) -> set[str]:
    """``schema.table`` of every table and sequence that belongs to an extension (PostGIS's
    spatial_ref_sys, postgis_topology's topology and its id sequence, ...)."""
    rows = conn.execute(
        """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
           WHERE c.relkind IN ('r', 'p', 'S')"""
    ).fetchall()
    return {row[0] for row in rows}
