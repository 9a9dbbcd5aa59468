"""``squashkit promote SOURCE-to-TARGET``: the target's databases replaced by the source's data, nothing lost.

The drift guard lives here too: when the source was refreshed from the target by squashkit,
the target must not have taken writes since (see ``squashkit.lineage``), or promoting would
silently replace them.
"""

from __future__ import annotations

from pathlib import Path

from squashkit import freshproof, journal, lineage, online, phase, plan, postgres, runs, steps
from squashkit.config import Config
from squashkit.databases import primary_aliases
from squashkit.errors import BadInput, OperationFailed, UndoIncomplete
from squashkit.runs import Log, stderr_log
from squashkit.project import squashed_apps
from squashkit.target import Target, resolve


def promote(
    config: Config,
    *,
    spec: str,
    squash: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    force: bool = False,
    accept_loss: bool = False,
    allow_drift: bool = False,
    log: Log = stderr_log,
) -> Path | None:
    """``SOURCE-to-TARGET``: back up the source, save the target, rebuild it from the source's dump."""
    source_name, target_name = parse_promotion(spec, config)
    source = resolve(config, source_name)
    target = resolve(config, target_name)
    if squash:  # a project without apps of its own: refused before anything, a lock included
        squashed_apps(source.project)
    mode, _why = steps.choose_mode(target, in_place)
    if dry_run:
        shapes = {alias: plan.live_shape(source.params(alias)) for alias in source.project.postgres_aliases()}
        squashing = plan.build_squash(config, target=source, shapes=shapes) if squash else []
        plan.print_plan(squashing + plan.build(config, squash=False, target=target, source_label=source.name,
                                               manifest_hint=f"{source.name}'s new bundle", shapes=shapes, mode=mode))
        return None
    run = journal.new_run_id("promote", target.name)
    with runs.exclusive(config, run, [target, source]):
        # 0. Preflight on the source and the target (changes nothing).
        with postgres.connect(source.params()) as conn:
            extensions = postgres.installed_extensions(conn)
        steps.preflight(config, target, extensions, log, source=source, files_change=squash, force=force, squashing=squash)
        # 0b. With --squash, the loss report; and the drift guard: the target took no writes since
        # the source was refreshed from it (changes nothing).
        report = None
        if squash:
            online.preflight(config, source)
            report = steps.scan_losses(source, accept_loss, log, full_report=config.backup_dir / f"{run}.losses.txt",
                                       adjust=freshproof.defer_to_data)
        _require_target_unchanged(config, source, target, force, log)
        runs.confirm(f"Replace {target.name}'s database {target.params().dbname} with {source.name}'s data?"
                     + steps.kept_note(target, mode), yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="promote", target=target.name, source=source.name, argument=spec,
                         squash=squash, mode=mode) as record:
            # 1. The source's fingerprint and bundle, and a safety bundle of the target (changes nothing);
            # beside them, with --squash, the old history built in an empty database (its rows are compared in 5b).
            fingerprint = _source_fingerprint(source)
            fresh = freshproof.start(config, source, report, log) if report is not None else None
            source_bundle = steps.backup_step(config, source, log, record, "backup source")
            safety = steps.safety_backup(config, target, log, record)
            # 2-5c and 7 on the source, with --squash: the files are shared by both environments, so they
            # are squashed once, on the source, moving no data (its django_migrations rewritten in
            # place); undone on failure (online.squash).
            if squash:
                online.squash(config, source, source_bundle, record=record, log=log, carried=report, allow_drift=allow_drift,
                              fresh=fresh, accept_loss=accept_loss)
                fingerprint = _with_history_of(source, fingerprint)
                target = resolve(config, target_name)
            # 3-8 on the target: rebuilt from the source's dump, verified, swapped; undone on failure.
            try:
                phase.replace_database(config, target, source_bundle, safety, squash=False, jobs=1, log=log, mode=mode, record=record,
                                       squashed=squash)
            except UndoIncomplete:
                raise  # the journal stays open: resume undoes the target's phase, then the source's
            except OperationFailed as exc:
                if not squash:
                    raise
                # The target was put back with the old migration files: the squashed source must
                # follow, or its django_migrations would name files that no longer exist.
                state = phase.undo_phase(config, record.read(), source.name, log)
                raise OperationFailed(f"{exc} The source was un-squashed too: {state}") from None
            # 9. The drift records, so that a later promote back can tell writes it would replace.
            _record_lineage(config, source, target, fingerprint, source_bundle, log)
            _resync_lineage(config, source, target, log)
    before = f"its previous state is in {safety}" if safety else "it had no database before"
    log(f"{target.name} now holds {source.name}'s data (bundle {source_bundle}); {before}")
    return source_bundle


def parse_promotion(spec: str, config: Config) -> tuple[str, str]:
    """(source, target) of ``SOURCE-to-TARGET``, both configured and different."""
    if "-to-" not in spec:
        raise BadInput(f"promote takes SOURCE-to-TARGET, e.g. dev-to-prod (not {spec!r})")
    source, target = spec.split("-to-", 1)
    for name in (source, target):
        config.environment(name)
    if source == target:
        raise BadInput("promote needs two different environments")
    return source, target


def _require_target_unchanged(config: Config, source: Target, target: Target, force: bool, log: Log) -> None:
    """The drift guard: when ``source`` was refreshed from ``target`` by squashkit, ``target`` must not
    have taken writes since, or promoting would silently replace them (``--force`` accepts it)."""
    refreshed = lineage.read(config.backup_dir, source.name)
    if refreshed is None or refreshed.source_env != target.name:
        log(f"{source.name} was not refreshed from {target.name} by squashkit: no drift check")
        return
    params = target.params()
    with postgres.connect(params.with_dbname("postgres")) as conn:
        if not postgres.database_exists(conn, params.dbname):
            return
    current = _fingerprint(target)
    found = lineage.require_unchanged(config.backup_dir, source_env=source.name, target_env=target.name, current=current, force=force)
    if found:
        log(f"--force: {target.name} took writes since {source.name} was refreshed from it; they are replaced: " + "; ".join(found[:5]))
    else:
        log(f"{target.name} has taken no writes since {source.name} was refreshed from it")


def _fingerprint(env: Target, *, history_only: bool = False) -> lineage.Fingerprint:
    """Every database of ``env`` (once each, however many aliases reach it) as one fingerprint; a
    table of a database other than default's is named ``<alias>:<schema>``. ``history_only``: the
    django_migrations tables alone."""
    found = None
    for alias in primary_aliases(env.project):
        with postgres.connect(env.params(alias).with_dbname("postgres")) as conn:
            if alias != "default" and not postgres.database_exists(conn, env.params(alias).dbname):
                continue  # not made yet: it holds nothing
        with postgres.connect(env.params(alias)) as conn:
            ignore = lineage.IGNORED_TABLES
            if history_only:
                ignore = tuple(f"{schema}.{name}" for schema, name in postgres.user_tables(conn) if name != "django_migrations")
            one = lineage.fingerprint(conn, ignore=ignore)
        if found is None:
            found = one
        else:
            renamed = [t.model_copy(update={"schema_name": f"{alias}:{t.schema_name}"}) for t in one.tables]
            found = found.model_copy(update={"tables": [*found.tables, *renamed]})
    return found


def _source_fingerprint(source: Target):
    """The source's fingerprint, taken before its backup: a write that lands in between is in the
    copy but not in the record, which can only make a later drift check stricter, never blind."""
    return _fingerprint(source)


def _with_history_of(source: Target, fingerprint: lineage.Fingerprint) -> lineage.Fingerprint:
    """The source's fingerprint with its django_migrations as the squash left it: the squash changed
    those tables alone, and a later promote back must not take the squash itself for a write."""
    now = {(t.schema_name, t.name): t for t in _fingerprint(source, history_only=True).tables}
    tables = [now.get((t.schema_name, t.name), t) for t in fingerprint.tables]
    return fingerprint.model_copy(update={"tables": tables})


def _record_lineage(config: Config, source: Target, target: Target, fingerprint, source_bundle: Path, log: Log) -> None:
    lineage.record(config.backup_dir, source_env=source.name, target_env=target.name, database=source.params().dbname,
                   fingerprint=fingerprint, bundle=source_bundle)
    log(f"recorded {source.name}'s fingerprint: a later promote {target.name}-to-{source.name} checks it has taken no writes")


def _resync_lineage(config: Config, source: Target, target: Target, log: Log) -> None:
    """After ``source``-to-``target``, a record of ``source`` refreshed from ``target`` describes a
    ``target`` that no longer exists: it now holds ``source``'s data, so the record is renewed with
    ``target``'s new fingerprint (else the next promote would see the promote itself as drift)."""
    earlier = lineage.read(config.backup_dir, source.name)
    if earlier is None or earlier.source_env != target.name:
        return
    current = _fingerprint(target)
    lineage.record(config.backup_dir, source_env=target.name, target_env=source.name, database=target.params().dbname,
                   fingerprint=current, bundle=earlier.bundle)
