"""``squashkit resume``: a run that was killed (SIGKILL, power loss, a lost connection) finished or undone.

Every destructive run journals each step before it acts (``squashkit.journal``). From the
journal alone, resume decides: before the last swap began, undo (side databases dropped,
swapped databases swapped back, files from the tarball, an in-place run restored from its
safety bundle); once it began (everything was verified), finish the swap; an in-place
rollback is done again. A squash that moves no data is finished once its rewrite of
django_migrations committed on every database (read back from the rows), else undone (the
saved rows put back where it committed, the files from the tarball); a rollback
--migrations-only is done again; a rollback --schema is finished or undone by its own
``tenant.resume``. Half-written bundles and scratch databases the run left are removed.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from squashkit import (
    databases,
    history,
    journal,
    locks,
    online,
    phase,
    postgres,
    runs,
    schema,
    steps,
)
from squashkit.commands import recreate, rollback, tenant
from squashkit.config import Config
from squashkit.errors import BadInput, first_line
from squashkit.journal import Journal
from squashkit.runs import Log, stderr_log
from squashkit.target import resolve


def resume(config: Config, *, run_id: str | None = None, yes: bool = False, log: Log = stderr_log) -> str:
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
            for alias in databases.primary_aliases(env.project):
                stack.enter_context(locks.database(env.params(alias), run.header.run + " (resume)"))
        runs.confirm(f"Resume {run.describe()}?", yes=yes)
        record = Journal.reopen(run)
        log(f"resuming {run.describe()}")
        try:
            outcome, detail = _resume(config, run, record, log)
        except BaseException as exc:
            record.failed("resume", None, first_line(exc))
            record.close()
            raise
        record.end(outcome, detail)
    return detail


def _resume(config: Config, run: journal.Run, record: Journal, log: Log) -> tuple[journal.Outcome, str]:
    phases = run.phases()
    h = run.header
    _remove_partial_bundles(config, run, log)
    _drop_scratch_databases(config, phases, log)
    if not phases:
        return "nothing to do", "the run had changed nothing yet; its half-written bundles were removed"
    if h.command == "recreate":
        return recreate.resume(config, run, log)
    if h.command == "rollback" and h.mode == tenant.MODE:
        return tenant.resume(config, run, log)
    if h.command == "rollback" and h.mode == online.MODE:
        log("a rollback --migrations-only is finished by doing it again")
        path = Path(h.argument)
        online.unsquash(config, resolve(config, h.target), path, history.load(path), record, log, again=True)
        return "finished", f"the rollback of {h.target}'s squash from {h.argument} was done again and finished"
    last = phases[-1]
    # promote --squash: the source's squash, then the target's rebuild; restore --squash: the other way round.
    expected = 2 if h.squash and h.command in ("promote", "restore") else 1
    swap_began = any(e.step.startswith("swap ") and e.event == "started" for e in run.since(last))
    final = len(phases) == expected or (h.command == "rollback")
    if last.changed["mode"] == online.MODE and final and online.committed(config, run, last):
        return online.finish(config, run, last, log)
    if last.changed["mode"] == "side" and swap_began and final:
        target = resolve(config, last.env)
        for alias, names in last.changed["databases"].items():
            with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                pending = postgres.database_exists(conn, names["work"]) and steps.made_by(conn, names["work"], h.run)
            if pending:
                steps.swap_in(target, alias, names["work"], h.run, log)
        return "finished", f"the run was finished: {target.name}'s swap completed (it had been verified)"
    if h.argument == "--kept":
        return _resume_kept(config, run, record, log)
    if h.command == "rollback" and last.changed["mode"] == "in-place":
        log("an in-place rollback is finished by doing it again")
        path = Path(h.argument)
        bundle_dir, manifest, use_dump = rollback.choose_source(path)
        rollback.run_rollback(config, resolve(config, h.target), path, bundle_dir, manifest, use_dump, "in-place", record, log,
                              save_files=False, loaddata=h.loaddata, public_only=h.public_only)
        return "finished", f"the rollback of {h.target} from {h.argument} was done again and finished"
    states = [phase.undo_phase(config, run, started.env, log, started=started) for started in reversed(phases)]
    if h.command == "rollback":
        saved = run.started("save migrations")
        if saved and run.started("put back migrations"):
            steps.put_back_saved(resolve(config, h.target), Path(saved.changed["archive"]), log)
    return "rolled back", " ".join(states)


def _resume_kept(config: Config, run: journal.Run, record: Journal, log: Log) -> tuple[journal.Outcome, str]:
    """A killed ``rollback --kept``: each exchange is atomic; once one happened, the rest and the
    files are finished; before that, nothing had changed."""
    target = resolve(config, run.header.target)
    last = run.phases()[-1]
    done = []
    for alias, names in last.changed["databases"].items():
        with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
            done.append(steps.made_by(conn, names["work"], run.header.run))
    if not any(done):
        return "rolled back", f"{target.name} was not touched: its databases were never exchanged"
    for (alias, names), exchanged in zip(last.changed["databases"].items(), done):
        if not exchanged:
            with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                postgres.exchange_databases(conn, live=names["live"], kept=names["work"], spare=names["live"] + steps.SIDE,
                                            comment=f"squashkit run {run.header.run}: {names['live']} (resumed)")
    files = last.changed.get("files")
    if files:
        rollback.put_back_kept_files(target, (files["kind"], Path(files["archive"])), record, log)
    return "finished", f"{target.name}'s kept database(s) were swapped back in, with their migration files"


def _drop_scratch_databases(config: Config, phases: list[journal.Entry], log: Log) -> None:
    """A killed run's schema comparison cannot drop its scratch database: the run's phases name
    the databases it built, and their scratch copies go (the fresh builds of a rebuild's data proof
    are named after the live database, the schema proof's after the side one)."""
    for started in phases:
        target = resolve(config, started.env)
        for alias, names in started.changed["databases"].items():
            built = [schema.scratch_name(names["work"], suffix)
                     for suffix in (schema.SCRATCH_SUFFIX, schema.OLD_BUILD_SUFFIX, schema.FRESH_SUFFIX)]
            built += [schema.scratch_name(names["live"], suffix) for suffix in (schema.OLD_BUILD_SUFFIX, schema.FRESH_SUFFIX)]
            for name in dict.fromkeys(built):
                with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
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
