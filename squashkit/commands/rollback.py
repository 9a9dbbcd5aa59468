"""``squashkit rollback PATH``, ``rollback --kept`` and ``rollback BUNDLE --migrations-only``: an environment put back.

From a bundle (its dump when intact, else its db.json), a db.json inside one (the json path on
purpose), or a lone db.json; with ``--kept``, by swapping back the database the last side-mode
run kept, with the migration files that go with it (renames only: nothing is dropped); with
``--migrations-only``, a squash that moved no data undone the same way: the bundle's files and
the django_migrations rows it saved, every write since kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from squashkit import bundle, bundlefiles, history, journal, online, phase, postgres, provenance, runs, steps
from squashkit.config import Config
from squashkit.databases import primary_aliases
from squashkit.errors import BadInput, OperationFailed, SquashkitError, StepFailed, first_line
from squashkit.journal import Journal
from squashkit.project import archive_migrations
from squashkit.runs import Log, stderr_log
from squashkit.target import Target, resolve


def rollback(
    config: Config,
    *,
    path: Path,
    env: str | None = None,
    yes: bool = False,
    in_place: bool = False,
    typed: str | None = None,
    loaddata: bool = False,
    public_only: bool = False,
    log: Log = stderr_log,
) -> None:
    """Put ``env`` back from a bundle (its dump when intact, else its db.json) or from a db.json.

    Which way back is usable is decided before anything changes: the dump (full fidelity) when
    every file of it is intact, else the json; neither means refusing. The migration files of the
    moment are saved first, so a rollback that fails leaves them as they were. A bundle's json is
    loaded by PostgreSQL, or by Django's ``loaddata`` with ``loaddata`` (it sends save signals).
    """
    path = Path(path)
    target = resolve(config, env)
    mode, _why = steps.choose_mode(target, in_place)
    bundle_dir, manifest, use_dump = choose_source(path)
    if loaddata and manifest is not None and manifest.encrypted:
        raise BadInput("--loaddata cannot read an encrypted bundle (loaddata would need it decrypted on disk): "
                       "roll back without it (nothing was changed)")
    if not use_dump:
        require_json_covers(target, public_only)
    # 0. What the bundle belongs to, against the code as it will be once the bundle's files are back:
    # another project's, or one newer than the code, is refused before anything changes.
    verdict = require_belongs(target, path, manifest, use_dump)
    run = journal.new_run_id("rollback", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight: the drop could be finished, no leftover side database (changes nothing).
        steps.require_safe_to_drop(target)
        if mode == "side":
            steps.require_no_leftovers(target)
        upgrade = f" {verdict.reason}." if verdict is not None and verdict.kind == "newer" else ""
        runs.confirm(f"Replace {target.name}'s database {target.params().dbname} with {path}?{upgrade}"
                     + steps.kept_note(target, mode),
                     yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="rollback", target=target.name, argument=str(path), mode=mode,
                             loaddata=loaddata, public_only=public_only) as record:
            # 1-8. Save the files of the moment, put the bundle's back, rebuild from the dump (else the
            # json), verify, swap; a failure puts the files back and drops what was built.
            run_rollback(config, target, path, bundle_dir, manifest, use_dump, mode, record, log, loaddata=loaddata,
                         public_only=public_only)


def rollback_kept(
    config: Config, *, env: str | None = None, yes: bool = False, typed: str | None = None, log: Log = stderr_log
) -> None:
    """Swap the database a side-mode run kept (``<name>__squashkit_prev``) back in, in seconds,
    with the migration files it goes with; the database it replaces becomes the kept one, so a
    second ``rollback --kept`` undoes the first and nothing is ever dropped."""
    target = resolve(config, env)
    aliases = primary_aliases(target.project)  # a database two aliases reach is exchanged once
    live = {alias: target.params(alias).dbname for alias in aliases}
    origins = set()
    comments: dict[str, str] = {}
    for alias in aliases:
        with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
            comment = postgres.database_comment(conn, live[alias] + steps.KEPT) if postgres.database_exists(conn, live[alias] + steps.KEPT) else None
        if comment is None:
            raise BadInput(f"there is no kept database {live[alias] + steps.KEPT} for {target.name}: use squashkit rollback BUNDLE")
        comments[alias] = comment
        origins.add((re.match(r"squashkit run (\S+):", comment) or [None, comment])[1])
    if len(origins) != 1:
        raise BadInput(f"the kept databases of {target.name} come from different runs ({', '.join(sorted(origins))}): use squashkit rollback BUNDLE")
    made_by = origins.pop()
    files = _kept_files(config, made_by, target.name)
    _require_files_fit_kept(config, target, made_by, files, {alias: name + steps.KEPT for alias, name in live.items()})
    run = journal.new_run_id("rollback", target.name)
    with runs.exclusive(config, run, [target]):
        runs.confirm(f"Swap {target.name}'s {', '.join(live.values())} with the database(s) kept by run {made_by}?",
                yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="rollback", target=target.name, argument="--kept", mode="side") as record:
            saved = config.backup_dir / f"{run}.migrations.tar.gz"
            if files is not None:
                record.started("save migrations", target.name, archive=str(saved))
                archive_migrations(target.project, target.manage.cwd, saved)
                saved.chmod(0o600)
                record.finished("save migrations", target.name)
            record.started("phase", target.name, mode="side", squash=False, source_bundle=None, safety_bundle=None,
                           files={"kind": files[0], "archive": str(files[1])} if files else None,
                           databases={a: {"live": n, "work": n + steps.KEPT} for a, n in live.items()})
            exchanged: list[str] = []
            try:
                for alias, name in live.items():
                    record.started(f"exchange {alias}", target.name, database=name, kept=name + steps.KEPT)
                    with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                        when = bundle.utc_now().strftime("%Y-%m-%d %H:%M:%S")
                        postgres.exchange_databases(conn, live=name, kept=name + steps.KEPT, spare=name + steps.SIDE,
                                                    comment=f"squashkit run {run}: {name} as it was until {when} UTC")
                    exchanged.append(alias)
                    record.finished(f"exchange {alias}", target.name)
                    log(f"{name}{steps.KEPT} is {name} again; the database it replaced is kept as {name}{steps.KEPT}")
                put_back_kept_files(target, files, record, log)
                steps.require_files_match_history(target, log)
            except (SquashkitError, psycopg.Error) as exc:
                # Exchanging again is the undo; the kept database gets its own comment back.
                for alias in exchanged:
                    with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                        postgres.exchange_databases(conn, live=live[alias], kept=live[alias] + steps.KEPT,
                                                    spare=live[alias] + steps.SIDE, comment=comments[alias])
                if files is not None:
                    steps.put_back_saved(target, saved, log)
                raise OperationFailed(
                    f"rollback --kept failed ({first_line(exc)}); {target.name}'s databases and migration files are as before"
                ) from None
            record.finished("phase", target.name)


def choose_source(path: Path) -> tuple[Path | None, bundle.Manifest | None, bool]:
    """(bundle directory, its manifest, whether its dump is usable) for a rollback PATH; refuses
    what cannot be used before anything changes."""
    if path.is_dir():
        manifest = bundle.read_manifest(path)
        bundlefiles.require_identity(path, manifest.encrypted)  # a wrong or missing --identity, before anything
        damaged = bundle.damaged_files(path, manifest)
        in_a_dump = [name for name in damaged if any(bundle.belongs_to(name, e.dump) for e in manifest.databases)]
        json_ok = not [name for name in damaged if name not in in_a_dump and name != "log.txt"]
        if manifest.migrations_archive in damaged or not (not in_a_dump or json_ok):
            raise BadInput(f"bundle {path.name} is damaged ({', '.join(damaged)}): nothing was changed; use another bundle")
        return path, manifest, not in_a_dump
    if path.is_file() and (path.parent / bundle.MANIFEST).is_file():
        # A db.json inside a bundle: the json path on purpose, with everything the bundle records.
        manifest = bundle.read_manifest(path.parent)
        bundlefiles.require_identity(path.parent, manifest.encrypted)
        if not bundle.json_intact(path.parent, manifest):
            damaged = ", ".join(bundle.damaged_files(path.parent, manifest))
            raise BadInput(f"bundle {path.parent.name} is damaged ({damaged}): nothing was changed; use another bundle")
        return path.parent, manifest, False
    if path.is_file() and path.name.endswith((".json", ".json.gz")):
        return None, None, False  # read to the end by require_belongs, before anything changes
    raise BadInput(f"{path} is neither a bundle directory nor a .json fixture")


def require_belongs(target: Target, path: Path, manifest: bundle.Manifest | None,
                    use_dump: bool) -> provenance.Verdict | None:
    """Refuse, before anything changes, a bundle or db.json of another project, or one whose database
    applied migrations the code does not have. A code newer than the bundle goes on from its dump
    (its rows back, the new migrations run for real); the json has no such way: its rows would be
    loaded into the newer schema, so that is refused too, naming the way that works."""
    if manifest is None:
        from squashkit.fixture import fixture_apps

        labels, content_type_apps = fixture_apps(path)
        installed = {model.label for app in target.project.apps for model in app.models}
        strangers = sorted(label for label in labels if label not in installed)
        ours = sorted(app.label for app in target.project.own_apps() if app.models)
        if strangers or (content_type_apps and ours and not set(ours) & content_type_apps):
            what = (f"it holds {len(strangers)} model(s) not installed here (e.g. {strangers[0]})" if strangers else
                    f"its content types name none of this project's apps ({', '.join(ours[:5])})")
            raise BadInput(f"{path.name} comes from another project: {what}; nothing was changed")
        return None
    verdict = provenance.check(manifest, target.project, name=f"bundle {path.name}", files_from=manifest)
    if verdict.kind == "newer" and not use_dump:
        raise BadInput(f"{verdict.reason.split(':')[0]}: a json rollback would load its rows into the newer schema. "
                       "Roll back from the bundle's intact dump (pass the bundle directory), or check out the code the "
                       "bundle was taken with; nothing was changed")
    return verdict


def require_json_covers(target: Target, public_only: bool) -> None:
    """db.json holds the tables of public alone: a django-tenants project rolled back from it would
    come back with its tenant rows in public and none of their schemas."""
    tenancy = target.project.tenancy
    if tenancy is not None and not public_only:
        raise BadInput(f"{target.name} is a django-tenants project and db.json holds its {tenancy.public_schema} schema alone: "
                       f"a rollback from it restores public only, with no tenant's schema nor template (their rows in "
                       f"{tenancy.tenant_table} come back without them); the bundle's dump holds every schema. "
                       "Pass --public-only to go on anyway; nothing was changed")


def public_part(manifest: bundle.Manifest, target: Target) -> bundle.Manifest:
    """``manifest`` with the content hashes of public's tables alone: what a --public-only json
    rollback of a django-tenants project is verified against."""
    public = target.project.tenancy.public_schema
    return manifest.model_copy(update={"databases": [
        entry.model_copy(update={"contents": {t: c for t, c in entry.contents.items() if t.split(".", 1)[0] == public}})
        for entry in manifest.databases]})


def run_rollback(
    config: Config, target: Target, path: Path, bundle_dir: Path | None, manifest: bundle.Manifest | None,
    use_dump: bool, mode: steps.Mode, record: Journal, log: Log, *, save_files: bool = True, loaddata: bool = False,
    public_only: bool = False,
) -> None:
    """The rollback itself, journalled in ``record`` (``resume`` calls it again for an in-place one).
    A django-tenants project falls back to db.json (public alone) only with ``public_only``."""
    json_allowed = target.project.tenancy is None or public_only
    # 1. Save the migration files of the moment (undone: nothing changed yet).
    saved = None
    if bundle_dir is not None and save_files:
        saved = config.backup_dir / f"{record.run}.migrations.tar.gz"
        record.started("save migrations", target.name, archive=str(saved))
        archive_migrations(target.project, target.manage.cwd, saved)
        saved.chmod(0o600)
        record.finished("save migrations", target.name)
    # 2. The bundle's migration files (undone: the saved ones come back).
    if bundle_dir is not None:
        record.started("put back migrations", target.name, archive=str(bundle_dir / manifest.migrations_archive))
        steps.put_back_migrations(bundle_dir, target.manage.cwd, manifest, log, target.project)
        record.finished("put back migrations", target.name)
        target = resolve(config, target.name)
    # 3-8. The dump when intact, else the json (phase.rebuild_from_json); each undoes itself.
    try:
        if use_dump:
            try:
                phase.replace_database(config, target, bundle_dir, None, squash=False, jobs=1, log=log, mode=mode, record=record,
                                  fallback="db.json" if json_allowed else None)
                return
            except OperationFailed as exc:
                # The json is the way back from a dump that would not restore; a verify that failed on the
                # code (models without a migration) or the data would fail the json's the same way.
                restoring = isinstance(exc, StepFailed) and exc.step.startswith(("create ", "pg_restore "))
                if not restoring or not json_allowed or (mode == "in-place" and not bundle.json_intact(bundle_dir, manifest)):
                    raise
                log(f"restoring the dump failed ({exc}); falling back to db.json")
        elif path.is_dir():
            log(f"the dump is damaged ({', '.join(bundle.damaged_files(path, manifest))}); rebuilding from db.json")
        if target.project.tenancy is not None:
            log(f"db.json holds {target.project.tenancy.public_schema} alone (--public-only): no tenant's schema comes back")
            manifest = public_part(manifest, target) if manifest else None
        phase.rebuild_from_json(config, target, bundle_dir, manifest, None if bundle_dir else path, mode, record, log,
                                loaddata=loaddata)
    except (SquashkitError, psycopg.Error) as exc:
        if mode == "in-place" or saved is None:
            raise
        steps.put_back_saved(target, saved, log)
        raise OperationFailed(f"{first_line(exc)} The migration files are as they were before the rollback.") from None


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
    for started in run.phases():
        if started.env == env and any(e.step == "delete migrations" and e.env == env for e in run.since(started)):
            return "bundle", Path(started.changed["source_bundle"])
    return None


def _require_files_fit_kept(config: Config, target: Target, made_by: str, files: tuple[str, Path] | None,
                            kept: dict[str, str]) -> None:
    """Before anything is exchanged: the migration files that will be on disk once the kept database is
    back are those its django_migrations names, as ``migrate --check`` counts them (a squashed migration
    is applied once all it replaces are). They are not after ``promote --squash``: the kept target goes
    with the files from before the squash, which the source's rows no longer name (the files are
    shared); the way that works is named."""
    own = target.project.own_apps()
    expected = {app.label: (app.aliases, *_kept_names(app, files, target)) for app in own}
    for alias, database in kept.items():
        with postgres.connect(target.params(alias).with_dbname(database)) as conn:
            _table, recorded = history.found(conn)
        applied = {(row.app, row.name) for row in recorded}
        lacking = []
        for label, (aliases, names, replaces) in expected.items():
            if alias not in aliases:
                continue
            lacking += [f"{label}.{name}" for name in names if (label, name) not in applied
                        and not (name in (replaces or {}) and all(tuple(p) in applied for p in replaces[name]))]
            if replaces is not None:  # a row of a project app that no file holds nor a squashed one replaces
                known = set(names) | {p[1] for pairs in replaces.values() for p in pairs if p[0] == label}
                lacking += [f"{label}.{name}" for app_label, name in applied if app_label == label and name not in known]
        if not lacking:
            continue
        run = journal.read(config.backup_dir / f"{made_by}{journal.SUFFIX}")
        squashed = [e for e in run.phases() if e.env != target.name and e.changed.get("squash")]
        if squashed:
            source, bundle_path = squashed[0].env, squashed[0].changed["source_bundle"]
            raise BadInput(
                f"{database} was kept by run {made_by}, which squashed {source}'s migration files: it goes with the files "
                f"from before that squash, which {source}'s django_migrations no longer names (the files are shared). "
                f"Undo the squash first (squashkit rollback {bundle_path} --migrations-only --env {source}), then rollback "
                f"--kept again; nothing was changed (it differs at {lacking[0]})")
        raise BadInput(f"{database} and the migration files that would be on disk with it do not go together ({lacking[0]}, "
                       f"{len(lacking)} in all): use squashkit rollback BUNDLE; nothing was changed")


def _kept_names(app, files: tuple[str, Path] | None, target: Target) -> tuple[list[str], dict | None]:
    """The migrations of ``app`` once a kept database's files are back (``_kept_files``), as migrate plans
    them, and what their squashed ones replace (None where that is not known: a tarball a rollback saved)."""
    from squashkit.project import archive_members

    if files is None:
        return list(app.migrations), dict(app.replaces)
    kind, path = files
    if kind == "bundle":
        found = bundle.read_manifest(path).own_apps.get(app.label)
        if found is None:
            return [], {}
        return list(found.migrations), found.replaces or {n: p for n, p in app.replaces.items() if n in found.migrations}
    folder = app.migrations_folder.relative_to(target.manage.cwd) if app.migrations_folder else None
    return [Path(member).stem for member in archive_members(path)
            if folder and Path(member).parent == folder and Path(member).suffix == ".py"
            and not Path(member).stem.startswith(("_", "~"))], None


def put_back_kept_files(target: Target, files: tuple[str, Path] | None, record: Journal, log: Log) -> None:
    """The migration files that go with a kept database (``_kept_files``), journalled."""
    if files is None:
        return
    kind, path = files
    record.started("put back migrations", target.name, kind=kind, archive=str(path))
    if kind == "saved":
        steps.put_back_saved(target, path, log)
    else:
        steps.put_back_migrations(path, target.manage.cwd, bundle.read_manifest(path), log, target.project)
    record.finished("put back migrations", target.name)


def rollback_migrations(
    config: Config, *, path: Path, env: str | None = None, yes: bool = False, typed: str | None = None, log: Log = stderr_log
) -> None:
    """Undo a squash that moved no data, keeping every write made since: the bundle's migration files
    and the django_migrations rows the squash replaced (its ``history.json``) come back, the rows in
    one transaction per database. No table but django_migrations is touched, no session ended."""
    path = Path(path)
    manifest = bundle.read_manifest(path)
    bundlefiles.require_identity(path, manifest.encrypted)
    if manifest.migrations_archive in bundle.damaged_files(path, manifest):
        raise BadInput(f"bundle {path.name} is damaged ({manifest.migrations_archive}): nothing was changed; use another bundle")
    saved = history.load(path)
    target = resolve(config, env)
    if saved.environment != target.name:
        raise BadInput(f"{path.name}/{history.FILE} was written by a squash of {saved.environment}, not {target.name}: "
                       f"pass --env {saved.environment} (nothing was changed)")
    run = journal.new_run_id("rollback", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight: django_migrations is as the squash left it, everywhere (changes nothing).
        online.require_as_squashed(target, saved)
        runs.confirm(f"Put back {target.name}'s migration files and django_migrations rows from before squash {saved.run} "
                     f"(no data is touched)?", yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="rollback", target=target.name, argument=str(path), mode=online.MODE) as record:
            # 1-4. Save the files of the moment, put the bundle's back, the saved rows in one transaction
            # per database, verify; a failure puts the squash's files and rows back.
            online.unsquash(config, target, path, saved, record, log)
    log(f"{target.name}'s squash {saved.run} is undone: the migration files and django_migrations rows are as before it, "
        "every row of data as it is now")
