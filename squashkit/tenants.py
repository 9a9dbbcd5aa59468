"""Schema-per-tenant projects (django-tenants): every schema with a ``django_migrations``, as one unit.

In django-tenants each tenant has a schema of its own, and each schema its own
``django_migrations``: ``public`` (the shared apps), one per tenant row of the tenant model, the
template new tenants are cloned from (``TENANT_BASE_SCHEMA``), and orphans (a schema whose tenant
row is gone). ``migrate`` (django-tenants' ``migrate_schemas``) records every migration in every
schema, also where the router built nothing.

What a squash does with them, and why:

- **proved per kind**: public against a scratch build of the shared apps (``migrate_schemas
  --shared``), every tenant schema and the template against a scratch build of the tenant apps
  (``migrate_schemas --tenant --schema squashkit_tenant``), each compared by catalog definitions
  with its schema's name taken out; orphans are reported and left alone;
- **rewritten as one unit**: one transaction on one connection rewrites the project apps' rows of
  every schema (``SET LOCAL search_path`` to each in turn), so a failure anywhere, or a kill,
  leaves every schema as it was; once it commits, every schema names the new files;
- **tenant creation blocked**: for the whole run a connection holds ``LOCK TABLE <tenant table>
  IN SHARE MODE``: reads go on, but saving a tenant (django-tenants inserts its row before it
  creates the schema) waits until the run ends, so no schema appears that the run did not prove
  and rewrite.

A schema is reached by the key ``alias@schema`` (``Target.params`` understands it): every
function that reads or puts back one database's rows works on one schema that way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from squashkit import history, postgres, schema
from squashkit.errors import BadInput, OperationFailed
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy, ProjectInfo, Tenancy, migration_names

Log = Callable[[str], None]
Kind = Literal["public", "tenant", "template", "orphan"]
SEPARATOR = "@"
# Where a squash builds the tenant apps in its scratch database (a valid django-tenants schema name).
SCRATCH_TENANT = "squashkit_tenant"
# django-tenants creates these functions in public the first time it clones a tenant (clone.py):
# its own, not the project's migrations'.
CLONE_FUNCTIONS = ("clone_schema", "get_insert_stmt_ddl", "pg_get_coldef", "pg_get_tabledef")
LOCK_TIMEOUT = "10s"


class TenantSchema(BaseModel):
    """One schema that holds a django_migrations."""

    name: str
    kind: Kind


def key(alias: str, name: str) -> str:
    """How a schema is named where a database alias would be: ``default@north``."""
    return f"{alias}{SEPARATOR}{name}"


def in_schema(params: ConnectionParams, name: str) -> ConnectionParams:
    """``params`` with ``name`` alone on the search_path: unqualified ``django_migrations`` is that schema's."""
    value = '"' + name.replace('"', '""') + '"'
    escaped = re.sub(r"([\s\\])", r"\\\1", value)
    options = {**params.options, "options": (params.options.get("options", "") + f" -csearch_path={escaped}").strip()}
    return params.model_copy(update={"options": options})


def _tenant_table(tenancy: Tenancy) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(tenancy.public_schema), sql.Identifier(tenancy.tenant_table))


def schemas(conn: psycopg.Connection, tenancy: Tenancy) -> list[TenantSchema]:
    """Every schema of the database holding a django_migrations, public first, then by name."""
    with_table = [row[0] for row in conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'django_migrations' AND c.relkind IN ('r', 'p') ORDER BY n.nspname")]
    tenants = set(tenant_names(conn, tenancy))
    found = []
    for name in with_table:
        if name == tenancy.public_schema:
            kind: Kind = "public"
        elif name in tenants:
            kind = "tenant"
        elif name in tenancy.base_schemas:
            kind = "template"
        else:
            kind = "orphan"
        found.append(TenantSchema(name=name, kind=kind))
    return sorted(found, key=lambda s: (s.kind != "public", s.name))


def tenant_names(conn: psycopg.Connection, tenancy: Tenancy) -> list[str]:
    """The schemas the tenant table names (public's own row left out); [] before it exists."""
    exists = conn.execute("SELECT to_regclass(%s)", [f'"{tenancy.public_schema}"."{tenancy.tenant_table}"']).fetchone()[0]
    if not exists:
        return []
    query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(sql.Identifier(tenancy.schema_column), _tenant_table(tenancy))
    return [row[0] for row in conn.execute(query) if row[0] != tenancy.public_schema]


def rewritten(conn: psycopg.Connection, tenancy: Tenancy) -> list[TenantSchema]:
    """The schemas a squash proves and rewrites: all but the orphans."""
    return [found for found in schemas(conn, tenancy) if found.kind != "orphan"]


def require_single_type(project: ProjectInfo) -> None:
    """A squash proves every tenant schema against one build of TENANT_APPS: with tenant types
    (``HAS_MULTI_TYPE_TENANTS``) each type has apps of its own, and that proof would be false."""
    if project.tenancy is not None and project.tenancy.multi_type:
        raise BadInput("this django-tenants project has tenant types (HAS_MULTI_TYPE_TENANTS): squashkit does not yet "
                       "prove a tenant of each type against its type's apps, so it does not squash it; backup, promote "
                       "and rollback work; nothing was changed")


# --- tenant creation blocked for the length of a run -------------------------------------------------


def lock_statement(tenancy: Tenancy) -> sql.Composed:
    """Readers go on; a tenant saved meanwhile (its row inserted before its schema is made) waits."""
    return sql.SQL("LOCK TABLE {} IN SHARE MODE").format(_tenant_table(tenancy))


@contextlib.contextmanager
def creation_blocked(params: ConnectionParams, tenancy: Tenancy, log: Log) -> Iterator[None]:
    """Hold the tenant table against inserts, updates and deletes until the block ends (or this
    process dies: the server then ends the transaction and the lock with it)."""
    with postgres.connect(params, autocommit=False) as conn:
        try:
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            conn.execute(lock_statement(tenancy))
        except psycopg.errors.LockNotAvailable:
            raise BadInput(f"{tenancy.tenant_table} is being written (a tenant created or changed?) and stayed locked for "
                           f"{LOCK_TIMEOUT}: try again once it is done; nothing was changed") from None
        log(f"tenant creation blocked until the run ends: LOCK TABLE {tenancy.tenant_table} IN SHARE MODE "
            "(reads go on; saving a tenant waits)")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()


# --- step 5b: the new files proved per kind of schema ---------------------------------------------------


def _only(found: schema.Schema, name: str, public: str, as_: str) -> schema.Schema:
    """The objects of schema ``name`` alone, that name replaced by ``as_`` wherever it is written, so
    that two schemas built by the same migrations compare equal; extensions go with public."""
    prefix = "" if name == public else f"{name}."

    def mine(qualified: str) -> bool:
        return "." not in qualified if not prefix else qualified.startswith(prefix)

    pattern = re.compile(r'(?<![\w"])(?:' + re.escape(f'"{name}".') + "|" + re.escape(f"{name}.") + ")")

    def rename(text: str | None) -> str | None:
        return text if text is None or name == public else pattern.sub(f"{as_}.", text)

    data = found.model_dump()
    kept = schema.Schema(
        tables={rename(k): v for k, v in data["tables"].items() if mine(k)},
        constraints=[{**c, "table": rename(c["table"]), "definition": rename(c["definition"])}
                     for c in data["constraints"] if mine(c["table"])],
        indexes=[{**i, "table": rename(i["table"]), "definition": rename(i["definition"])}
                 for i in data["indexes"] if mine(i["table"])],
        # Without its type: django-tenants' clone_schema makes every sequence of a cloned tenant a
        # bigint one, keeping its bounds (MAXVALUE 2147483647 for a serial); the bounds are what count.
        sequences=[{**s, "name": rename(s["name"]), "owned_by": rename(s["owned_by"]), "definition": s["definition"].split(" ", 1)[-1]}
                   for s in data["sequences"] if mine(s["name"])],
        views={rename(k): v for k, v in data["views"].items() if mine(k)},
        triggers=[{**t, "table": rename(t["table"]), "definition": rename(t["definition"])}
                  for t in data["triggers"] if mine(t["table"])],
        functions={rename(k): rename(v) for k, v in data["functions"].items()
                   if k.startswith(f"{name}.") and k.split("(", 1)[0] not in {f"{public}.{f}" for f in CLONE_FUNCTIONS}},
        extensions=data["extensions"] if name == public else {},
        round_trips=data["round_trips"],
    )
    return kept


def compare_kinds(
    manage: ManagePy, project: ProjectInfo, live: ConnectionParams, scratch: ConnectionParams, apps: list[str],
) -> tuple[dict[str, schema.SchemaDiff], dict[str, list[tuple[str, str]]], list[str]]:
    """The scratch database ``scratch`` already holds public as the migration files build it
    (``migrate`` ran there): build the tenant apps in a scratch tenant schema, then compare public
    with public, every tenant schema and template with the scratch tenant. Returns per schema key
    its difference and the project apps' rows the scratch migrate recorded for its kind, and the orphans."""
    tenancy = project.tenancy
    with postgres.connect(scratch) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCRATCH_TENANT)))
    manage.run("migrate", "--tenant", "--schema", SCRATCH_TENANT, "--noinput", "-v", "0",
               what=f"migrate the tenant apps into the scratch schema {SCRATCH_TENANT}")
    with postgres.connect(scratch) as conn:  # as scratch.built reads it (which imports Target, and so this)
        built = schema.snapshot(conn)
        built.round_trips = schema.round_trips(conn, built)
    recorded = {}
    for kind, where in (("public", tenancy.public_schema), ("tenant", SCRATCH_TENANT)):
        with postgres.connect(in_schema(scratch, where)) as conn:
            recorded[kind] = [(row.app, row.name) for row in history.read(conn, apps)] if history.exists(conn) else []
    with postgres.connect(live) as conn:
        actual = schema.snapshot(conn)
        found = schemas(conn, tenancy)
    public = tenancy.public_schema
    diffs, new = {}, {}
    for each in (f for f in found if f.kind != "orphan"):
        kind = "public" if each.kind == "public" else "tenant"
        expected = _only(built, public if kind == "public" else SCRATCH_TENANT, public, "<tenant>")
        diffs[key(tenancy.alias, each.name)] = schema.compare(expected, _only(actual, each.name, public, "<tenant>"))
        new[key(tenancy.alias, each.name)] = recorded[kind]
    return diffs, new, [f.name for f in found if f.kind == "orphan"]


def prove(
    manage: ManagePy, project: ProjectInfo, live: ConnectionParams, scratch: ConnectionParams, apps: list[str],
    *, judge: Callable[[schema.SchemaDiff, str], None], log: Log,
) -> dict[str, list[tuple[str, str]]]:
    """Step 5b of a tenants project (``compare_kinds``), each schema judged; returns what 5c writes per schema."""
    diffs, new, orphans = compare_kinds(manage, project, live, scratch, apps)
    alias = project.tenancy.alias
    if orphans:
        log(f"[{alias}] left alone (a django_migrations but no tenant row, not a template): {', '.join(orphans)}; "
            "their rows keep naming the old files")
    for where, diff in diffs.items():
        judge(diff, where)
    log(f"[{alias}] proved per kind: public against the shared apps, {len(diffs) - 1} tenant and template schemas "
        "against the tenant apps")
    return new


def drift(
    manage: ManagePy, project: ProjectInfo, params: ConnectionParams, *, admin: ConnectionParams | None,
    extensions: list[str],
) -> tuple[dict[str, schema.SchemaDiff], list[str]]:
    """``check``'s question for a tenants database: how each schema differs from what its kind's
    migration files build, in a scratch database dropped afterwards."""
    alias = project.tenancy.alias
    with schema.scratch_database(params, admin=admin, extensions=extensions) as name:
        on = manage.on({alias: name})
        on.run("migrate", "--database", alias, "--noinput", "-v", "0", what=f"migrate {alias} into the scratch database {name}")
        apps = [app.label for app in project.own_apps()]
        diffs, _new, orphans = compare_kinds(on, project, params, params.with_dbname(name), apps)
    return diffs, orphans


def report(project: ProjectInfo, params: ConnectionParams) -> list[tuple[str, str, str]]:
    """``check``'s lines for a tenants database: the layout, then each schema with its kind and
    migration state (the project apps' migrations on disk it does not record)."""
    tenancy = project.tenancy
    layout = (f"django-tenants: tenant model {tenancy.tenant_model} ({tenancy.public_schema}.{tenancy.tenant_table}); "
              f"shared apps {', '.join(tenancy.shared_apps)}; tenant apps {', '.join(tenancy.tenant_apps)}; "
              f"templates {', '.join(tenancy.base_schemas) or 'none'}; a squash blocks tenant creation while it runs "
              f"(LOCK TABLE {tenancy.tenant_table} IN SHARE MODE)")
    lines = [("tenants", "ok", layout)]
    if tenancy.multi_type:
        lines.append(("tenant types", "warn", "HAS_MULTI_TYPE_TENANTS: tenants are not proved per type yet, so squash refuses"))
    on_disk = disk_migrations(project)
    with postgres.connect(params) as conn:
        found = schemas(conn, tenancy)
    for each in found:
        with postgres.connect(in_schema(params, each.name)) as conn:
            missing = unapplied(conn, on_disk)
            recorded = len(history.read(conn, list(on_disk)))
        if each.kind == "orphan":
            lines.append((f"schema {each.name}", "warn",
                          f"orphan (a django_migrations, no tenant row): {recorded} rows of the project's apps; squash leaves it alone"))
        elif missing:
            lines.append((f"schema {each.name}", "fail",
                          (f"{each.kind}: {len(missing)} migration(s) on disk not recorded, e.g. {missing[0]} "
                           f"(migrate_schemas --schema {each.name})")))
        else:
            lines.append((f"schema {each.name}", "ok", f"{each.kind}: every migration on disk recorded ({recorded} rows of the project's apps)"))
    return lines


# --- step 5c: every schema's rows in one transaction ------------------------------------------------------


def rewrite(
    params: ConnectionParams, keys: list[str], apps: list[str], new: dict[str, list[tuple[str, str]]],
    announce: Callable[[dict[str, list[history.Row]], dict[str, list[tuple[str, str]]]], None],
) -> None:
    """``history.rewrite`` for the schemas ``keys`` of one database, in ONE transaction: each schema's
    django_migrations locked and read, ``announce`` saves them, then each rewritten; one COMMIT.
    A failure or a kill before it leaves every schema as it was."""
    with postgres.connect(params, autocommit=False) as conn:
        try:
            conn.execute(history.timeout_statement())
            before, after = {}, {}
            for each in keys:
                _enter(conn, each)
                conn.execute(history.lock_statement())
                before[each] = history.read(conn, apps)
                after[each] = [(a, n) for a, n in new[each] if a in {row.app for row in before[each]}]
            announce(before, after)
            for each in keys:
                _enter(conn, each)
                conn.execute(history.delete_statement(apps))
                if after[each]:
                    conn.execute(history.insert_new_statement(), [[a for a, _ in after[each]], [n for _, n in after[each]]])
            conn.commit()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise


def _enter(conn: psycopg.Connection, schema_key: str) -> None:
    name = schema_key.split(SEPARATOR, 1)[1]
    conn.execute(sql.SQL("SELECT set_config('search_path', {}, true)").format(sql.Literal(sql.Identifier(name).as_string(conn))))


# --- step 7 and check: each schema's migration state ------------------------------------------------------


def unapplied(conn: psycopg.Connection, on_disk: dict[str, list[str]]) -> list[str]:
    """``app.name`` of the migrations on disk the django_migrations on ``conn``'s search_path lacks."""
    if not history.exists(conn):
        return [f"{app}.{name}" for app, names in on_disk.items() for name in names]
    applied = {(row.app, row.name) for row in history.read(conn, list(on_disk))}
    return [f"{app}.{name}" for app, names in on_disk.items() for name in names if (app, name) not in applied]


def disk_migrations(project: ProjectInfo) -> dict[str, list[str]]:
    """The project's own apps' migrations now on disk (read from the disk: a squash changes them)."""
    return {app.label: migration_names(app) for app in project.own_apps() if app.migrations_folder_resolved}


def require_every_schema_migrated(project: ProjectInfo, params: ConnectionParams, log: Log) -> None:
    """Step 7 for a tenants project: every schema but the orphans records every migration file of
    the project's apps (``migrate --check`` asks public alone)."""
    on_disk = disk_migrations(project)
    with postgres.connect(params) as conn:
        found = rewritten(conn, project.tenancy)
    for each in found:
        with postgres.connect(in_schema(params, each.name)) as conn:
            missing = unapplied(conn, on_disk)
        if missing:
            raise OperationFailed(f"verify: schema {each.name} ({each.kind}) does not record {len(missing)} migration(s) "
                                  f"on disk, e.g. {missing[0]}")
    log(f"verified: {len(found)} schemas (public, tenants, templates) record every migration file")
