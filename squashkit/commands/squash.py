"""``squashkit squash``: migration zero on one environment, as if makemigrations ran for the first time.

A squash changes the migration files and the rows of django_migrations that name them, never
the data: by default it rewrites those rows in one transaction on the live database
(``online.squash``), with no copy and no session ended. ``--rebuild`` keeps the source
procedure's full cycle instead: the data dumped and restored into a side database (or, with
``--in-place``, the dropped and recreated one), migrate --fake, verify, swap.
"""

from __future__ import annotations

from pathlib import Path

from squashkit import (
    freshproof,
    journal,
    online,
    phase,
    plan,
    postgres,
    runs,
    steps,
    tenants,
)
from squashkit.config import Config
from squashkit.errors import BadInput
from squashkit.runs import Log, stderr_log
from squashkit.project import squashed_apps
from squashkit.target import resolve


def squash(
    config: Config,
    *,
    env: str | None = None,
    yes: bool = False,
    dry_run: bool = False,
    rebuild: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    force: bool = False,
    accept_loss: bool = False,
    allow_drift: bool = False,
    log: Log = stderr_log,
) -> Path | None:
    """Back up, delete the project's migrations, makemigrations (plus what is carried), prove the
    schema, then rewrite django_migrations on the live database (``rebuild``: restore a copy,
    migrate --fake, verify, swap); returns the bundle that undoes it."""
    if in_place and not rebuild:
        raise BadInput("--in-place drops and rebuilds the database: it goes with --rebuild (a squash without it copies "
                       "no data and drops nothing); nothing was changed")
    target = resolve(config, env)
    squashed_apps(target.project)  # a project without apps of its own: refused before anything, a lock included
    mode, _why = steps.choose_mode(target, in_place) if rebuild else (online.MODE, "")
    if dry_run:
        shapes = {alias: plan.live_shape(target.params(alias)) for alias in target.project.postgres_aliases()}
        if rebuild:
            planned = plan.build(config, squash=True, target=target, source_label=target.name,
                                 manifest_hint="the new bundle", shapes=shapes, mode=mode)
        else:
            planned = plan.build_squash(config, target=target, shapes=shapes)
        plan.print_plan(planned)
        return None
    run = journal.new_run_id("squash", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight: migrations applied and complete, files committed; a squash that moves no
        # data needs a scratch database and a django_migrations it may rewrite (changes nothing).
        tenants.require_single_type(target.project)
        with postgres.connect(target.params()) as conn:
            extensions = postgres.installed_extensions(conn)
        steps.preflight(config, target, extensions, log, source=target, files_change=True, force=force, squashing=True,
                        rebuilds=rebuild)
        if not rebuild:
            online.preflight(config, target)
        # 0b. The loss report: refuse what cannot be carried over without --accept-loss (changes nothing).
        report = steps.scan_losses(target, accept_loss, log, full_report=config.backup_dir / f"{run}.losses.txt",
                                   adjust=freshproof.defer_to_data)
        apps = len(target.project.own_apps())
        runs.confirm(
            f"Delete the migration files of {apps} apps and rebuild {target.name}'s database {target.params().dbname}?"
            + steps.kept_note(target, mode) if rebuild else
            f"Regenerate the migration files of {apps} apps and rewrite their rows of django_migrations in "
            f"{target.name}'s database {target.params().dbname} (no data is copied)?",
            yes=yes, protected=target.protected_name(), typed=typed,
        )
        with runs.journalled(config, run, command="squash", target=target.name, squash=True, mode=mode) as record:
            # 1. The bundle that undoes everything after it (changes nothing); beside it, the old history
            # is built in an empty database (its rows are compared in 5b).
            fresh = freshproof.start(config, target, report, log)
            made = steps.backup_step(config, target, log, record, "backup")
            if rebuild:
                # 2-8. Delete the files, rebuild, regenerate, prove, fake, verify, swap; undone on failure.
                phase.replace_database(config, target, made, made, squash=True, jobs=1, log=log, mode=mode, record=record,
                                       carried=report, allow_drift=allow_drift, fresh=fresh, accept_loss=accept_loss)
            else:
                # 2, 5, 5b, 5c, 7. Delete the files, makemigrations and prove against scratch databases,
                # rewrite django_migrations in one transaction, verify; undone on failure.
                online.squash(config, target, made, record=record, log=log, carried=report, allow_drift=allow_drift,
                              fresh=fresh, accept_loss=accept_loss)
    log(f"{target.name} squashed; the previous state is in {made}"
        + ("" if rebuild else f" (undo without touching the data: squashkit rollback {made} --migrations-only)"))
    return made
