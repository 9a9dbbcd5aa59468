"""``squashkit check``: can squashkit work on this environment? One line per check: ok / warn / fail.

Each check answers a question a later command would otherwise answer by failing halfway:
can we connect, are the client tools new enough, may the user create databases and the
extensions the project needs, is there connection headroom, are the migrations applied, do
the models have changes no migration holds, and does the database have the schema its
migration files build (compared with a scratch database they are run into). Where the
migration history and the database disagree, the finding says what happened and what repairs it.
"""

from __future__ import annotations

import re
from typing import Literal

import psycopg
from pydantic import BaseModel, Field

from squashkit import clients, drift, freshcheck, journal, placement, postgres, schema, scratch_cache, tenants
from squashkit.config import Config
from squashkit.databases import Database, build_order, live_layout, migrate_order, physical, sightings
from squashkit.errors import BadInput, SquashkitError
from squashkit.project import AppInfo, ManagePy, ProjectInfo, declare_own, introspect, manage_py

Status = Literal["ok", "warn", "fail"]


class CheckResult(BaseModel):
    """One finding of ``squashkit check``."""

    name: str = Field(description="What was checked, e.g. 'connection (default)'.")
    status: Status
    detail: str = Field(description="What was found, and what to do when it is not ok.")


def check(config: Config, *, env: str | None = None, use_cache: bool = True) -> list[CheckResult]:
    """Run every check on the environment; never raises for a failed check, only reports it.

    ``use_cache``: take the schema the migration files build from the scratch build kept for
    exactly these files, apps and server (``scratch_cache``), when there is one."""
    results: list[CheckResult] = []
    add = lambda name, status, detail: results.append(CheckResult(name=name, status=status, detail=detail))  # noqa: E731

    env_name, environment = config.environment(env)
    add("environment", "ok", f"{env_name} ({environment.settings}) from {config.source}")
    try:
        manage = manage_py(config, env_name, environment)
        project = declare_own(introspect(manage), config.project_apps)
    except SquashkitError as exc:
        add("project", "fail", str(exc))
        return results
    own = project.own_apps()
    if own:
        add("project", "ok", f"Django {project.django_version}, {len(own)} project apps: {', '.join(a.label for a in own)}")
    else:
        outside = [a.label for a in project.apps if a.migrations and not a.name.startswith("django.contrib.")]
        add("project", "warn", f"Django {project.django_version}, no project apps: every installed app lives outside "
            f"{manage.cwd} ({len(project.apps)} apps), so a squash has nothing to squash and a bundle names no app of "
            "this project; if some are the project's own (installed as packages, plugins), list them in the config: "
            f"project_apps = [{', '.join(repr(a).replace(chr(39), chr(34)) for a in outside[:3])}{', ...' if len(outside) > 3 else ''}]")
    _check_models(manage, add)
    if not project.postgres_aliases():
        add("databases", "fail", "no PostgreSQL database in DATABASES")
        return results
    try:
        admin = environment.admin.params(project.connection(project.postgres_aliases()[0])) if environment.admin else None
    except SquashkitError as exc:
        add("admin connection", "fail", str(exc))
        admin = None
    for alias, why in project.left_alone().items():
        add(f"alias {alias}", "ok", f"left alone ({why}): squashkit never dumps, rebuilds or swaps it")
    for database in physical(project):
        if len(database.aliases) > 1:
            add(f"database {database.name}", "ok", f"reached by {', '.join(database.aliases)}: dumped, rebuilt and swapped "
                "once; each alias keeps the django_migrations its search_path finds")
            _check_layout(project, database, add)
        diff: list = []
        for alias in database.aliases:
            _check_alias(config, manage, admin, project, alias, add, database=database, diff=diff, use_cache=use_cache)
    for run in journal.interrupted(config.backup_dir, {env_name}):
        add("runs", "fail", f"{run.describe()}: run squashkit resume to finish or undo it before anything else")
    return results


def _check_alias(
    config: Config, manage: ManagePy, admin: postgres.ConnectionParams | None, project: ProjectInfo, alias: str, add,
    *, database: Database, diff: list, use_cache: bool,
) -> None:
    """What concerns the database is checked through its first alias; ``diff`` carries its schema
    comparison to the other aliases that reach it (each has its own django_migrations)."""
    params = project.connection(alias)
    first = alias == database.alias
    try:
        with postgres.connect(params) as conn:
            add(f"connection ({alias})", "ok", params.describe())
            if first:
                server_num = conn.info.server_version
                add(f"server ({alias})", "ok", f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}")
                _check_clients(config, server_num, alias, add)
                _check_privileges(conn, config, admin is not None, alias, add)
                _check_connections(conn, alias, add)
                _check_mode(conn, admin is not None, params.dbname, alias, add)
                _check_squash(conn, admin is not None, params.dbname, alias, add)
            applied = _applied_migrations(conn)
            placement.report(project, alias, conn, add)
        if project.tenancy is not None and alias == project.tenancy.alias:
            _check_tenants(config, manage, admin, project, params, add)
            return
        if first:
            diff.append(_check_schema(config, manage, admin, project, database, add, use_cache))
        _check_migrations(project, applied, diff[0] if diff else None, alias, add)
        if first:
            freshcheck.check_fresh_data(config, manage, project, database, params, admin, add)
    except SquashkitError as exc:
        add(f"connection ({alias})", "fail", str(exc))
    except psycopg.Error as exc:
        add(f"database ({alias})", "fail", str(exc).strip().splitlines()[0])


def _check_layout(project: ProjectInfo, database: Database, add) -> None:
    """Aliases of one database that can see another alias's django_migrations through their search_path,
    and the order that builds them: migrated the other way round (a plain ``manage.py migrate`` of
    ``default`` first), the reader takes the other's history for its own and creates none of its tables."""
    try:
        layout = live_layout(project, database)
    except (SquashkitError, psycopg.Error):
        return  # the connection findings say why
    name = f"migrate order ({', '.join(database.aliases)})"
    order = [alias for alias in migrate_order(project, layout) if alias in database.aliases]
    impossible = build_order(order, layout, [database.aliases])[1]
    if impossible:
        pairs = "; ".join(f"{reader} reaches {layout[owner].home}.django_migrations, {owner}'s"
                          for reader, owner in impossible)
        add(name, "fail", f"{pairs}, and the other way round: no migrate order builds this database from nothing; "
            "take the other alias's schema off one search_path")
        return
    seen = [f"{reader}'s search_path ({', '.join(layout[reader].path)}) reaches "
            f"{layout[owner].home}.django_migrations, {owner}'s"
            for reader, owner in sightings(layout, [database.aliases])]
    if seen:
        add(name, "warn", f"{'; '.join(seen)}: migrate {' before '.join(order)}, as squashkit's scratch builds and "
            "recreate do (the other way round, the later alias takes the first's history, where every app is recorded, "
            "for its own and creates none of its tables)")
    shared = {}
    for alias in database.aliases:
        shared.setdefault(layout[alias].home, []).append(alias)
    for home, aliases in shared.items():
        strays = [alias for alias in aliases if layout[alias].path[0] != home]
        if len(aliases) > 1 and strays:
            add(f"django_migrations ({', '.join(aliases)})", "warn",
                f"{', '.join(aliases)} share {home}.django_migrations, though {strays[0]}'s search_path puts "
                f"{layout[strays[0]].path[0]} first: each records the other's apps as applied, so a migrate of one "
                "creates nothing for the other (the aliases were migrated the other way round, or before the schema "
                "existed); squashkit recreate builds each its own")


def _check_mode(conn: psycopg.Connection, has_admin: bool, dbname: str, alias: str, add) -> None:
    """Which way restore, promote, rollback and squash --rebuild will replace the database, and why;
    what earlier runs kept beside it."""
    from squashkit.steps import KEPT, SIDE

    may_create = conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    if len((dbname + KEPT).encode()) > 63:
        add(f"mode ({alias})", "warn", f"in place only: {dbname!r} is too long for a side copy's name; pass --in-place")
    elif may_create or has_admin:
        add(f"mode ({alias})", "ok", (
            f"side database: {dbname}{SIDE} is built and verified beside {dbname}, then swapped in by renaming "
            f"({dbname}{KEPT} keeps the old one); the server needs about {size} free for the copy, else pass --in-place"
        ))
    else:
        add(f"mode ({alias})", "fail", "neither mode can run: the user may not create databases and there is no admin connection")
    for suffix, status in ((SIDE, "warn"), (KEPT, "ok")):
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [dbname + suffix]
        ).fetchone()
        if comment is not None:
            hint = "left by an interrupted run: squashkit resume or squashkit cleanup" if suffix == SIDE else "squashkit cleanup removes it"
            add(f"kept database ({alias})", status, f"{dbname}{suffix} ({comment[0] or 'no comment'}): {hint}")


def _check_squash(conn: psycopg.Connection, has_admin: bool, dbname: str, alias: str, add) -> None:
    """Which way a squash will change the database: by default it moves no data (django_migrations
    rewritten in one transaction), which needs a scratch database and the right to rewrite that table."""
    from squashkit.steps import SIDE

    scratch = schema.scratch_name(dbname)
    may_create = conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    table = conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]
    writable = table and conn.execute("SELECT has_table_privilege('django_migrations', 'SELECT, INSERT, DELETE')").fetchone()[0]
    rebuild = f"squash --rebuild copies the data into {dbname}{SIDE} and swaps it in instead (the source procedure's full cycle)"
    if table and not writable:
        add(f"squash ({alias})", "fail", f"the user may not rewrite django_migrations in {dbname}, which a squash does: "
            f"GRANT SELECT, INSERT, DELETE ON django_migrations; {rebuild}")
    elif not (may_create or has_admin):
        add(f"squash ({alias})", "warn", f"a squash proves the new migrations in a scratch database {scratch} the user may "
            "not create: ALTER ROLE ... CREATEDB, or configure an admin connection")
    else:
        add(f"squash ({alias})", "ok", (
            f"a squash moves no data: it rewrites the project apps' rows of django_migrations in {dbname} in one transaction, "
            f"after proving the new files in a scratch database {scratch}; no session is ended and writes go on; {rebuild}"
        ))


def _check_clients(config: Config, server_num: int, alias: str, add) -> None:
    for name in ("pg_dump", "pg_restore"):
        try:
            program = clients.client_program(name, config.pg_bin)
            version = clients.require_client_for_server(program, server_num)
            add(f"{name} ({alias})", "ok", f"version {version} at {program}")
        except SquashkitError as exc:
            add(f"{name} ({alias})", "fail", str(exc))


def _check_privileges(conn: psycopg.Connection, config: Config, has_admin: bool, alias: str, add) -> None:
    superuser, createdb, user = conn.execute(
        "SELECT rolsuper, rolcreatedb, current_user FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if superuser or createdb:
        add(f"privileges ({alias})", "ok", f"{user} may create databases{' (superuser)' if superuser else ''}")
    elif has_admin:
        add(f"privileges ({alias})", "ok", f"{user} lacks CREATEDB: the admin connection will create databases")
    else:
        add(f"privileges ({alias})", "warn", f"{user} lacks CREATEDB: restore and squash will need ALTER ROLE {user} CREATEDB")
    installed = [row[0] for row in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")]
    needed = sorted(set(installed) | set(config.extensions))
    for name in needed:
        row = conn.execute(
            """SELECT v.trusted, v.superuser FROM pg_available_extensions a
               JOIN pg_available_extension_versions v ON v.name = a.name AND v.version = a.default_version
               WHERE a.name = %s""",
            [name],
        ).fetchone()
        if row is None:
            add(f"extension {name} ({alias})", "fail", f"{name} is not available on the server: install its package there")
        elif superuser or row[0] or not row[1]:
            add(f"extension {name} ({alias})", "ok", "can be created by " + user)
        elif has_admin:
            add(f"extension {name} ({alias})", "ok", "needs a superuser: the admin connection will create it")
        else:
            add(
                f"extension {name} ({alias})",
                "warn",
                f"needs a superuser and {user} is not one: configure an admin connection for this environment",
            )


def _check_connections(conn: psycopg.Connection, alias: str, add) -> None:
    limit, reserved, in_use = conn.execute(
        """SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"""
    ).fetchone()
    free = limit - reserved - in_use
    status = "ok" if free >= 5 else "warn"
    add(f"connections ({alias})", status, f"{in_use} in use of max_connections {limit} ({reserved} reserved), {free} free")


def _check_models(manage: ManagePy, add) -> None:
    """Model changes without a migration would be faked away by a squash, or never reach the database."""
    try:
        out = manage.run("makemigrations", "--dry-run", "--no-input", "--no-color", "-v", "1", what="makemigrations --dry-run")
    except SquashkitError as exc:
        add("models", "fail", str(exc))
        return
    apps = re.findall(r"^Migrations for '([^']+)':", out, re.MULTILINE)
    if apps:
        add("models", "warn", f"models of {', '.join(apps)} have changes no migration holds: run manage.py makemigrations "
            "(squash refuses until then)")
    else:
        add("models", "ok", "no model changes without a migration (makemigrations --dry-run)")


def _check_schema(
    config: Config, manage: ManagePy, admin: postgres.ConnectionParams | None, project: ProjectInfo, database: Database, add,
    use_cache: bool,
) -> schema.SchemaDiff | None:
    """Build what the migration files make in a scratch database (every alias that reaches the
    database migrated into it), or take the build kept for exactly these files, apps and server,
    and compare it with the real one; print the DDL that would mend it."""
    alias = ", ".join(database.aliases)
    params = project.connection(database.alias)
    try:
        expected, cached, seconds = scratch_cache.migrations_schema(
            config.backup_dir, manage, project, database, params, admin=admin, extensions=config.extensions,
            use_cache=use_cache)
    except BadInput as exc:  # no right to create the scratch database, or a leftover holds its name
        add(f"schema ({alias})", "warn", f"not compared: {exc}")
        return None
    except SquashkitError as exc:
        add(f"schema ({alias})", "fail", f"the migration files do not build a database from scratch: {exc}")
        return None
    with postgres.connect(params) as conn:
        diff = schema.compare(expected, schema.snapshot(conn))
    how = f"{cached.describe()}, for these very files, apps and server" if cached else f"scratch migrate, {seconds:.1f} s"
    if diff.matches:
        add(f"schema ({alias})", "ok", f"the database has the schema its migration files build ({how})")
    else:
        add(f"schema ({alias})", "fail", f"the database differs from what its migration files build ({how}): {diff.summary()}")
        ddl = drift.ddl_for(diff)
        if ddl:
            add(f"schema ddl ({alias})", "warn", "what would bring the database to what the migration files build, for you "
                "to review and run (squashkit applies none of it): " + " ".join(ddl))
    if diff.cosmetic:
        names = ", ".join(d.summary() for d in diff.cosmetic[:5]) + (", ..." if len(diff.cosmetic) > 5 else "")
        add(f"schema names ({alias})", "ok", f"{len(diff.cosmetic)} objects keep a name from an old rename (harmless): {names}")
    return diff


def _check_tenants(
    config: Config, manage: ManagePy, admin: postgres.ConnectionParams | None, project: ProjectInfo,
    params: postgres.ConnectionParams, add,
) -> None:
    """A django-tenants database: its layout, each schema's migration state, each schema against
    what its kind's migration files build (public: the shared apps; tenants, templates: the tenant apps)."""
    for name, status, detail in tenants.report(project, params):
        add(name, status, detail)
    try:
        diffs, _orphans = tenants.drift(manage, project, params, admin=admin, extensions=config.extensions)
    except BadInput as exc:
        add("schema (tenants)", "warn", f"not compared: {exc}")
        return
    except SquashkitError as exc:
        add("schema (tenants)", "fail", f"the migration files do not build the schemas from scratch: {exc}")
        return
    for where, diff in diffs.items():
        if diff.matches:
            add(f"schema ({where})", "ok", "has the schema its kind's migration files build"
                + (f" ({len(diff.cosmetic)} names from old renames)" if diff.cosmetic else ""))
        else:
            add(f"schema ({where})", "fail", f"differs from what its kind's migration files build: {diff.summary()}")


def _applied_migrations(conn: psycopg.Connection) -> set[tuple[str, str]]:
    if not conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
        return set()
    return {(app, name) for app, name in conn.execute("SELECT app, name FROM django_migrations")}


def _app_tables(app: AppInfo) -> set[str]:
    return {model.db_table for model in app.models if model.managed and not model.proxy} | {
        table for model in app.models for table in model.m2m_tables
    }


def _same_table(db_table: str, name: str) -> bool:
    """Whether a model's db_table is the table a schema comparison calls ``name`` (``schema.table``
    outside public, where the search_path or a db_table naming its schema put it)."""
    return db_table.replace('"."', ".") == name or name.endswith("." + db_table)


def _check_migrations(
    project: ProjectInfo, applied: set[tuple[str, str]], diff: schema.SchemaDiff | None, alias: str, add
) -> None:
    drifted_tables = {d.table or d.name for d in diff.real} if diff is not None else None
    squashed = {(app.label, name): keys for app in project.apps for name, keys in app.replaces.items()}
    for app in project.own_apps():
        rows = sorted(name for label, name in applied if label == app.label)
        if (alias not in app.aliases and app.models) or not (app.migrations or rows):
            continue  # an app without models migrates everywhere; one without migrations has nothing to say
        drifted = None if drifted_tables is None else any(
            _same_table(table, name) for table in _app_tables(app) for name in drifted_tables)
        replaces = {name: [n for a, n in keys if a == app.label] for (label, name), keys in squashed.items() if label == app.label}
        replaced = {n for (_label, _name), keys in squashed.items() for a, n in keys if a == app.label}
        status, detail = migration_finding(app.label, app.migrations, rows, drifted, replaces=replaces, replaced=replaced)
        if status == "ok":
            folder = app.migrations_folder
            where = f"{folder}" + (f" -> {app.migrations_folder_resolved}" if folder and folder != app.migrations_folder_resolved else "")
            detail += f", in {where}"
        add(f"migrations {app.label} ({alias})", status, detail)


def migration_finding(
    app: str, files: list[str], rows: list[str], drifted: bool | None, *,
    replaces: dict[str, list[str]] | None = None, replaced: set[str] | None = None,
) -> tuple[Status, str]:
    """What an app's migration files and its django_migrations rows say together, and what repairs them.

    ``drifted``: whether the app's tables differ from what its files build (None: not known).
    The dangerous case is a regenerated ``0001_initial`` whose name an old row already holds:
    Django counts it applied and never runs it, so the changes it carries never reach the tables.
    ``replaces`` (squashed migration -> the names it replaces) and ``replaced`` (every name a
    squashed migration replaces): Django records the replaced names and needs no file for them, and
    counts a squashed migration applied once all it replaces are.
    """
    replaces, replaced = replaces or {}, replaced or set()
    unapplied = [name for name in files if name not in rows and not (replaces.get(name) and set(replaces[name]) <= set(rows))]
    without_file = [name for name in rows if name not in files and name not in replaced]
    listed = lambda names: ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")  # noqa: E731
    by_hand = (
        f"with the models as the tables are (set newer changes aside): manage.py makemigrations {app}, "
        f"DELETE FROM django_migrations WHERE app = '{app}', manage.py migrate {app} --fake; "
        "then bring the changes back, makemigrations and migrate"
    )
    if rows and not files:
        return "fail", (
            f"its migration files were deleted while django_migrations still records {len(rows)} ({listed(rows)}) and its "
            f"tables remain: a new makemigrations writes a 0001_initial that the old row counts as applied without running it. "
            f"Repair: `squashkit squash` regenerates the migrations from the models and fakes them once the schema matches "
            f"(run manage.py makemigrations {app} first, squash refuses model changes without a migration); or by hand, {by_hand}"
        )
    if without_file and not unapplied and drifted:
        return "fail", (
            f"its migrations were regenerated ({listed(files)}) but django_migrations still holds the old history "
            f"({listed(without_file)} have no file), so the new files count as applied while the tables do not match them "
            f"(see schema): their changes were never made. Repair by hand, {by_hand}"
        )
    if unapplied:
        extra = f"; {len(without_file)} recorded migrations have no file: {listed(without_file)}" if without_file else ""
        return "warn", f"{len(unapplied)} of {len(files)} unapplied: {listed(unapplied)}{extra}"
    if without_file:
        if drifted is None:
            meaning = "if the files were regenerated, the new ones count as applied without having run: compare the schema"
        else:
            meaning = "the schema matches the files, so they were squashed or replaced: manage.py migrate --prune removes the rows"
        return "warn", f"{len(without_file)} applied migrations have no file ({listed(without_file)}): {meaning}"
    if drifted:
        return "warn", f"all {len(files)} applied, but its tables differ from what they build (see schema)"
    held = len({name for name in rows if name in replaced})
    return "ok", f"{len(files)} applied" + (f" ({held} recorded rows are migrations a squashed one replaces)" if held else "")
