"""``squashkit backup``: a verified bundle of every PostgreSQL database of the project.
``sealing`` compresses db.json (db.json.gz) and encrypts every file with age on its way to the
disk (``squashkit.bundlefiles``); the read-back of step 6 then decrypts with a key that lives
only in this process.


The algorithm, in order (each step names the failure it guards against):

1. Ask the project what it is (one ``manage.py`` run, unless the calling command already did).
2. Check the client tools against each server before writing anything
   (pg_dump refuses a newer server; better to say so than to leave a half bundle).
3. Open a private ``.partial`` bundle directory; any failure deletes it.
4. Per database (once however many aliases reach it, ``squashkit.databases``), its foundation
   (settings, schemas, extensions in their schemas, extension rows), then one exported
   repeatable-read snapshot and read from it the facts (row counts, extensions, schemas, every
   sequence) and, per alias through its own search_path, its django_migrations, its models'
   tables and its content types and permissions (written with their ids to contenttypes.json,
   so a reload can put them back).
5. Per database, side by side and all in that snapshot, so that the whole bundle is one moment
   even on a database that is being written:
   - ``pg_dump --snapshot``, in the background, every alias's django_migrations without its rows;
   - each alias's json (db.json for default), rendered by PostgreSQL (``squashkit.jsonfixture``:
     one ``COPY (SELECT json_build_object(...))`` per model, streamed to the file) on a
     connection of that alias that imports the snapshot; a model only Django can write (a field with its own
     ``value_to_string``) goes through Django's serializer, in the project, in the same snapshot;
     unmanaged models are left out (migrate does not create them; a view cannot be loaded);
   - each table's content hashes (``squashkit.content``), which every restore and load of the
     bundle is checked against.
6. Verify: pg_restore lists every table's data, db.json reads back to its last line, and its
   objects per model equal the snapshot's row counts.
7. Archive every migration file of the project's own apps, symlinked folders followed.
8. Write the manifest with the sha256 of every file, lock permissions down, rename the
   bundle into place. Only now does it exist.

Nothing here changes the database: there is nothing to undo but the partial directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from squashkit import __version__, bundle, bundlefiles, clients, content, foundation, history, jsonfixture, postgres, progress
from squashkit.bundlefiles import Sealing
from squashkit.config import Config
from squashkit.databases import Database, physical
from squashkit.errors import BadInput, OperationFailed, first_line
from squashkit.fixture import NaturalKeys, read_counts, read_ids
from squashkit.history import Row as MigrationRow
from squashkit.project import AppInfo, ModelInfo, ProjectInfo, archive_migrations, migration_files
from squashkit.runs import stderr_log
from squashkit.target import Target, resolve

DUMP_FORMATS = ("custom", "directory")


def backup(
    config: Config,
    *,
    env: str | None = None,
    output: Path | None = None,
    dump_format: str = "custom",
    jobs: int = 1,
    log: Callable[[str], None] = stderr_log,
    target: Target | None = None,
    skip_missing: bool = False,
    sealing: Sealing = bundlefiles.COMPRESSED,
) -> Path:
    """Write a verified bundle of the environment's databases and return its path.

    ``target``: the environment already resolved by the calling command (saves asking the
    project again); else ``env`` is resolved here. ``skip_missing``: a database other than
    default's that does not exist yet is left out (a safety bundle before a promote brings it).
    ``sealing``: compression and encryption."""
    if sealing.encrypted and dump_format == "directory":
        raise BadInput("--encrypt-to needs the custom format: a directory-format dump cannot be encrypted on its way to the disk")
    recipients = bundlefiles.parse_recipients(sealing.recipients)
    if dump_format not in DUMP_FORMATS:
        raise BadInput(f"--format must be one of {', '.join(DUMP_FORMATS)}, not {dump_format!r}")
    if jobs < 1:
        raise BadInput("--jobs must be at least 1")
    if jobs > 1 and dump_format != "directory":
        raise BadInput("--jobs needs --format directory (pg_dump writes a custom-format file alone)")
    started = bundle.utc_now()
    lines: list[str] = []

    def note(message: str) -> None:
        lines.append(f"{bundle.utc_now().isoformat()} {message}")
        log(message)

    # 1. What the project is.
    target = target or resolve(config, env)
    env_name, environment, manage, project = target.name, target.environment, target.manage, target.project
    note(f"backup of environment {env_name!r} ({environment.settings})")
    for app in project.own_apps():
        migration_files(app)  # an unreadable migrations folder is refused before anything runs
    aliases = project.postgres_aliases()
    if "default" not in aliases:
        raise BadInput("DATABASES['default'] is not a PostgreSQL database: squashkit backs up PostgreSQL only")

    # 2. The client tools, before anything is written.
    pg_dump = clients.client_program("pg_dump", config.pg_bin)
    pg_restore = clients.client_program("pg_restore", config.pg_bin)
    present = physical(project)
    if skip_missing:
        present = [database for database in present if database.alias == "default" or _exists(project, database, note)]
    for alias in [database.alias for database in present]:
        params = project.connection(alias)
        with postgres.connect(params) as conn:
            version_num = conn.info.server_version
        clients.require_client_for_server(pg_dump, version_num)
        clients.require_client_for_server(pg_restore, version_num)

    output_dir = bundle.prepare_output_dir(Path(output) if output else config.backup_dir)
    excludes = project.installed_excludes(config.exclude)
    for stale in sorted(output_dir.glob(".*.partial")):
        note(f"note: {stale.name} is left by an interrupted (or still running) backup; it is not a bundle")

    # The read-back key (step 6): encrypted to it as well, held in memory only, gone with the backup.
    own_identity, own_recipient = bundlefiles.ephemeral()
    if recipients:
        recipients.append(own_recipient)

    # 3. A private partial directory that only becomes a bundle at the end.
    for alias, why in project.left_alone().items():
        note(f"[{alias}] left alone: {why}")
    with bundle.writing(output_dir, bundle.bundle_name(env_name, started)) as partial, bundlefiles.unlocking([own_identity]):
        entries = [
            entry
            for database in present
            for entry in _backup_database(
                project, database, partial, dump_format, jobs, excludes, pg_dump, pg_restore, manage, note, sealing, recipients)
        ]

        # 7. The migration files, so a squash can be undone.
        archive = sealing.name("migrations.tar.gz")
        names = archive_migrations(project, manage.cwd, partial / archive, recipients)
        note(f"archived {len(names)} migration files of {len(project.own_apps())} project apps")

        # 8. Manifest last, with the hashes of everything else.
        with bundlefiles.open_write(partial / sealing.name("log.txt"), recipients) as out:
            out.write(("\n".join(lines) + "\n").encode())
        files = bundle.hash_files(partial)
        manifest = bundle.Manifest(
            squashkit_version=__version__,
            django_version=project.django_version,
            environment=env_name,
            created_at=started,
            project_root=str(manage.cwd),
            settings=environment.settings,
            databases=entries,
            own_apps={app.label: _app_migrations(app, manage.cwd) for app in project.own_apps()},
            migrations_archive=archive,
            migration_files=names,
            files=files,
            encrypted=sorted(files) if recipients else [],
            encrypted_to=list(sealing.recipients),
        )
        bundle.write_manifest(partial, manifest)
    return bundle.finished_path(partial)


class _JsonPlan(BaseModel):
    """What one alias's json holds, read in the snapshot through that alias's own search_path."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    alias: str
    json_name: str
    models: list[ModelInfo] = Field(description="The models written, in dumpdata's order.")
    excludes: list[str]
    tables_by_model: dict[str, str]
    json_tables: list[str]
    implicit: set[str] = Field(description="Implicit many-to-many tables whose ids a fixture does not carry.")
    keys: NaturalKeys | None
    contenttypes_name: str | None = None
    saved_ids: int = 0
    slow: dict[str, str] = Field(default_factory=dict)
    history: tuple[str | None, list[MigrationRow]] = Field(description="Its django_migrations and rows.")


def _plan_json(
    project: ProjectInfo, alias: str, conn, excludes: list[str], partial: Path, note, sealing: Sealing, recipients: list,
) -> _JsonPlan:
    """Step 4 for one alias: which models its json holds and the tables they are, as its search_path
    (and a db_table naming its schema) finds them; its content types and permissions, with their ids."""
    json_name, _dump = bundle.file_names(alias, "custom")
    json_name = sealing.name(json_name, compressible=True)
    unmanaged = project.unmanaged_models(alias)
    excludes = [*excludes, *(label for label in unmanaged if label not in excludes)]
    dumped_models = project.dumped_models(alias, excludes)
    contenttypes_here = "contenttypes" in [a.label for a in project.apps if alias in a.aliases]
    keys = NaturalKeys.read(conn) if contenttypes_here else None
    contenttypes_name, saved_ids = None, 0
    if keys is not None and keys.content_type_table:
        contenttypes_name = sealing.name(bundle.contenttypes_file_name(alias))
        saved_ids = keys.write_ids(partial / contenttypes_name, recipients)
    tables_by_model = {m.label: postgres.resolve_table(conn, m.db_table) for m in dumped_models}
    # A model newer than this database (dev's code, prod not migrated yet) has no table
    # and no rows: it is left out of the json, and said.
    missing = [label for label, table in tables_by_model.items() if table is None]
    if missing:
        note(f"[{alias}] no table yet for {', '.join(missing)} (the code is newer than this database): not in the json")
        excludes = [*excludes, *missing]
        dumped_models = [m for m in dumped_models if m.label not in missing]
    implicit = {table for app in project.apps for m in app.models for m2m in m.m2m_tables if (table := postgres.resolve_table(conn, m2m))}
    json_tables = sorted(
        {table for table in tables_by_model.values() if table}
        | {table for m in dumped_models for m2m in m.m2m_tables if (table := postgres.resolve_table(conn, m2m))}
    )
    if unmanaged:
        note(f"[{alias}] leaving the unmanaged models out of {json_name} ({', '.join(unmanaged)}): migrate does not create them")
    slow = jsonfixture.slow_models(dumped_models)
    if slow:
        note(f"[{alias}] {len(slow)} models written by Django's serializer: " + "; ".join(f"{k} ({v})" for k, v in slow.items()))
    return _JsonPlan(
        alias=alias, json_name=json_name, models=dumped_models, excludes=excludes,
        tables_by_model={label: table for label, table in tables_by_model.items() if table}, json_tables=json_tables,
        implicit=implicit, keys=keys, contenttypes_name=contenttypes_name, saved_ids=saved_ids, slow=slow,
        history=history.found(conn),
    )


def _backup_database(
    project: ProjectInfo,
    database: Database,
    partial: Path,
    dump_format: str,
    jobs: int,
    excludes: list[str],
    pg_dump,
    pg_restore,
    manage,
    note: Callable[[str], None],
    sealing: Sealing,
    recipients: list,
) -> list[bundle.AliasBackup]:
    """Steps 4-6 for one database: everything from one snapshot, side by side; then verification.
    One dump however many aliases reach it; a json (and a django_migrations) per alias."""
    primary = database.alias
    params = project.connection(primary)
    _json, dump_name = bundle.file_names(primary, dump_format)
    dump_name = sealing.name(dump_name)
    if len(database.aliases) > 1:
        note(f"[{primary}] {', '.join(database.aliases)} reach one database, {database.name}: it is dumped once")

    # 4. One exported snapshot; what is read from it before the work is shared out, each alias
    # through its own search_path (its django_migrations, its models' tables, its content types).
    with postgres.connect(params) as conn:
        found = foundation.read(conn)
    with postgres.connect(params) as conn, postgres.snapshot(conn) as snapshot_id:
        facts = postgres.read_facts(conn)
        plans = {}
        for alias in database.aliases:
            if alias == primary:
                plans[alias] = _plan_json(project, alias, conn, excludes, partial, note, sealing, recipients)
            else:
                with _reader(project.connection(alias), snapshot_id) as reader:
                    plans[alias] = _plan_json(project, alias, reader, excludes, partial, note, sealing, recipients)
        # Every alias's django_migrations keeps its table but not its rows: migrate --fake writes
        # them again, into the very table each alias's search_path finds.
        histories = sorted({plan.history[0] for plan in plans.values() if plan.history[0]})
        implicit = set().union(*(plan.implicit for plan in plans.values()))

        # 5. Side by side, all in that snapshot: pg_dump in the background, each alias's json on a
        # connection of its own (PostgreSQL renders it; Django only for the slow models), and the
        # content hashes on this one. Without a snapshot to share (a hot standby) one by one.
        args = ["-w", "-v", "-F", "d" if dump_format == "directory" else "c"]
        for qualified in histories:
            schema, table = qualified.split(".", 1)
            args.append(f"--exclude-table-data={_pattern(schema)}.{_pattern(table)}")
        if snapshot_id:
            args.append(f"--snapshot={snapshot_id}")
        if jobs > 1:
            args.append(f"--jobs={jobs}")
        names = ", ".join(plan.json_name for plan in plans.values())
        note(f"[{primary}] pg_dump of {params.describe()} ({dump_format} format), {names} and content hashes from one snapshot")
        rows = {t.qualified: t.rows for t in facts.tables}
        clock = time.monotonic()

        def write_json(plan: _JsonPlan, reader) -> Counter:
            slow_lines = jsonfixture.serialize_slow_models(
                manage, plan.alias, [m for m in plan.models if m.slow_reason], snapshot_id, partial / f".{plan.alias}.slow"
            )
            try:
                written = jsonfixture.write_fixture_sql(
                    reader, plan.models, partial / plan.json_name, keys=plan.keys, slow_lines=slow_lines,
                    naive_time_zone=project.naive_time_zones.get(plan.alias), recipients=recipients, compress=sealing.compress,
                    progress_total=sum(rows.get(table, 0) for table in plan.tables_by_model.values()),
                )
            except psycopg.Error as exc:  # a model the database does not match (a column gone)
                raise OperationFailed(f"{plan.json_name} of {plan.alias!r} failed: {first_line(exc)}") from None
            shutil.rmtree(partial / f".{plan.alias}.slow", ignore_errors=True)
            return written

        def write_all(reader) -> dict[str, Counter]:
            written = {primary: write_json(plans[primary], reader)}
            for alias in database.aliases[1:]:
                with _reader(project.connection(alias), snapshot_id) as other:
                    written[alias] = write_json(plans[alias], other)
            return written

        # Encrypted, pg_dump writes into a pipe (--no-sync: a pipe cannot be fsynced; the file is, in step 8).
        with bundlefiles.program_output(partial / dump_name, recipients) as (dump_to, fds), \
                clients.started(pg_dump, [*args, "-f", dump_to, *(["--no-sync"] if fds else [])], params,
                                what=f"pg_dump of {primary!r}", pass_fds=fds,
                                watch=progress.counting(f"pg_dump of {primary}", "dumping contents of table", len(facts.tables))) as dumped:
            with _alongside(params, snapshot_id, write_all) if snapshot_id else _inline(lambda: write_all(conn)) as json_written:
                contents = content.read(
                    conn, [t.qualified for t in facts.tables if t.qualified not in histories],
                    leave_out={table: ["id"] for table in implicit},  # a fixture does not carry these rows' ids
                )
                written = json_written()
            dumped()
        objects = sum(sum(counts.values()) for counts in written.values())
        note(f"[{primary}] {dump_name}, {names} ({objects} objects) and the hashes of {len(contents)} tables "
             f"in {time.monotonic() - clock:.1f}s")

    # 6. Verify what was written against the snapshot.
    in_dump = clients.dump_table_data(pg_restore, partial / dump_name, [t.qualified for t in facts.tables])
    missing = [t.qualified for t in facts.tables if t.qualified not in histories and t.qualified not in in_dump]
    if missing:
        raise OperationFailed(f"{dump_name} lacks the data of {len(missing)} tables (e.g. {missing[0]})")
    for plan in plans.values():
        _verify_json(partial, plan, written[plan.alias], rows, snapshot_id)
    note(f"[{primary}] verified: {len(in_dump)} tables in {dump_name}, "
         + ", ".join(f"{sum(written[p.alias].values())} objects in {p.json_name}" for p in plans.values()))

    entries = []
    for alias, plan in plans.items():
        alias_params = project.connection(alias)
        table, recorded = plan.history
        entries.append(bundle.AliasBackup(
            alias=alias,
            database=alias_params.dbname,
            host=alias_params.host,
            port=alias_params.port,
            user=alias_params.user,
            dump=dump_name,
            dump_format=dump_format,
            json_file=plan.json_name,
            json_objects=dict(sorted(written[alias].items())),
            excluded_from_json=plan.excludes,
            json_tables=plan.json_tables,
            contenttypes_file=plan.contenttypes_name,
            pg_dump_version=str(pg_dump("--version")).strip(),
            snapshot_consistent=snapshot_id is not None,
            slow_models=plan.slow,
            facts=facts.model_copy(update={"django_migrations_table": table,
                                           "applied_migrations": [(row.app, row.name) for row in recorded]}),
            migration_rows=recorded,
            dump_of=None if alias == primary else primary,
            foundation=found if alias == primary else None,
            # Another alias's entry checks the database; this one what its own json fills.
            contents=contents if alias == primary else {t: contents[t] for t in plan.json_tables if t in contents},
        ))
    return entries


def _verify_json(partial: Path, plan: _JsonPlan, written: Counter, rows: dict[str, int], snapshot_id: str | None) -> None:
    """An alias's json reads back as written, and holds each model's rows as the snapshot counted them."""
    if read_counts(partial / plan.json_name) != written:
        raise OperationFailed(f"{plan.json_name} does not read back as written: the disk may be failing")
    if plan.contenttypes_name:
        ids = read_ids(partial / plan.contenttypes_name)
        if len(ids["content_types"]) + len(ids["permissions"]) != plan.saved_ids:
            raise OperationFailed(f"{plan.contenttypes_name} does not read back as written: the disk may be failing")
    for model in plan.models:
        table = plan.tables_by_model.get(model.label)
        if table not in rows:
            # Not a plain table we counted (a partitioned parent, a name we cannot resolve):
            # pg_dump still has its rows; only this cross-check is skipped.
            continue
        if written.get(model.label, 0) != rows[table]:
            raise OperationFailed(
                f"{plan.json_name} has {written.get(model.label, 0)} {model.label} objects but the table had {rows[table]} rows"
                + ("" if snapshot_id else ": the database changed during the backup (no snapshot could be shared here); retry")
            )


def _exists(project: ProjectInfo, database: Database, note: Callable[[str], None]) -> bool:
    params = project.connection(database.alias)
    with postgres.connect(params.with_dbname("postgres")) as conn:
        if postgres.database_exists(conn, params.dbname):
            return True
    note(f"[{database.alias}] {params.dbname} does not exist yet: nothing to save there")
    return False


@contextlib.contextmanager
def _reader(params: postgres.ConnectionParams, snapshot_id: str | None) -> Iterator[psycopg.Connection]:
    """A connection of another alias (its own search_path) in the snapshot; without one (a hot
    standby) a repeatable-read transaction of its own."""
    if snapshot_id:
        with postgres.in_snapshot(params, snapshot_id) as conn:
            yield conn
        return
    with postgres.connect(params, autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            yield conn


@contextlib.contextmanager
def _alongside(params: postgres.ConnectionParams, snapshot_id: str, write: Callable) -> Iterator[Callable[[], Counter]]:
    """``write`` a second connection standing in the same snapshot, in a thread, for the block;
    yield the function that waits for its result (its error raised here). Leaving the block
    early (an error here, Ctrl-C) cancels its query and waits for it: a backup never leaves a
    writer behind in a directory that is about to be removed."""
    readers: list = []

    def work() -> Counter:
        with postgres.in_snapshot(params, snapshot_id) as reader:
            readers.append(reader)
            return write(reader)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work)
        try:
            yield future.result
        except BaseException:
            for reader in readers:
                reader.cancel()
            raise


@contextlib.contextmanager
def _inline(work: Callable[[], Counter]) -> Iterator[Callable[[], Counter]]:
    yield work


def _app_migrations(app: AppInfo, root: Path) -> bundle.AppMigrations:
    def relative(path: Path | None) -> str | None:
        if path is None:
            return None
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    return bundle.AppMigrations(
        migrations=app.migrations,
        replaces=app.replaces,
        parents=app.parents,
        folder=relative(app.migrations_folder),
        resolved_folder=relative(app.migrations_folder_resolved),
        aliases=app.aliases,
    )


def _pattern(identifier: str) -> str:
    """A pg_dump name pattern matching exactly ``identifier`` (quoted: no wildcards, case kept)."""
    return '"' + identifier.replace('"', '""') + '"'
