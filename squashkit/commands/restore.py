"""``squashkit restore BUNDLE``: an environment's databases rebuilt from a bundle, after a safety backup."""

from __future__ import annotations

from pathlib import Path

from squashkit import bundle, bundlefiles, freshproof, journal, online, phase, plan, provenance, runs, steps
from squashkit.config import Config
from squashkit.errors import BadInput, OperationFailed, UndoIncomplete
from squashkit.journal import Journal
from squashkit.losses import LossReport
from squashkit.runs import Log, stderr_log
from squashkit.target import Target, resolve


def restore(
    config: Config,
    *,
    bundle_path: Path,
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
    log: Log = stderr_log,
) -> Path | None:
    """Recreate ``env``'s databases from ``bundle_path`` (steps 3-8, and 2 and 5 with ``squash``),
    after a safety backup; returns the safety bundle's path (None for a dry run)."""
    if jobs < 1:
        raise BadInput(f"--jobs must be at least 1 (not {jobs})")
    bundle_path = Path(bundle_path)
    manifest = bundle.read_manifest(bundle_path)
    bundle.verify_hashes(bundle_path, manifest)
    bundlefiles.require_identity(bundle_path, manifest.encrypted)  # a wrong or missing --identity, before anything
    target = resolve(config, env)
    mode, _why = steps.choose_mode(target, in_place)
    if dry_run:
        shapes = {
            e.alias: plan.Shape(encoding=e.facts.encoding, collate=e.facts.collate, ctype=e.facts.ctype,
                                extensions=list(e.facts.extensions))
            for e in manifest.databases
        }
        squashing = plan.build_squash(config, target=target, shapes=shapes, source_label=f"{target.name} once restored")
        plan.print_plan(plan.build(config, squash=False, target=target, source_label=f"bundle {bundle_path.name}",
                                   manifest_hint=bundle_path.name, shapes=shapes, mode=mode)
                        + (squashing if squash else []))
        return None
    run = journal.new_run_id("restore", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight: the bundle must fit the code and the server (changes nothing).
        extensions = sorted({name for entry in manifest.databases for name in entry.facts.extensions})
        steps.preflight(config, target, extensions, log, manifest=manifest, files_change=squash, force=force, jobs=jobs)
        # 0b. With --squash, what regenerated migrations would forget, and what the squash needs
        # once the restore is done: a scratch database, a django_migrations to rewrite (changes nothing).
        report = steps.scan_losses(target, accept_loss, log, full_report=config.backup_dir / f"{run}.losses.txt",
                                   adjust=freshproof.defer_to_data) if squash else None
        if squash:
            online.preflight(config, target)
        verdict = provenance.check(manifest, target.project, name=f"bundle {bundle_path.name}")
        upgrade = f" {verdict.reason}." if verdict.kind == "newer" else ""
        runs.confirm(f"Replace {target.name}'s database {target.params().dbname} with {bundle_path.name}?{upgrade}"
                     + steps.kept_note(target, mode), yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="restore", target=target.name, argument=str(bundle_path), squash=squash,
                             mode=mode) as record:
            # 1. A safety bundle of the target (changes nothing).
            safety = steps.safety_backup(config, target, log, record)
            # 3-8. Rebuild from the bundle, verify, swap; a failure undoes itself (phase.replace_database).
            phase.replace_database(config, target, bundle_path, safety, squash=False, jobs=jobs, log=log, mode=mode,
                                   record=record)
            # 2, 5-5c, 7 with --squash: the restored database squashed without moving its data (files
            # regenerated, django_migrations rewritten); a failure undoes the squash, then the restore.
            if squash:
                _squash_restored(config, target, safety, record, report, allow_drift, accept_loss, log)
    log(f"{target.name} restored from {bundle_path.name}" + (" and squashed" if squash else "")
        + f"; the previous state is in {safety}")
    return safety


def _squash_restored(config: Config, target: Target, safety: Path | None, record: Journal, report: LossReport,
                     allow_drift: bool, accept_loss: bool, log: Log) -> None:
    """``online.squash`` of the restored target. The safety bundle holds the files on disk (the
    restore did not change them): it undoes them; without one (no database before), a bundle
    of the restored target is made for that. The old history's fresh build starts only now: it
    is made like the restored database, which may not have existed before."""
    target = resolve(config, target.name)
    fresh = freshproof.start(config, target, report, log)
    files_bundle = safety or steps.backup_step(config, target, log, record, "backup")
    try:
        online.squash(config, target, files_bundle, record=record, log=log, carried=report, allow_drift=allow_drift,
                      fresh=fresh, accept_loss=accept_loss)
    except UndoIncomplete:
        raise  # the journal stays open: resume undoes the squash, then the restore
    except OperationFailed as exc:
        run = record.read()
        state = phase.undo_phase(config, run, target.name, log, started=run.phases()[0])
        raise OperationFailed(f"{exc} The restore was undone too: {state}") from None
