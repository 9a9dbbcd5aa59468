"""A phase: one environment's databases rebuilt from a bundle, step by step, journalled, undone on failure.

``replace_database`` is steps 2-8 of ``steps`` for one environment (restore, squash, promote and
rollback each run one or two phases); ``rebuild_from_json`` is the procedure's recovery path
(fresh database, real ``migrate``, the fixture loaded); ``roll_back`` puts an in-place target back
from its safety bundle; ``undo_phase`` undoes a phase from what its journal says (``resume``, and
a ``promote --squash`` whose second phase failed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg

from squashkit import (
    bundle, carry, fixture, foundation, freshproof, journal, jsonload, online, postgres, provenance, scratch, steps,
)
from squashkit.config import Config
from squashkit.databases import migrate_order, once_per_database, physical
from squashkit.errors import BadInput, OperationFailed, SquashkitError, StepFailed, UndoIncomplete, first_line
from squashkit.journal import Journal
from squashkit.losses import LossReport
from squashkit.project import ManagePy, ProjectInfo, squashed_apps, verify_archive_matches_disk
from squashkit.target import Target, resolve

Log = Callable[[str], None]


def replace_database(
    config: Config,
    target: Target,
    source_bundle: Path,
    safety_bundle: Path | None,
    *,
    squash: bool,
    jobs: int,
    log: Log,
    mode: steps.Mode,
    record: Journal,
    fallback: str | None = None,
    carried: LossReport | None = None,
    allow_drift: bool = False,
    fresh: freshproof.Pending | None = None,
    accept_loss: bool = False,
    squashed: bool = False,
) -> None:
    """Steps 2-7 (and the swap), journalled, with automatic undo on any failure.

    Side mode builds ``<name>__squashkit_new`` and swaps it in only once verified: a failure
    drops the side database and the live one was never touched. In place, a failure after the
    drop puts the target back from ``safety_bundle``. ``fallback`` names what the caller does
    itself when this fails (rollback's db.json): then the failure is only reported. ``fresh``
    (a squash): the old history's fresh build, started beside the backup; its rows are proved
    in 5b (``freshproof.prove``). ``squashed``: the project apps' files were squashed since the
    bundle was made (``promote --squash``): their rows are not the bundle's but the new files'.
    """
    manifest = bundle.read_manifest(source_bundle)
    safety = bundle.read_manifest(safety_bundle) if safety_bundle else None
    aliases = [e.alias for e in manifest.databases if e.alias in target.project.postgres_aliases()]
    entries = dumps_to_restore(target, manifest)
    live, work, side = database_names(target, aliases, mode)
    env = target.name
    # Refused before anything changes: a bundle of another project or of a newer code, or laid out otherwise.
    verdict = provenance.check(manifest, target.project, name=f"bundle {source_bundle.name}",
                               files_from=manifest if squashed else None)
    for entry in entries:
        foundation.require_same_schemas(target.params(entry.alias), entry.foundation, f"bundle {source_bundle.name}")
    if verdict.kind == "newer":
        log(verdict.reason)
    record.started(
        "phase", env, mode=mode, squash=squash, source_bundle=str(source_bundle),
        safety_bundle=str(safety_bundle) if safety_bundle else None,
        databases={alias: {"live": live[alias], "work": work[alias]} for alias in live},
    )
    step = "old history's fresh build"
    changed = False
    try:
        if fresh is not None:
            fresh.wait()  # its migrate reads the old files, which step 2 deletes
        step = "delete migrations"
        changed = squash  # from here on, a failure has something to put back
        # 2. Delete the migration files (squash); undone by putting them back from the tarball.
        if squash:
            verify_archive_matches_disk(target.project, target.manage.cwd, source_bundle / manifest.migrations_archive)
            record.started(step, env, archive=str(source_bundle / manifest.migrations_archive))
            steps.delete_migrations(target.project, log)
            record.finished(step, env)
        # 3-4. Create each database (side: beside the live one; in place: drop and recreate) and
        # pg_restore into it; undone by dropping the side database, or from the safety bundle.
        for entry in entries:
            alias = entry.alias
            extensions = [*entry.facts.extensions, *config.extensions]
            step = f"create {alias}"
            record.started(step, env, database=work[alias], drops=None if side else live[alias])
            changed = True
            if side:
                steps.create_side_database(target, alias, work[alias], entry.facts, extensions, record.run, log, entry.foundation)
            else:
                steps.recreate_database(target, alias, entry.facts, extensions, log, entry.foundation)
            record.finished(step, env)
            step = f"pg_restore {alias}"
            record.started(step, env, database=work[alias])
            dump = source_bundle / entry.dump
            if _fault(f"truncate-dump:{target.name}"):  # what pg_restore reads is damaged
                dump = _truncated_copy(dump)
            if _fault(f"damage-bundle:{target.name}"):  # the bundle itself is damaged on disk
                shutil.copyfile(_truncated_copy(dump), dump)
            steps.pg_restore(config, target, alias, dump, jobs, log, dbname=work[alias])
            record.finished(step, env)
        # 5. makemigrations plus the carried operations (squash); undone with the files of 2.
        if squash:
            step = "makemigrations"
            record.started(step, env)
            labels = squashed_apps(target.project)
            target.manage.on(side).without_migrations(carry.dependents(target.project)).run(
                "makemigrations", *labels, "-v", "0", what="makemigrations")
            log(f"makemigrations done for {', '.join(labels)}")
            written = carry.carry_over(carried or LossReport(), target.project)
            if written:
                log("carried over into " + ", ".join(str(path.relative_to(target.manage.cwd)) for path in written))
            record.finished(step, env)
            # 5b. The new files must build exactly the restored schema (a scratch database, always dropped),
            # and, in it, the old history's rows: what differs is carried as data and proved (freshproof).
            step = "schema equivalence"
            record.started(step, env)
            rows = (lambda database, names: freshproof.prove(
                config, target, target.manage.on(side), database, names, fresh, carried or LossReport(),
                accept_loss=accept_loss, allow_drift=allow_drift, files_bundle=source_bundle, log=log,
                restored=work)) if fresh is not None else None
            scratch.require_equivalent(config, target, side, allow_drift, log, rows)
            record.finished(step, env)
        # 6. django_migrations as the bundle recorded it; migrate --fake for the regenerated apps alone,
        # migrate for real what a newer code adds; undone as 3.
        step = "migrate --fake"
        record.started(step, env)
        steps.record_history(target, manifest, log, databases=side,
                             regenerated=[app.label for app in target.project.own_apps()] if squash or squashed else None)
        record.finished(step, env)
        # 6b. A newer code: the bundle's rows verified first (its migrations may change rows), then they run
        # for real, and the result must be what the code builds (a scratch build); undone as 3.
        newer = verdict.kind == "newer"
        if newer:
            step = "migrate"
            record.started(step, env)
            _change_a_row_if_asked(target, side)
            steps.verify_contents(target, manifest, side)
            steps.migrate_newer(target, verdict.missing, log, databases=side)
            scratch.require_equivalent(config, target, side, False, log)
            record.finished(step, env)
        # 7. Verify against the bundle (changes nothing).
        step = "verify"
        record.started(step, env)
        if not newer:
            _change_a_row_if_asked(target, side)
        steps.verify(target, manifest, log, databases=side, contents=not newer)
        record.finished(step, env)
        # 8. Swap the verified side databases in (side mode); undone by renaming back.
        step = "swap"
        swap_all(target, live, side, record, log)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error) as exc:
        reason = first_line(exc)
        record.failed(step, env, reason)
        if not changed:
            raise
        if fallback and not side:
            raise StepFailed(f"step '{step}' failed: {reason}", step) from None
        if side:
            log(f"step '{step}' failed: {reason}; removing what this run built ({target.name}'s database was not touched)")
            try:
                state = steps.undo_side(config, target, record.run, live, work, source_bundle if squash else None, log)
            except (SquashkitError, psycopg.Error) as undo:
                raise UndoIncomplete(
                    f"step '{step}' failed: {reason}; undoing it failed too: {first_line(undo)}. "
                    "Run squashkit resume once that is mended: it finishes the undo"
                ) from None
        else:
            log(f"step '{step}' failed: {reason}; putting {target.name} back as it was")
            state = roll_back(config, target, safety_bundle, safety, log)
        raise StepFailed(f"step '{step}' failed: {reason}. {state}", step) from None


def dumps_to_restore(target: Target, manifest: bundle.Manifest) -> list[bundle.AliasBackup]:
    """The bundle's entries to create and restore, one per database of the target (the entry whose
    dump it is, reached through the target's first alias of that database). A bundle whose aliases
    reached their databases otherwise (two dumps for one database of the target) is refused."""
    entries = {e.alias: e for e in manifest.databases}
    chosen = []
    for database in physical(target.project, list(entries)):
        dumps = {entries[alias].dump_of or alias for alias in database.aliases}
        if len(dumps) > 1:
            raise BadInput(
                f"the bundle holds {', '.join(sorted(dumps))} as databases of their own, but {target.name} reaches them as "
                f"one database, {database.name}: restore it where its aliases are laid out the same (nothing was changed)")
        chosen.append(entries[dumps.pop()])
    return chosen


def database_names(target: Target, aliases: list[str], mode: steps.Mode) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(live names, the names the phase builds, the side names alone: empty in place), per alias."""
    live = {alias: target.params(alias).dbname for alias in aliases}
    work = {alias: steps.side_name(name, steps.SIDE) for alias, name in live.items()} if mode == "side" else dict(live)
    return live, work, (work if mode == "side" else {})


def swap_all(target: Target, live: dict[str, str], side: dict[str, str], record: Journal, log: Log) -> None:
    """Step 8 for every database (once however many aliases reach it), each journalled before it acts."""
    for alias in once_per_database(target.project, side):
        record.started(f"swap {alias}", target.name, database=live[alias], kept=steps.side_name(live[alias], steps.KEPT))
        if _fault(f"fail-swap:{target.name}:{alias}"):  # a rename that fails after an earlier one succeeded
            raise OperationFailed(f"renaming {side[alias]} to {live[alias]} failed: test fault")
        steps.swap_in(target, alias, side[alias], record.run, log)
        record.finished(f"swap {alias}", target.name)


def roll_back(config: Config, target: Target, safety_bundle: Path | None, safety: bundle.Manifest | None, log: Log) -> str:
    """Put the target back from its safety bundle, its dump first and its db.json when the dump
    fails too; say the state the target is in now, or the command that finishes the job."""
    if safety_bundle is None or safety is None:
        return f"There was no database to save before; {target.name}'s database is incomplete: drop it or restore a bundle."
    finish = f"finish it with: squashkit rollback {safety_bundle} --env {target.name} --yes"
    try:
        steps.put_back_migrations(safety_bundle, target.manage.cwd, safety, log, target.project)
        target = resolve(config, target.name)
    except (SquashkitError, OSError) as exc:
        return f"Putting the migration files back failed ({exc}); {finish}"
    try:
        for entry in dumps_to_restore(target, safety):
            steps.recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log,
                                    entry.foundation)
            steps.pg_restore(config, target, entry.alias, safety_bundle / entry.dump, 1, log)
        steps.record_history(target, safety, log)
        steps.verify(target, safety, log)
        return f"{target.name} was put back from {safety_bundle} and verified: its data and migration files are as before."
    except (SquashkitError, psycopg.Error) as exc:
        log(f"restoring the safety dump failed ({first_line(exc)}); rebuilding {target.name} from its db.json")
    try:
        _rollback_json(config, target, safety_bundle, safety, log)
    except (SquashkitError, psycopg.Error) as exc:
        return f"The automatic rollback failed too ({first_line(exc)}); {finish}"
    return (
        f"{target.name} was rebuilt from {safety_bundle}'s db.json (its dump failed) and verified: "
        "every row and the migration files are as before."
    )


def _rollback_json(config: Config, target: Target, bundle_dir: Path, manifest: bundle.Manifest, log: Log) -> None:
    """In place, from a safety bundle's json (the automatic rollback's last resort)."""
    for entry in dumps_to_restore(target, manifest):
        steps.recreate_database(target, entry.alias, entry.facts, [*entry.facts.extensions, *config.extensions], log,
                                entry.foundation)
    entries = {e.alias: e for e in manifest.databases}
    for alias in [a for a in migrate_order(target.project) if a in entries]:
        target.manage.run("migrate", "--database", alias, "-v", "0", what=f"migrate on {alias}")
        load_json(target.manage, target.params(alias), bundle_dir, entries[alias], target.project, log)
    log(f"{target.name} rebuilt from {bundle_dir.name}'s json")


def rebuild_from_json(
    config: Config, target: Target, bundle_dir: Path | None, manifest: bundle.Manifest | None, lone: Path | None,
    mode: steps.Mode, record: Journal, log: Log, *, loaddata: bool = False,
) -> None:
    """The procedure's recovery path: fresh database, real migrate, the fixture loaded faithfully
    and checked against the bundle's content hashes (or, for a lone db.json without a manifest,
    matched by natural keys); swapped in when verified.

    The fixture is loaded by PostgreSQL (``jsonload``: COPY and one INSERT ... SELECT per model,
    one transaction), or, with ``loaddata``, by Django's ``loaddata`` (which sends the save
    signals, ``raw=True``, that the SQL load does not)."""
    entries = {e.alias: e for e in manifest.databases} if manifest else {}
    aliases = [a for a in migrate_order(target.project) if a in (entries or ["default"])]
    created = {e.alias: e for e in dumps_to_restore(target, manifest)} if manifest else {"default": None}
    live, work, side = database_names(target, aliases, mode)
    manage = target.manage.on(side)
    env = target.name
    for alias, entry in created.items():
        if entry is not None:
            foundation.require_same_schemas(target.params(alias), entry.foundation, f"bundle {bundle_dir.name}")
    record.started("phase", env, mode=mode, squash=False, source_bundle=str(bundle_dir or lone), safety_bundle=None,
                   databases={alias: {"live": live[alias], "work": work[alias]} for alias in aliases})
    step = "create"
    try:
        for alias, entry in created.items():  # once per database
            facts = entry.facts if entry else None
            found = entry.foundation if entry else None
            extensions = [*(facts.extensions if facts else []), *config.extensions]
            step = f"create {alias}"
            record.started(step, env, database=work[alias])
            if side:
                with postgres.connect(target.params(alias).with_dbname("postgres")) as conn:
                    shape = postgres.database_locale(conn, live[alias]) or postgres.database_locale(conn, "template0")
                like = facts or postgres.DatabaseFacts.model_construct(encoding=shape[0], collate=shape[1], ctype=shape[2])
                steps.create_side_database(target, alias, work[alias], like, extensions, record.run, log, found)
            else:
                steps.recreate_database(target, alias, facts, extensions, log, found)
            record.finished(step, env)
        for alias in aliases:
            step = f"load json {alias}"
            record.started(step, env, database=work[alias])
            manage.run("migrate", "--database", alias, "-v", "0", what=f"migrate on {alias}")
            params = target.params(alias).with_dbname(work[alias])
            if lone is None:
                load_json(manage, params, bundle_dir, entries[alias], target.project, log, loaddata=loaddata)
            else:
                _load_lone_fixture(target, manage, params, lone, log)
            record.finished(step, env)
        step = "swap"
        swap_all(target, live, side, record, log)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error) as exc:
        reason = first_line(exc)
        record.failed(step, env, reason)
        if not side:
            raise
        state = steps.undo_side(config, target, record.run, live, work, None, log)
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None
    log(f"{target.name} rebuilt from {(lone or bundle_dir).name}" + ("" if manifest else " (no manifest: its content could not be verified)"))


def load_json(
    manage: ManagePy, params: postgres.ConnectionParams, bundle_dir: Path, entry: bundle.AliasBackup,
    project: ProjectInfo, log: Log, *, loaddata: bool = False,
) -> None:
    """A bundle's json into a database just migrated: by SQL, or by ``loaddata`` when asked."""
    if loaddata:
        fixture.load_fixture(manage, params, bundle_dir, entry, log)
    else:
        jsonload.load_fixture_fast(manage, params, bundle_dir, entry, project, log)


def _load_lone_fixture(target: Target, manage: ManagePy, params: postgres.ConnectionParams, path: Path, log: Log) -> None:
    """The procedure's recovery path, literally, for a db.json with no bundle around it.

    Without a manifest there are no recorded ids, sequences or row counts to hold it to:
    content types and permissions are matched by the natural keys squashkit's db.json carries.
    Rows data migrations made (a CMS's root page and site, a lookup table) would collide with
    the fixture's own or stay as rows the source had deleted: what the fixture refills is emptied.
    """
    from squashkit.fixture import CONTENT_TYPE, PERMISSION, empty_tables, fixture_models

    labels = fixture_models(path) - {CONTENT_TYPE, PERMISSION}  # those two are matched by natural key
    models = [model for model in target.project.dumped_models("default", []) if model.label in labels]
    try:
        with postgres.connect(params) as conn, conn.transaction():
            names = {name for model in models for name in (model.db_table, *model.m2m_tables)}
            empty_tables(conn, sorted(filter(None, (postgres.resolve_table(conn, name) for name in names))))
    except psycopg.Error as exc:
        raise OperationFailed(f"emptying the tables {path.name} fills failed: {first_line(exc)}") from None
    log(f"emptied the tables of {len(models)} models the fixture fills")
    manage.run("loaddata", str(path.resolve()), "-v", "0", what=f"loaddata {path.name}")


def undo_phase(config: Config, run: journal.Run, env: str, log: Log, *, started: journal.Entry | None = None) -> str:
    """Undo what one phase of ``run`` on ``env`` (the last one, or ``started``) changed, from wherever it stopped."""
    started = started or next(e for e in reversed(run.phases()) if e.env == env)
    info = started.changed
    if info["mode"] == online.MODE:
        return online.undo(config, run, env, log, started=started)
    target = resolve(config, env)
    later = [e for e in run.within(started) if e.env == env]
    files_deleted = any(e.step == "delete migrations" and e.event == "started" for e in later)
    source_bundle = Path(info["source_bundle"])
    if info["mode"] == "side":
        live = {alias: names["live"] for alias, names in info["databases"].items()}
        work = {alias: names["work"] for alias, names in info["databases"].items()}
        return steps.undo_side(config, target, run.header.run, live, work, source_bundle if files_deleted else None, log)
    recreated = any(e.step.startswith("create ") and e.event == "started" for e in later)
    if recreated:
        safety = Path(info["safety_bundle"]) if info.get("safety_bundle") else None
        return roll_back(config, target, safety, bundle.read_manifest(safety) if safety else None, log)
    if files_deleted:
        steps.put_back_migrations(source_bundle, target.manage.cwd, bundle.read_manifest(source_bundle), log, target.project)
        return f"{env}'s migration files are back; its database was not touched."
    return f"{env} was not touched."


def _fault(point: str) -> bool:
    """Test-only fault injection: $SQUASHKIT_TEST_FAULT names a point where a real run breaks."""
    return os.environ.get("SQUASHKIT_TEST_FAULT") == point


def _change_a_row_if_asked(target: Target, databases: dict[str, str]) -> None:
    """Test-only: a load that changed a table without changing its row count, as a field that does
    not survive a round trip does: one user's first name, in the rebuilt default database."""
    if _fault(f"change-a-row:{target.name}"):
        params = target.params()
        with postgres.connect(params.with_dbname(databases.get("default", params.dbname))) as conn:
            conn.execute("UPDATE auth_user SET first_name = first_name || '!' WHERE id = (SELECT min(id) FROM auth_user)")


def _truncated_copy(dump: Path) -> Path:
    """A copy of a custom-format dump cut to 60%, as a disk or a transfer gone wrong leaves it (test-only)."""
    copy = Path(tempfile.mkdtemp(prefix="squashkit-fault-")) / dump.name
    copy.write_bytes(dump.read_bytes()[: dump.stat().st_size * 6 // 10])
    return copy
