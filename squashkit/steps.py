"""The steps of the procedure, each beside what undoes it.

The commands (``squashkit.commands``) are these steps in order. There are two shapes:

- **A squash moves no data** (``squash``, the source half of ``promote --squash``, the second
  half of ``restore --squash``): steps 0-2, 5 and 5b against empty scratch databases, then
  5c instead of 3-8; ``online.squash`` runs them and undoes them on failure.
- **A rebuild** (``restore``, ``promote``, ``rollback``, ``squash --rebuild``):
  ``phase.replace_database`` runs steps 2-8 for one environment and undoes them on failure.
  By default it builds the new database **beside** the live one and swaps it in only once
  verified (side mode); ``--in-place`` keeps the source procedure's drop-and-recreate.

    step                  does                                                  undone by
    0  preflight          refuse before anything changes: unapplied migrations, (nothing changed)
                          model changes without a migration, a bundle the code
                          cannot take, a missing extension, old client tools,
                          no CREATEDB or admin connection, sessions we may not
                          end, a leftover side database, too few connections,
                          uncommitted migration files (--force); a squash that
                          moves no data: online.preflight (a scratch database
                          it may create, a django_migrations it may rewrite)
    0b scan_losses        squash: what regenerated migrations would forget;     (nothing changed)
                          refused without --accept-loss
    1  backup_step,       a verified bundle of the source (a squash's: the      (nothing changed)
       safety_backup      undo of its files), and a full safety bundle of the
                          target
    2  delete_migrations  squash: the project's migration files (symlinked      put_back_migrations, from the
                          folders followed; __init__.py kept), only after the   bundle's migrations.tar.gz
                          tarball is checked against the disk
    3  create_side_database  side: <name>__squashkit_new, like the source,      side: undo_side drops it (only a
       recreate_database  commented with the run; in place: end sessions, DROP  database whose comment names the
                          DATABASE, CREATE DATABASE; then its foundation        run); in place: phase.roll_back
                          (foundation.lay: settings, schemas, extensions in     from the safety bundle
                          the source's schemas and their rows); once per
                          database, however many aliases reach it
    4  pg_restore         --no-owner --no-privileges --exit-on-error, from a    as 3
                          table of contents without what 3 made; the dump's
                          own functions pinned to a search_path in between
                          its definitions and its data (foundation.restore_pinned)
    5  makemigrations     squash: every project app, then the carried           as 2
                          operations (carry.carry_over); a squash that moves
                          no data points it at an empty scratch database (the
                          live django_migrations still names the old files)
    5b scratch.require_equivalent squash: a scratch database built by a real   the scratch database is always
       (online: judge)    migrate of the new files must match the restored  dropped (and NNNN_squashkit_data.py
                          one (the live one when no data moves); then its      goes with the files of 2)
                          rows must hold the old history's, built beside 1:
                          what differs is carried as data and proved
                          (freshproof.prove)
    5c history.rewrite    squash that moves no data, instead of 3-8: per        before COMMIT: as 2; after:
                          database one transaction: lock django_migrations,     history.put_back (the saved rows,
                          save the project apps' rows (journal, bundle's        one transaction), then as 2;
                          history.json), delete them, insert the new files as   rollback BUNDLE --migrations-only
                          applied as the scratch migrate recorded them; then 7  does the same later
    6  record_history     per alias, the django_migrations its search_path     as 3
                          finds, filled with the bundle's rows (ids, times)
                          for every app whose files did not change, the
                          regenerated apps' files recorded in their place
    6b migrate_newer      a code newer than the bundle: the rows verified,     as 3
                          its migrations run for real, the schema proved
                          against a scratch build of the code
    7  verify             a rebuild: every table holds the bundle's content     (nothing changed)
                          (its content hashes; row counts for older bundles);
                          both: on every alias the migrations of the apps its
                          router allows applied, and makemigrations --check
                          clean
    8  swap_in            side: drop the database an earlier run kept, end      undo_side renames back
                          sessions, then in one transaction <name> ->
                          <name>__squashkit_prev, <name>__squashkit_new -> <name>

A squash that moves no data ends no session and copies nothing: writes go on during the run
and stay. In side mode the live database is untouched until step 8's atomic rename, so
undoing any earlier step only drops what the run built (and puts the files back). In place, a
failure after step 3 puts the target back from its safety bundle (its dump, else its db.json).
The README's step table says the same.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.conninfo import make_conninfo

from squashkit import bundle, bundlefiles, carry, clients, foundation, history, losses, postgres, progress, provenance, tenants
from squashkit.commands.backup import backup
from squashkit.config import Config
from squashkit.databases import (
    migrate_order,
    once_per_database,
    paths_of,
    primary_aliases,
    sharing,
)
from squashkit.errors import BadInput, OperationFailed, first_line
from squashkit.journal import Journal
from squashkit.losses import LossReport
from squashkit.project import (
    ProjectInfo,
    extract_migrations,
    migration_files,
    migration_names,
    squashed_apps,
    uncommitted_migration_changes,
)
from squashkit.target import Target

Log = Callable[[str], None]

# Side mode's database names: built beside the live one, and the live one kept after the swap.
SIDE = "__squashkit_new"
KEPT = "__squashkit_prev"
Mode = Literal["side", "in-place"]


def preflight(
    config: Config,
    target: Target,
    manifest_extensions: list[str],
    log: Log,
    *,
    source: Target | None = None,
    manifest: bundle.Manifest | None = None,
    files_change: bool = False,
    force: bool = False,
    jobs: int = 1,
    squashing: bool = False,
    rebuilds: bool = True,
) -> None:
    """Step 0: refuse before anything changes when the result could not be trusted.

    Unapplied migrations or model changes without a migration would be faked and silently
    lost on a live source (``source``); a bundle (``manifest``) of another project, or newer than
    the code, would come back under models that do not describe it (``provenance``); an extension the target server lacks would fail the restore after the drop.
    ``rebuilds=False`` (a squash that moves no data, ``online.preflight`` checks the rest):
    nothing is dropped or built beside the target, so its sessions and side names do not matter.
    """
    for app in (source or target).project.own_apps():
        migration_files(app)  # an unreadable folder looks empty to Django: refused before it is taken for the repair case
    checked = source or target
    aliases = checked.project.postgres_aliases() if source else []
    checks = [
        *((("squashkit-migrated", alias), "it has unapplied migrations: run migrate first" if len(aliases) == 1 else
           f"it has unapplied migrations on {alias}: run migrate --database {alias} first") for alias in aliases),
        (("makemigrations", "--check", "--dry-run"), "its models have changes without a migration: run makemigrations first"),
    ]
    wanted = checks
    outcomes = checked.manage.checks(*(args for args, _meaning in wanted), what="preflight checks")
    for (args, meaning), (passed, crash) in zip(wanted, outcomes):
        if crash:
            raise BadInput(f"preflight on {checked.name}: {' '.join(args)} failed: {crash}")
        repairing = _lost_migration_files(checked) if not passed and squashing and args[0] == "makemigrations" else []
        if repairing:
            log(
                f"{', '.join(repairing)}: migration files are gone but the tables and django_migrations rows remain; "
                "the squash regenerates them and fakes them only if they build exactly the existing schema"
            )
            continue
        if not passed:
            raise BadInput(f"refusing to go on: {meaning} on {checked.name} (they would be faked and lost)")
    if manifest is not None:  # another project's bundle, or one newer than the code
        provenance.check(manifest, target.project)
    needed = sorted(set(manifest_extensions) | set(config.extensions))
    params = target.params().with_dbname("postgres")
    admin = target.admin()
    with postgres.connect(admin or params) as conn:
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions")}
        missing = [name for name in needed if name not in available]
        if missing:
            raise BadInput(f"the target server lacks the extension(s) {', '.join(missing)}: install them there first")
        server = conn.info.server_version
    for program in ("pg_dump", "pg_restore"):
        clients.require_client_for_server(clients.client_program(program, config.pg_bin), server)
    if rebuilds:
        require_safe_to_drop(target)
        require_no_leftovers(target)
        for alias in primary_aliases(target.project):  # an extension in another schema on the target
            found = {e.alias: e.foundation for e in manifest.databases}.get(alias) if manifest else _live_foundation(source, alias)
            foundation.require_same_schemas(target.params(alias), found, f"{(source or target).name if source else 'the bundle'}")
    require_connection_headroom(target, jobs)
    if files_change:
        require_committed_migrations(target, force, log)
    log(f"preflight ok: migrations applied and complete on {(source or target).name}; extensions {', '.join(needed) or 'none'} available")


def _live_foundation(source: Target | None, alias: str) -> foundation.Foundation | None:
    if source is None or alias not in source.project.postgres_aliases():
        return None
    with postgres.connect(source.params(alias)) as conn:
        return foundation.read(conn)


def _lost_migration_files(target: Target) -> list[str]:
    """Own apps with no migration file on disk whose migrations django_migrations says were applied:
    the repair case (files deleted, tables still there), which a squash can mend."""
    with postgres.connect(target.params()) as conn:
        if not conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
            return []
        applied = {row[0] for row in conn.execute("SELECT DISTINCT app FROM django_migrations")}
    return [app.label for app in target.project.own_apps() if not app.migrations and app.label in applied]


def require_connection_headroom(target: Target, jobs: int) -> None:
    """Refuse when the server has too few free connections for the run: pg_restore --jobs opens
    one per job, and squashkit, manage.py and the lock hold three more; running out halfway
    would fail a restore after the drop."""
    needed = jobs + 3
    with postgres.connect(target.params().with_dbname("postgres")) as conn:
        limit, reserved, in_use = conn.execute(
            """SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
                      (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"""
        ).fetchone()
    free = limit - reserved - in_use
    if free < needed:
        raise BadInput(
            f"the server has {free} free connections (max_connections {limit}, {reserved} reserved, {in_use} in use) "
            f"and this run needs {needed} (--jobs {jobs} + 3): lower --jobs or free connections (nothing was changed)"
        )


def require_committed_migrations(target: Target, force: bool, log: Log) -> None:
    """Migration files with uncommitted changes would be deleted with no copy in git: refuse without --force."""
    dirty = uncommitted_migration_changes(target.project, target.manage.cwd)
    if dirty and not force:
        raise BadInput(
            f"{len(dirty)} migration file(s) have uncommitted changes in git ({', '.join(dirty[:3])}"
            f"{', ...' if len(dirty) > 3 else ''}): commit them, or pass --force (the bundle keeps a copy); nothing was changed"
        )
    if dirty:
        log(f"--force: {len(dirty)} migration file(s) with uncommitted changes; the bundle's tarball keeps them")


def require_safe_to_drop(target: Target) -> None:
    """Refuse before anything changes when step 3 could not finish what it starts.

    The owner of a database may drop it without CREATEDB; without an admin connection to create
    it, step 3 would leave the environment with no database at all. Sessions of roles the user
    may not end (a superuser's psql, another application's role) would make the drop fail after
    the migration files were already deleted.
    """
    admin = target.admin()
    for alias in primary_aliases(target.project):
        params = target.params(alias)
        with postgres.connect(params.with_dbname("postgres")) as conn:
            blocking = [] if admin else postgres.sessions_we_cannot_end(conn, params.dbname)
            if blocking:
                raise BadInput(
                    f"{params.dbname} has sessions {params.user or 'this user'} may not end "
                    f"({', '.join(s.describe() for s in blocking)}): stop them or configure an admin connection "
                    "(nothing was changed)"
                )
            if admin is None and not _may_create_databases(conn):
                raise BadInput(
                    f"{params.user} may not create databases, so {target.name}'s {params.dbname} could be dropped but not "
                    f"created again: ALTER ROLE {params.user} CREATEDB, or configure an admin connection (nothing was changed)"
                )


def require_no_leftovers(target: Target) -> None:
    """A side database left by an earlier run is named, never reused or silently dropped."""
    for alias in primary_aliases(target.project):
        live = target.params(alias).dbname
        with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
            name = live + SIDE
            if postgres.database_exists(conn, name):
                raise BadInput(
                    f"{name} is left over from an earlier run ({postgres.database_comment(conn, name) or 'no comment'}): "
                    "run squashkit resume, or squashkit cleanup to remove it (nothing was changed)"
                )


def _may_create_databases(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]


def scan_losses(target: Target, accept_loss: bool, log: Log, *, full_report: Path | None = None,
                adjust: Callable[[LossReport], LossReport] | None = None) -> LossReport:
    """Before any file is deleted: what regenerated migrations would forget, what is carried over,
    and a refusal (without --accept-loss) for what cannot be. ``full_report``: a file the report is
    written to with every reason whole (a large history's report is cut to one line per operation).
    A project without apps of its own is refused first (``project.squashed_apps``)."""
    squashed_apps(target.project)
    report = losses.scan(target.manage, target.project)
    # The file with every reason is written only for a refusal, which names it: a run that goes on
    # (or is then not confirmed) leaves nothing behind; `squashkit losses --full` prints it any time.
    report = adjust(report) if adjust else report  # a squash that moves no data settles data migrations later (freshproof)
    refusing = bool(report.with_verdict("lost")) and not accept_loss
    full_report = losses.write_full(report, full_report, log) if full_report and refusing else None
    where = f" (every reason whole: {full_report})" if full_report else ""
    log(f"what the regenerated migrations would forget{where}:\n" + losses.render(report))
    losses.require_nothing_lost(report, accept_loss, full_report=full_report)
    return report


def backup_step(config: Config, target: Target, log: Log, record: Journal, step: str) -> Path:
    record.started(step, target.name)
    made = backup(config, target=target, log=log, skip_missing=step == "backup target")
    record.finished(step, target.name, bundle=str(made))
    return made


def safety_backup(config: Config, target: Target, log: Log, record: Journal) -> Path | None:
    """A full bundle of the target before it is replaced; None when its database does not exist yet."""
    params = target.params()
    try:
        with postgres.connect(params.with_dbname("postgres")) as conn:
            exists = postgres.database_exists(conn, params.dbname)
    except BadInput:
        exists = True  # cannot tell from the maintenance database: let the backup say what is wrong
    if not exists:
        log(f"{target.name}'s database {params.dbname} does not exist yet: nothing to save")
        return None
    log(f"safety backup of {target.name} before anything is replaced")
    return backup_step(config, target, log, record, "backup target")


def delete_migrations(project: ProjectInfo, log: Log) -> list[Path]:
    """Step 2: delete every migration module of the project's own apps; keep ``__init__.py``.

    Third-party apps are never touched. Returns the deleted files.
    """
    deleted = []
    for app in project.own_apps():
        folder = app.migrations_folder_resolved
        if folder is None:
            continue
        for path in sorted(folder.iterdir()):
            if path.name == "__pycache__":
                shutil.rmtree(path)
            elif path.is_file() and path.name != "__init__.py":
                path.unlink()
                deleted.append(path)
    log(f"deleted {len(deleted)} migration files of {len(project.own_apps())} apps")
    return deleted


def put_back_migrations(
    bundle_dir: Path, root: Path, manifest: bundle.Manifest, log: Log, project: ProjectInfo | None = None
) -> None:
    """Undo of step 2 (and of 5): the project's migration folders exactly as the bundle has them."""
    own = {app.migrations_folder_resolved for app in project.own_apps() if app.migrations_folder_resolved} if project else None
    for app in manifest.own_apps.values():
        if app.resolved_folder is None:
            continue
        folder = (root / app.resolved_folder).resolve()
        if own is not None and folder not in own and not folder.is_relative_to(root.resolve()):
            raise OperationFailed(f"{bundle_dir.name} names {folder} as a migrations folder, which is not one of this project's")
        for path in folder.iterdir() if folder.is_dir() else []:
            if path.name == "__pycache__":
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
    extract_migrations(bundle_dir / manifest.migrations_archive, root)
    log(f"migration files put back from {bundle_dir.name}/{manifest.migrations_archive}")


def put_back_saved(target: Target, saved: Path, log: Log) -> None:
    """The migration files as they were before a rollback started, from its own tarball."""
    for app in target.project.own_apps():
        for path in migration_files(app):
            path.unlink()
    extract_migrations(saved, target.manage.cwd)
    log(f"migration files put back from {saved.name}")


def side_name(live: str, suffix: str) -> str:
    """``live`` + suffix, refused when PostgreSQL would silently cut it to 63 bytes (two runs' names could collide)."""
    name = live + suffix
    if len(name.encode()) > 63:
        raise BadInput(f"database name {live!r} is too long for a side copy named {name!r} (63 bytes at most): use --in-place")
    return name


def choose_mode(target: Target, in_place: bool) -> tuple[Mode, str]:
    """Side database unless asked otherwise, and why, as ``check`` and the plan say it."""
    if in_place:
        return "in-place", "--in-place: drop and recreate the database under its own name (no second copy on the server)"
    names = [target.params(alias).dbname for alias in primary_aliases(target.project)]
    for name in names:
        side_name(name, SIDE)
    return "side", (
        f"build {', '.join(n + SIDE for n in names)} beside the live database, verify it, then swap by renaming "
        f"(the old one is kept as {KEPT}); needs room for a second copy on the server, else use --in-place"
    )


def recreate_database(
    target: Target, alias: str, like: postgres.DatabaseFacts | None, extensions: list[str], log: Log,
    found: foundation.Foundation | None = None,
) -> None:
    """Step 3: end other sessions, drop, create from template0 like the source, lay its foundation
    (settings, schemas, extensions in their schemas and their rows: ``foundation.lay``).

    ``like`` gives the encoding and locale; None keeps the dropped database's own (UTF8 and the
    server's defaults when there was none).
    """
    params = target.params(alias)
    admin = target.admin()
    with postgres.connect(params.with_dbname("postgres")) as conn:
        owner = conn.execute("SELECT current_user").fetchone()[0]
        may_create = _may_create_databases(conn)
        blocked = bool(postgres.sessions_we_cannot_end(conn, params.dbname))
    if not may_create and admin is None:
        # Its owner may drop it without CREATEDB: it would be dropped and never created again.
        raise OperationFailed(
            f"{params.user} may not create databases and {target.name} has no admin connection: {params.dbname} was not dropped"
        )
    use_admin = admin is not None and (not may_create or blocked)
    with postgres.connect((admin if use_admin else params).with_dbname("postgres")) as conn:
        if like is not None:
            locale = (like.encoding, like.collate, like.ctype)
        else:
            locale = postgres.database_locale(conn, params.dbname) or postgres.database_locale(conn, "template0")
        for session in postgres.other_sessions(conn, params.dbname):
            if session.user:  # autovacuum and other server workers step aside on their own
                log(f"ending session {session.describe()} on {params.dbname}")
        try:
            postgres.drop_database(conn, params.dbname)
            conn.execute(postgres.create_database_statement(params.dbname, owner, *locale))
        except psycopg.Error as exc:
            raise OperationFailed(f"recreating {params.dbname} failed: {first_line(exc)}") from None
    log(f"recreated database {params.dbname} owned by {owner}")
    # A bundle older than its foundation record gets the extensions alone, in their default schemas.
    log(f"{params.dbname}: " + "; ".join(foundation.lay(params, admin, found, extra_extensions=extensions) or ["empty"]))


def create_side_database(
    target: Target, alias: str, name: str, like: postgres.DatabaseFacts, extensions: list[str], run: str, log: Log,
    found: foundation.Foundation | None = None,
) -> None:
    """Side mode's step 3: a new database ``name`` like the source, owned by the target's user,
    its comment naming the run so that only this run's undo or ``resume`` ever drops it."""
    params = target.params(alias)
    admin = target.admin()
    with postgres.connect(params.with_dbname("postgres")) as conn:
        owner = conn.execute("SELECT current_user").fetchone()[0]
        may_create = _may_create_databases(conn)
    with postgres.connect((params if may_create else admin or params).with_dbname("postgres")) as conn:
        if postgres.database_exists(conn, name):
            raise OperationFailed(f"{name} exists already ({postgres.database_comment(conn, name) or 'no comment'}): it was not reused")
        try:
            conn.execute(postgres.create_database_statement(name, owner, like.encoding, like.collate, like.ctype))
            postgres.comment_on_database(conn, name, f"squashkit run {run}: new {params.dbname}, being built")
        except psycopg.Error as exc:
            raise OperationFailed(f"creating {name} failed: {first_line(exc)}") from None
    log(f"created side database {name} owned by {owner}")
    log(f"{name}: " + "; ".join(foundation.lay(params.with_dbname(name), admin, found, extra_extensions=extensions) or ["empty"]))


def pg_restore(config: Config, target: Target, alias: str, dump: Path, jobs: int, log: Log, *, dbname: str | None = None) -> None:
    """Step 4: restore without the extensions' own entries, as the target's user, stopping at the first error.

    pg_restore's exit code cannot tell a good restore from a truncated one (both exit 1 with
    errors), so every entry that is expected to fail is removed first and ``--exit-on-error``
    makes any remaining error fail the step. A custom-format file restores in one transaction.
    """
    params = target.params(alias)
    params = params.with_dbname(dbname or params.dbname)
    program = clients.client_program("pg_restore", config.pg_bin)
    with postgres.connect(params) as conn:
        skip = postgres.extension_tables(conn)
        made = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        extension_schemas = [row[0] for row in conn.execute(
            "SELECT DISTINCT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE n.nspname <> 'pg_catalog'")]
    toc, dropped = clients.filtered_toc(program, dump, skip, made)
    with tempfile.TemporaryDirectory(prefix="squashkit-toc-") as private:
        listing = Path(private) / "toc.list"
        listing.write_text(toc)
        args = ["-w", "-v", "--no-owner", "--no-privileges", "--exit-on-error", "-L", str(listing)]
        args += ["-d", make_conninfo(dbname=params.dbname)]
        args += [f"--jobs={jobs}"] if dump.is_dir() and jobs > 1 else ["--single-transaction"]
        what = f"pg_restore into {params.dbname}"
        log(f"[{alias}] pg_restore of {dump.name} into {params.describe()} ({len(dropped)} entries the new database has already)")
        tables = toc.count(" TABLE DATA ")

        def run(more: list[str]) -> None:
            # An encrypted dump reaches pg_restore decrypted through its stdin, never on disk (once per pass).
            with bundlefiles.program_input(dump) as (files, stdin):
                clients.run_client(program, [*args, *more, *files], params, what=what, stdin=stdin,
                                   watch=progress.counting(f"pg_restore of {alias}", "processing data for table", tables))

        if not re.search(r"^\d+; \d+ \d+ (FUNCTION|PROCEDURE) ", toc, re.MULTILINE):
            run([])
        else:  # functions of its own may call extensions unqualified: foundation.restore_pinned says why
            foundation.restore_pinned(run, params, [*paths_of(target.project, sharing(target.project, alias)), *extension_schemas])


def record_history(
    target: Target, manifest: bundle.Manifest, log: Log, *, databases: dict[str, str] | None = None,
    regenerated: list[str] | None = None,
) -> None:
    """Step 6: each alias's django_migrations as the bundle recorded it, ids and applied times kept,
    for every app whose files this run does not change; the files on disk of ``regenerated`` apps (a
    squash's new files) recorded as applied in their place (a newer code's: ``migrate_newer``).

    The dump holds each django_migrations without its rows, so the table is filled here. Faking
    the whole history into it would lose the ids and times, and ``migrate --fake`` sends
    post_migrate with the state from before the fake (Django does not advance it when faking):
    handlers calling ``apps.get_model`` fail on it, as no deploy would. The regenerated apps' rows
    are written as the online squash writes them, for the apps the bundle's table had rows of: an
    app a database never recorded stays unrecorded. A bundle without a django_migrations for an
    alias (none existed) gets ``migrate --fake`` there; never --fake-initial, which runs contrib
    migrations for real against existing tables. ``databases`` points at the side databases.
    """
    names = databases or {}
    manage = target.manage.on(names) if names else target.manage
    order = migrate_order(target.project)
    entries = {e.alias: e for e in manifest.databases}
    new_files = {app.label: [*migration_names(app), *(name for _app, name in carry.replaced_names(app.migrations_folder_resolved))]
                 for app in target.project.own_apps() if app.label in (regenerated or [])}
    filled: set[tuple[str, str]] = set()  # (database, table): two aliases whose search_paths find one table share it
    faked: list[str] = []
    for alias in order:
        params = target.params(alias)
        params = params.with_dbname(names.get(alias, params.dbname))
        entry = entries.get(alias)
        with postgres.connect(params, autocommit=False) as conn:
            table, _rows = history.found(conn)
            if entry is None or entry.facts.django_migrations_table is None or table is None:
                conn.rollback()
                faked.append(alias)
                continue
            if (params.dbname, table) in filled:
                conn.rollback()
                continue
            recorded = history.recorded_rows(entry)
            kept = [row for row in recorded if row.app not in new_files]
            written = [history.Row(app=label, name=name) for label, found in new_files.items()
                       if any(row.app == label for row in recorded) for name in found]
            history.replace_all(conn, table, kept + written)
            conn.commit()
            filled.add((params.dbname, table))
        log(f"[{alias}] django_migrations put back as the bundle recorded it ({len(kept)} rows, ids and times kept)"
            + (f"; {len(written)} rows for the regenerated files of {', '.join(new_files)}" if new_files else ""))
    # In the order the test runner migrates them: the first alias decides where a shared table goes.
    for alias in faked:
        manage.run("migrate", "--fake", "--database", alias, "-v", "0", what=f"migrate --fake on {alias}")
        log(f"[{alias}] the bundle has no django_migrations here: migrate --fake recorded the files as applied")


def migrate_newer(target: Target, missing: dict[str, list[tuple[str, str]]], log: Log, *,
                  databases: dict[str, str] | None = None) -> None:
    """Step 6b, for a code newer than the bundle: its migrations the bundle's database never applied,
    run for real (``migrate``) on the bundle's own rows, in the layout's alias order."""
    names = databases or {}
    manage = target.manage.on(names) if names else target.manage
    for alias in migrate_order(target.project):
        if missing.get(alias):
            manage.run("migrate", "--database", alias, "-v", "0", what=f"migrate on {alias}")
            log(f"[{alias}] migrate ran {len(missing[alias])} migration(s) the bundle's database never applied")


def verify(target: Target, manifest: bundle.Manifest | None, log: Log, *, databases: dict[str, str] | None = None,
           contents: bool = True) -> None:
    """Step 7: every table holds what the bundle recorded, by content (row counts for bundles made
    before squashkit recorded content hashes); migrations and models agree with the database.
    ``contents=False``: the contents were verified already (``verify_contents``, before a newer
    code's migrations ran, which may change rows); only the migrations and models are here.

    Row counts alone would pass a restore that changed every value of a column."""
    databases = databases or {}
    manage = target.manage.on(databases) if databases else target.manage
    by_content = verify_contents(target, manifest, databases) if contents else False
    aliases = target.project.postgres_aliases()
    *migrated, (complete, models_error) = manage.checks(
        *(("squashkit-migrated", alias) for alias in aliases), ("makemigrations", "--check", "--dry-run"), what="verify checks",
    )
    for alias, (applied, migrate_error) in zip(aliases, migrated):
        if not applied:
            on = f" on {alias}" if len(aliases) > 1 else ""
            raise OperationFailed(f"verify: migrate --check{on} failed: {migrate_error or 'not every migration is applied'}")
    if target.project.tenancy is not None:  # migrate --check asks public alone
        params = target.params(target.project.tenancy.alias)
        tenants.require_every_schema_migrated(
            target.project, params.with_dbname(databases.get(target.project.tenancy.alias, params.dbname)), log)
    if not complete:
        raise OperationFailed(f"verify: makemigrations --check failed: {models_error or 'the models have changes no migration holds'}")
    held = ("every table holds the bundle's content; " if by_content else "every table has the bundle's row count; ") \
        if manifest and contents else ""
    log(f"verified: {held}migrate --check and makemigrations --check are clean")


def verify_contents(target: Target, manifest: bundle.Manifest | None, databases: dict[str, str]) -> bool:
    """Every table holds what the bundle recorded; whether that was by content hashes (else row counts)."""
    by_content = False
    for entry in manifest.databases if manifest else []:
        if entry.alias not in target.project.postgres_aliases() or entry.dump_of:
            continue  # another alias's entry holds that database's tables
        params = target.params(entry.alias)
        with postgres.connect(params.with_dbname(databases.get(entry.alias, params.dbname))) as conn:
            problems = bundle.holds_what_was_recorded(conn, entry)
        if problems:
            more = f"; {len(problems) - 1} more tables differ" if len(problems) > 1 else ""
            raise OperationFailed(f"verify on {entry.alias}: {problems[0]}{more}")
        by_content = by_content or bool(entry.contents)
    return by_content


def require_files_match_history(target: Target, log: Log) -> None:
    """``rollback --kept``'s verification, without starting Django: every migration file of the
    project's own apps now on disk is recorded as applied in the database now live.

    A kept database was verified with its files before it was swapped out; this proves the files
    that came back are those (``migrate --check``'s question, asked of the disk and one table)."""
    for alias in target.project.postgres_aliases():
        with postgres.connect(target.params(alias)) as conn:
            table = conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]
            applied = set(conn.execute("SELECT app, name FROM django_migrations").fetchall()) if table else set()
        for app in target.project.own_apps():
            if alias not in app.aliases:
                continue
            missing = [name for name in migration_names(app) if (app.label, name) not in applied]
            if missing:
                raise OperationFailed(
                    f"verify: {app.label}'s migration files {', '.join(missing[:3])} are not applied on {alias}: "
                    "the files and the database do not go together"
                )
    log("verified: every migration file on disk is applied in the database now live")


def kept_note(target: Target, mode: Mode) -> str:
    """What a confirmation says of the databases an earlier run kept, which this run's swap drops
    (only once this run is verified): a safety net is never removed without the user being told."""
    if mode != "side":
        return ""
    kept = []
    for alias in primary_aliases(target.project):
        name = side_name(target.params(alias).dbname, KEPT)
        with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
            if postgres.database_exists(conn, name):
                kept.append(f"{name} ({postgres.database_comment(conn, name) or 'no comment'})")
    if not kept:
        return ""
    return (f" Once verified, the swap drops {', '.join(kept)}, kept by an earlier run (its state is in that run's "
            "safety bundle; squashkit rollback --kept would no longer reach it).")


def swap_in(target: Target, alias: str, new: str, run: str, log: Log) -> None:
    """Side mode's last step: the verified ``new`` takes the live name in one transaction, the live
    database becomes ``<name>__squashkit_prev``. A database kept by an earlier run is dropped
    first: its state is in that run's safety bundle."""
    live = target.params(alias).dbname
    kept = side_name(live, KEPT)
    with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
        if postgres.database_exists(conn, kept):
            log(f"dropping {kept}, kept by an earlier run ({postgres.database_comment(conn, kept) or 'no comment'})")
            postgres.drop_database(conn, kept)
        for session in postgres.other_sessions(conn, live):
            if session.user:
                log(f"ending session {session.describe()} on {live}")
        when = bundle.utc_now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            had = postgres.swap_databases(
                conn, live=live, new=new, previous=kept, comment=f"squashkit run {run}: {live} as it was until {when} UTC"
            )
        except psycopg.Error as exc:
            raise OperationFailed(f"renaming {new} to {live} failed: {first_line(exc)}") from None
    log(f"swapped {new} in as {live}" + (f"; the previous database is kept as {kept}" if had else ""))


def undo_side(
    config: Config, target: Target, run: str, live: dict[str, str], work: dict[str, str], files_from: Path | None, log: Log
) -> str:
    """Undo a side-mode phase, whatever point it reached: drop the side databases this run made,
    swap back any it already swapped in, and put the migration files back from ``files_from``.
    A database two aliases reach is undone once."""
    for alias, name in once_per_database(target.project, live).items():
        server = target.server(alias).with_dbname("postgres")
        kept = side_name(name, KEPT)
        with postgres.connect(server) as conn:
            if postgres.database_exists(conn, work[alias]) and made_by(conn, work[alias], run):
                postgres.drop_database(conn, work[alias])
                log(f"dropped {work[alias]}")
            elif postgres.database_exists(conn, kept) and made_by(conn, kept, run):
                # Swapped in already: the kept database goes back under the live name.
                postgres.swap_databases(conn, live=name, new=kept, previous=work[alias], comment=f"squashkit run {run}: undone")
                postgres.drop_database(conn, work[alias])
                log(f"{kept} is {name} again")
    if files_from is not None:
        put_back_migrations(files_from, target.manage.cwd, bundle.read_manifest(files_from), log, target.project)
    return f"Nothing was lost: {target.name}'s database{'s are' if len(live) > 1 else ' is'} as before" + (
        " and the migration files are back." if files_from else "."
    )


def made_by(conn: psycopg.Connection, dbname: str, run: str) -> bool:
    """Whether squashkit's comment on ``dbname`` names ``run``: only then may an undo drop or rename it."""
    return run in (postgres.database_comment(conn, dbname) or "")
