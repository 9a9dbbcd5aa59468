"""``squashkit recreate``: the seed's CI job as one command, every alias, every schema.

The job the seed scripts for its test environment: drop and recreate the schemas, delete and
regenerate the migrations, ``migrate APP --database ALIAS`` for each app on its alias, then
``loaddata`` on the right alias. Here, in order (each step names the failure it guards against):

0. Refuse a protected environment, a fixture that does not parse or names models the project
   lacks, and (``recreate = "schemas"``) a layout whose schemas cannot be rebuilt alone.
1. Save the migration files of the moment (``<run>.migrations.tar.gz``): the way back.
2. Build the new databases beside the live ones (``<name>__squashkit_new``, their foundation:
   settings, the schemas every alias's search_path and db_table name, the extensions in their
   schemas and their rows); or, with ``recreate = "schemas"``, rename the project's schemas away
   and create empty ones (``schema_swap``).
3. Unless ``--keep-migrations``: migrate the current files into them, judge what regenerated
   files would forget against that (refused, nothing changed, when something would be lost),
   empty them again, delete the files, ``makemigrations`` pointed at them, carry over.
4. ``migrate`` every alias for real, in the order ``TEST["DEPENDENCIES"]`` implies, except that an
   alias whose search_path reaches another's ``django_migrations`` goes first (each app's
   operations run where its router allows, every alias records its own history in the first
   schema of its search_path; migrated second, it would read the other's as its own and build nothing).
5. ``loaddata`` each fixture on every alias whose router allows one of its models.
6. Verify: ``migrate --check`` on every alias, ``makemigrations --check``.
7. Swap the new databases in (the old ones kept as ``__squashkit_prev``); or drop the renamed schemas.

Any failure undoes the run: what was built is dropped (or the schemas renamed back) and the
files come back from step 1. Run twice, it gives the same database, the fixtures loaded.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from squashkit import carry, foundation, journal, losses, phase, postgres, runs, schema_swap, steps
from squashkit.config import Config
from squashkit.databases import Database, migrate_order, physical, primary_aliases
from squashkit.errors import BadInput, OperationFailed, SquashkitError, UndoIncomplete, first_line
from squashkit.fixture import fixture_models
from squashkit.journal import Journal
from squashkit.project import ManagePy, archive_migrations
from squashkit.runs import Log, stderr_log
from squashkit.target import Target, resolve


def recreate(
    config: Config,
    *,
    env: str | None = None,
    fixtures: list[Path] = (),
    keep_migrations: bool = False,
    yes: bool = False,
    log: Log = stderr_log,
) -> None:
    """Recreate ``env``'s databases (or its project's schemas), regenerate its migrations unless
    ``keep_migrations``, migrate every alias and load ``fixtures``; undone on any failure."""
    target = resolve(config, env)
    if target.environment.protected:
        raise BadInput(f"{target.name} is protected: recreate throws its data away and is meant for CI and development "
                       "environments (nothing was changed)")
    loads = _fixture_aliases(target, [Path(path) for path in fixtures])
    mode = target.environment.recreate
    run = journal.new_run_id("recreate", target.name)
    with runs.exclusive(config, run, [target]):
        # 0. Preflight, and what regenerated files would forget, judged against the live databases
        # while they are as the current files made them (changes nothing).
        live, work, schemas = _preflight(config, target, mode)
        report = None
        if not keep_migrations and all(_exists(target, alias) for alias in primary_aliases(target.project)):
            report = steps.scan_losses(target, accept_loss=False, log=log)
        runs.confirm(f"Recreate {target.name}'s {'schemas ' + ', '.join(sum(schemas.values(), [])) if mode == 'schemas' else 'databases'} "
                     f"{', '.join(dict.fromkeys(live.values()))}" + ("" if keep_migrations else " and regenerate its migrations") + "?",
                     yes=yes)
        shape = "side" if mode == "database" else "schemas"  # as the journal calls how a run changes a database
        with runs.journalled(config, run, command="recreate", target=target.name, mode=shape, squash=not keep_migrations,
                             argument=" ".join(str(path) for path in loads) or None) as record:
            # 1. The migration files of the moment (changes nothing).
            saved = config.backup_dir / f"{run}.migrations.tar.gz"
            record.started("save migrations", target.name, archive=str(saved))
            archive_migrations(target.project, target.manage.cwd, saved)
            saved.chmod(0o600)
            record.finished("save migrations", target.name)
            record.started("phase", target.name, mode=shape, squash=not keep_migrations, source_bundle=None, safety_bundle=None,
                           databases={alias: {"live": live[alias], "work": work[alias]} for alias in live}, schemas=schemas)
            _recreate(config, target, mode, live, work, schemas, loads, keep_migrations, report, saved, record, log)
    log(f"{target.name} recreated" + ("" if keep_migrations else " with regenerated migrations")
        + (f", {len(loads)} fixture(s) loaded" if loads else ""))


def _fixture_aliases(target: Target, paths: list[Path]) -> dict[Path, list[str]]:
    """Each fixture and the aliases whose routers allow one of its models (loaddata skips the rest
    there), read before anything changes."""
    models = {model.label: model for app in target.project.apps for model in app.models}
    loads = {}
    for path in paths:
        if not path.is_file():
            raise BadInput(f"fixture {path} not found (nothing was changed)")
        labels = fixture_models(path)
        unknown = sorted(label for label in labels if label not in models)
        if unknown:
            raise BadInput(f"fixture {path.name} holds objects of {', '.join(unknown)}, which {target.name}'s project does "
                           "not define (nothing was changed)")
        aliases = [alias for alias in migrate_order(target.project) if any(alias in models[label].dumped_on for label in labels)]
        if not aliases:
            raise BadInput(f"no alias of {target.name} allows the models of fixture {path.name} (nothing was changed)")
        loads[path.resolve()] = aliases
    return loads


def _preflight(config: Config, target: Target, mode: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """(live names, names built, schemas rebuilt per database) per alias; refused before anything changes."""
    live = {alias: target.params(alias).dbname for alias in target.project.postgres_aliases()}
    if mode == "schemas":
        schemas = {}
        for database in physical(target.project):
            params = target.params(database.alias)
            with postgres.connect(params.with_dbname("postgres")) as conn:
                if not postgres.database_exists(conn, params.dbname):
                    raise BadInput(f"{params.dbname} does not exist: recreate = \"schemas\" rebuilds schemas inside it "
                                   "and may not create it (nothing was changed)")
            schemas[database.alias] = schema_swap.require_replaceable(target.project, database, params)
        return live, dict(live), schemas
    steps.choose_mode(target, in_place=False)  # names short enough for a side copy
    steps.require_no_leftovers(target)
    for database in physical(target.project):
        with postgres.connect(target.params(database.alias).with_dbname("postgres")) as conn:
            if not conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] \
                    and target.admin() is None:
                raise BadInput(f"{target.params(database.alias).user} may not create databases: ALTER ROLE ... CREATEDB, "
                               "configure an admin connection, or set recreate = \"schemas\" (nothing was changed)")
    _live, work, _side = phase.database_names(target, list(live), "side")
    return live, work, {}


def _recreate(
    config: Config, target: Target, mode: str, live: dict[str, str], work: dict[str, str], schemas: dict[str, list[str]],
    loads: dict[Path, list[str]], keep_migrations: bool, report: losses.LossReport | None, saved: Path, record: Journal,
    log: Log,
) -> None:
    env = target.name
    manage = target.manage.on(work) if mode == "database" else target.manage
    step = "create"
    try:
        # 2. New databases beside the live ones, or new schemas beside the old ones.
        record.started(step, env, databases=sorted(set(work.values())), schemas=schemas)
        _build(config, target, mode, live, work, schemas, record.run, log)
        record.finished(step, env)
        # 3. Regenerate. Without a live database to judge the losses against (the first run), the
        # current files are migrated for real into the new ones to judge against, then emptied again.
        if not keep_migrations and report is None:
            step = "loss report"
            record.started(step, env)
            _migrate(manage, target, log)
            report = losses.scan(manage, target.project)
            log("what the regenerated migrations would forget:\n" + losses.render(report))
            losses.require_nothing_lost(report, accept_loss=False)
            _empty(config, target, mode, live, work, schemas, record.run, log)
            record.finished(step, env)
        if not keep_migrations:
            step = "regenerate migrations"
            record.started(step, env)
            steps.delete_migrations(target.project, log)
            labels = [app.label for app in target.project.own_apps()]
            if labels:  # without labels makemigrations would write into every installed app
                manage.without_migrations(carry.dependents(target.project)).run("makemigrations", *labels, "-v", "0",
                                                                                what="makemigrations")
            written = carry.carry_over(report, target.project)
            log(f"makemigrations done for {', '.join(labels)}" + (
                f"; carried over into {', '.join(str(p.relative_to(target.manage.cwd)) for p in written)}" if written else ""))
            record.finished(step, env)
        # 4-6. migrate every alias, load the fixtures, verify.
        step = "migrate"
        record.started(step, env)
        _migrate(manage, target, log)
        if mode == "database":
            _missing_config_rows(target, work, log)
        record.finished(step, env)
        for path, aliases in loads.items():
            step = f"loaddata {path.name}"
            record.started(step, env, aliases=aliases)
            for alias in aliases:
                manage.run("loaddata", str(path), "--database", alias, "-v", "0", what=f"loaddata {path.name} on {alias}")
            log(f"loaded {path.name} on {', '.join(aliases)}")
            record.finished(step, env)
        step = "verify"
        record.started(step, env)
        steps.verify(target, None, log, databases=work if mode == "database" else None)
        record.finished(step, env)
        # 7. The new ones take the old ones' place.
        if mode == "database":
            step = "swap"
            phase.swap_all(target, live, work, record, log)
        else:
            step = "drop previous schemas"
            record.started(step, env, schemas=schemas)
            for alias, names in schemas.items():
                schema_swap.drop_previous(target.params(alias), names)
            record.finished(step, env)
        record.finished("phase", env)
    except (SquashkitError, psycopg.Error, OSError) as exc:
        reason = first_line(exc)
        record.failed(step, env, reason)
        log(f"step '{step}' failed: {reason}; putting {env} back as it was")
        try:
            state = undo(config, target, mode, live, work, schemas, record.run, saved, log)
        except (SquashkitError, psycopg.Error, OSError) as undo_exc:
            raise UndoIncomplete(f"step '{step}' failed: {reason}; undoing it failed too: {first_line(undo_exc)}. "
                                 "Run squashkit resume once that is mended: it finishes the undo") from None
        raise OperationFailed(f"step '{step}' failed: {reason}. {state}") from None


def _build(config: Config, target: Target, mode: str, live: dict[str, str], work: dict[str, str],
           schemas: dict[str, list[str]], run: str, log: Log) -> None:
    """Step 2: each database built beside the live one with its foundation (the live one's when it
    exists, and the schemas the aliases need), or the project's schemas renamed away and made anew."""
    for database in physical(target.project):
        params = target.params(database.alias)
        if mode == "schemas":
            schema_swap.replace(params, schemas[database.alias])
            log(f"{params.dbname}: schemas {', '.join(schemas[database.alias])} renamed away, empty ones in their place")
            continue
        found = _foundation(target, database)
        with postgres.connect(params.with_dbname("postgres")) as conn:
            locale = postgres.database_locale(conn, params.dbname) or postgres.database_locale(conn, "template0")
        like = postgres.DatabaseFacts.model_construct(encoding=locale[0], collate=locale[1], ctype=locale[2])
        steps.create_side_database(target, database.alias, work[database.alias], like, config.extensions, run, log, found)


def _exists(target: Target, alias: str) -> bool:
    params = target.params(alias)
    with postgres.connect(params.with_dbname("postgres")) as conn:
        return postgres.database_exists(conn, params.dbname)


def _foundation(target: Target, database: Database) -> foundation.Foundation:
    """The live database's foundation (an empty one the first time), with every schema its aliases create tables in,
    without the extension rows the migrations write themselves (``_missing_config_rows`` adds the others after)."""
    params = target.params(database.alias)
    found = foundation.Foundation()
    if _exists(target, database.alias):
        with postgres.connect(params) as conn:
            found = foundation.read(conn)
        found = found.without_rows_of(foundation.tables_written_by([app.migrations_folder for app in target.project.apps], found))
    needed = schema_swap.project_schemas(target.project, database)
    extensions = list(found.extensions)
    # GeoDjango's backend creates PostGIS at the first migrate, which only a superuser may: the admin does it first.
    if "postgis" not in found.extension_schemas() and any(
            "postgis" in target.project.databases[alias].get("ENGINE", "") for alias in database.aliases):
        extensions.append(foundation.Extension(name="postgis", schema="public", version=""))
    return found.model_copy(update={"schemas": list(dict.fromkeys([*found.schemas, *needed])), "extensions": extensions})


def _missing_config_rows(target: Target, work: dict[str, str], log: Log) -> None:
    """After migrate: the live databases' extension rows the migrations did not write (a custom SRID
    a DBA added by hand to a table a migration also inserts into), the others left as written."""
    for database in physical(target.project):
        if not _exists(target, database.alias):
            continue
        with postgres.connect(target.params(database.alias)) as conn:
            found = foundation.read(conn)
        tables = {rows.table.split(".", 1)[1] for rows in found.config_rows if not rows.sequence}
        if tables:
            params = target.params(database.alias).with_dbname(work[database.alias])
            foundation.lay_missing_rows(params, target.admin(), found.rows_of(tables))


def _empty(config: Config, target: Target, mode: str, live: dict[str, str], work: dict[str, str],
           schemas: dict[str, list[str]], run: str, log: Log) -> None:
    """What the old migrations built, emptied again before the regenerated ones run."""
    for database in physical(target.project):
        params = target.params(database.alias)
        if mode == "schemas":
            schema_swap.empty(params, schemas[database.alias])
            continue
        with postgres.connect(target.server(database.alias).with_dbname("postgres")) as conn:
            postgres.drop_database(conn, work[database.alias])
    if mode == "database":
        _build(config, target, mode, live, work, schemas, run, log)


def _migrate(manage: ManagePy, target: Target, log: Log) -> None:
    """Steps 3-4's real migrate, in the order the settings' layout needs: recreate builds each alias's
    django_migrations where a database made schemas first has it, even where the live one shares one."""
    order = migrate_order(target.project)
    for alias in order:
        manage.run("migrate", "--database", alias, "--noinput", "-v", "0", what=f"migrate on {alias}")
    log("migrated " + ", ".join(order))


def undo(config: Config, target: Target, mode: str, live: dict[str, str], work: dict[str, str],
         schemas: dict[str, list[str]], run: str, saved: Path | None, log: Log) -> str:
    """Put ``target`` back wherever the run stopped: what it built dropped (a swapped database swapped
    back), the renamed schemas given their names back, the migration files from ``saved``."""
    if mode == "schemas":
        for alias, names in schemas.items():
            back = schema_swap.put_back(target.params(alias), names)
            if back:
                log(f"{target.params(alias).dbname}: schemas {', '.join(back)} are as before")
    else:
        steps.undo_side(config, target, run, live, work, None, log)
    if saved is not None and saved.is_file():
        steps.put_back_saved(target, saved, log)
    return f"Nothing was lost: {target.name}'s databases and migration files are as before."


def resume(config: Config, run: journal.Run, log: Log) -> tuple[journal.Outcome, str]:
    """A killed recreate: finished once its last step (the swap, or dropping the renamed schemas)
    began, since everything was verified; else undone."""
    started = run.phases()[-1]
    target = resolve(config, started.env)
    info = started.changed
    live = {alias: names["live"] for alias, names in info["databases"].items()}
    work = {alias: names["work"] for alias, names in info["databases"].items()}
    schemas = info.get("schemas") or {}
    if info["mode"] == "schemas" and run.started("drop previous schemas"):
        for alias, names in schemas.items():
            schema_swap.drop_previous(target.params(alias), names)
        return "finished", f"the run was finished: {target.name}'s old schemas were dropped (the new ones had been verified)"
    mode = "schemas" if info["mode"] == "schemas" else "database"
    if mode == "database" and any(e.step.startswith("swap ") and e.event == "started" for e in run.since(started)):
        for alias, name in work.items():
            with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                pending = postgres.database_exists(conn, name) and steps.made_by(conn, name, run.header.run)
            if pending:
                steps.swap_in(target, alias, name, run.header.run, log)
        return "finished", f"the run was finished: {target.name}'s swap completed (it had been verified)"
    saved = run.started("save migrations")
    regenerated = run.started("regenerate migrations") is not None
    files = Path(saved.changed["archive"]) if saved and regenerated else None
    return "rolled back", undo(config, target, mode, live, work, schemas, run.header.run, files, log)
