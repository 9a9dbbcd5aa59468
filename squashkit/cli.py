"""The command line: parses arguments, calls the library, renders results and errors.

It knows nothing the library does not expose. Every expected failure arrives as a
``SquashkitError`` and leaves as one line on stderr and its exit code (2 bad input,
1 failed); ``-v`` adds the traceback. Anything else is a bug, reported the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.exceptions import TyperException

from squashkit import __version__, bundle, bundlefiles, cluster, losses, plan, progress, project, reports, store
from squashkit import config as config_module
from squashkit.commands import backup as backup_command
from squashkit.commands import check as check_command
from squashkit.commands import kept as kept_command
from squashkit.commands import losses as losses_command
from squashkit.commands import promote as promote_command
from squashkit.commands import recreate as recreate_command
from squashkit.commands import restore as restore_command
from squashkit.commands import resume as resume_command
from squashkit.commands import rollback as rollback_command
from squashkit.commands import squash as squash_command
from squashkit.commands import tenant as tenant_command
from squashkit.errors import BAD_INPUT, FAILED, BadInput, SquashkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Back up, squash, restore and promote the PostgreSQL database of a Django project.",
)
cluster_app = typer.Typer(help="A throwaway PostgreSQL cluster for trying squashkit (demo and tests).")
app.add_typer(cluster_app, name="cluster")

err = Console(stderr=True, highlight=False)
_state = {"verbose": False, "config": None, "quiet": False}

EnvOption = typer.Option(None, "--env", "-e", help="Environment name (default: $SQUASHKIT_ENV, then default_env).")


def _version(value: bool) -> None:
    if value:
        print(f"squashkit {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="squashkit.toml or pyproject.toml (default: found from the current directory up)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final line."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["verbose"] = verbose
    _state["config"] = config
    _state["quiet"] = quiet


def _config() -> config_module.Config:
    return config_module.load(_state["config"])


@app.command()
def backup(
    env: Optional[str] = EnvOption,
    output: Optional[str] = typer.Option(
        None, "--output", "-o", help="Directory or URL (s3://bucket/prefix) for the bundle (default: backup_dir)."),
    dump_format: str = typer.Option("custom", "--format", "-F", help="pg_dump format: custom or directory."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel pg_dump jobs (directory format only)."),
    compress: bool = typer.Option(True, "--compress/--no-compress", help="Write db.json as db.json.gz."),
    encrypt_to: list[str] = typer.Option(
        [], "--encrypt-to", metavar="RECIPIENT", help="Encrypt every file with age to this public key (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the bundle as JSON (squashkit schema backup)."),
    schemas: Optional[list[str]] = typer.Option(
        None, "--schema", help="django-tenants: a bundle of just this tenant's schema (repeatable)."),
) -> None:
    """Write a verified bundle: db.json, db.dump, migrations.tar.gz and manifest.json (--schema: those tenants alone)."""
    config = _config()
    if schemas:
        path = tenant_command.backup_schemas(config, env=env, schemas=list(dict.fromkeys(schemas)),
                                             output=Path(output) if output else None, log=_log)
        _account()
        print(path)
        return
    sealing = bundlefiles.Sealing(compress=compress, recipients=encrypt_to)
    destination = store.location(config, output)
    remote = isinstance(destination, str)
    clock = time.monotonic()
    if remote:
        store.require_reachable(destination, config.storage)  # before anything is written
    with _progress():
        # A bundle for the store is written and verified here first, in the local state directory.
        path = backup_command.backup(config, env=env, output=config.backup_dir / "outgoing" if remote else destination,
                                     dump_format=dump_format, jobs=jobs, log=_log, sealing=sealing)
        durations = {"backup": time.monotonic() - clock}
        manifest = bundle.read_manifest(path)
        sizes = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
        where: str = str(path)
        if remote:
            where = store.publish(path, destination, config.storage, log=_log)
            shutil.rmtree(path)
            durations["upload"] = time.monotonic() - clock - durations["backup"]
    durations["total"] = time.monotonic() - clock
    _account()
    if as_json:
        print(reports.backup_report(where, manifest, sizes, durations).model_dump_json(indent=2))
        return
    if not _state["quiet"]:
        print(f"Backup of {manifest.environment} ({manifest.created_at.isoformat()}):")
        for entry in manifest.databases:
            rows = sum(t.rows for t in entry.facts.tables)
            print(
                f"  {entry.alias}: database {entry.database}, {len(entry.facts.tables)} tables, {rows} rows, "
                f"{sum(entry.json_objects.values())} objects in {entry.json_file}, dump {entry.dump} ({entry.dump_format})"
            )
        print(f"  migrations: {len(manifest.migration_files)} files of {len(manifest.own_apps)} apps in {manifest.migrations_archive}")
        if manifest.encrypted:
            print(f"  encrypted with age to {len(manifest.encrypted_to)} recipient(s): {len(manifest.encrypted)} files")
    print(where)


@app.command()
def check(
    env: Optional[str] = EnvOption,
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build the schema the migration files make afresh, even if kept."),
) -> None:
    """Check connection, server and client versions, privileges, connections and migrations."""
    results = check_command.check(_config(), env=env, use_cache=not no_cache)
    _account()
    if as_json:
        # The list itself, as before; its items are CheckReport's results (squashkit schema check).
        print(json.dumps([r.model_dump() for r in results], indent=2))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        out = Console(highlight=False)
        for result in results:
            out.print(f"[{colour[result.status]}]{result.status:<4}[/] {result.name}: {result.detail}", soft_wrap=True)
    if any(r.status == "fail" for r in results):
        raise typer.Exit(FAILED)


@app.command(name="losses")
def losses_report(
    env: Optional[str] = EnvOption,
    full: bool = typer.Option(False, "--full", help="Every reason whole, not cut to one line per operation."),
    as_json: bool = typer.Option(False, "--json", help="Print every operation, its verdict and reason as JSON."),
) -> None:
    """What a squash would forget and what it carries over, app by app (changes nothing)."""
    report = losses_command.losses(_config(), env=env)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print(losses.render(report, full=full))


def _log(message: str) -> None:
    if not _state["quiet"]:
        err.print(f"squashkit: {message}", markup=False, soft_wrap=True)


def _progress():
    """Progress of the long steps on stderr: rich on a terminal, else a plain line every few seconds."""
    return progress.showing(err, quiet=_state["quiet"])


def _unlocked(identity: Optional[Path]):
    """The age identities of --identity or $SQUASHKIT_AGE_IDENTITY, for reading encrypted bundles;
    none given is fine until a bundle turns out to be encrypted (then a clear error)."""
    if identity is None and not os.environ.get(bundlefiles.IDENTITY_VARIABLE):
        return contextlib.nullcontext()
    return bundlefiles.unlocking(bundlefiles.load_identities(identity))


def _json_plans(as_json: bool):
    return plan.as_json() if as_json else contextlib.nullcontext()


def _account() -> None:
    """How many Django processes the run started, and what each cost (each is a start-up of the project)."""
    started = project.account()
    if started:
        _log(started)


YesOption = typer.Option(False, "--yes", "-y", help="Do not ask (required without a terminal).")
DryRunOption = typer.Option(False, "--dry-run", help="Print the plan (programs and SQL) and change nothing.")
InPlaceOption = typer.Option(
    False, "--in-place", help="Drop and recreate under the same name instead of building a side database and swapping."
)
ConfirmOption = typer.Option(
    None, "--confirm", metavar="DATABASE", help="A protected environment's database name (needed with --yes there)."
)
AcceptLossOption = typer.Option(
    False, "--accept-loss", help="Squash even though some migration operations cannot be carried over (they are listed)."
)
AllowDriftOption = typer.Option(
    False, "--allow-drift", help="Fake the new migrations even when they do not build the restored schema (shown as a diff)."
)
ForceOption = typer.Option(False, "--force", help="Go on despite uncommitted migration files or writes on the target since the last refresh.")
IdentityOption = typer.Option(
    None, "--identity", "-i", metavar="FILE", help="age identity file that decrypts an encrypted bundle (default: $SQUASHKIT_AGE_IDENTITY).")
JsonPlanOption = typer.Option(False, "--json", help="With --dry-run: print the plan as JSON (squashkit schema plan).")


@app.command()
def restore(
    bundle_path: str = typer.Argument(..., metavar="BUNDLE", help="A bundle written by squashkit backup: a directory or a URL."),
    env: Optional[str] = EnvOption,
    squash: bool = typer.Option(False, "--squash", help="Also regenerate the migrations (migration zero)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel pg_restore jobs (directory-format bundles)."),
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    in_place: bool = InPlaceOption,
    confirm: Optional[str] = ConfirmOption,
    force: bool = ForceOption,
    accept_loss: bool = AcceptLossOption,
    allow_drift: bool = AllowDriftOption,
    identity: Optional[Path] = IdentityOption,
    as_json: bool = JsonPlanOption,
) -> None:
    """Replace the environment's database with a bundle, after a safety backup of it."""
    config = _config()
    with _progress(), _unlocked(identity), _json_plans(as_json), store.local_bundle(config, bundle_path, log=_log) as local:
        safety = restore_command.restore(config, bundle_path=local, env=env, squash=squash, yes=yes, dry_run=dry_run, jobs=jobs,
                                         in_place=in_place, typed=confirm, force=force, accept_loss=accept_loss,
                                         allow_drift=allow_drift, log=_log)
    _account()
    if safety:
        print(safety)


@app.command()
def squash(
    env: Optional[str] = EnvOption,
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Dump and restore the data into a side database (or, with --in-place, the recreated one) "
        "and swap it in, instead of rewriting django_migrations on the live database."),
    in_place: bool = typer.Option(False, "--in-place", help="With --rebuild: drop and recreate under the same name."),
    confirm: Optional[str] = ConfirmOption,
    force: bool = ForceOption,
    accept_loss: bool = AcceptLossOption,
    allow_drift: bool = AllowDriftOption,
    as_json: bool = JsonPlanOption,
) -> None:
    """Migration zero: back up, delete migrations, makemigrations, prove the schema, rewrite django_migrations (no data moves)."""
    with _progress(), _json_plans(as_json):
        made = squash_command.squash(_config(), env=env, yes=yes, dry_run=dry_run, rebuild=rebuild, in_place=in_place, typed=confirm,
                                     force=force, accept_loss=accept_loss, allow_drift=allow_drift, log=_log)
    _account()
    if made:
        print(made)


@app.command()
def promote(
    spec: str = typer.Argument(..., metavar="SOURCE-to-TARGET", help="e.g. dev-to-prod or prod-to-dev."),
    squash: bool = typer.Option(False, "--squash", help="Squash the migrations on the source first."),
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    in_place: bool = InPlaceOption,
    confirm: Optional[str] = ConfirmOption,
    force: bool = ForceOption,
    accept_loss: bool = AcceptLossOption,
    allow_drift: bool = AllowDriftOption,
    as_json: bool = JsonPlanOption,
) -> None:
    """Replace the target environment's database with the source's, keeping every row."""
    with _progress(), _json_plans(as_json):
        made = promote_command.promote(_config(), spec=spec, squash=squash, yes=yes, dry_run=dry_run, in_place=in_place, typed=confirm,
                                       force=force, accept_loss=accept_loss, allow_drift=allow_drift, log=_log)
    _account()
    if made:
        print(made)


@app.command()
def rollback(
    path: Optional[str] = typer.Argument(
        None, metavar="[PATH]", help="A bundle (a directory or a URL), or a db.json inside one, or a lone db.json."),
    env: Optional[str] = EnvOption,
    kept: bool = typer.Option(False, "--kept", help="Swap back the database the last side-mode run kept (seconds, no restore)."),
    migrations_only: bool = typer.Option(
        False, "--migrations-only", help="Undo the squash that used BUNDLE: its migration files and django_migrations rows "
        "back, the data untouched (every write since kept)."),
    yes: bool = YesOption,
    in_place: bool = InPlaceOption,
    confirm: Optional[str] = ConfirmOption,
    loaddata: bool = typer.Option(
        False, "--loaddata", help="Load db.json with Django's loaddata (sends save signals, raw=True) instead of SQL."
    ),
    identity: Optional[Path] = IdentityOption,
    schema: Optional[str] = typer.Option(
        None, "--schema", help="django-tenants: put this one tenant back from BUNDLE (full or --schema), nothing else touched."),
    public_only: bool = typer.Option(
        False, "--public-only", help="django-tenants: allow db.json, which holds public alone (no tenant's schema comes back)."),
) -> None:
    """Put the environment back: from a bundle (its dump when intact, else its db.json), with --kept by renaming, or with
    --migrations-only only the migration files and django_migrations a squash changed."""
    if kept == (path is not None):
        raise BadInput("rollback takes a PATH or --kept (one of them)")
    if migrations_only and (kept or in_place):
        raise BadInput("--migrations-only takes a BUNDLE and touches no data: it goes with neither --kept nor --in-place")
    if schema is not None and kept:
        raise BadInput("--schema takes a BUNDLE and goes with none of --kept, --migrations-only, --in-place, --loaddata")
    config = _config()
    if kept:
        rollback_command.rollback_kept(config, env=env, yes=yes, typed=confirm, log=_log)
        _account()
        return
    with _progress(), _unlocked(identity), store.local_bundle(config, path, log=_log) as local:
        if schema is not None:
            if migrations_only or in_place or loaddata:
                raise BadInput("--schema takes a BUNDLE and goes with none of --kept, --migrations-only, --in-place, --loaddata")
            tenant_command.rollback_schema(config, path=local, schema=schema, env=env, yes=yes, typed=confirm, log=_log)
        elif migrations_only:
            rollback_command.rollback_migrations(config, path=local, env=env, yes=yes, typed=confirm, log=_log)
        else:
            rollback_command.rollback(config, path=local, env=env, yes=yes, in_place=in_place, typed=confirm,
                                      loaddata=loaddata, public_only=public_only, log=_log)
    _account()


@app.command()
def recreate(
    env: Optional[str] = EnvOption,
    fixture: list[Path] = typer.Option([], "--fixture", help="A fixture to load, on every alias that allows its models (repeatable)."),
    keep_migrations: bool = typer.Option(False, "--keep-migrations", help="Migrate the migration files as they are (no regeneration)."),
    yes: bool = YesOption,
) -> None:
    """CI: recreate the databases (or the project's schemas), regenerate the migrations, migrate every alias, load fixtures."""
    recreate_command.recreate(_config(), env=env, fixtures=fixture, keep_migrations=keep_migrations, yes=yes, log=_log)
    _account()


@app.command()
def resume(
    run: Optional[str] = typer.Option(None, "--run", help="The interrupted run to resume (see squashkit status)."),
    yes: bool = YesOption,
    identity: Optional[Path] = IdentityOption,
) -> None:
    """Finish or undo a run that was killed, from wherever it stopped."""
    with _progress(), _unlocked(identity):  # an interrupted rollback of an encrypted bundle is done again
        done = resume_command.resume(_config(), run_id=run, yes=yes, log=_log)
    _account()
    print(done)


@app.command()
def status(
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many runs to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON (squashkit schema status)."),
) -> None:
    """The last runs (from their journals) and what squashkit keeps."""
    config = _config()
    runs = kept_command.status(config, limit=limit)
    if as_json:
        report = reports.StatusReport(location=str(store.location(config)), state_dir=str(config.backup_dir),
                                      runs=[reports.run_report(run) for run in runs])
        print(report.model_dump_json(indent=2))
        return
    if not runs:
        print(f"no runs recorded in {config.backup_dir}")
    for run in runs:
        print(run.describe())


@app.command()
def cleanup(
    env: Optional[str] = EnvOption,
    keep: int = typer.Option(3, "--keep", min=0, help="Bundles to keep per environment, newest first."),
    yes: bool = YesOption,
    list_only: bool = typer.Option(False, "--list", help="Only list what would be removed."),
    confirm: Optional[str] = ConfirmOption,
    as_json: bool = typer.Option(False, "--json", help="With --list: print the items as JSON (squashkit schema cleanup)."),
) -> None:
    """List, and remove when asked, kept databases (__squashkit_prev, leftovers) and old bundles (local or in the store)."""
    config = _config()
    items = kept_command.kept(config, env=env, keep_bundles=keep)
    if as_json and not list_only:
        raise BadInput("--json goes with --list (cleanup itself prints what it removed)")
    if as_json:
        print(json.dumps([item.model_dump() for item in items], indent=2))
        return
    for item in items:
        print(f"{item.kind:<8} {item.name}  ({item.detail})")
    if not list_only:
        kept_command.cleanup(config, items, yes=yes, typed=confirm, log=_log)


@app.command()
def schema(
    name: str = typer.Argument(..., metavar="NAME", help=f"One of: {', '.join(reports.SCHEMAS)}."),
) -> None:
    """Print the JSON schema of a command's --json output (the same as docs/schemas/NAME.json)."""
    if name not in reports.SCHEMAS:
        raise BadInput(f"no schema {name!r}: one of {', '.join(reports.SCHEMAS)}")
    print(json.dumps(reports.schema(name), indent=2))


@cluster_app.command("start")
def cluster_start(directory: Optional[Path] = typer.Argument(None, help="Cluster directory (default: $SQUASHKIT_CLUSTER_DIR or a temp dir).")) -> None:
    """Start (creating if needed) the throwaway cluster and print shell exports to reach it."""
    running = cluster.start(directory)
    print("".join(f"export {key}={value}\n" for key, value in running.environ().items()), end="")


@cluster_app.command("stop")
def cluster_stop(directory: Optional[Path] = typer.Argument(None)) -> None:
    """Stop the throwaway cluster."""
    cluster.stop(directory)


@cluster_app.command("destroy")
def cluster_destroy(directory: Optional[Path] = typer.Argument(None)) -> None:
    """Stop the throwaway cluster and delete its directory."""
    cluster.destroy(directory)


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so half-written bundles are removed on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and turn errors into one line and an exit code."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=argv, prog_name="squashkit", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except TyperException as exc:  # a usage error: one line too, like every other error
        message = exc.format_message()
        if message:  # empty when the help was printed instead
            sys.stderr.write(f"squashkit: error: {message} (see squashkit --help)\n")
        return getattr(exc, "exit_code", BAD_INPUT)
    except typer.Abort:
        err.print("squashkit: aborted; nothing was changed")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else BAD_INPUT)
    except SquashkitError as exc:
        _report(str(exc), exc)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("squashkit: interrupted; nothing half-written was kept")
        return 130
    except Exception as exc:  # a bug: still one line, the traceback with -v
        _report(f"internal error: {type(exc).__name__}: {exc} (rerun with -v and report it)", exc)
        return FAILED
    return 0


def _report(message: str, exc: BaseException) -> None:
    if _state["verbose"]:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"squashkit: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
