"""The procedure, in one place: restore, squash, promote and rollback.

Each command is a list of named steps, in order, each with what undoes it:

    step               does                                                      undone by
    0 preflight        migrate --check, makemigrations --check on the source,   (changes nothing)
                       extensions available on the target, client versions,
                       CREATEDB (or an admin connection) on the target
    1 backup           a verified bundle of the source (and of the target,       (changes nothing)
                       before anything is dropped)
    2 delete           the project's own migration files (--squash only),        putting the files back from
      migrations       symlinked folders followed, __init__.py kept              the bundle's tarball
    3 recreate         end other sessions, DROP DATABASE, CREATE DATABASE ...   the safety bundle's dump
                       OWNER from template0, CREATE EXTENSION                   (else its db.json)
    4 pg_restore       from a table of contents without the extensions' own     the same
                       entries, stopping at the first error
    5 makemigrations   for every project app (--squash only)                     deleting the new files
    6 migrate --fake   for every alias, into a fresh django_migrations           the same as 3
    7 verify           row counts equal the manifest; migrate --check and        (changes nothing)
                       makemigrations --check are clean

A failure at step 3 or later puts the target back without asking: migration files from the
tarball, the database from the target's safety bundle. The command then exits 1 and says which
step failed, why, and what state the target is in.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tarfile
import tempfile
import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, Field

from squashkit import bundle, journal, locks, losses, postgres, schema
from squashkit.backup import backup
from squashkit.config import Config, Environment
from squashkit.errors import BadInput, Interrupted, OperationFailed, SquashkitError, UndoIncomplete
from squashkit.journal import Journal
from squashkit.losses import LossReport
from squashkit.project import (
    ManagePy,
    ProjectInfo,
    archive_migrations,
    introspect,
    manage_py,
    migration_files,
    verify_archive_matches_disk,
)

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PlannedStep(BaseModel):
    """One step of a plan, as ``--dry-run`` prints it."""

    name: str
    does: str = Field(description="What the step does, in a sentence.")
    commands: list[str] = Field(default_factory=list, description="Programs and SQL it runs (no passwords).")
    undo: str = Field(description="What undoes it.")


class Target(BaseModel):
    """One environment, resolved: its manage.py, its project facts, its connections."""

    name: str
    environment: Environment
    manage: ManagePy
    project: ProjectInfo

    def params(self, alias: str = "default") -> postgres.ConnectionParams:
        return self.project.connection(alias)


def resolve(config: Config, env: str | None) -> Target:
    """The environment's manage.py and what the project is under its settings."""
    name, environment = config.environment(env)
    manage = manage_py(config, name, environment)
    return Target(name=name, environment=environment, manage=manage, project=introspect(manage))


# --- asking before anything is dropped -----------------------------------------------------------


def confirm(question: str, *, yes: bool, protected: str | None = None, typed: str | None = None) -> None:
    """Go on only when the user said so; the default is always no.

    A protected environment (``protected = true``) wants its database's name, typed at the
    prompt or given as ``--confirm NAME`` with ``--yes``: ``--yes`` alone is not enough there.
    """
    if protected is not None:
        if typed is not None and typed != protected:
            raise BadInput(f"--confirm {typed!r} does not name the protected database {protected!r}: nothing was changed")
        if typed == protected and (yes or not sys.stdin.isatty()):
            return
        if not sys.stdin.isatty():
            raise BadInput(f"{question} The environment is protected: pass --yes --confirm {protected} to go on without a terminal")
        answer = input(f"{question} This environment is protected: type the database name ({protected}) to go on: ").strip()
        if answer != protected:
            raise BadInput("nothing was changed: the name typed does not match")
        return
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question} Refusing without a terminal: pass --yes to confirm")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise BadInput("nothing was changed: not confirmed")


def _protected(target: Target) -> str | None:
    return target.params().dbname if target.environment.protected else None


@contextlib.contextmanager
def _exclusive(config: Config, run: str, targets: list[Target]) -> Iterator[None]:
    """One run at a time on these databases and this checkout's migration files; no run may start
    while an earlier one on the same environments is interrupted (resume it first)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(locks.migration_files(targets[0].manage.cwd, run))
        for target in targets:
            for alias in target.project.postgres_aliases():
                stack.enter_context(locks.database(target.params(alias), run))
        left = journal.interrupted(config.backup_dir, {target.name for target in targets})
        if left:
            raise BadInput(
                f"an earlier run was interrupted ({left[-1].describe()}): run squashkit resume to finish or undo it "
                "first (nothing was changed)"
            )
        yield


@contextlib.contextmanager
def _journalled(config: Config, run: str, **header) -> Iterator[Journal]:
    """The run's journal, ended with its outcome; a run interrupted after it changed something stays
    open, for ``squashkit resume``."""
    try:
        config.backup_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot write the run's journal in backup_dir {config.backup_dir}: {exc.strerror} (nothing was changed)") from None
    record = Journal.create(config.backup_dir, journal.Header(
        run=run, config=config.source, pid=os.getpid(), host=socket.gethostname(), started_at=bundle.utc_now(), **header
    ))
    try:
        yield record
    except KeyboardInterrupt:
        if not record.changed_anything:
            record.end("failed", "interrupted before anything changed")
            raise
        raise Interrupted(f"interrupted during run {run}: run squashkit resume to finish or undo it") from None
    except UndoIncomplete:
        raise  # the journal stays open: resume finishes the undo
    except BaseException as exc:
        record.end("failed", _first_line(exc))
        raise
    record.end("finished")


# --- the steps ------------------------------------------------------------------------------------


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
) -> None:
    """Step 0: refuse before anything changes when the result could not be trusted.

    Unapplied migrations or model changes without a migration would be faked and silently
    lost, on a live source (``source``) or in a bundle older than the code (``manifest``);
    an extension the target server lacks would fail the restore after the drop.
    """
    for app in (source or target).project.own_apps():
        migration_files(app)  # an unreadable folder looks empty to Django: refused before it is taken for the repair case
    checks = [
        (("migrate", "--check"), "it has unapplied migrations: run migrate first"),
        (("makemigrations", "--check", "--dry-run"), "its models have changes without a migration: run makemigrations first"),
    ]
    for args, meaning in checks if source else checks[1:]:
        checked = source or target
        passed, crash = checked.manage.passes(*args)
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
    if manifest is not None:
        code = {app.label: app.migrations for app in target.project.apps}
        bundle.require_matches_code(manifest, code, name="the bundle")
    needed = sorted(set(manifest_extensions) | set(config.extensions))
    params = target.params().with_dbname("postgres")
    admin = _admin_params(target)
    with postgres.connect(admin or params) as conn:
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions")}
        missing = [name for name in needed if name not in available]
        if missing:
            raise BadInput(f"the target server lacks the extension(s) {', '.join(missing)}: install them there first")
        server = conn.info.server_version
    for program in ("pg_dump", "pg_restore"):
        postgres.require_client_for_server(postgres.client_program(program, config.pg_bin), server)
    require_safe_to_drop(target)
    require_no_leftovers(target)
    require_connection_headroom(target, jobs)
    if files_change:
        require_committed_migrations(target, force, log)
    log(f"preflight ok: migrations applied and complete on {(source or target).name}; extensions {', '.join(needed) or 'none'} available")


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
    from squashkit.project import uncommitted_migration_changes

    dirty = uncommitted_migration_changes(target.project, target.manage.cwd)
    if dirty and not force:
        raise BadInput(
            f"{len(dirty)} migration file(s) have uncommitted changes in git ({', '.join(dirty[:3])}"
            f"{', ...' if len(dirty) > 3 else ''}): commit them, or pass --force (the bundle keeps a copy); nothing was changed"
        )
    if dirty:
        log(f"--force: {len(dirty)} migration file(s) with uncommitted changes; the bundle's tarball keeps them")


def require_equivalent_schema(config: Config, target: Target, databases: dict[str, str], allow_drift: bool, log: Log) -> None:
    """Before ``migrate --fake`` tells Django the database looks like the new migrations, prove it:
    build a scratch database from the new migration files alone (a real ``migrate``, the same
    extensions) and compare its catalogs with the restored database, definition by definition.
    Names that differ only because of old renames are reported, not refused."""
    admin = _admin_params(target)
    manage = target.manage.on(databases)
    for alias in target.project.postgres_aliases():
        params = target.params(alias)
        params = params.with_dbname(databases.get(alias, params.dbname))
        expected = schema.migrations_schema(manage, alias, params, admin=admin, extensions=config.extensions)
        with postgres.connect(params) as conn:
            actual = schema.snapshot(conn)
        diff = schema.compare(expected, actual)
        if diff.cosmetic:
            log(f"[{alias}] {len(diff.cosmetic)} name(s) differ only because of old renames (harmless): "
                + "; ".join(d.summary() for d in diff.cosmetic[:3]))
        if diff.matches:
            log(f"[{alias}] the new migrations build exactly the restored schema")
            continue
        log(f"[{alias}] the new migrations do not build the restored schema:\n{diff.render()}")
        if not allow_drift:
            raise OperationFailed(
                f"the new migrations do not build {alias}'s schema ({diff.summary()}): faking them would hide it; "
                "fix the models or the database, or pass --allow-drift to fake them anyway"
            )
        log("--allow-drift: faking the new migrations despite the differences above")


def scan_losses(target: Target, accept_loss: bool, log: Log) -> LossReport:
    """Before any file is deleted: what regenerated migrations would forget, what is carried over,
    and a refusal (without --accept-loss) for what cannot be."""
    report = losses.scan(target.manage, target.project)
    log("what the regenerated migrations would forget:\n" + losses.render(report))
    losses.require_nothing_lost(report, accept_loss)
    return report


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
    _extract_migrations(bundle_dir / manifest.migrations_archive, root)
    log(f"migration files put back from {bundle_dir.name}/{manifest.migrations_archive}")


def _extract_migrations(tarball: Path, root: Path) -> None:
    """Write every file of a migrations tarball under ``root``, refusing entries that would leave it."""
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not member.isfile():
                raise OperationFailed(f"{tarball.name} holds an unsafe entry {member.name!r}")
            destination = root / name  # through the app's own symlink, as when it was archived
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())


def recreate_database(target: Target, alias: str, like: postgres.DatabaseFacts | None, extensions: list[str], log: Log) -> None:
    """Step 3: end other sessions, drop, create from template0 like the source, create extensions.

    ``like`` gives the encoding and locale; None keeps the dropped database's own (UTF8 and the
    server's defaults when there was none).
    """
    params = target.params(alias)
    admin = _admin_params(target)
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
            raise OperationFailed(f"recreating {params.dbname} failed: {_first_line(exc)}") from None
    log(f"recreated database {params.dbname} owned by {owner}")
    for name in sorted(set(extensions) - {"plpgsql"}):
        postgres.create_extension(params, admin, name)
    if set(extensions) - {"plpgsql"}:
        log(f"created extensions {', '.join(sorted(set(extensions) - {'plpgsql'}))}")


def _may_create_databases(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]


def require_safe_to_drop(target: Target) -> None:
    """Refuse before anything changes when step 3 could not finish what it starts.

    The owner of a database may drop it without CREATEDB; without an admin connection to create
    it, step 3 would leave the environment with no database at all. Sessions of roles the user
    may not end (a superuser's psql, another application's role) would make the drop fail after
    the migration files were already deleted.
    """
    admin = _admin_params(target)
    for alias in target.project.postgres_aliases():
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


# --- side databases: build beside the live one, swap in by renaming ---------------------------------

SIDE = "__squashkit_new"
KEPT = "__squashkit_prev"
Mode = Literal["side", "in-place"]


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
    names = [target.params(alias).dbname for alias in target.project.postgres_aliases()]
    for name in names:
        side_name(name, SIDE)
    return "side", (
        f"build {', '.join(n + SIDE for n in names)} beside the live database, verify it, then swap by renaming "
        f"(the old one is kept as {KEPT}); needs room for a second copy on the server, else use --in-place"
    )


def _server_params(target: Target, alias: str) -> postgres.ConnectionParams:
    """Who creates, renames and drops databases: the admin connection when there is one, else the user."""
    return _admin_params(target) or target.params(alias)


def create_side_database(
    target: Target, alias: str, name: str, like: postgres.DatabaseFacts, extensions: list[str], run: str, log: Log
) -> None:
    """Side mode's step 3: a new database ``name`` like the source, owned by the target's user,
    its comment naming the run so that only this run's undo or ``resume`` ever drops it."""
    params = target.params(alias)
    admin = _admin_params(target)
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
            raise OperationFailed(f"creating {name} failed: {_first_line(exc)}") from None
    log(f"created side database {name} owned by {owner}")
    for extension in sorted(set(extensions) - {"plpgsql"}):
        postgres.create_extension(params.with_dbname(name), admin, extension)


def swap_in(target: Target, alias: str, new: str, run: str, log: Log) -> None:
    """Side mode's last step: the verified ``new`` takes the live name in one transaction, the live
    database becomes ``<name>__squashkit_prev``. A database kept by an earlier run is dropped
    first: its state is in that run's safety bundle."""
    live = target.params(alias).dbname
    kept = side_name(live, KEPT)
    with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
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
            raise OperationFailed(f"renaming {new} to {live} failed: {_first_line(exc)}") from None
    log(f"swapped {new} in as {live}" + (f"; the previous database is kept as {kept}" if had else ""))


def require_no_leftovers(target: Target) -> None:
    """A side database left by an earlier run is named, never reused or silently dropped."""
    for alias in target.project.postgres_aliases():
        live = target.params(alias).dbname
        with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
            name = live + SIDE
            if postgres.database_exists(conn, name):
                raise BadInput(
                    f"{name} is left over from an earlier run ({postgres.database_comment(conn, name) or 'no comment'}): "
                    "run squashkit resume, or squashkit cleanup to remove it (nothing was changed)"
                )


def pg_restore(config: Config, target: Target, alias: str, dump: Path, jobs: int, log: Log, *, dbname: str | None = None) -> None:
    """Step 4: restore without the extensions' own entries, as the target's user, stopping at the first error.

    pg_restore's exit code cannot tell a good restore from a truncated one (both exit 1 with
    errors), so every entry that is expected to fail is removed first and ``--exit-on-error``
    makes any remaining error fail the step. A custom-format file restores in one transaction.
    """
    params = target.params(alias)
    params = params.with_dbname(dbname or params.dbname)
    program = postgres.client_program("pg_restore", config.pg_bin)
    with postgres.connect(params) as conn:
        skip = postgres.extension_tables(conn)
    toc, dropped = postgres.filtered_toc(program, dump, skip)
    with tempfile.TemporaryDirectory(prefix="squashkit-toc-") as private:
        listing = Path(private) / "toc.list"
        listing.write_text(toc)
        args = ["-w", "--no-owner", "--no-privileges", "--exit-on-error", "-L", str(listing)]
        args += ["-d", make_conninfo(dbname=params.dbname)]
        args += [f"--jobs={jobs}"] if dump.is_dir() and jobs > 1 else ["--single-transaction"]
        log(f"[{alias}] pg_restore of {dump.name} into {params.describe()} ({len(dropped)} extension entries left to CREATE EXTENSION)")
        postgres.run_client(program, [*args, str(dump)], params, what=f"pg_restore into {params.dbname}")


def fake_migrations(target: Target, log: Log, *, databases: dict[str, str] | None = None) -> None:
    """Step 6: mark every migration applied, per alias, into a django_migrations with no stale rows.

    The dump excludes django_migrations, so the table is created fresh here: a name reused by
    regenerated files (0001_initial) cannot count as applied by accident. Never --fake-initial,
    which runs contrib migrations for real against existing tables. ``databases`` points the
    aliases at the side databases being built.
    """
    databases = databases or {}
    manage = target.manage.on(databases) if databases else target.manage
    for alias in target.project.postgres_aliases():
        params = target.params(alias)
        with postgres.connect(params.with_dbname(databases.get(alias, params.dbname))) as conn:
            if conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
                conn.execute("TRUNCATE django_migrations")
        manage.run("migrate", "--fake", "--database", alias, "-v", "0", what=f"migrate --fake on {alias}")
    log("migrate --fake done on " + ", ".join(target.project.postgres_aliases()))


def verify(target: Target, manifest: bundle.Manifest | None, log: Log, *, databases: dict[str, str] | None = None) -> None:
    """Step 7: every table holds the manifest's row count; migrations and models agree with the database."""
    databases = databases or {}
    manage = target.manage.on(databases) if databases else target.manage
    for entry in manifest.databases if manifest else []:
        if entry.alias not in target.project.postgres_aliases():
            continue
        params = target.params(entry.alias)
        with postgres.connect(params.with_dbname(databases.get(entry.alias, params.dbname))) as conn:
            actual = postgres.table_counts(conn)
        for table in entry.facts.tables:
            if table.qualified == entry.facts.django_migrations_table:
                continue
            if actual.get(table.qualified) != table.rows:
                raise OperationFailed(
                    f"verify: {table.qualified} has {actual.get(table.qualified, 'no table, so 0')} rows on "
                    f"{entry.alias}, the bundle says {table.rows}"
                )
    manage.run("migrate", "--check", what="verify: migrate --check")
    manage.run("makemigrations", "--check", "--dry-run", what="verify: makemigrations --check")
    counted = "every table has the bundle's row count; " if manifest else ""
    log(f"verified: {counted}migrate --check and makemigrations --check are clean")


def _fault(point: str) -> bool:
    """Test-only fault injection: $SQUASHKIT_TEST_FAULT names a point where a real run breaks."""
    return os.environ.get("SQUASHKIT_TEST_FAULT") == point


def _truncated_copy(dump: Path) -> Path:
    """A copy of a custom-format dump cut to 60%, as a disk or a transfer gone wrong leaves it (test-only)."""
    copy = Path(tempfile.mkdtemp(prefix="squashkit-fault-")) / dump.name
    copy.write_bytes(dump.read_bytes()[: dump.stat().st_size * 6 // 10])
    return copy


def _admin_params(target: Target) -> postgres.ConnectionParams | None:
    admin = target.environment.admin
    return admin.params(target.params()) if admin else None


# --- the commands -----------------------------------------------------------------------------------


class Shape(BaseModel):
    """What step 3 recreates a database like: the source's encoding, locale and extensions."""

    encoding: str
    collate: str
    ctype: str
    extensions: list[str]


def _live_shape(params: postgres.ConnectionParams) -> Shape:
    with postgres.connect(params) as conn:
        encoding, collate, ctype = postgres.database_locale(conn, params.dbname)
        return Shape(encoding=encoding, collate=collate, ctype=ctype, extensions=postgres.installed_extensions(conn))


def _plan(
    config: Config, *, squash: bool, target: Target, source_label: str, manifest_hint: str, shapes: dict[str, Shape],
    mode: Mode = "side",
) -> list[PlannedStep]:
    """The steps a restore-like command will take on ``target``, with the SQL and programs they run.

    The SQL is rendered by psycopg exactly as step 3 sends it, for the target's real user and
    the source's real encoding, locale and extensions.
    """
    aliases = [alias for alias in target.project.postgres_aliases() if alias in shapes]
    swaps: list[PlannedStep] = []
    steps = [
        PlannedStep(
            name="preflight",
            does=f"refuse unless {source_label} has no unapplied migrations and no model changes without one",
            commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"],
            undo="nothing to undo",
        ),
        PlannedStep(
            name="backup",
            does=f"safety bundle of {target.name} before anything is dropped",
            commands=["pg_dump -Fc --exclude-table=django_migrations", "manage.py dumpdata --all --format jsonl"],
            undo="nothing to undo",
        ),
    ]
    if squash:
        steps.insert(1, PlannedStep(
            name="loss report",
            does="load the migrations and list what regenerated ones would forget; refuse what cannot be carried over "
                 "(--accept-loss drops it knowingly)",
            commands=["manage.py shell -c <squashkit/inproject/losses.py>"],
            undo="nothing to undo",
        ))
        steps.append(PlannedStep(
            name="delete migrations",
            does="delete the migration files of " + ", ".join(a.label for a in target.project.own_apps()),
            commands=[f"rm {a.migrations_folder_resolved}/[!_]*.py" for a in target.project.own_apps() if a.migrations_folder_resolved],
            undo="the files are put back from the bundle's migrations.tar.gz",
        ))
    for alias in aliases:
        params, shape = target.params(alias), shapes[alias]
        live = params.dbname
        name = side_name(live, SIDE) if mode == "side" else live
        with postgres.connect(params.with_dbname("postgres")) as conn:
            owner = conn.execute("SELECT current_user").fetchone()[0]
            statements = [
                *([] if mode == "side" else [postgres.drop_database_statement(live)]),
                postgres.create_database_statement(name, owner, shape.encoding, shape.collate, shape.ctype),
                *(postgres.create_extension_statement(ext) for ext in sorted(set(shape.extensions) | set(config.extensions)) if ext != "plpgsql"),
            ]
            rendered = [statement.as_string(conn) for statement in statements]
            swap = [
                postgres.rename_database_statement(live, side_name(live, KEPT)).as_string(conn),
                postgres.rename_database_statement(name, live).as_string(conn),
            ]
        undo = "drop the side database (the live one is untouched)" if mode == "side" else "restore from the safety bundle"
        steps.append(PlannedStep(
            name=f"create {alias}",
            does=(f"create the side database {name} beside {live}" if mode == "side"
                  else f"end other sessions, drop and recreate {name} ({params.describe()})"),
            commands=rendered,
            undo=undo,
        ))
        steps.append(PlannedStep(
            name=f"pg_restore {alias}",
            does=f"restore {manifest_hint} without the extensions' own entries, stopping at the first error",
            commands=[f"pg_restore -w --no-owner --no-privileges --exit-on-error -L <filtered toc> -d {name}"],
            undo=undo,
        ))
        if mode == "side":
            swaps.append(PlannedStep(
                name=f"swap {alias}",
                does=f"end other sessions on {live}; in one transaction {live} becomes {side_name(live, KEPT)} and {name} becomes {live}",
                commands=swap,
                undo="rename back: squashkit resume, or squashkit rollback with the safety bundle",
            ))
    if squash:
        labels = " ".join(a.label for a in target.project.own_apps())
        steps.append(PlannedStep(
            name="makemigrations", does="fresh initial migrations for every project app, plus what the loss report carries over",
            commands=[f"manage.py makemigrations {labels}"], undo="the old files are put back from the tarball",
        ))
        steps.append(PlannedStep(
            name="schema equivalence",
            does="build a scratch database from the new migrations alone and compare its catalogs with the restored one; "
                 "stop on any real difference (--allow-drift goes on)",
            commands=["CREATE DATABASE <name>__squashkit_scratch ...", "manage.py migrate (into the scratch database)",
                      "DROP DATABASE <name>__squashkit_scratch"],
            undo="the scratch database is always dropped",
        ))
    steps.append(PlannedStep(
        name="migrate --fake", does="mark every migration applied in a fresh django_migrations",
        commands=[f"manage.py migrate --fake --database {alias}" for alias in aliases],
        undo="drop the side database (the live one is untouched)" if mode == "side" else "restore from the safety bundle",
    ))
    steps.append(PlannedStep(
        name="verify", does="row counts equal the bundle's; migrate --check and makemigrations --check clean",
        commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"], undo="nothing to undo",
    ))
    return steps + swaps


def print_plan(steps: list[PlannedStep], out=None) -> None:
    out = out or sys.stdout
    for number, step in enumerate(steps):
        print(f"{number}. {step.name}: {step.does}", file=out)
        for command in step.commands:
            print(f"     $ {command}", file=out)
        print(f"     undo: {step.undo}", file=out)


def _replace_database(
    config: Config,
    target: Target,
    source_bundle: Path,
    safety_bundle: Path | None,
    *,
    squash: bool,
    jobs: int,
    log: Log,
    mode: Mode,
    journal: Journal,
    fallback: str | None = None,
    carried: LossReport | None = None,
    allow_drift: bool = False,
) -> None:
    """Steps 2-7 (and the swap), journalled, with automatic undo on any failure.

    Side mode builds ``<name>__squashkit_new`` and swaps it in only once verified: a failure
    drops the side database and the live one was never touched. In place, a failure after the
    drop puts the target back from ``safety_bundle``. ``fallback`` names what the caller does
    itself when this fails (rollback's db.json): then the failure is only reported.
    """
    manifest = bundle.read_manifest(source_bundle)
    safety = bundle.read_manifest(safety_bundle) if safety_bundle else None
    entries = [e for e in manifest.databases if e.alias in target.project.postgres_aliases()]
    live, work, side = _phase_databases(target, [e.alias for e in entries], mode)
    env = target.name
    journal.started(
        "phase", env, mode=mode, squash=squash, source_bundle=str(source_bundle),
        safety_bundle=str(safety_bundle) if safety_bundle else None,
        databases={alias: {"live": live[alias], "work": work[alias]} for alias in live},
    )
    step = "delete migrations"
    changed = squash  # from here on, a failure has something to put back
    try:
        if squash:
            verify_archive_matches_disk(target.project, target.manage.cwd, source_bundle / manifest.migrations_archive)
            journal.started(step, env, archive=str(source_bundle / manifest.migrations_archive))
            delete_migrations(target.project, log)
            journal.finished(step, env)
        for entry in entries:
            alias = entry.alias
            extensions = [*entry.facts.extensions, *config.extensions]
            step = f"create {alias}"
            journal.started(step, env, database=work[alias], drops=None if side else live[alias])
            changed = True
            if side:
                create_side_database(target, alias, work[alias], entry.facts, extensions, journal.run, log)
            else:
                recreate_database(target, alias, entry.facts, extensions, log)
            journal.finished(step, env)
            step = f"pg_restore {alias}"
            journal.started(step, env, database=work[alias])
            dump = source_bundle / entry.dump
            if _fault(f"truncate-dump:{target.name}"):  # what pg_restore reads is damaged
                dump = _truncated_copy(dump)
            if _fault(f"damage-bundle:{target.name}"):  # the bundle itself is damaged on disk
                shutil.copyfile(_truncated_copy(dump), dump)
            pg_restore(config, target, alias, dump, jobs, log, dbname=work[alias])
            journal.finished(step, env)
        if squash:
            step = "makemigrations"
            journal.started(step, env)
            labels = [app.label for app in target.project.own_apps()]
            target.manage.on(side).run("makemigrations", *labels, "-v", "0", what="makemigrations")
            log(f"makemigrations done for {', '.join(labels)}")
            if carried is not None:
                written = losses.carry_over(carried, target.project)
                if written:
                    log("carried over into " + ", ".join(str(path.relative_to(target.manage.cwd)) for path in written))
            journal.finished(step, env)
            step = "schema equivalence"
            journal.started(step, env)
            require_equivalent_schema(config, target, side, allow_drift, log)
            journal.finished(step, env)
        step = "migrate --fake"
        journal.started(step, env)
        fake_migrations(target, log, databases=side)
        journal.finished(step, env)
        step = "verify"
        journal.started(step, env)
        verify(target, manifest, log, databases=side)
        journal.finished(step, env)
        step = "swap"
        _swap_all(target, live, side, journal, log)
        journal.finished("phase", env)
    except (SquashkitError, psycopg.Error) as exc:
        reason = _first_line(exc)
        journal.failed(step, env, reason)
        if not changed:
            raise
        if fallback and not side:
            raise OperationFailed(f"step '{step}' failed: {reason}") from None
        if side:
            log(f"step '{step}' failed: {reason}; removing what this run built ({target.name}'s database was not touched)")
            try:
                state = _undo_side(config, target, journal.run, live, work, source_bundle if squash else None, log)
            except (SquashkitError, psycopg.Error) as undo:
                raise UndoIncomplete(
                    f"step '{step}' failed: {reason}; undoing it failed too: {_first_line(undo)}. "
                    "Run squashkit resume once that is mended: it finishes the undo"
                ) from None
        else:
            log(f"step '{step}' failed: {reason}; putting {target.name} back as it was")
            state = _roll_back(config, target, safety_bundle, safety, log)
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None


def _phase_databases(target: Target, aliases: list[str], mode: Mode) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(live names, the names the phase builds, the side names alone: empty in place), per alias."""
    live = {alias: target.params(alias).dbname for alias in aliases}
    work = {alias: side_name(name, SIDE) for alias, name in live.items()} if mode == "side" else dict(live)
    return live, work, (work if mode == "side" else {})


def _swap_all(target: Target, live: dict[str, str], side: dict[str, str], record: Journal, log: Log) -> None:
    """Step 8 for every alias, each journalled before it acts."""
    for alias in side:
        record.started(f"swap {alias}", target.name, database=live[alias], kept=side_name(live[alias], KEPT))
        swap_in(target, alias, side[alias], record.run, log)
        record.finished(f"swap {alias}", target.name)


def _undo_side(
    config: Config, target: Target, run: str, live: dict[str, str], work: dict[str, str], files_from: Path | None, log: Log
) -> str:
    """Undo a side-mode phase, whatever point it reached: drop the side databases this run made,
    swap back any it already swapped in, and put the migration files back from ``files_from``."""
    for alias, name in live.items():
        server = _server_params(target, alias).with_dbname("postgres")
        kept = side_name(name, KEPT)
        with postgres.connect(server) as conn:
            if postgres.database_exists(conn, work[alias]) and _made_by(conn, work[alias], run):
                postgres.drop_database(conn, work[alias])
                log(f"dropped {work[alias]}")
            elif postgres.database_exists(conn, kept) and _made_by(conn, kept, run):
                # Swapped in already: the kept database goes back under the live name.
                postgres.swap_databases(conn, live=name, new=kept, previous=work[alias], comment=f"squashkit run {run}: undone")
                postgres.drop_database(conn, work[alias])
                log(f"{kept} is {name} again")
    if files_from is not None:
        put_back_migrations(files_from, target.manage.cwd, bundle.read_manifest(files_from), log, target.project)
    return f"Nothing was lost: {target.name}'s database{'s are' if len(live) > 1 else ' is'} as before" + (
        " and the migration files are back." if files_from else "."
    )


def _made_by(conn: psycopg.Connection, dbname: str, run: str) -> bool:
    """Whether squashkit's comment on ``dbname`` names ``run``: only then may an undo drop or rename it."""
    return run in (postgres.database_comment(conn, dbname) or "")


def _roll_back(config: Config, target: Target, safety_bundle: Path | None, safety: bundle.Manifest | None, log: Log) -> str:
    """Put the target back from its safety bundle, its dump first and its db.json when the dump
    fails too; say the state the target is in now, or the command that finishes the job."""
    if safety_bundle is None or safety is None:
        return f"There was no database to save before; {target.name}'s database is incomplete: drop it or restore a bundle."
    finish = f"finish it with: squashkit rollback {safety_bundle} --env {target.name} --yes"
    try:
        put_back_migrations(safety_bundle, target.manage.cwd, safety, log, target.project)
        target = resolve(config, target.name)
    except (SquashkitError, OSError) as exc:
        return f"Putting the migration files back failed ({exc}); {finish}"
    try:
        for entry in safety.databases:
            recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log)
            pg_restore(config, target, entry.alias, safety_bundle / entry.dump, 1, log)
        fake_migrations(target, log)
        verify(target, safety, log)
        return f"{target.name} was put back from {safety_bundle} and verified: its data and migration files are as before."
    except (SquashkitError, psycopg.Error) as exc:
        log(f"restoring the safety dump failed ({_first_line(exc)}); rebuilding {target.name} from its db.json")
    try:
        _rollback_json(config, target, safety_bundle, safety, log)
    except (SquashkitError, psycopg.Error) as exc:
        return f"The automatic rollback failed too ({_first_line(exc)}); {finish}"
    return (
        f"{target.name} was rebuilt from {safety_bundle}'s db.json (its dump failed) and verified: "
        "every row and the migration files are as before."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def restore(
    config: Config,
    bundle_path: Path,
    *,
    env: str | None = None,
    squash: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
    in_place: bool = False,
    typed: str | None = None,
    force: bool = False,
    accept_loss: bool = False,
    allow_drift: bool = False,
    log: Log = _stderr_log,
) -> Path | None:
    """Recreate ``env``'s databases from ``bundle_path`` (steps 3-7, 2 with squash), after a safety backup.

    Returns the safety bundle's path (None for a dry run).
    """
    if jobs < 1:
        raise BadInput(f"--jobs must be at least 1 (not {jobs})")
    bundle_path = Path(bundle_path)
    manifest = bundle.read_manifest(bundle_path)
    bundle.verify_hashes(bundle_path, manifest)
    target = resolve(config, env)
    mode, _why = choose_mode(target, in_place)
    if dry_run:
        shapes = {
            e.alias: Shape(encoding=e.facts.encoding, collate=e.facts.collate, ctype=e.facts.ctype, extensions=list(e.facts.extensions))
            for e in manifest.databases
        }
        print_plan(_plan(config, squash=squash, target=target, source_label=f"bundle {bundle_path.name}",
                         manifest_hint=bundle_path.name, shapes=shapes, mode=mode))
        return None
    run = journal.new_run_id("restore", target.name)
    with _exclusive(config, run, [target]):
        extensions = sorted({name for entry in manifest.databases for name in entry.facts.extensions})
        preflight(config, target, extensions, log, manifest=manifest, files_change=squash, force=force, jobs=jobs)
        report = scan_losses(target, accept_loss, log) if squash else None
        confirm(f"Replace {target.name}'s database {target.params().dbname} with {bundle_path.name}?",
                yes=yes, protected=_protected(target), typed=typed)
        with _journalled(config, run, command="restore", target=target.name, argument=str(bundle_path), squash=squash, mode=mode) as record:
            safety = _safety_backup(config, target, log, record)
            _replace_database(config, target, bundle_path, safety, squash=squash, jobs=jobs, log=log, mode=mode, journal=record,
                              carried=report, allow_drift=allow_drift)
    log(f"{target.name} restored from {bundle_path.name}; the previous state is in {safety}")
    return safety


def squash(
    config: Config,
    *,
    env: str | None = None,
    yes: bool = False,
    dry_run: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    force: bool = False,
    accept_loss: bool = False,
    allow_drift: bool = False,
    log: Log = _stderr_log,
) -> Path | None:
    """Migration zero on one environment: backup, delete migrations, rebuild, makemigrations, migrate --fake."""
    target = resolve(config, env)
    mode, _why = choose_mode(target, in_place)
    if dry_run:
        shapes = {alias: _live_shape(target.params(alias)) for alias in target.project.postgres_aliases()}
        print_plan(_plan(config, squash=True, target=target, source_label=target.name, manifest_hint="the new bundle",
                         shapes=shapes, mode=mode))
        return None
    run = journal.new_run_id("squash", target.name)
    with _exclusive(config, run, [target]):
        with postgres.connect(target.params()) as conn:
            extensions = postgres.installed_extensions(conn)
        preflight(config, target, extensions, log, source=target, files_change=True, force=force, squashing=True)
        report = scan_losses(target, accept_loss, log)
        confirm(
            f"Delete the migration files of {len(target.project.own_apps())} apps and rebuild {target.name}'s database "
            f"{target.params().dbname}?",
            yes=yes, protected=_protected(target), typed=typed,
        )
        with _journalled(config, run, command="squash", target=target.name, squash=True, mode=mode) as record:
            made = _backup_step(config, target, log, record, "backup")
            _replace_database(config, target, made, made, squash=True, jobs=1, log=log, mode=mode, journal=record,
                              carried=report, allow_drift=allow_drift)
    log(f"{target.name} squashed; the previous state is in {made}")
    return made


def promote(
    config: Config,
    spec: str,
    *,
    squash: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    force: bool = False,
    accept_loss: bool = False,
    allow_drift: bool = False,
    log: Log = _stderr_log,
) -> Path | None:
    """``SOURCE-to-TARGET``: back up the source, save the target, rebuild it from the source's dump."""
    source_name, target_name = parse_promotion(spec, config)
    source = resolve(config, source_name)
    target = resolve(config, target_name)
    mode, _why = choose_mode(target, in_place)
    if dry_run:
        shapes = {alias: _live_shape(source.params(alias)) for alias in source.project.postgres_aliases()}
        print_plan(_plan(config, squash=squash, target=target, source_label=source.name,
                         manifest_hint=f"{source.name}'s new bundle", shapes=shapes, mode=mode))
        return None
    run = journal.new_run_id("promote", target.name)
    with _exclusive(config, run, [target, source]):
        with postgres.connect(source.params()) as conn:
            extensions = postgres.installed_extensions(conn)
        preflight(config, target, extensions, log, source=source, files_change=squash, force=force, squashing=squash)
        report = None
        if squash:
            require_no_leftovers(source)
            report = scan_losses(source, accept_loss, log)
        _require_target_unchanged(config, source, target, force, log)
        confirm(f"Replace {target.name}'s database {target.params().dbname} with {source.name}'s data?",
                yes=yes, protected=_protected(target), typed=typed)
        with _journalled(config, run, command="promote", target=target.name, source=source.name, argument=spec,
                         squash=squash, mode=mode) as record:
            fingerprint = _source_fingerprint(source)
            source_bundle = _backup_step(config, source, log, record, "backup source")
            safety = _safety_backup(config, target, log, record)
            if squash:
                # The files are shared by both environments: squash them once, on the source.
                _replace_database(config, source, source_bundle, source_bundle, squash=True, jobs=1, log=log, mode=mode,
                                  journal=record, carried=report, allow_drift=allow_drift)
                target = resolve(config, target_name)
            try:
                _replace_database(config, target, source_bundle, safety, squash=False, jobs=1, log=log, mode=mode, journal=record)
            except OperationFailed as exc:
                if not squash:
                    raise
                # The target was put back with the old migration files: the squashed source must
                # follow, or its django_migrations would name files that no longer exist.
                state = _undo_phase(config, record.read(), source.name, log)
                raise OperationFailed(f"{exc} The source was un-squashed too: {state}") from None
            _record_lineage(config, source, target, fingerprint, source_bundle, log)
            _resync_lineage(config, source, target, log)
    before = f"its previous state is in {safety}" if safety else "it had no database before"
    log(f"{target.name} now holds {source.name}'s data (bundle {source_bundle}); {before}")
    return source_bundle


def _require_target_unchanged(config: Config, source: Target, target: Target, force: bool, log: Log) -> None:
    """The drift guard: when ``source`` was refreshed from ``target`` by squashkit, ``target`` must not
    have taken writes since, or promoting would silently replace them (``--force`` accepts it)."""
    from squashkit import lineage

    refreshed = lineage.read(config.backup_dir, source.name)
    if refreshed is None or refreshed.source_env != target.name:
        log(f"{source.name} was not refreshed from {target.name} by squashkit: no drift check")
        return
    params = target.params()
    with postgres.connect(params.with_dbname("postgres")) as conn:
        if not postgres.database_exists(conn, params.dbname):
            return
    with postgres.connect(params) as conn:
        current = lineage.fingerprint(conn)
    found = lineage.require_unchanged(config.backup_dir, source_env=source.name, target_env=target.name, current=current, force=force)
    if found:
        log(f"--force: {target.name} took writes since {source.name} was refreshed from it; they are replaced: " + "; ".join(found[:5]))
    else:
        log(f"{target.name} has taken no writes since {source.name} was refreshed from it")


def _source_fingerprint(source: Target):
    """The source's fingerprint, taken before its backup: a write that lands in between is in the
    copy but not in the record, which can only make a later drift check stricter, never blind."""
    from squashkit import lineage

    with postgres.connect(source.params()) as conn:
        return lineage.fingerprint(conn)


def _record_lineage(config: Config, source: Target, target: Target, fingerprint, source_bundle: Path, log: Log) -> None:
    from squashkit import lineage

    lineage.record(config.backup_dir, source_env=source.name, target_env=target.name, database=source.params().dbname,
                   fingerprint=fingerprint, bundle=source_bundle)
    log(f"recorded {source.name}'s fingerprint: a later promote {target.name}-to-{source.name} checks it has taken no writes")


def _resync_lineage(config: Config, source: Target, target: Target, log: Log) -> None:
    """After ``source``-to-``target``, a record of ``source`` refreshed from ``target`` describes a
    ``target`` that no longer exists: it now holds ``source``'s data, so the record is renewed with
    ``target``'s new fingerprint (else the next promote would see the promote itself as drift)."""
    from squashkit import lineage

    earlier = lineage.read(config.backup_dir, source.name)
    if earlier is None or earlier.source_env != target.name:
        return
    with postgres.connect(target.params()) as conn:
        current = lineage.fingerprint(conn)
    lineage.record(config.backup_dir, source_env=target.name, target_env=source.name, database=target.params().dbname,
                   fingerprint=current, bundle=earlier.bundle)


def parse_promotion(spec: str, config: Config) -> tuple[str, str]:
    if "-to-" not in spec:
        raise BadInput(f"promote takes SOURCE-to-TARGET, e.g. dev-to-prod (not {spec!r})")
    source, target = spec.split("-to-", 1)
    for name in (source, target):
        config.environment(name)
    if source == target:
        raise BadInput("promote needs two different environments")
    return source, target


def _backup_step(config: Config, target: Target, log: Log, record: Journal, step: str) -> Path:
    record.started(step, target.name)
    made = backup(config, env=target.name, log=log)
    record.finished(step, target.name, bundle=str(made))
    return made


def _safety_backup(config: Config, target: Target, log: Log, record: Journal) -> Path | None:
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
    return _backup_step(config, target, log, record, "backup target")


def rollback(
    config: Config,
    path: Path,
    *,
    env: str | None = None,
    yes: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    log: Log = _stderr_log,
) -> None:
    """Put ``env`` back from a bundle (its dump when intact, else its db.json) or from a db.json.

    Which way back is usable is decided before anything changes: the dump (full fidelity) when
    every file of it is intact, else the json; neither means refusing. The migration files of the
    moment are saved first, so a rollback that fails leaves them as they were.
    """
    path = Path(path)
    target = resolve(config, env)
    mode, _why = choose_mode(target, in_place)
    bundle_dir, manifest, use_dump = _rollback_source(path)
    run = journal.new_run_id("rollback", target.name)
    with _exclusive(config, run, [target]):
        require_safe_to_drop(target)
        if mode == "side":
            require_no_leftovers(target)
        confirm(f"Replace {target.name}'s database {target.params().dbname} with {path}?",
                yes=yes, protected=_protected(target), typed=typed)
        with _journalled(config, run, command="rollback", target=target.name, argument=str(path), mode=mode) as record:
            _rollback_run(config, target, path, bundle_dir, manifest, use_dump, mode, record, log)


def rollback_kept(
    config: Config, *, env: str | None = None, yes: bool = False, typed: str | None = None, log: Log = _stderr_log
) -> None:
    """Swap the database a side-mode run kept (``<name>__squashkit_prev``) back in, in seconds,
    with the migration files it goes with; the database it replaces becomes the kept one, so a
    second ``rollback --kept`` undoes the first and nothing is ever dropped."""
    target = resolve(config, env)
    aliases = target.project.postgres_aliases()
    live = {alias: target.params(alias).dbname for alias in aliases}
    runs = set()
    comments: dict[str, str] = {}
    for alias in aliases:
        with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
            comment = postgres.database_comment(conn, live[alias] + KEPT) if postgres.database_exists(conn, live[alias] + KEPT) else None
        if comment is None:
            raise BadInput(f"there is no kept database {live[alias] + KEPT} for {target.name}: use squashkit rollback BUNDLE")
        comments[alias] = comment
        runs.add((re.match(r"squashkit run (\S+):", comment) or [None, comment])[1])
    if len(runs) != 1:
        raise BadInput(f"the kept databases of {target.name} come from different runs ({', '.join(sorted(runs))}): use squashkit rollback BUNDLE")
    made_by = runs.pop()
    files = _kept_files(config, made_by, target.name)
    run = journal.new_run_id("rollback", target.name)
    with _exclusive(config, run, [target]):
        confirm(f"Swap {target.name}'s {', '.join(live.values())} with the database(s) kept by run {made_by}?",
                yes=yes, protected=_protected(target), typed=typed)
        with _journalled(config, run, command="rollback", target=target.name, argument="--kept", mode="side") as record:
            saved = config.backup_dir / f"{run}.migrations.tar.gz"
            if files is not None:
                record.started("save migrations", target.name, archive=str(saved))
                archive_migrations(target.project, target.manage.cwd, saved)
                saved.chmod(0o600)
                record.finished("save migrations", target.name)
            record.started("phase", target.name, mode="side", squash=False, source_bundle=None, safety_bundle=None,
                           files={"kind": files[0], "archive": str(files[1])} if files else None,
                           databases={a: {"live": n, "work": n + KEPT} for a, n in live.items()})
            exchanged: list[str] = []
            try:
                for alias, name in live.items():
                    record.started(f"exchange {alias}", target.name, database=name, kept=name + KEPT)
                    with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                        when = bundle.utc_now().strftime("%Y-%m-%d %H:%M:%S")
                        postgres.exchange_databases(conn, live=name, kept=name + KEPT, spare=name + SIDE,
                                                    comment=f"squashkit run {run}: {name} as it was until {when} UTC")
                    exchanged.append(alias)
                    record.finished(f"exchange {alias}", target.name)
                    log(f"{name}{KEPT} is {name} again; the database it replaced is kept as {name}{KEPT}")
                _put_back_kept_files(target, files, record, log)
                verify(resolve(config, target.name), None, log)
            except (SquashkitError, psycopg.Error) as exc:
                # Exchanging again is the undo; the kept database gets its own comment back.
                for alias in exchanged:
                    with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                        postgres.exchange_databases(conn, live=live[alias], kept=live[alias] + KEPT,
                                                    spare=live[alias] + SIDE, comment=comments[alias])
                if files is not None:
                    _put_back_saved(target, saved, log)
                raise OperationFailed(
                    f"rollback --kept failed ({_first_line(exc)}); {target.name}'s databases and migration files are as before"
                ) from None
            record.finished("phase", target.name)


def _kept_files(config: Config, made_by: str, env: str) -> tuple[str, Path] | None:
    """Which migration files go with the database run ``made_by`` kept: ("saved", tarball) when that
    run was a rollback, ("bundle", bundle) when it squashed ``env``, None when it left them alone."""
    path = config.backup_dir / f"{made_by}{journal.SUFFIX}"
    if not path.is_file():
        raise BadInput(f"the journal of run {made_by} is not in {config.backup_dir}: use squashkit rollback BUNDLE")
    run = journal.read(path)
    saved = run.started("save migrations", env)
    if saved is not None:
        return "saved", Path(saved.changed["archive"])
    for phase in _phases(run):
        if phase.env == env and any(e.step == "delete migrations" and e.env == env for e in run.since(phase)):
            return "bundle", Path(phase.changed["source_bundle"])
    return None


def _put_back_kept_files(target: Target, files: tuple[str, Path] | None, record: Journal, log: Log) -> None:
    if files is None:
        return
    kind, path = files
    record.started("put back migrations", target.name, kind=kind, archive=str(path))
    if kind == "saved":
        _put_back_saved(target, path, log)
    else:
        put_back_migrations(path, target.manage.cwd, bundle.read_manifest(path), log, target.project)
    record.finished("put back migrations", target.name)


def _rollback_source(path: Path) -> tuple[Path | None, bundle.Manifest | None, bool]:
    """(bundle directory, its manifest, whether its dump is usable) for a rollback PATH; refuses
    what cannot be used before anything changes."""
    if path.is_dir():
        manifest = bundle.read_manifest(path)
        damaged = bundle.damaged_files(path, manifest)
        in_a_dump = [name for name in damaged if any(_belongs_to(name, e.dump) for e in manifest.databases)]
        json_ok = not [name for name in damaged if name not in in_a_dump and name != "log.txt"]
        if manifest.migrations_archive in damaged or not (not in_a_dump or json_ok):
            raise BadInput(f"bundle {path.name} is damaged ({', '.join(damaged)}): nothing was changed; use another bundle")
        return path, manifest, not in_a_dump
    if path.is_file() and (path.parent / bundle.MANIFEST).is_file():
        # A db.json inside a bundle: the json path on purpose, with everything the bundle records.
        manifest = bundle.read_manifest(path.parent)
        if not _json_usable(path.parent, manifest):
            damaged = ", ".join(bundle.damaged_files(path.parent, manifest))
            raise BadInput(f"bundle {path.parent.name} is damaged ({damaged}): nothing was changed; use another bundle")
        return path.parent, manifest, False
    if path.is_file() and path.suffix == ".json":
        from squashkit.fixture import fixture_models

        fixture_models(path)  # read to the end before anything is dropped: a truncated file is refused
        return None, None, False
    raise BadInput(f"{path} is neither a bundle directory nor a .json fixture")


def _rollback_run(
    config: Config, target: Target, path: Path, bundle_dir: Path | None, manifest: bundle.Manifest | None,
    use_dump: bool, mode: Mode, record: Journal, log: Log, *, save_files: bool = True,
) -> None:
    saved = None
    if bundle_dir is not None and save_files:
        saved = config.backup_dir / f"{record.run}.migrations.tar.gz"
        record.started("save migrations", target.name, archive=str(saved))
        archive_migrations(target.project, target.manage.cwd, saved)
        saved.chmod(0o600)
        record.finished("save migrations", target.name)
    if bundle_dir is not None:
        record.started("put back migrations", target.name, archive=str(bundle_dir / manifest.migrations_archive))
        put_back_migrations(bundle_dir, target.manage.cwd, manifest, log, target.project)
        record.finished("put back migrations", target.name)
        target = resolve(config, target.name)
    try:
        if use_dump:
            try:
                _replace_database(config, target, bundle_dir, None, squash=False, jobs=1, log=log, mode=mode, journal=record,
                                  fallback="db.json")
                return
            except OperationFailed as exc:
                if mode == "in-place" and not _json_usable(bundle_dir, manifest):
                    raise
                log(f"restoring the dump failed ({exc}); falling back to db.json")
        elif path.is_dir():
            log(f"the dump is damaged ({', '.join(bundle.damaged_files(path, manifest))}); rebuilding from db.json")
        _rebuild_from_json(config, target, bundle_dir, manifest, None if bundle_dir else path, mode, record, log)
    except (SquashkitError, psycopg.Error) as exc:
        if mode == "in-place" or saved is None:
            raise
        _put_back_saved(target, saved, log)
        raise OperationFailed(f"{_first_line(exc)} The migration files are as they were before the rollback.") from None


def _json_usable(bundle_dir: Path, manifest: bundle.Manifest) -> bool:
    """Whether the bundle's json files, content types and migrations archive are intact (its dump may not be)."""
    damaged = bundle.damaged_files(bundle_dir, manifest)
    return not [n for n in damaged if n != "log.txt" and not any(_belongs_to(n, e.dump) for e in manifest.databases)]


def _put_back_saved(target: Target, saved: Path, log: Log) -> None:
    """The migration files as they were before a rollback started, from its own tarball."""
    for app in target.project.own_apps():
        for path in migration_files(app):
            path.unlink()
    _extract_migrations(saved, target.manage.cwd)
    log(f"migration files put back from {saved.name}")


def _rebuild_from_json(
    config: Config, target: Target, bundle_dir: Path | None, manifest: bundle.Manifest | None, lone: Path | None,
    mode: Mode, record: Journal, log: Log,
) -> None:
    """The procedure's recovery path: fresh database, real migrate, the fixture loaded faithfully
    (or, for a lone db.json without a manifest, matched by natural keys); swapped in when verified."""
    from squashkit.fixture import load_fixture

    entries = {e.alias: e for e in manifest.databases} if manifest else {}
    aliases = [a for a in (entries or ["default"]) if a in target.project.postgres_aliases()]
    live, work, side = _phase_databases(target, aliases, mode)
    manage = target.manage.on(side)
    env = target.name
    record.started("phase", env, mode=mode, squash=False, source_bundle=str(bundle_dir or lone), safety_bundle=None,
                   databases={alias: {"live": live[alias], "work": work[alias]} for alias in aliases})
    step = "create"
    try:
        for alias in aliases:
            facts = entries[alias].facts if entries else None
            extensions = [*(facts.extensions if facts else []), *config.extensions]
            step = f"create {alias}"
            record.started(step, env, database=work[alias])
            if side:
                with postgres.connect(target.params(alias).with_dbname("postgres")) as conn:
                    shape = postgres.database_locale(conn, live[alias]) or postgres.database_locale(conn, "template0")
                like = facts or postgres.DatabaseFacts.model_construct(encoding=shape[0], collate=shape[1], ctype=shape[2])
                create_side_database(target, alias, work[alias], like, extensions, record.run, log)
            else:
                recreate_database(target, alias, facts, extensions, log)
            record.finished(step, env)
        for alias in aliases:
            step = f"load json {alias}"
            record.started(step, env, database=work[alias])
            manage.run("migrate", "--database", alias, "-v", "0", what=f"migrate on {alias}")
            params = target.params(alias).with_dbname(work[alias])
            if lone is None:
                load_fixture(manage, params, bundle_dir, entries[alias], log)
            else:
                _load_lone_fixture(target, manage, params, lone, log)
            record.finished(step, env)
        step = "swap"
        _swap_all(target, live, side, record, log)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error) as exc:
        reason = _first_line(exc)
        record.failed(step, env, reason)
        if not side:
            raise
        state = _undo_side(config, target, record.run, live, work, None, log)
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None
    log(f"{target.name} rebuilt from {(lone or bundle_dir).name}" + ("" if manifest else " (no manifest: row counts could not be verified)"))


def _belongs_to(name: str, dump: str) -> bool:
    return name == dump or name.startswith(dump + "/")


def _load_lone_fixture(target: Target, manage: ManagePy, params: postgres.ConnectionParams, fixture: Path, log: Log) -> None:
    """The procedure's recovery path, literally, for a db.json with no bundle around it.

    Without a manifest there are no recorded ids, sequences or row counts to hold it to:
    content types and permissions are matched by the natural keys squashkit's db.json carries.
    Rows data migrations made (a CMS's root page and site, a lookup table) would collide with
    the fixture's own or stay as rows the source had deleted: what the fixture refills is emptied.
    """
    from squashkit.fixture import CONTENT_TYPE, PERMISSION, empty_tables, fixture_models

    labels = fixture_models(fixture) - {CONTENT_TYPE, PERMISSION}  # those two are matched by natural key
    models = [model for model in target.project.dumped_models("default", []) if model.label in labels]
    try:
        with postgres.connect(params) as conn, conn.transaction():
            names = {name for model in models for name in (model.db_table, *model.m2m_tables)}
            empty_tables(conn, sorted(filter(None, (postgres.resolve_table(conn, name) for name in names))))
    except psycopg.Error as exc:
        raise OperationFailed(f"emptying the tables {fixture.name} fills failed: {_first_line(exc)}") from None
    log(f"emptied the tables of {len(models)} models the fixture fills")
    manage.run("loaddata", str(fixture.resolve()), "-v", "0", what=f"loaddata {fixture.name}")


def _rollback_json(config: Config, target: Target, bundle_dir: Path, manifest: bundle.Manifest, log: Log) -> None:
    """In place, from a safety bundle's json (the automatic rollback's last resort)."""
    from squashkit.fixture import load_fixture

    for entry in manifest.databases:
        recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log)
    for entry in manifest.databases:
        target.manage.run("migrate", "--database", entry.alias, "-v", "0", what=f"migrate on {entry.alias}")
        load_fixture(target.manage, target.params(entry.alias), bundle_dir, entry, log)
    log(f"{target.name} rebuilt from {bundle_dir.name}'s json")


# --- after a crash: resume, status, cleanup --------------------------------------------------------


def resume(config: Config, *, run_id: str | None = None, yes: bool = False, log: Log = _stderr_log) -> str:
    """Finish or undo a run that was killed, from wherever it stopped; returns what was done.

    Before its swap began, a run is undone: the side databases it built are dropped, databases
    it already swapped in are swapped back, migration files come back from its bundle, and an
    in-place run is put back from its safety bundle. Once the last swap began (everything was
    verified), the swap is finished. An in-place rollback is finished by doing it again.
    """
    left = journal.interrupted(config.backup_dir)
    if run_id:
        left = [run for run in left if run.header.run == run_id]
        if not left:
            raise BadInput(f"no interrupted run {run_id} in {config.backup_dir} (squashkit status lists the runs)")
    if not left:
        raise BadInput(f"no interrupted run in {config.backup_dir}: nothing to resume")
    if len(left) > 1:
        raise BadInput("several interrupted runs: name one with --run (" + ", ".join(r.header.run for r in left) + ")")
    run = left[0]
    target = resolve(config, run.header.target)
    envs = [target] + ([resolve(config, run.header.source)] if run.header.source else [])
    with contextlib.ExitStack() as stack:
        stack.enter_context(locks.migration_files(target.manage.cwd, run.header.run + " (resume)"))
        for env in envs:
            for alias in env.project.postgres_aliases():
                stack.enter_context(locks.database(env.params(alias), run.header.run + " (resume)"))
        confirm(f"Resume {run.describe()}?", yes=yes)
        record = Journal.reopen(run)
        log(f"resuming {run.describe()}")
        try:
            outcome, detail = _resume(config, run, record, log)
        except BaseException as exc:
            record.failed("resume", None, _first_line(exc))
            record._file.close()
            raise
        record.end(outcome, detail)
    return detail


def _phases(run: journal.Run) -> list[journal.Entry]:
    return [e for e in run.entries if e.step == "phase" and e.event == "started"]


def _resume(config: Config, run: journal.Run, record: Journal, log: Log) -> tuple[journal.Outcome, str]:
    phases = _phases(run)
    h = run.header
    _remove_partial_bundles(config, run, log)
    _drop_scratch_databases(config, phases, log)
    if not phases:
        return "nothing to do", "the run had changed nothing yet; its half-written bundles were removed"
    last = phases[-1]
    expected = 2 if h.command == "promote" and h.squash else 1
    swap_began = any(e.step.startswith("swap ") and e.event == "started" for e in run.since(last))
    final = len(phases) == expected or (h.command == "rollback")
    if last.changed["mode"] == "side" and swap_began and final:
        target = resolve(config, last.env)
        for alias, names in last.changed["databases"].items():
            with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                pending = postgres.database_exists(conn, names["work"]) and _made_by(conn, names["work"], h.run)
            if pending:
                swap_in(target, alias, names["work"], h.run, log)
        return "finished", f"the run was finished: {target.name}'s swap completed (it had been verified)"
    if h.argument == "--kept":
        return _resume_kept(config, run, record, log)
    if h.command == "rollback" and last.changed["mode"] == "in-place":
        log("an in-place rollback is finished by doing it again")
        path = Path(h.argument)
        bundle_dir, manifest, use_dump = _rollback_source(path)
        _rollback_run(config, resolve(config, h.target), path, bundle_dir, manifest, use_dump, "in-place", record, log,
                      save_files=False)
        return "finished", f"the rollback of {h.target} from {h.argument} was done again and finished"
    states = [_undo_phase(config, run, phase.env, log) for phase in reversed(phases)]
    if h.command == "rollback":
        saved = run.started("save migrations")
        if saved and run.started("put back migrations"):
            _put_back_saved(resolve(config, h.target), Path(saved.changed["archive"]), log)
    return "rolled back", " ".join(states)


def _resume_kept(config: Config, run: journal.Run, record: Journal, log: Log) -> tuple[journal.Outcome, str]:
    """A killed ``rollback --kept``: each exchange is atomic; once one happened, the rest and the
    files are finished; before that, nothing had changed."""
    target = resolve(config, run.header.target)
    phase = _phases(run)[-1]
    done = []
    for alias, names in phase.changed["databases"].items():
        with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
            done.append(_made_by(conn, names["work"], run.header.run))
    if not any(done):
        return "rolled back", f"{target.name} was not touched: its databases were never exchanged"
    for (alias, names), exchanged in zip(phase.changed["databases"].items(), done):
        if not exchanged:
            with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                postgres.exchange_databases(conn, live=names["live"], kept=names["work"], spare=names["live"] + SIDE,
                                            comment=f"squashkit run {run.header.run}: {names['live']} (resumed)")
    files = phase.changed.get("files")
    if files:
        _put_back_kept_files(target, (files["kind"], Path(files["archive"])), record, log)
    return "finished", f"{target.name}'s kept database(s) were swapped back in, with their migration files"


def _undo_phase(config: Config, run: journal.Run, env: str, log: Log) -> str:
    """Undo what one phase of ``run`` on ``env`` changed, from wherever it stopped."""
    phase = next(e for e in reversed(_phases(run)) if e.env == env)
    info = phase.changed
    target = resolve(config, env)
    later = [e for e in run.since(phase) if e.env == env]
    files_deleted = any(e.step == "delete migrations" and e.event == "started" for e in later)
    source_bundle = Path(info["source_bundle"])
    if info["mode"] == "side":
        live = {alias: names["live"] for alias, names in info["databases"].items()}
        work = {alias: names["work"] for alias, names in info["databases"].items()}
        return _undo_side(config, target, run.header.run, live, work, source_bundle if files_deleted else None, log)
    recreated = any(e.step.startswith("create ") and e.event == "started" for e in later)
    if recreated:
        safety = Path(info["safety_bundle"]) if info.get("safety_bundle") else None
        return _roll_back(config, target, safety, bundle.read_manifest(safety) if safety else None, log)
    if files_deleted:
        put_back_migrations(source_bundle, target.manage.cwd, bundle.read_manifest(source_bundle), log, target.project)
        return f"{env}'s migration files are back; its database was not touched."
    return f"{env} was not touched."


def _drop_scratch_databases(config: Config, phases: list[journal.Entry], log: Log) -> None:
    """A killed run's schema comparison cannot drop its scratch database: the run's phases name
    the databases it built, and their scratch copies go."""
    for phase in phases:
        target = resolve(config, phase.env)
        for alias, names in phase.changed["databases"].items():
            name = schema.scratch_name(names["work"])
            with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                if postgres.database_exists(conn, name):
                    postgres.drop_database(conn, name)
                    log(f"dropped the scratch database {name} the run left")


def _remove_partial_bundles(config: Config, run: journal.Run, log: Log) -> None:
    """Half-written bundles (``.NAME.partial``) a killed run left behind in the backup directory."""
    started = run.header.started_at.timestamp()
    for path in config.backup_dir.glob(".*.partial"):
        if path.is_dir() and path.stat().st_mtime >= started - 1:
            shutil.rmtree(path)
            log(f"removed the half-written bundle {path.name}")


def status(config: Config, *, limit: int = 10) -> list[journal.Run]:
    """The last runs, newest last."""
    return journal.runs(config.backup_dir)[-limit:]


class Kept(BaseModel):
    """Something squashkit kept that ``cleanup`` may remove."""

    kind: Literal["database", "bundle", "journal"]
    name: str
    detail: str
    env: str = Field(description="The environment it belongs to.")
    alias: str | None = Field(None, description="For a database: the alias whose server holds it.")


def kept(config: Config, *, env: str | None = None, keep_bundles: int = 3) -> list[Kept]:
    """Databases kept by side-mode runs (``__squashkit_prev``, leftovers ``__squashkit_new``), and
    bundles and journals beyond the newest ``keep_bundles`` per environment."""
    found: list[Kept] = []
    names = [env] if env else list(config.environments)
    for env_name in names:
        target = resolve(config, env_name)
        for alias in target.project.postgres_aliases():
            live = target.params(alias).dbname
            with postgres.connect(_server_params(target, alias).with_dbname("postgres")) as conn:
                for name in (live + KEPT, live + SIDE, schema.scratch_name(live), schema.scratch_name(live + SIDE)):
                    if postgres.database_exists(conn, name):
                        found.append(Kept(kind="database", name=name, env=env_name, alias=alias,
                                          detail=postgres.database_comment(conn, name) or "no comment"))
        bundles = sorted(p for p in config.backup_dir.glob(f"{env_name}-*") if (p / bundle.MANIFEST).is_file())
        for old in bundles[:-keep_bundles] if keep_bundles else bundles:
            found.append(Kept(kind="bundle", name=str(old), env=env_name, detail=f"bundle of {env_name}"))
    return found


def cleanup(
    config: Config, items: list[Kept], *, yes: bool = False, typed: str | None = None, log: Log = _stderr_log
) -> None:
    """Remove what ``kept`` listed, after asking, per environment (a protected one wants its database's name)."""
    if not items:
        log("nothing to clean up")
        return
    for env_name in dict.fromkeys(item.env for item in items):
        names = ", ".join(item.name for item in items if item.env == env_name)
        confirm(f"Remove {names}?", yes=yes, protected=_protected(resolve(config, env_name)), typed=typed)
    for item in items:
        if item.kind == "database":
            with postgres.connect(_server_params(resolve(config, item.env), item.alias).with_dbname("postgres")) as conn:
                postgres.drop_database(conn, item.name)
        else:
            shutil.rmtree(item.name)
        log(f"removed {item.name}")
