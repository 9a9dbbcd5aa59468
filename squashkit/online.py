"""A squash that moves no data: the migration files regenerated, ``django_migrations`` rewritten in place.

A squash changes the project's migration files and the rows of django_migrations that name
them; the tables and their rows stay exactly as they are. So ``squash`` (and the source half of
``promote --squash``, the second half of ``restore --squash``) copies nothing: the live database
stays online, no session is ended, every write made during the run stays, and the time does
not grow with the data. ``squash --rebuild`` keeps the source procedure's full cycle
(``phase.replace_database`` with ``squash=True``).

    step                  does                                                  undone by
    2  delete migrations  the project's migration files, once the bundle's      the bundle's migrations.tar.gz
                          tarball is checked against the disk
    5  makemigrations     pointed at an empty scratch database: the live        as 2
                          django_migrations still names the old files, and
                          nothing should read them while they disagree
    5b schema equivalence a real migrate of the new files into that scratch     as 2 (the scratch database is
                          database, compared with the live one by catalog       always dropped)
                          definitions; it also records the rows 5c writes
    5c rewrite history    per database, one transaction: lock                   before COMMIT: as 2; after it:
                          django_migrations, save the project apps' rows        the saved rows put back in one
                          (journal and bundle's history.json), delete them,     transaction, then as 2
                          insert the new files as applied
    7  verify             migrate --check and makemigrations --check clean      (nothing changed)

The numbers are those of ``steps``' table: 3, 4, 6 and 8 (copy, restore, fake, swap) do not happen.
Undo reads the journal, whether the run failed (``squash``) or was killed (``resume``): it puts
the saved rows back where the rewrite committed (``history.state`` tells) and the files from
the bundle. ``resume`` finishes a run whose rewrite committed everywhere instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from squashkit import bundle, carry, drift, freshproof, history, journal, postgres, schema, scratch, scratch_cache, steps, tenants
from squashkit.config import Config
from squashkit.databases import Database, physical, server_of
from squashkit.errors import (
    BadInput,
    OperationFailed,
    SquashkitError,
    UndoIncomplete,
    first_line,
)
from squashkit.journal import Journal
from squashkit.losses import LossReport
from squashkit.project import archive_migrations, squashed_apps, verify_archive_matches_disk
from squashkit.target import Target, resolve

Log = Callable[[str], None]
MODE = "online"


def preflight(config: Config, target: Target) -> None:
    """Refuse before anything changes what steps 5-5c could not finish: a scratch database the user
    may not create or whose name is taken, a django_migrations the user may not rewrite."""
    admin = target.admin()
    tenancy = target.project.tenancy
    if tenancy is not None and target.project.postgres_aliases() != [tenancy.alias]:
        raise BadInput(f"a django-tenants project with aliases besides {tenancy.alias!r} "
                       f"({', '.join(a for a in target.project.postgres_aliases() if a != tenancy.alias)}) is not squashed "
                       "in place yet: squash --rebuild, or ask for it (nothing was changed)")
    for alias in target.project.postgres_aliases():
        params = target.params(alias)
        scratch_name = schema.scratch_name(params.dbname)
        with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
            for leftover in (scratch_name, *(schema.scratch_name(params.dbname, s) for s in (schema.OLD_BUILD_SUFFIX, schema.FRESH_SUFFIX))):
                if postgres.database_exists(conn, leftover):
                    raise BadInput(
                        f"{leftover} is left over from an earlier run ({postgres.database_comment(conn, leftover) or 'no comment'}): "
                        "run squashkit resume, or squashkit cleanup to remove it (nothing was changed)")
            if not postgres.database_exists(conn, params.dbname):
                continue  # restore --squash onto an environment with no database yet: the restore makes it
        with postgres.connect(params) as conn:
            user, may_create = conn.execute(
                "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            table = history.exists(conn)
            writable = table and conn.execute(
                "SELECT has_table_privilege(%s, 'SELECT, INSERT, DELETE')", [history.TABLE]).fetchone()[0]
        if table and not writable:
            raise BadInput(f"{user} may not rewrite django_migrations in {params.dbname} (SELECT, INSERT, DELETE): "
                           "nothing was changed")
        if not may_create and admin is None:
            raise BadInput(
                f"{user} may not create the scratch database {scratch_name} a squash proves the new migrations in: "
                f"ALTER ROLE {user} CREATEDB, or configure an admin connection (nothing was changed)")


def squash(
    config: Config, target: Target, files_bundle: Path, *, record: Journal, log: Log,
    carried: LossReport | None = None, allow_drift: bool = False, fresh: freshproof.Pending | None = None,
    accept_loss: bool = False,
) -> None:
    """Steps 2, 5, 5b, 5c and 7 on ``target``'s live databases, journalled, undone on failure.
    ``files_bundle`` is a bundle of ``target`` holding the files on disk now: its tarball undoes
    step 2, and the rows step 5c replaces are saved beside it (``history.json``)."""
    env = target.name
    apps = squashed_apps(target.project)
    live = {alias: target.params(alias).dbname for alias in target.project.postgres_aliases()}
    archive = files_bundle / bundle.read_manifest(files_bundle).migrations_archive
    # "work" is the live name: nothing is built beside it, and resume drops the scratch databases by it.
    record.started("phase", env, mode=MODE, squash=True, source_bundle=str(files_bundle), safety_bundle=None, apps=apps,
                   databases={alias: {"live": name, "work": name} for alias, name in live.items()})
    step = "create scratch"
    blocked = contextlib.ExitStack()  # tenant creation, from before the files are deleted until verified
    try:
        blocked.enter_context(_creation_blocked(target, log))
        old_build = _old_build(config, target, files_bundle, log)  # reads the old files while they are on disk
        if fresh is not None:
            fresh.wait()  # the old history's fresh build, made beside the backup, before its files go
        with _scratch_databases(config, target) as scratch:
            manage = target.manage.on(scratch)
            # 2. Delete the migration files; undone by putting them back from the tarball.
            step = "delete migrations"
            verify_archive_matches_disk(target.project, target.manage.cwd, archive)
            record.started(step, env, archive=str(archive))
            steps.delete_migrations(target.project, log)
            record.finished(step, env)
            # 5. makemigrations (plus what is carried) against the empty scratch databases; undone as 2.
            step = "makemigrations"
            record.started(step, env, databases=scratch)
            manage.without_migrations(carry.dependents(target.project)).run("makemigrations", *apps, "-v", "0",
                                                                            what="makemigrations")
            log(f"makemigrations done for {', '.join(apps)} (pointed at the empty {', '.join(dict.fromkeys(scratch.values()))})")
            written = carry.carry_over(carried or LossReport(), target.project)
            if written:
                log("carried over into " + ", ".join(str(path.relative_to(target.manage.cwd)) for path in written))
            record.finished(step, env)
            # 5b. The new files must build exactly the live schema; what their migrate records is what 5c writes.
            step = "schema equivalence"
            record.started(step, env, databases=scratch)
            rows = (lambda database, names: freshproof.prove(
                config, target, manage, database, names, fresh, carried or LossReport(), accept_loss=accept_loss,
                allow_drift=allow_drift, files_bundle=files_bundle, log=log)) if fresh is not None else None
            new = {}
            for database in physical(target.project):
                new.update(_prove(config, target, database, scratch, apps, allow_drift, log, old_build, rows))
            record.finished(step, env)
        # 5c. One transaction per database; undone by putting the saved rows back.
        step = "rewrite history"
        _rewrite(target, files_bundle, record, apps, new, log)
        _fail_if_asked(env)
        # 7. Verify (changes nothing).
        step = "verify"
        record.started(step, env)
        steps.verify(target, None, log)
        record.finished(step, env)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error, OSError) as exc:  # OSError: a full disk, an unwritable folder
        reason = first_line(exc)
        record.failed(step, env, reason)
        log(f"step '{step}' failed: {reason}; putting {env}'s migration files and django_migrations back")
        try:
            state = undo(config, record.read(), env, log, target=target)
        except (SquashkitError, psycopg.Error, OSError) as undo_exc:
            raise UndoIncomplete(
                f"step '{step}' failed: {reason}; undoing it failed too: {first_line(undo_exc)}. "
                "Run squashkit resume once that is mended: it finishes the undo") from None
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None
    finally:
        blocked.close()


def _creation_blocked(target: Target, log: Log) -> contextlib.AbstractContextManager:
    """django-tenants: no tenant is created (or dropped) while its schemas are proved and rewritten."""
    tenancy = target.project.tenancy
    return tenants.creation_blocked(target.params(tenancy.alias), tenancy, log) if tenancy else contextlib.nullcontext()


@contextlib.contextmanager
def _scratch_databases(config: Config, target: Target) -> Iterator[dict[str, str]]:
    """An empty scratch database per database (``<name>__squashkit_scratch``, like the live one, its
    foundation included), named for every alias that reaches it; dropped whatever happens."""
    with contextlib.ExitStack() as stack:
        names: dict[str, str] = {}
        for database in physical(target.project):
            names.update(stack.enter_context(scratch.empty(
                database, target.params(database.alias), admin=target.admin(), extensions=config.extensions,
                project=target.project)))
        yield names


def _prove(
    config: Config, target: Target, database: Database, names: dict[str, str], apps: list[str], allow_drift: bool,
    log: Log, old_build: Callable[[Database], schema.Schema], rows: Callable[[Database, dict[str, str]], None] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Step 5b for one database: a real migrate of the new files into its scratch database (every
    alias that reaches it, in order), compared with the live database; returns, per alias, the
    project apps' rows that migrate recorded in the django_migrations that alias finds, in its order.

    What the live database has, the old history built too and the new files do not (drift.strays)
    is carried into the new files first, and the scratch migrated once more to prove them. A
    django-tenants database is proved per kind of schema, and answers per schema (``tenants.prove``)."""
    started = time.monotonic()
    label = ", ".join(database.aliases)
    params = target.params(database.alias)
    scratch.migrate(target.manage, target.project, database, names)
    tenancy = target.project.tenancy
    if tenancy is not None and tenancy.alias in database.aliases:
        alias = tenancy.alias
        return tenants.prove(
            target.manage.on(names), target.project, target.params(alias), target.params(alias).with_dbname(names[alias]), apps,
            judge=lambda diff, where: scratch.judge(diff, where, "live", allow_drift, log), log=log)
    built, diff = _built_and_diff(params, names[database.alias])
    if drift.candidates(diff):
        found = drift.strays(diff, old_build(database), drift.owners(target.project))
        if found:
            written = drift.carry_strays(found, target.project)
            log(f"[{label}] carried what the old history built and no model declares, with its exact definition, into "
                f"{', '.join(str(p.relative_to(target.manage.cwd)) for p in written)}: {', '.join(s.describe() for s in found)}")
            scratch.migrate(target.manage, target.project, database, names)
            built, diff = _built_and_diff(params, names[database.alias])
    scratch.judge(diff, label, "live", allow_drift, log)
    if rows is not None:
        rows(database, names)  # the rows of a fresh build too, carried as data where they differ (freshproof)
    recorded = {}
    for alias in database.aliases:
        with postgres.connect(target.params(alias).with_dbname(names[alias])) as conn:
            recorded[alias] = [(row.app, row.name) for row in history.read(conn, apps)] if history.exists(conn) else []
    # The next check finds these files' build here instead of migrating them again.
    scratch_cache.keep_build(config.backup_dir, target.manage, target.project, database, params, built,
                             extensions=config.extensions, made_by="squash", seconds=time.monotonic() - started, log=log)
    return recorded


def _built_and_diff(params: postgres.ConnectionParams, name: str) -> tuple[schema.Schema, schema.SchemaDiff]:
    built = scratch.built(params.with_dbname(name))
    with postgres.connect(params) as conn:
        actual = schema.snapshot(conn)
    return built, schema.compare(built, actual)


def _old_build(config: Config, target: Target, files_bundle: Path, log: Log) -> Callable[[Database], schema.Schema]:
    """database -> the schema the OLD migration files build for it, for telling their leftovers from drift.

    Keyed now, while the old files are on disk; looked up (``check`` keeps its build) or built
    only when asked: the old files are put back from the bundle for that while (``drift.old_files_on_disk``)."""
    keys = {database.alias: scratch_cache.key(target.manage, target.project, database, target.params(database.alias),
                                              config.extensions)
            for database in physical(target.project)}
    manifest = bundle.read_manifest(files_bundle)

    def old_build(database: Database) -> schema.Schema:
        label = ", ".join(database.aliases)
        digest, files = keys[database.alias]
        cached = scratch_cache.load(config.backup_dir, digest)
        if cached is not None:
            log(f"[{label}] the old history's schema is {cached.describe()}")
            return cached.schema_
        log(f"[{label}] the live database has objects the new files do not build: building the old history in a scratch "
            "database to see whether they are its own (kept for the next check)")
        started = time.monotonic()
        with drift.old_files_on_disk(
            target.project, target.manage.cwd,
            lambda: steps.put_back_migrations(files_bundle, target.manage.cwd, manifest, log, target.project),
            lambda saved: steps.put_back_saved(target, saved, log),
        ):
            built = scratch.build(target.manage, target.project, database, target.params(database.alias),
                                  admin=target.admin(), extensions=config.extensions, suffix=schema.OLD_BUILD_SUFFIX)
        scratch_cache.save(config.backup_dir, digest, built, alias=label, made_by="squash (the old history)",
                           seconds=time.monotonic() - started, files=files, log=log)
        return built

    return old_build


def _rewrite(target: Target, files_bundle: Path, record: Journal, apps: list[str],
             new: dict[str, list[tuple[str, str]]], log: Log) -> None:
    """Step 5c: the locked rows saved in the journal and the bundle, then replaced, per database."""
    env = target.name
    databases = {}
    tables: dict[tuple, str] = {}
    for alias in new:
        params = target.params(alias)
        with postgres.connect(params) as conn:
            table = conn.execute("SELECT to_regclass('django_migrations')::oid").fetchone()[0]
        if table is None:
            log(f"[{alias}] no django_migrations in {params.dbname}: nothing recorded there to rewrite")
        elif (key := (server_of(params), params.dbname, table)) in tables:
            # Two aliases whose search_paths find one table: rewritten once, by the first.
            log(f"[{alias}] its django_migrations is {tables[key]}'s: rewritten with it")
        else:
            tables[key] = alias
            databases[alias] = params

    def announce(before: dict[str, list[history.Row]], after: dict[str, list[tuple[str, str]]]) -> None:
        saved = [history.AliasHistory(alias=alias, database=databases[alias].dbname, before=before[alias], after=after[alias])
                 for alias in databases]
        path = history.save(files_bundle, history.SavedHistory(run=record.run, environment=env, apps=apps, databases=saved))
        record.started("rewrite history", env, saved=str(path),
                       databases={s.alias: s.model_dump(mode="json", exclude={"alias"}) for s in saved})

    schemas = [each for each in databases if each not in target.project.databases]
    if schemas:  # django-tenants: every schema of the tenants' database in one transaction
        tenants.rewrite(target.params(target.project.tenancy.alias), schemas, apps, new, announce)
    else:
        history.rewrite(databases, apps, new, announce)
    record.finished("rewrite history", env)
    log(f"django_migrations rewritten on {', '.join(databases) or 'no database'}: the project apps' rows name the new "
        f"files (the rows they replace are in {files_bundle.name}/{history.FILE})")


def _rewrites(run: journal.Run, started: journal.Entry) -> tuple[list[str], dict[str, dict]]:
    """(apps, per alias its saved before/after) of the phase's rewrite, as journalled; empty before it began."""
    entry = next((e for e in run.within(started) if e.step == "rewrite history" and e.event == "started"), None)
    return started.changed.get("apps", []), (entry.changed["databases"] if entry else {})


def states(config: Config, run: journal.Run, started: journal.Entry) -> dict[str, history.State]:
    """Per alias, whether the phase's rewrite committed ("after") or not ("before")."""
    target = resolve(config, started.env)
    apps, rewrites = _rewrites(run, started)
    return {
        alias: history.current_state(target.params(alias), apps, [history.Row(**r) for r in saved["before"]],
                                     [tuple(n) for n in saved["after"]])
        for alias, saved in rewrites.items()
    }


def committed(config: Config, run: journal.Run, started: journal.Entry) -> bool:
    """Whether the phase's rewrite committed on every database it rewrites (then the squash is done)."""
    found = states(config, run, started)
    return bool(found) and all(state == "after" for state in found.values())


def undo(config: Config, run: journal.Run, env: str, log: Log, *, started: journal.Entry | None = None,
         target: Target | None = None) -> str:
    """Undo an online squash phase from its journal, wherever it stopped: the saved rows back where
    the rewrite committed, the files back from the bundle once step 2 began."""
    started = started or next(e for e in reversed(run.phases()) if e.env == env)
    target = target or resolve(config, env)
    apps, rewrites = _rewrites(run, started)
    put = []
    for alias, saved in rewrites.items():
        before = [history.Row(**row) for row in saved["before"]]
        if history.put_back(target.params(alias), apps, before, [tuple(n) for n in saved["after"]]):
            put.append(alias)
            log(f"[{alias}] django_migrations has the {len(before)} rows of the project's apps it had before the squash again")
    files_bundle = Path(started.changed["source_bundle"])
    deleted = any(e.step == "delete migrations" and e.event == "started" for e in run.within(started))
    if deleted:
        steps.put_back_migrations(files_bundle, target.manage.cwd, bundle.read_manifest(files_bundle), log, target.project)
    history.forget(files_bundle, run.header.run)
    rows = f" and its django_migrations rows were put back on {', '.join(put)}" if put else ""
    files = "; the migration files are back" if deleted else ""
    return f"Nothing was lost: {env}'s data was not touched{rows}{files}."


def finish(config: Config, run: journal.Run, started: journal.Entry, log: Log) -> tuple[journal.Outcome, str]:
    """``resume`` of a phase whose rewrite committed everywhere: the files were complete before it
    began; verify, and undo after all if they do not agree with the rows."""
    target = resolve(config, started.env)
    try:
        steps.verify(target, None, log)
    except SquashkitError as exc:
        log(f"the squash committed but does not verify ({first_line(exc)}): undoing it")
        return "rolled back", undo(config, run, started.env, log, started=started, target=target)
    return "finished", f"the run was finished: {started.env}'s django_migrations had been rewritten and the files agree with it"


# --- rollback BUNDLE --migrations-only: a squash undone, data untouched -----------------------------


def require_as_squashed(target: Target, saved: history.SavedHistory) -> None:
    """Refuse, nothing changed, unless every database's django_migrations is as the squash left it:
    rows put back over migrations applied since would hide them."""
    tenancy = target.project.tenancy
    if tenancy is not None:  # a tenant created since the squash has only the new rows: it would disagree with the old files
        with postgres.connect(target.params(tenancy.alias)) as conn:
            since = [s.name for s in tenants.rewritten(conn, tenancy)
                     if tenants.key(tenancy.alias, s.name) not in {db.alias for db in saved.databases}]
        if since:
            raise BadInput(f"schemas created since squash {saved.run} ({', '.join(since)}) record only the new migration files: "
                           "putting the old rows back elsewhere would leave them disagreeing; squashkit rollback BUNDLE "
                           "puts the whole database back (nothing was changed)")
    for db in saved.databases:
        found = history.current_state(target.params(db.alias), saved.apps, db.before, db.after)
        if found == "before":
            raise BadInput(f"{db.database} already has the django_migrations rows it had before squash {saved.run}: "
                           "nothing to roll back (nothing was changed)")
        if found == "unknown":
            raise BadInput(
                f"django_migrations of {db.database} is not as squash {saved.run} left it (migrations applied since?): "
                "putting the old rows back would hide them; squashkit rollback BUNDLE puts the whole database back "
                "(nothing was changed)")


def unsquash(
    config: Config, target: Target, bundle_dir: Path, saved: history.SavedHistory, record: Journal, log: Log,
    *, again: bool = False,
) -> None:
    """The migration files of ``bundle_dir`` and the rows ``saved`` back, in one transaction per database;
    no other table is touched. A failure puts the squash's files and rows back; ``again`` (``resume``)
    does it all once more: each step finds what is done already."""
    env = target.name
    saved_files = config.backup_dir / f"{record.run}.migrations.tar.gz"
    if not again:
        # 1. The files of the moment (changes nothing).
        record.started("save migrations", env, archive=str(saved_files))
        archive_migrations(target.project, target.manage.cwd, saved_files)
        saved_files.chmod(0o600)
        record.finished("save migrations", env)
        record.started("phase", env, mode=MODE, squash=False, source_bundle=str(bundle_dir), safety_bundle=None,
                       apps=saved.apps, databases={db.alias: {"live": db.database, "work": db.database} for db in saved.databases})
    step = "put back migrations"
    try:
        # 2. The bundle's files; undone by the saved ones.
        manifest = bundle.read_manifest(bundle_dir)
        record.started(step, env, archive=str(bundle_dir / manifest.migrations_archive))
        steps.put_back_migrations(bundle_dir, target.manage.cwd, manifest, log, target.project)
        record.finished(step, env)
        # 3. The saved rows, one transaction per database; undone by the squash's rows, journalled first.
        for db in saved.databases:
            step = f"restore history {db.alias}"
            announce = lambda current, step=step: record.started(step, env, replaced=[r.model_dump(mode="json") for r in current])
            if history.put_back(target.params(db.alias), saved.apps, db.before, db.after, announce):
                log(f"[{db.alias}] django_migrations has the {len(db.before)} rows of the project's apps it had before "
                    f"squash {saved.run} again")
                record.finished(step, env)
        # 4. Verify (changes nothing).
        step = "verify"
        record.started(step, env)
        steps.verify(resolve(config, env), None, log)
        record.finished(step, env)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error, OSError) as exc:  # OSError: a full disk, an unwritable folder
        reason = first_line(exc)
        record.failed(step, env, reason)
        if again:
            raise
        try:
            _squash_back(target, saved, record.read(), saved_files, log)
        except (SquashkitError, psycopg.Error, OSError) as undo_exc:
            raise UndoIncomplete(f"step '{step}' failed: {reason}; undoing it failed too: {first_line(undo_exc)}. "
                                 "Run squashkit resume once that is mended: it finishes the rollback") from None
        raise OperationFailed(f"step '{step}' failed: {reason}. {env}'s migration files and django_migrations are as the "
                              "squash left them; its data was not touched") from None


def _squash_back(target: Target, saved: history.SavedHistory, run: journal.Run, saved_files: Path, log: Log) -> None:
    """Undo of a failed ``unsquash``: the squash's rows where the old ones were put back, and its files."""
    for db in saved.databases:
        entry = run.started(f"restore history {db.alias}", target.name)
        if entry is not None:
            rows = [history.Row(**row) for row in entry.changed["replaced"]]
            history.put_back(target.params(db.alias), saved.apps, rows, [(r.app, r.name) for r in db.before])
    steps.put_back_saved(target, saved_files, log)


def _fail_if_asked(env: str) -> None:
    """Test-only: $SQUASHKIT_TEST_FAULT=after-rewrite:<env> fails the run right after the commit, so
    the undo has rows to put back."""
    if os.environ.get("SQUASHKIT_TEST_FAULT") == f"after-rewrite:{env}":
        raise OperationFailed("test fault after the rewrite")
