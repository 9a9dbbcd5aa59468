"""What the migration files build for one physical database, in a scratch database beside it.

``schema.scratch_database`` makes one empty database like a live one; this module fills it the
way the real database was filled: every alias that reaches the database migrated into it, in
the order Django's test runner creates them (``TEST["DEPENDENCIES"]``), so that each alias's
tables land in the schema its search_path picks and each keeps its own ``django_migrations``.
Migrating one alias alone would leave out the other aliases' tables, and every one of them
would show as a difference that is not one (``check`` counted 11 for ``default`` in a layout
with a ``data`` alias).

A squash uses it to prove the new migration files against the live (or restored) database,
``check`` (through ``scratch_cache``) to report drift; both compare the whole database at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator

from squashkit import drift, postgres, schema
from squashkit.config import Config
from squashkit.databases import Database, live_layout, migrate_order, physical
from squashkit.errors import OperationFailed
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy, ProjectInfo
from squashkit.target import Target

Log = Callable[[str], None]


@contextlib.contextmanager
def empty(
    database: Database, params: ConnectionParams, *, admin: ConnectionParams | None = None,
    extensions: Iterable[str] = (), copy_extensions: bool = True, suffix: str = schema.SCRATCH_SUFFIX,
    project: ProjectInfo | None = None,
) -> Iterator[dict[str, str]]:
    """An empty scratch database like ``params``' (the live or restored one), dropped whatever
    happens; yields ``alias -> its name`` for every alias of ``database``, for ``ManagePy.on``.
    With ``project``, the extension rows its migrations write themselves are left to them."""
    folders = [app.migrations_folder for app in project.apps] if project else []
    with schema.scratch_database(params, admin=admin, extensions=extensions, copy_extensions=copy_extensions,
                                 suffix=suffix, migration_folders=folders) as name:
        yield {alias: name for alias in database.aliases}


def migrate(manage: ManagePy, project: ProjectInfo, database: Database, names: dict[str, str]) -> None:
    """A real ``migrate`` of every alias of ``database`` into its scratch database, in the order the
    live database's layout needs (``migrate_order``)."""
    on = manage.on(names)
    order = migrate_order(project, live_layout(project, database)) if len(database.aliases) > 1 else database.aliases
    for alias in [alias for alias in order if alias in database.aliases]:
        on.run("migrate", "--database", alias, "--noinput", "-v", "0", what=f"migrate {alias} into the scratch database {names[alias]}")


def built(params: ConnectionParams, *, exclude: Collection[str] = schema.DEFAULT_EXCLUDE) -> schema.Schema:
    """The schema of a scratch database, with the definitions PostgreSQL reads back differently after a restore."""
    with postgres.connect(params) as conn:
        found = schema.snapshot(conn, exclude=exclude)
        found.round_trips = schema.round_trips(conn, found)
    return found


def build(
    manage: ManagePy, project: ProjectInfo, database: Database, params: ConnectionParams, *,
    admin: ConnectionParams | None = None, extensions: Iterable[str] = (), suffix: str = schema.SCRATCH_SUFFIX,
    exclude: Collection[str] = schema.DEFAULT_EXCLUDE,
) -> schema.Schema:
    """The schema the migration files on disk build for ``database`` (every alias that reaches it),
    in a scratch database like ``params``' one, read and dropped."""
    with empty(database, params, admin=admin, extensions=extensions, suffix=suffix, project=project) as names:
        migrate(manage, project, database, names)
        return built(params.with_dbname(names[database.alias]), exclude=exclude)


def require_equivalent(config: Config, target: Target, databases: dict[str, str], allow_drift: bool, log: Log,
                       rows: Callable[[Database, dict[str, str]], None] | None = None) -> None:
    """Before ``migrate --fake`` tells Django the database looks like the new migrations, prove it:
    build a scratch database from the new migration files alone (a real ``migrate`` of every alias
    that reaches the database, the same foundation) and compare its catalogs with the restored
    database, definition by definition. Names that differ only because of old renames are
    reported, not refused. ``rows(database, names)``, once its schema is proved, is handed the
    scratch build (freshproof: its rows held to the old history's)."""
    admin = target.admin()
    for database in physical(target.project):
        params = target.params(database.alias)
        params = params.with_dbname(databases.get(database.alias, params.dbname))
        with empty(database, params, admin=admin, extensions=config.extensions) as names:
            migrate(target.manage, target.project, database, names)
            expected = built(params.with_dbname(names[database.alias]))
            with postgres.connect(params) as conn:
                actual = schema.snapshot(conn)
            judge(schema.compare(expected, actual), ", ".join(database.aliases), "restored", allow_drift, log)
            if rows is not None:
                rows(database, names)


def judge(diff: schema.SchemaDiff, alias: str, against: str, allow_drift: bool, log: Log) -> None:
    """What the new migrations build, held against the ``against`` (restored, live) database: cosmetic
    differences are reported, any real one stops the squash unless ``--allow-drift``."""
    if diff.cosmetic:
        log(f"[{alias}] {len(diff.cosmetic)} name(s) differ only because of old renames (harmless): "
            + "; ".join(d.summary() for d in diff.cosmetic[:3]))
    if diff.matches:
        log(f"[{alias}] the new migrations build exactly the {against} schema")
        return
    log(f"[{alias}] the new migrations do not build the {against} schema:\n{diff.render()}")
    statements = drift.ddl_for(diff)
    if statements:
        log(f"[{alias}] what would bring the {against} database to what the models declare (review it; squashkit runs "
            "none of it):\n  " + "\n  ".join(statements))
    if not allow_drift:
        hint = drift.refusal_hint(diff)
        raise OperationFailed(
            f"the new migrations do not build {alias}'s schema ({diff.summary()}): faking them would hide it; "
            + (f"{hint}; " if hint else "")
            + "then squash again, or pass --allow-drift to fake them anyway"
        )
    log("--allow-drift: recording the new migrations as applied despite the differences above")
