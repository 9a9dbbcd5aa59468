"""What a new database needs before ``pg_restore`` or ``migrate``: its schemas, settings and extensions.

A dump restored into a new database (``pg_dump`` without ``--create``) misses what belongs to
the database rather than to its tables, and a few things must exist before the first table:

- **database-level settings**: ``ALTER DATABASE ... SET search_path`` and ``ALTER ROLE ... IN
  DATABASE ... SET``, stored per database, so they stay on the old database when it is renamed
  away (django-pgclone re-applies the search_path for the same reason);
- **the schemas**, so that each extension goes back into the schema the source has it in
  (PostGIS in ``extensions`` must find that schema) and every alias's search_path finds what it
  found on the source;
- **the extensions, in their schemas**: a dump writes ``public.geometry``, so PostGIS created
  anywhere else (the first schema of someone's search_path) breaks the restore;
- **the rows of the extensions' configuration tables** that are not the extension's own
  (PostGIS's custom ``spatial_ref_sys`` rows, postgis_topology's topologies): a column typed
  ``geometry(Point, 990001)`` is refused until its SRID's row exists, so they go in before any
  table, through the admin connection when the extension belongs to a superuser.

``read`` takes all of it from a database (in the backup's snapshot); ``lay`` puts it into a new,
empty one. ``pin_functions``/``unpin_functions`` get pg_restore past its empty search_path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Json
from pydantic import BaseModel, Field

from squashkit import postgres
from squashkit.errors import BadInput, OperationFailed, first_line
from squashkit.postgres import ConnectionParams


class Setting(BaseModel):
    """One ``ALTER DATABASE ... SET`` (role None) or ``ALTER ROLE role IN DATABASE ... SET``."""

    role: str | None = Field(None, description="The role it applies to; None: every role.")
    name: str = Field(description="The setting, e.g. search_path.")
    value: str = Field(description="Its value as PostgreSQL stores it, e.g. 'data, public'.")


class Extension(BaseModel):
    name: str
    schema_name: str = Field(alias="schema", description="The schema its objects live in.")
    version: str

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class ConfigRows(BaseModel):
    """The rows of one extension configuration table (or sequence) that pg_dump would dump: the user's, not the extension's."""

    extension: str
    table: str = Field(description="schema.name of the table or sequence.")
    sequence: bool = Field(False, description="A sequence: rows holds one object, its last_value and is_called.")
    rows: list[dict] = Field(default_factory=list, description="Each row as row_to_json writes it.")


class Foundation(BaseModel):
    """A database's settings, schemas, extensions and extension rows: what ``lay`` builds first."""

    settings: list[Setting] = Field(default_factory=list)
    schemas: list[str] = Field(default_factory=list, description="User schemas other than public (not an extension's own).")
    extensions: list[Extension] = Field(default_factory=list, description="In the order they were created (dependencies first).")
    config_rows: list[ConfigRows] = Field(default_factory=list)

    def extension_schemas(self) -> dict[str, str]:
        return {extension.name: extension.schema_name for extension in self.extensions}

    def without_rows_of(self, tables: Collection[str]) -> Foundation:
        """This foundation without the configuration rows of ``tables`` (bare names: spatial_ref_sys)."""
        kept = [rows for rows in self.config_rows if rows.table.split(".", 1)[1] not in tables]
        return self.model_copy(update={"config_rows": kept})

    def rows_of(self, tables: Collection[str]) -> Foundation:
        """Only the configuration rows of ``tables`` (bare names), nothing else."""
        return Foundation(config_rows=[rows for rows in self.config_rows if rows.table.split(".", 1)[1] in tables])


# A RunSQL that writes an extension's configuration table: INSERT INTO spatial_ref_sys ...
_WRITES = re.compile(r"\b(?:INSERT\s+INTO|UPDATE(?:\s+ONLY)?|DELETE\s+FROM(?:\s+ONLY)?)\s+"
                     r'(?:"?[A-Za-z_][\w$]*"?\s*\.\s*)?"?(?P<name>[A-Za-z_][\w$]*)"?', re.IGNORECASE)


def tables_written_by(folders: Iterable[Path | None], found: Foundation) -> set[str]:
    """The configuration tables of ``found`` (bare names) whose rows a migration file in ``folders``
    writes itself (a RunSQL inserting a custom SRID): a database those migrations build must not get
    those rows first, or the migration's INSERT fails on a duplicate key."""
    names = {rows.table.split(".", 1)[1] for rows in found.config_rows if not rows.sequence}
    written: set[str] = set()
    for folder in folders:
        if not names - written or folder is None or not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.py")):
            text = file.read_text(encoding="utf-8", errors="replace")
            written |= {match["name"].lower() for match in _WRITES.finditer(text)} & names
    return written


# --- reading ----------------------------------------------------------------------------------------

_SETTINGS = """
SELECT r.rolname, c.setting FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(setting, n)
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY r.rolname NULLS FIRST, c.n
"""

_SCHEMAS = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'public')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY n.oid
"""

_EXTENSIONS = """
SELECT e.extname, n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname <> 'plpgsql' ORDER BY e.oid
"""

# The rows pg_dump dumps of an extension's configuration tables, by the condition the extension
# registered (pg_extension_config_dump): evaluated by the server, the condition never leaves it.
_CONFIG_ROWS_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.squashkit_config_rows(rel regclass, condition text) RETURNS SETOF json
LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT relkind FROM pg_class WHERE oid = rel) = 'S' THEN
    RETURN QUERY EXECUTE format('SELECT json_build_object(''last_value'', last_value, ''is_called'', is_called) FROM %s', rel);
  ELSE
    RETURN QUERY EXECUTE format('SELECT row_to_json(t) FROM %s t %s', rel, coalesce(condition, ''));
  END IF;
END $$
"""

_CONFIG_TABLES = """
SELECT e.extname, n.nspname || '.' || c.relname, c.relkind = 'S', cfg.rel, cfg.condition
FROM pg_extension e
CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS cfg(rel, condition)
JOIN pg_class c ON c.oid = cfg.rel JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY e.oid, c.oid
"""


def read(conn: psycopg.Connection) -> Foundation:
    """The foundation of ``conn``'s database. ``conn`` must be able to write (a function of the
    session's own reads the extension rows), so it is not the backup's read-only snapshot: these
    rows, settings and schemas change by hand, not while an application writes."""
    settings = []
    for role, setting in conn.execute(_SETTINGS).fetchall():
        name, _, value = setting.partition("=")
        settings.append(Setting(role=role, name=name, value=value))
    schemas = [row[0] for row in conn.execute(_SCHEMAS)]
    extensions = [Extension(name=n, schema=s, version=v) for n, s, v in conn.execute(_EXTENSIONS)]
    config_rows = []
    tables = conn.execute(_CONFIG_TABLES).fetchall()
    if tables and not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # a hot standby cannot create it
        conn.execute(_CONFIG_ROWS_FUNCTION)
        for extension, table, is_sequence, oid, condition in tables:
            rows = [row[0] for row in conn.execute("SELECT * FROM pg_temp.squashkit_config_rows(%s, %s)", [oid, condition])]
            if rows and not (is_sequence and not rows[0]["is_called"]):
                config_rows.append(ConfigRows(extension=extension, table=table, sequence=is_sequence, rows=rows))
    return Foundation(settings=settings, schemas=schemas, extensions=extensions, config_rows=config_rows)


# --- laying it into a new database --------------------------------------------------------------------


def lay(
    params: ConnectionParams, admin: ConnectionParams | None, found: Foundation | None, *, extra_extensions: Iterable[str] = (),
) -> list[str]:
    """Build ``found`` into the new, empty database ``params``: settings, schemas, extensions in
    their schemas, then their configuration rows, then ``extra_extensions`` (the config's, in
    their default schemas). Returns what was done, for the log.

    Each statement is tried as the database's user first, then through the admin connection
    (untrusted extensions, another role's settings). Raises ``OperationFailed`` naming what
    could not be done; the caller drops the database it just created."""
    done = []
    found = found or Foundation()
    with postgres.connect(params) as conn:
        roles = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}
    # A role's setting goes where the role exists (another server may not have it: said, not failed).
    settings = [s for s in found.settings if s.role is None or s.role in roles]
    for setting in settings:
        _as_owner_or_admin(params, admin, lambda c, s=setting: _apply_setting(c, params.dbname, s), f"setting {setting.name}")
    if settings:
        done.append("settings " + ", ".join(f"{s.name}={s.value}" + (f" for {s.role}" if s.role else "") for s in settings))
    if len(settings) < len(found.settings):
        done.append("no role " + ", ".join(sorted({s.role for s in found.settings if s not in settings})) + " here for its settings")
    with postgres.connect(params) as conn:
        for name in found.schemas:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
    if found.schemas:
        done.append("schemas " + ", ".join(found.schemas))
    wanted = [*found.extensions, *(Extension(name=n, schema="", version="") for n in sorted(set(extra_extensions))
                                   if n != "plpgsql" and n not in found.extension_schemas())]
    for extension in wanted:
        create = lambda c, e=extension: c.execute(create_extension_statement(e.name, e.schema_name or None))  # noqa: E731
        _as_owner_or_admin(params, admin, create, f"extension {extension.name}")
    if wanted:
        done.append("extensions " + ", ".join(e.name + (f" in {e.schema_name}" if e.schema_name else "") for e in wanted))
    for rows in found.config_rows:
        _as_owner_or_admin(params, admin, lambda c, r=rows: _insert_config_rows(c, r), f"the rows of {rows.table}")
    if found.config_rows:
        done.append("extension rows " + ", ".join(f"{len(r.rows)} of {r.table}" for r in found.config_rows if not r.sequence))
    return done


def require_same_schemas(params: ConnectionParams, found: Foundation | None, what: str) -> None:
    """Refuse, before anything changes, a target whose live database has one of ``found``'s extensions
    in another schema (PostGIS in ``extensions``, as managed platforms put it, against a dump that
    writes ``public.geometry``): replacing it would move the extension, and the platform or the code
    may need it where it is. Nothing to compare when the database does not exist yet."""
    if found is None or not found.extensions:
        return
    with postgres.connect(params.with_dbname("postgres")) as conn:
        if not postgres.database_exists(conn, params.dbname):
            return
    with postgres.connect(params) as conn:
        rows = conn.execute("SELECT e.extname, n.nspname, e.extrelocatable FROM pg_extension e "
                            "JOIN pg_namespace n ON n.oid = e.extnamespace").fetchall()
    have = {name: schema for name, schema, _ in rows}
    relocatable = {name: movable for name, _, movable in rows}
    for extension in found.extensions:
        if extension.name in have and have[extension.name] != extension.schema_name:
            # PostGIS has no SET SCHEMA: the way is a target database built without it (dropped, or another name).
            way = ("move the extension on one side first" if relocatable[extension.name] else
                   f"{extension.name} cannot be moved (no SET SCHEMA): drop {params.dbname} if it may go, or build "
                   f"{what}'s side with {extension.name} in {have[extension.name]}")
            raise BadInput(
                f"{params.dbname} has the extension {extension.name} in schema {have[extension.name]}, {what} has it in "
                f"{extension.schema_name}: its objects are named {extension.schema_name}.* there, so it cannot replace "
                f"{params.dbname} as it is; {way} (nothing was changed)")


def create_extension_statement(name: str, schema: str | None) -> sql.Composed:
    """CREATE EXTENSION in the schema the source has it in (its own schema when None)."""
    statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))
    if schema:
        statement += sql.SQL(" SCHEMA {}").format(sql.Identifier(schema))
    return statement


def _apply_setting(conn: psycopg.Connection, dbname: str, setting: Setting) -> None:
    """The value as stored (a list for search_path) is set in the session first, then taken FROM
    CURRENT: quoting it as one literal would make 'data, public' a single schema name."""
    name = sql.Identifier(*setting.name.split("."))
    with conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", [setting.name, setting.value])
        if setting.role is None:
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} FROM CURRENT").format(sql.Identifier(dbname), name))
        else:
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} FROM CURRENT").format(
                sql.Identifier(setting.role), sql.Identifier(dbname), name))


def _insert_config_rows(conn: psycopg.Connection, rows: ConfigRows, *, missing_only: bool = False) -> None:
    table = sql.Identifier(*rows.table.split(".", 1))
    if rows.sequence:
        conn.execute("SELECT setval(%s::regclass, %s, %s)",
                     [table.as_string(conn), rows.rows[0]["last_value"], rows.rows[0]["is_called"]])
        return
    query = sql.SQL("INSERT INTO {} SELECT * FROM json_populate_recordset(NULL::{}, %s::json)").format(table, table)
    if missing_only:
        query += sql.SQL(" ON CONFLICT DO NOTHING")
    conn.execute(query, [Json(rows.rows)])


def lay_missing_rows(params: ConnectionParams, admin: ConnectionParams | None, found: Foundation) -> list[str]:
    """After the migrations ran: ``found``'s configuration rows they did not write themselves (a
    custom SRID a DBA added by hand), those already there left as the migrations wrote them."""
    for rows in found.config_rows:
        _as_owner_or_admin(params, admin, lambda c, r=rows: _insert_config_rows(c, r, missing_only=True), f"the rows of {rows.table}")
    return [rows.table for rows in found.config_rows]


def _as_owner_or_admin(params: ConnectionParams, admin: ConnectionParams | None, act, what: str) -> None:
    """``act(conn)`` as the database's user; through the admin connection when that user may not."""
    try:
        with postgres.connect(params) as conn:
            act(conn)
        return
    except psycopg.errors.InsufficientPrivilege as exc:
        if admin is None:
            raise OperationFailed(f"{what} needs a superuser ({first_line(exc)}): configure an admin connection") from None
    try:
        with postgres.connect(admin.with_dbname(params.dbname)) as conn:
            act(conn)
    except psycopg.Error as exc:
        raise OperationFailed(f"{what} failed in {params.dbname}: {first_line(exc)}") from None


# --- pg_restore's empty search_path -------------------------------------------------------------------

# User functions in SQL or PL/pgSQL that set no search_path of their own: pg_restore runs with
# search_path = '', so one of them calling an extension's function unqualified (ST_Transform in a
# function an index or a check uses) fails the restore. For the restore they get a search_path,
# taken away again right after: the database ends as the dump describes it.
_PIN_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.squashkit_pin(schemas text[]) RETURNS SETOF oid LANGUAGE plpgsql AS $$
DECLARE f record;
BEGIN
  FOR f IN SELECT p.oid, n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           JOIN pg_language l ON l.oid = p.prolang
           WHERE l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p')
             AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
             AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\\_path=%')
  LOOP
    EXECUTE format('ALTER FUNCTION %s SET search_path = %s', f.oid::regprocedure,
                   (SELECT string_agg(quote_ident(s), ', ' ORDER BY k) FROM
                     (SELECT s, min(k) AS k FROM unnest(ARRAY[f.nspname::text] || schemas) WITH ORDINALITY AS u(s, k) GROUP BY s) d));
    RETURN NEXT f.oid;
  END LOOP;
END $$
"""

_UNPIN_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.squashkit_unpin(functions oid[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE f oid;
BEGIN
  FOREACH f IN ARRAY functions LOOP
    EXECUTE format('ALTER FUNCTION %s RESET search_path', f::regprocedure);
  END LOOP;
END $$
"""


def pin_functions(params: ConnectionParams, schemas: list[str]) -> list[int]:
    """Give every user function without a search_path of its own ``schemas`` (after its own schema),
    for the rest of the restore; returns them for ``unpin_functions``."""
    with postgres.connect(params) as conn, conn.transaction():
        conn.execute(_PIN_FUNCTIONS)
        return [row[0] for row in conn.execute("SELECT * FROM pg_temp.squashkit_pin(%s::text[])", [schemas])]


def unpin_functions(params: ConnectionParams, functions: list[int]) -> None:
    """The functions ``pin_functions`` changed, as the dump made them again."""
    if not functions:
        return
    with postgres.connect(params) as conn, conn.transaction():
        conn.execute(_UNPIN_FUNCTIONS)
        conn.execute("SELECT pg_temp.squashkit_unpin(%s::oid[])", [functions])



def restore_pinned(run: Callable[[list[str]], None], params: ConnectionParams, schemas: list[str]) -> None:
    """pg_restore (``run(more arguments)``) of a dump whose own functions may call an extension
    unqualified, in two passes: the definitions, then the data and what is built on it (indexes,
    checks, materialized views), the functions pinned in between to ``schemas`` (the aliases'
    search_path schemas and the extensions', then public) and unpinned after."""
    run(["--section=pre-data"])
    pinned = pin_functions(params, list(dict.fromkeys([*schemas, "public"])))
    run(["--section=data", "--section=post-data"])
    unpin_functions(params, pinned)
