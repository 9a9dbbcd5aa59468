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
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, Field

from squashkit import bundle, postgres
from squashkit.backup import backup
from squashkit.config import Config, Environment
from squashkit.errors import BadInput, OperationFailed, SquashkitError
from squashkit.project import ManagePy, ProjectInfo, introspect, manage_py

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


def confirm(question: str, *, yes: bool) -> None:
    """Go on only with --yes, or when a person at a terminal says yes (the default is no)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question} Refusing without a terminal: pass --yes to confirm")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise BadInput("nothing was changed: not confirmed")


# --- the steps ------------------------------------------------------------------------------------


def preflight(
    config: Config,
    target: Target,
    manifest_extensions: list[str],
    log: Log,
    *,
    source: Target | None = None,
    manifest: bundle.Manifest | None = None,
) -> None:
    """Step 0: refuse before anything changes when the result could not be trusted.

    Unapplied migrations or model changes without a migration would be faked and silently
    lost, on a live source (``source``) or in a bundle older than the code (``manifest``);
    an extension the target server lacks would fail the restore after the drop.
    """
    checks = [
        (("migrate", "--check"), "it has unapplied migrations: run migrate first"),
        (("makemigrations", "--check", "--dry-run"), "its models have changes without a migration: run makemigrations first"),
    ]
    for args, meaning in checks if source else checks[1:]:
        checked = source or target
        passed, crash = checked.manage.passes(*args)
        if crash:
            raise BadInput(f"preflight on {checked.name}: {' '.join(args)} failed: {crash}")
        if not passed:
            raise BadInput(f"refusing to go on: {meaning} on {checked.name} (they would be faked and lost)")
    if manifest is not None:
        _require_bundle_matches_code(target, manifest)
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
    log(f"preflight ok: migrations applied and complete on {(source or target).name}; extensions {', '.join(needed) or 'none'} available")


def _require_bundle_matches_code(target: Target, manifest: bundle.Manifest) -> None:
    """A bundle's database must have applied every migration the code has: the restore fakes
    them all, so one it never ran would be marked applied and its change never made."""
    on_disk = {(app.label, name) for app in target.project.apps for name in app.migrations}
    for entry in manifest.databases:
        if entry.facts.django_migrations_table is None:
            continue
        never_applied = sorted(on_disk - {tuple(row) for row in entry.facts.applied_migrations})
        if never_applied:
            app, name = never_applied[0]
            raise BadInput(
                f"the bundle's {entry.alias} database never applied {len(never_applied)} migration(s) the code has "
                f"(e.g. {app}.{name}): faking them would skip their changes; restore it with the code it was "
                f"taken with (squashkit rollback puts its migration files back) and migrate after"
            )


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


def put_back_migrations(bundle_dir: Path, root: Path, manifest: bundle.Manifest, log: Log) -> None:
    """Undo of step 2 (and of 5): the project's migration folders exactly as the bundle has them."""
    for app in manifest.own_apps.values():
        if app.resolved_folder is None:
            continue
        folder = (root / app.resolved_folder).resolve()
        for path in folder.iterdir() if folder.is_dir() else []:
            if path.name == "__pycache__":
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
    with tarfile.open(bundle_dir / manifest.migrations_archive) as archive:
        for member in archive.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not member.isfile():
                raise OperationFailed(f"{manifest.migrations_archive} holds an unsafe entry {member.name!r}")
            destination = root / name  # through the app's own symlink, as when it was archived
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())
    log(f"migration files put back from {bundle_dir.name}/{manifest.migrations_archive}")


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
        _create_extension(params, admin, name)
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


def _create_extension(params: postgres.ConnectionParams, admin: postgres.ConnectionParams | None, name: str) -> None:
    statement = postgres.create_extension_statement(name)
    try:
        with postgres.connect(params) as conn:
            conn.execute(statement)
        return
    except psycopg.errors.InsufficientPrivilege:
        if admin is None:
            raise OperationFailed(
                f"extension {name} needs a superuser: configure an admin connection for this environment"
            ) from None
    with postgres.connect(admin.with_dbname(params.dbname)) as conn:
        conn.execute(statement)


def pg_restore(config: Config, target: Target, alias: str, dump: Path, jobs: int, log: Log) -> None:
    """Step 4: restore without the extensions' own entries, as the target's user, stopping at the first error.

    pg_restore's exit code cannot tell a good restore from a truncated one (both exit 1 with
    errors), so every entry that is expected to fail is removed first and ``--exit-on-error``
    makes any remaining error fail the step. A custom-format file restores in one transaction.
    """
    params = target.params(alias)
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


def fake_migrations(target: Target, log: Log) -> None:
    """Step 6: mark every migration applied, per alias, into a django_migrations with no stale rows.

    The dump excludes django_migrations, so the table is created fresh here: a name reused by
    regenerated files (0001_initial) cannot count as applied by accident. Never --fake-initial,
    which runs contrib migrations for real against existing tables.
    """
    for alias in target.project.postgres_aliases():
        with postgres.connect(target.params(alias)) as conn:
            if conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
                conn.execute("TRUNCATE django_migrations")
        target.manage.run("migrate", "--fake", "--database", alias, "-v", "0", what=f"migrate --fake on {alias}")
    log("migrate --fake done on " + ", ".join(target.project.postgres_aliases()))


def verify(target: Target, manifest: bundle.Manifest, log: Log) -> None:
    """Step 7: every table holds the manifest's row count; migrations and models agree with the database."""
    for entry in manifest.databases:
        if entry.alias not in target.project.postgres_aliases():
            continue
        with postgres.connect(target.params(entry.alias)) as conn:
            actual = postgres.table_counts(conn)
        for table in entry.facts.tables:
            if table.qualified == entry.facts.django_migrations_table:
                continue
            if actual.get(table.qualified) != table.rows:
                raise OperationFailed(
                    f"verify: {table.qualified} has {actual.get(table.qualified, 'no table, so 0')} rows on "
                    f"{entry.alias}, the bundle says {table.rows}"
                )
    target.manage.run("migrate", "--check", what="verify: migrate --check")
    target.manage.run("makemigrations", "--check", "--dry-run", what="verify: makemigrations --check")
    log("verified: every table has the bundle's row count; migrate --check and makemigrations --check are clean")


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
    if admin is None:
        return None
    base = target.params()
    options = {"service": admin.service} if admin.service else {}
    return postgres.ConnectionParams(
        dbname=admin.dbname, user=admin.user, password=admin.password(),
        host=admin.host or base.host, port=admin.port or base.port, options=options,
    )


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
    config: Config, *, squash: bool, target: Target, source_label: str, manifest_hint: str, shapes: dict[str, Shape]
) -> list[PlannedStep]:
    """The steps a restore-like command will take on ``target``, with the SQL and programs they run.

    The SQL is rendered by psycopg exactly as step 3 sends it, for the target's real user and
    the source's real encoding, locale and extensions.
    """
    aliases = [alias for alias in target.project.postgres_aliases() if alias in shapes]
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
        steps.append(PlannedStep(
            name="delete migrations",
            does="delete the migration files of " + ", ".join(a.label for a in target.project.own_apps()),
            commands=[f"rm {a.migrations_folder_resolved}/[!_]*.py" for a in target.project.own_apps() if a.migrations_folder_resolved],
            undo="the files are put back from the bundle's migrations.tar.gz",
        ))
    for alias in aliases:
        params, shape = target.params(alias), shapes[alias]
        with postgres.connect(params.with_dbname("postgres")) as conn:
            owner = conn.execute("SELECT current_user").fetchone()[0]
            statements = [
                postgres.drop_database_statement(params.dbname),
                postgres.create_database_statement(params.dbname, owner, shape.encoding, shape.collate, shape.ctype),
                *(postgres.create_extension_statement(name) for name in sorted(set(shape.extensions) | set(config.extensions)) if name != "plpgsql"),
            ]
            rendered = [statement.as_string(conn) for statement in statements]
        name = params.dbname
        steps.append(PlannedStep(
            name=f"recreate {alias}",
            does=f"end other sessions, drop and recreate {name} ({params.describe()})",
            commands=rendered,
            undo="restore from the safety bundle",
        ))
        steps.append(PlannedStep(
            name=f"pg_restore {alias}",
            does=f"restore {manifest_hint} without the extensions' own entries, stopping at the first error",
            commands=[f"pg_restore -w --no-owner --no-privileges --exit-on-error -L <filtered toc> -d {name}"],
            undo="restore from the safety bundle",
        ))
    if squash:
        labels = " ".join(a.label for a in target.project.own_apps())
        steps.append(PlannedStep(
            name="makemigrations", does="fresh initial migrations for every project app",
            commands=[f"manage.py makemigrations {labels}"], undo="the old files are put back from the tarball",
        ))
    steps.append(PlannedStep(
        name="migrate --fake", does="mark every migration applied in a fresh django_migrations",
        commands=[f"manage.py migrate --fake --database {alias}" for alias in aliases], undo="restore from the safety bundle",
    ))
    steps.append(PlannedStep(
        name="verify", does="row counts equal the bundle's; migrate --check and makemigrations --check clean",
        commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"], undo="nothing to undo",
    ))
    return steps


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
    fallback: str | None = None,
) -> None:
    """Steps 2-7 with automatic rollback from ``safety_bundle`` on any failure after the drop.

    ``fallback`` names what the caller does itself when this fails (rollback's db.json): then
    the failure is only reported, not rolled back here.
    """
    manifest = bundle.read_manifest(source_bundle)
    safety = bundle.read_manifest(safety_bundle) if safety_bundle else None
    step = "delete migrations"
    changed = squash  # from here on, a failure has something to put back
    try:
        if squash:
            delete_migrations(target.project, log)
        for entry in manifest.databases:
            if entry.alias not in target.project.postgres_aliases():
                continue
            step = f"recreate {entry.alias}"
            changed = True
            recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log)
            step = f"pg_restore {entry.alias}"
            dump = source_bundle / entry.dump
            if _fault(f"truncate-dump:{target.name}"):  # what pg_restore reads is damaged
                dump = _truncated_copy(dump)
            if _fault(f"damage-bundle:{target.name}"):  # the bundle itself is damaged on disk
                shutil.copyfile(_truncated_copy(dump), dump)
            pg_restore(config, target, entry.alias, dump, jobs, log)
        if squash:
            step = "makemigrations"
            labels = [app.label for app in target.project.own_apps()]
            target.manage.run("makemigrations", *labels, "-v", "0", what="makemigrations")
            log(f"makemigrations done for {', '.join(labels)}")
        step = "migrate --fake"
        fake_migrations(target, log)
        step = "verify"
        verify(target, manifest, log)
    except (SquashkitError, psycopg.Error) as exc:
        reason = _first_line(exc)
        if not changed:
            raise
        if fallback:
            raise OperationFailed(f"step '{step}' failed: {reason}") from None
        log(f"step '{step}' failed: {reason}; putting {target.name} back as it was")
        state = _roll_back(config, target, safety_bundle, safety, log)
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None


def _roll_back(config: Config, target: Target, safety_bundle: Path | None, safety: bundle.Manifest | None, log: Log) -> str:
    """Put the target back from its safety bundle, its dump first and its db.json when the dump
    fails too; say the state the target is in now, or the command that finishes the job."""
    if safety_bundle is None or safety is None:
        return f"There was no database to save before; {target.name}'s database is incomplete: drop it or restore a bundle."
    finish = f"finish it with: squashkit rollback {safety_bundle} --env {target.name} --yes"
    try:
        put_back_migrations(safety_bundle, target.manage.cwd, safety, log)
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
    log: Log = _stderr_log,
) -> Path | None:
    """Recreate ``env``'s databases from ``bundle_path`` (steps 3-7, 2 with squash), after a safety backup.

    Returns the safety bundle's path (None for a dry run).
    """
    bundle_path = Path(bundle_path)
    manifest = bundle.read_manifest(bundle_path)
    bundle.verify_hashes(bundle_path, manifest)
    target = resolve(config, env)
    if dry_run:
        shapes = {
            e.alias: Shape(encoding=e.facts.encoding, collate=e.facts.collate, ctype=e.facts.ctype, extensions=list(e.facts.extensions))
            for e in manifest.databases
        }
        print_plan(_plan(config, squash=squash, target=target, source_label=f"bundle {bundle_path.name}",
                         manifest_hint=bundle_path.name, shapes=shapes))
        return None
    extensions = sorted({name for entry in manifest.databases for name in entry.facts.extensions})
    preflight(config, target, extensions, log, manifest=manifest)
    confirm(f"Drop and recreate {target.name}'s database {target.params().dbname} from {bundle_path.name}?", yes=yes)
    safety = _safety_backup(config, target, log)
    _replace_database(config, target, bundle_path, safety, squash=squash, jobs=jobs, log=log)
    log(f"{target.name} restored from {bundle_path.name}; the previous state is in {safety}")
    return safety


def squash(
    config: Config, *, env: str | None = None, yes: bool = False, dry_run: bool = False, log: Log = _stderr_log
) -> Path | None:
    """Migration zero on one environment: backup, delete migrations, recreate, restore, makemigrations, migrate --fake."""
    target = resolve(config, env)
    if dry_run:
        shapes = {alias: _live_shape(target.params(alias)) for alias in target.project.postgres_aliases()}
        print_plan(_plan(config, squash=True, target=target, source_label=target.name, manifest_hint="the new bundle", shapes=shapes))
        return None
    with postgres.connect(target.params()) as conn:
        extensions = postgres.installed_extensions(conn)
    preflight(config, target, extensions, log, source=target)
    confirm(
        f"Delete the migration files of {len(target.project.own_apps())} apps and recreate {target.name}'s database "
        f"{target.params().dbname}?",
        yes=yes,
    )
    made = backup(config, env=target.name, log=log)
    _replace_database(config, target, made, made, squash=True, jobs=1, log=log)
    log(f"{target.name} squashed; the previous state is in {made}")
    return made


def promote(
    config: Config,
    spec: str,
    *,
    squash: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    log: Log = _stderr_log,
) -> Path | None:
    """``SOURCE-to-TARGET``: back up the source, save the target, recreate it from the source's dump."""
    source_name, target_name = parse_promotion(spec, config)
    source = resolve(config, source_name)
    target = resolve(config, target_name)
    if dry_run:
        shapes = {alias: _live_shape(source.params(alias)) for alias in source.project.postgres_aliases()}
        print_plan(_plan(config, squash=squash, target=target, source_label=source.name,
                         manifest_hint=f"{source.name}'s new bundle", shapes=shapes))
        return None
    with postgres.connect(source.params()) as conn:
        extensions = postgres.installed_extensions(conn)
    preflight(config, target, extensions, log, source=source)
    confirm(f"Replace {target.name}'s database {target.params().dbname} with {source.name}'s data?", yes=yes)
    source_bundle = backup(config, env=source.name, log=log)
    safety = _safety_backup(config, target, log)
    if squash:
        # The files are shared by both environments: squash them once, on the source.
        _replace_database(config, source, source_bundle, source_bundle, squash=True, jobs=1, log=log)
        target = resolve(config, target_name)
    try:
        _replace_database(config, target, source_bundle, safety, squash=False, jobs=1, log=log)
    except OperationFailed as exc:
        if not squash:
            raise
        # The target's rollback put the old migration files back: the squashed source must
        # follow, or its django_migrations would name files that no longer exist.
        state = _roll_back(config, source, source_bundle, bundle.read_manifest(source_bundle), log)
        raise OperationFailed(f"{exc} The source was un-squashed too: {state}") from None
    before = f"its previous state is in {safety}" if safety else "it had no database before"
    log(f"{target.name} now holds {source.name}'s data (bundle {source_bundle}); {before}")
    return source_bundle


def parse_promotion(spec: str, config: Config) -> tuple[str, str]:
    if "-to-" not in spec:
        raise BadInput(f"promote takes SOURCE-to-TARGET, e.g. dev-to-prod (not {spec!r})")
    source, target = spec.split("-to-", 1)
    for name in (source, target):
        config.environment(name)
    if source == target:
        raise BadInput("promote needs two different environments")
    return source, target


def _safety_backup(config: Config, target: Target, log: Log) -> Path | None:
    """A full bundle of the target before it is dropped; None when its database does not exist yet."""
    params = target.params()
    try:
        with postgres.connect(params.with_dbname("postgres")) as conn:
            exists = postgres.database_exists(conn, params.dbname)
    except BadInput:
        exists = True  # cannot tell from the maintenance database: let the backup say what is wrong
    if not exists:
        log(f"{target.name}'s database {params.dbname} does not exist yet: nothing to save")
        return None
    log(f"safety backup of {target.name} before anything is dropped")
    return backup(config, env=target.name, log=log)


def rollback(config: Config, path: Path, *, env: str | None = None, yes: bool = False, log: Log = _stderr_log) -> None:
    """Put ``env`` back from a bundle (its dump when intact, else its db.json) or from a db.json."""
    path = Path(path)
    target = resolve(config, env)
    if path.is_dir():
        manifest = bundle.read_manifest(path)
        # Decide which way back is usable before anything is dropped: the dump (full fidelity)
        # when every file of it is intact, else the json; neither means refusing.
        damaged = bundle.damaged_files(path, manifest)
        in_a_dump = [name for name in damaged if any(_belongs_to(name, e.dump) for e in manifest.databases)]
        dump_ok = not in_a_dump
        json_ok = not [name for name in damaged if name not in in_a_dump and name != "log.txt"]
        if manifest.migrations_archive in damaged or not (dump_ok or json_ok):
            raise BadInput(f"bundle {path.name} is damaged ({', '.join(damaged)}): nothing was changed; use another bundle")
        require_safe_to_drop(target)
        confirm(f"Drop {target.name}'s database {target.params().dbname} and put it back from {path.name}?", yes=yes)
        put_back_migrations(path, target.manage.cwd, manifest, log)
        target = resolve(config, env)
        if dump_ok:
            try:
                _replace_database(
                    config, target, path, None, squash=False, jobs=1, log=log, fallback="db.json" if json_ok else None
                )
                return
            except OperationFailed as exc:
                if not json_ok:
                    raise
                log(f"restoring the dump failed ({exc}); falling back to db.json")
        else:
            log(f"the dump is damaged ({', '.join(damaged)}); rebuilding from db.json")
        _rollback_json(config, target, path, manifest, log)
        return
    if path.is_file() and (path.parent / bundle.MANIFEST).is_file():
        # A db.json inside a bundle: the json path on purpose, with everything the bundle records.
        manifest = bundle.read_manifest(path.parent)
        require_safe_to_drop(target)
        confirm(f"Drop {target.name}'s database {target.params().dbname} and rebuild it from {path}?", yes=yes)
        put_back_migrations(path.parent, target.manage.cwd, manifest, log)
        _rollback_json(config, resolve(config, env), path.parent, manifest, log)
        return
    if path.is_file() and path.suffix == ".json":
        require_safe_to_drop(target)
        confirm(f"Drop {target.name}'s database {target.params().dbname} and rebuild it from {path}?", yes=yes)
        _rollback_lone_fixture(config, target, path, log)
        return
    raise BadInput(f"{path} is neither a bundle directory nor a .json fixture")


def _belongs_to(name: str, dump: str) -> bool:
    return name == dump or name.startswith(dump + "/")


def _rollback_lone_fixture(config: Config, target: Target, fixture: Path, log: Log) -> None:
    """The procedure's recovery path, literally, for a db.json with no bundle around it.

    Without a manifest there are no recorded ids, sequences or row counts to hold it to:
    content types and permissions are matched by the natural keys squashkit's db.json carries.
    """
    from squashkit.fixture import CONTENT_TYPE, PERMISSION, empty_tables, fixture_models

    labels = fixture_models(fixture) - {CONTENT_TYPE, PERMISSION}  # those two are matched by natural key
    recreate_database(target, "default", None, list(config.extensions), log)
    target.manage.run("migrate", "-v", "0", what="migrate")
    # Rows data migrations made (a CMS's root page and site, a lookup table) would collide with
    # the fixture's own or stay as rows the source had deleted: empty what the fixture refills.
    models = [model for model in target.project.dumped_models("default", []) if model.label in labels]
    try:
        with postgres.connect(target.params()) as conn, conn.transaction():
            names = {name for model in models for name in (model.db_table, *model.m2m_tables)}
            empty_tables(conn, sorted(filter(None, (postgres.resolve_table(conn, name) for name in names))))
    except psycopg.Error as exc:
        raise OperationFailed(f"emptying the tables {fixture.name} fills failed: {str(exc).strip().splitlines()[0]}") from None
    log(f"emptied the tables of {len(models)} models the fixture fills")
    target.manage.run("loaddata", str(fixture.resolve()), "-v", "0", what=f"loaddata {fixture.name}")
    log(f"{target.name} rebuilt from {fixture} (no manifest: row counts could not be verified)")


def _rollback_json(config: Config, target: Target, bundle_dir: Path, manifest: bundle.Manifest, log: Log) -> None:
    """The procedure's recovery path: fresh database, real migrate, the fixture loaded faithfully."""
    from squashkit.fixture import load_fixture

    for entry in manifest.databases:
        recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log)
    for entry in manifest.databases:
        target.manage.run("migrate", "--database", entry.alias, "-v", "0", what=f"migrate on {entry.alias}")
        load_fixture(target.manage, target.params(entry.alias), bundle_dir, entry, log)
    log(f"{target.name} rebuilt from {bundle_dir.name}'s json")
