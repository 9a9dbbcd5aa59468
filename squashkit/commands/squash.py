"""``squashkit squash``: migration zero on one environment, as if makemigrations ran for the first time."""

from __future__ import annotations

from pathlib import Path

from squashkit import journal, phase, plan, postgres, runs, steps
from squashkit.config import Config
from squashkit.runs import Log, stderr_log
from squashkit.target import resolve


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
    log: Log = stderr_log,
) -> Path | None:
    """Back up, delete the project's migrations, rebuild, makemigrations (plus what is carried),
    prove the schema, migrate --fake, verify, swap; returns the bundle that undoes it."""
    target = resolve(config, env)
    mode, _why = steps.choose_mode(target, in_place)
    if dry_run:
        shapes = {alias: plan.live_shape(target.params(alias)) for alias in target.project.postgres_aliases()}
        plan.print_plan(plan.build(config, squash=True, target=target, source_label=target.name,
                                   manifest_hint="the new bundle", shapes=shapes, mode=mode))
        return None
    run = journal.new_run_id("squash", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight: migrations applied and complete, files committed (changes nothing).
        with postgres.connect(target.params()) as conn:
            extensions = postgres.installed_extensions(conn)
        steps.preflight(config, target, extensions, log, source=target, files_change=True, force=force, squashing=True)
        # 0b. The loss report: refuse what cannot be carried over without --accept-loss (changes nothing).
        report = steps.scan_losses(target, accept_loss, log)
        runs.confirm(
            f"Delete the migration files of {len(target.project.own_apps())} apps and rebuild {target.name}'s database "
            f"{target.params().dbname}?",
            yes=yes, protected=target.protected_name(), typed=typed,
        )
        with runs.journalled(config, run, command="squash", target=target.name, squash=True, mode=mode) as record:
            # 1. The bundle that undoes everything after it (changes nothing).
            made = steps.backup_step(config, target, log, record, "backup")
            # 2-8. Delete the files, rebuild, regenerate, prove, fake, verify, swap; undone on failure.
            phase.replace_database(config, target, made, made, squash=True, jobs=1, log=log, mode=mode, record=record,
                                   carried=report, allow_drift=allow_drift)
    log(f"{target.name} squashed; the previous state is in {made}")
    return made
