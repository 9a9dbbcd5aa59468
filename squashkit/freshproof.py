"""A squash loses nothing a fresh database needs: the rows of the old history's fresh build, proved and carried.

    pending = freshproof.start(config, target, report, log)   # beside the backup: the old history built
    ... steps 2, 5: the old files deleted, the new ones written ...
    freshproof.prove(...)   # in 5b, after the schema proof: the rows compared, carried, proved again

1. **The old history's fresh build** (``start``): a real ``migrate`` of the old files into an
   empty scratch database (``<name>__squashkit_oldbuild``), its schema and rows kept under
   ``scratch_cache.key`` (a second squash of the same history, or the drift proof, builds
   nothing). It runs in a thread while the backup runs, and only when the old history has a
   data migration (a RunPython, a RunSQL that writes rows): without one, both builds get their
   rows from the same third-party migrations and ``post_migrate``.
2. **The rows compared** (``prove``): the scratch build of the new files against it
   (``freshdata.compare``). When they differ, the old history is built a second time: cells
   the two builds disagree on (uuid4, the clock) are no difference, and a row that needs one
   carried is refused unless the model's default makes it (``fielddefaults``).
3. **Carried** as ``NNNN_squashkit_data.py`` (``datamigration``), then the new files are built
   again from nothing and compared in schema and rows: the squash goes on only when equal. A row
   that build cannot write is named by the migration (table, key, why): refused with the rows and
   ``--accept-loss``, which leaves them out (and the rows pointing at them) and builds again.
   The loss report's ``data`` operations are settled: carried as data (rows per table), not
   needed (they only rewrote rows existing databases had), or lost (what still differs).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from squashkit import bundle, datamigration, drift, freshcheck, freshdata, inproject, losses, postgres, schema, scratch, scratch_cache, steps
from squashkit.config import Config
from squashkit.databases import Database, physical
from squashkit.errors import BadInput, OperationFailed
from squashkit.losses import LossReport
from squashkit.project import ManagePy
from squashkit.target import Target

Log = Callable[[str], None]
DEFAULTS_RUNNER = inproject.runner("fielddefaults")
TRIES = 3  # builds of the new files with their data migration, each leaving out the rows the last could not write
SWITCH = "SQUASHKIT_DATA_PROOF"  # "off": a squash as before the data proof, to measure what it costs (benchmarks/freshproof.py)


def switched_off() -> bool:
    """$SQUASHKIT_DATA_PROOF=off: no fresh build compared, and what a squash cannot carry as code is lost again."""
    return os.environ.get(SWITCH) == "off"


def defer_to_data(report: LossReport) -> LossReport:
    """Operations that only wrote rows (a RunPython written against older models, a RunSQL that
    changes rows) are no longer lost at step 0b: the comparison of fresh builds settles them."""
    if switched_off():
        return report
    for op in report.operations:
        writes_rows = op.kind == "run_python" or (op.kind == "run_sql" and op.reason.startswith("it changes rows"))
        if op.verdict == "lost" and writes_rows:
            op.verdict = "data"
            op.reason = (f"not as code ({op.reason}); what it leaves in a fresh database is compared row for row once the "
                         "new files are written, and carried as data")
    return report


def needed(report: LossReport) -> bool:
    """Whether the old history may leave rows the new files do not: it has a data migration."""
    return any(op.verdict == "data" or (op.kind == "run_python" and op.verdict == "carried") for op in report.operations)


class Pending:
    """The old history's fresh builds, per database (keyed by its first alias), being made in a thread beside the backup."""

    def __init__(self, keys: dict[str, tuple[str, int]], futures: dict[str, concurrent.futures.Future] | None):
        self.keys = keys
        self.futures = futures or {}

    def wait(self) -> None:
        for future in self.futures.values():
            future.result()

    def old(self, database: Database) -> freshdata.CachedData | None:
        return self.futures[database.alias].result() if database.alias in self.futures else None


def start(config: Config, target: Target, report: LossReport, log: Log) -> Pending:
    """Step 1's companion: key the old files now (they are on disk) and build them in a thread."""
    databases = physical(target.project)
    keys = {database.alias: scratch_cache.key(target.manage, target.project, database, target.params(database.alias),
                                              config.extensions)
            for database in databases}
    if switched_off():
        log(f"{SWITCH}=off: no fresh build of the old history, its rows are not compared")
        return Pending(keys, None)
    if not needed(report):
        log("no data migration in the old history: a fresh build of the new files gets its rows from the same "
            "third-party migrations and post_migrate (nothing to compare)")
        return Pending(keys, None)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="squashkit-oldbuild")
    futures = {database.alias: pool.submit(_old_build, config, target, database, *keys[database.alias], log)
               for database in databases}
    pool.shutdown(wait=False)
    return Pending(keys, futures)


def _old_build(config: Config, target: Target, database: Database, digest: str, files: int, log: Log) -> freshdata.CachedData:
    alias = database.alias
    cached = freshdata.load(config.backup_dir, digest)
    if cached is not None:
        log(f"[{alias}] the old history's rows are {cached.describe()}")
        return cached
    started = time.monotonic()
    built, data = build(target, database, config.extensions, schema.OLD_BUILD_SUFFIX)
    seconds = time.monotonic() - started
    made_by = "squash (the old history)"
    if scratch_cache.load(config.backup_dir, digest) is None:  # check's build of the schema stays the one named
        scratch_cache.save(config.backup_dir, digest, built, alias=alias, made_by=made_by, seconds=seconds, files=files, log=log)
    entry = freshdata.entry(digest, alias, made_by, seconds, files, data)
    freshdata.save(config.backup_dir, entry, log)
    log(f"[{alias}] built the old history fresh beside the backup in {seconds:.1f} s: {data.count()} rows in "
        f"{sum(1 for t in data.tables.values() if t.rows)} tables (kept for the next squash of these files)")
    return entry


def build(target: Target, database: Database, extensions: list[str], suffix: str, manage: ManagePy | None = None
          ) -> tuple[schema.Schema, freshdata.Snapshot]:
    """A real migrate of the files on disk into an empty scratch database (every alias that reaches
    ``database``, in order): its schema and its rows."""
    params = target.params(database.alias)
    with scratch.empty(database, params, admin=target.admin(), extensions=extensions, suffix=suffix) as names:
        scratch.migrate(manage or target.manage, target.project, database, names)
        with postgres.connect(params.with_dbname(names[database.alias])) as conn:
            built = schema.snapshot(conn)
            built.round_trips = schema.round_trips(conn, built)
            return built, freshdata.snapshot(conn)


def prove(
    config: Config, target: Target, manage: ManagePy, database: Database, names: dict[str, str], pending: Pending,
    report: LossReport, *, accept_loss: bool, allow_drift: bool, files_bundle: Path, log: Log,
    restored: dict[str, str] | None = None,
) -> None:
    """Step 5b's second half: the scratch build of the new files (``names``, migrated by the schema
    proof) holds the old history's rows, or is made to. ``restored`` (alias -> name): the databases
    a rebuild restored, which the files rebuilt with their data migration are held to (else the live ones)."""
    old = pending.old(database)
    if old is None:
        return
    started = time.monotonic()
    alias = database.alias
    params = target.params(alias)
    with postgres.connect(params.with_dbname(names[alias])) as conn:
        new = freshdata.snapshot(conn)
    diff = freshdata.compare(old.data, new, old.volatile)
    if not diff.empty() and old.volatile is None:
        log(f"[{alias}] the fresh builds differ ({diff.summary()}): building the old history once more, to tell "
            "what every build makes alike from what the clock or randomness makes")
        started = time.monotonic()
        with _old_files_on_disk(target, files_bundle, log):
            _built, again = build(target, database, config.extensions, schema.OLD_BUILD_SUFFIX)
        old = old.model_copy(update={"volatile": freshdata.volatile(old.data, again),
                                     "seconds": round(old.seconds + time.monotonic() - started, 2)})
        freshdata.save(config.backup_dir, old, log)
        diff = freshdata.compare(old.data, new, old.volatile)
    unstable = _unstable(manage, diff)
    data_apps = [op.app for op in report.with_verdict("data")]
    groups = datamigration.assign(diff, target.project, data_apps)
    settled = settle(report, diff, groups, unstable, datamigration.host(groups, data_apps) if groups else "")
    if settled:
        log(f"[{alias}] what the old history's data migrations leave in a fresh database:\n"
            + losses.render(LossReport(operations=settled)))
    losses.require_nothing_lost(report, accept_loss)
    left_out = _pointing_at(old.data, diff, unstable)
    for table, identities in left_out.items():
        why = ("their values differ on every build" if not identities - unstable.get(table, set())
               else "their values differ on every build, or they point at such a row")
        log(f"--accept-loss: {len(identities)} row(s) of {table} are not carried ({why})")
    _without(diff, left_out)
    _record(files_bundle, alias, old)
    if diff.empty():
        log(f"[{alias}] a fresh build of the new files holds every row a fresh build of the old history holds "
            f"({new.count()} rows; rows compared in {time.monotonic() - started:.1f} s)")
        _keep_new(config, target, database, new, log)
        return
    # Written, then built again from nothing: the new files alone must give the old history's schema and rows.
    # A row the build cannot write is named by the migration itself; --accept-loss leaves it out and tries again.
    unwritable = datamigration.unowned(diff, target.project)
    for _attempt in range(TRIES):
        if unwritable:
            _leave_out_unwritable(old.data, diff, unwritable, left_out, report, accept_loss=accept_loss, log=log)
            if diff.empty():
                log(f"[{alias}] nothing left to carry as data: the rows left out were all there was")
                _keep_new(config, target, database, new, log)
                return
        groups = datamigration.assign(diff, target.project, data_apps)
        written = datamigration.write(diff, old.data, new, target.project, alias, groups, data_apps=data_apps)
        log(f"[{alias}] carried as data ({diff.summary()}) into "
            + ", ".join(str(p.relative_to(target.manage.cwd)) for p in written))
        try:
            rebuilt_schema, rebuilt = build(target, database, config.extensions, schema.FRESH_SUFFIX, manage=manage)
        except OperationFailed as exc:
            unwritable = datamigration.not_written(str(exc), old.data, diff)
            if unwritable is None:
                raise
            for path in written:
                path.unlink(missing_ok=True)
            continue
        break
    else:
        raise OperationFailed(f"a fresh build of the new files still cannot write carried rows after {TRIES} tries "
                              f"({datamigration.describe(old.data, unwritable)}): carry them by hand")
    against = "restored" if restored else "live"
    with postgres.connect(params.with_dbname((restored or {}).get(alias, params.dbname))) as conn:
        scratch.judge(schema.compare(rebuilt_schema, schema.snapshot(conn)), ", ".join(database.aliases), against, allow_drift, log)
    left = _without(freshdata.compare(old.data, rebuilt, old.volatile), left_out)
    if not left.empty():
        raise OperationFailed(f"a fresh build of the new files with their data migration still differs from one of the old "
                              f"history ({left.summary()}): carry those rows by hand, or pass --accept-loss")
    scratch.migrate(manage, target.project, database, names)  # the data migration, into the proof's scratch database
    _keep_new(config, target, database, rebuilt, log)
    log(f"[{alias}] proved: a fresh build of the new files holds the old history's {old.data.count()} rows, row for row "
        f"(content types and permissions by natural key; rows compared, carried and proved in {time.monotonic() - started:.1f} s)")


def _leave_out_unwritable(old: freshdata.Snapshot, diff: freshdata.DataDiff, unwritable: dict[str, dict[str, str]],
                          left_out: dict[str, set[str]], report: LossReport, *, accept_loss: bool,
                          log: Log) -> None:
    """Rows a fresh build of the new files cannot write (a check constraint added ``NOT VALID`` after
    them, a table no model owns): refused, naming them, unless ``accept_loss``; then left out with the
    rows pointing at them, named in the log and in the loss report of the operations that made them."""
    named = datamigration.describe(old, unwritable)
    count = sum(len(identities) for identities in unwritable.values())
    if not accept_loss:
        raise BadInput(f"refusing to squash: a fresh build of the new files cannot write {count} row(s) the old history's "
                       f"data migrations leave: {named}. Pass --accept-loss to leave them out (the loss report names "
                       "them), or carry them by hand")
    out = _pointing_at(old, diff, {table: set(identities) for table, identities in unwritable.items()})
    reasons = {table: {i: unwritable.get(table, {}).get(i, "it points at a row left out") for i in identities}
               for table, identities in out.items()}
    for table, identities in out.items():
        log(f"--accept-loss: {len(identities)} row(s) of {table} are not carried: "
            + datamigration.describe(old, {table: reasons[table]}, limit=5))
        left_out.setdefault(table, set()).update(identities)
    _without(diff, out)
    lost = []
    for table in out:
        # Which operation made the rows is not recorded: a RunPython (one that can write rows) comes first.
        mine = [op for op in report.operations
                if op.verdict == "carried" and op.reason.startswith("carried as data") and f"{table}:" in op.reason]
        for op in [op for op in mine if op.kind == "run_python"] or mine:
            op.verdict, op.reason = "lost", ("rows it leaves cannot be written by a fresh build of the new files, left out "
                                             f"with --accept-loss: {datamigration.describe(old, {table: reasons[table]}, limit=5)}; "
                                             f"the rest {op.reason}")
            lost.append(op)
    if lost:
        log("what --accept-loss leaves out of a fresh database:\n" + losses.render(LossReport(operations=lost)))


def _without(diff: freshdata.DataDiff, rows: dict[str, set[str]]) -> freshdata.DataDiff:
    """``diff`` with ``rows`` (table -> identities) neither inserted, updated nor deleted."""
    for table, identities in rows.items():
        if table in diff.tables:
            changes = diff.tables[table]
            changes.insert = [i for i in changes.insert if i not in identities]
            changes.delete = [i for i in changes.delete if i not in identities]
            changes.update = {i: columns for i, columns in changes.update.items() if i not in identities}
    return diff


def _old_files_on_disk(target: Target, files_bundle: Path, log: Log) -> contextlib.AbstractContextManager:
    manifest = bundle.read_manifest(files_bundle)
    return drift.old_files_on_disk(
        target.project, target.manage.cwd,
        lambda: steps.put_back_migrations(files_bundle, target.manage.cwd, manifest, log, target.project),
        lambda saved: steps.put_back_saved(target, saved, log))


def _unstable(manage: ManagePy, diff: freshdata.DataDiff) -> dict[str, set[str]]:
    """table -> rows to insert whose values differ on every build and no model default makes them."""
    wanted = {table for table, t in diff.tables.items() if any(c != "*" for cols in t.defaulted.values() for c in cols)}
    whole = {table: {i for i, cols in t.defaulted.items() if "*" in cols} for table, t in diff.tables.items()}
    defaults = _field_defaults(manage, sorted(wanted)) if wanted else {}
    found: dict[str, set[str]] = {}
    for table, t in diff.tables.items():
        for identity, columns in t.defaulted.items():
            if identity in whole[table] or [c for c in columns if c not in defaults.get(table, [])]:
                found.setdefault(table, set()).add(identity)
                diff.unstable += [f"{table}.{c}" for c in columns if c not in defaults.get(table, []) and c != "*"]
    diff.unstable = sorted(set(diff.unstable))
    return found


def _pointing_at(old: freshdata.Snapshot, diff: freshdata.DataDiff, left_out: dict[str, set[str]]) -> dict[str, set[str]]:
    """``left_out`` (table -> rows not carried) with every row to insert that points at one of them
    through a foreign key, and so on: inserted, it would break that key (pretix: a notification
    setting of the first admin user, whose password hash differs on every build)."""
    out = {table: set(identities) for table, identities in left_out.items() if identities}
    changed = bool(out)
    while changed:
        changed = False
        for table, wanted in diff.tables.items():
            rows = old.tables.get(table)
            if rows is None:
                continue
            for identity in wanted.insert:
                if identity in out.get(table, ()):
                    continue
                row = rows.rows.get(identity, {})
                if any(_points_at(old, target, row.get(column), out.get(target, set()))
                       for column, target in rows.foreign_keys.items()):
                    out.setdefault(table, set()).add(identity)
                    changed = True
    return out


def _points_at(old: freshdata.Snapshot, target: str, value, identities: set[str]) -> bool:
    """Whether ``value`` is the one-column primary key of one of ``target``'s rows ``identities``."""
    rows = old.tables.get(target)
    if value is None or not identities or rows is None or len(rows.identity) != 1:
        return False
    key = rows.identity[0]
    return any(rows.rows.get(identity, {}).get(key) == value for identity in identities)


def _field_defaults(manage: ManagePy, tables: list[str]) -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="squashkit-defaults-") as private:
        out = Path(private) / "defaults.json"
        arguments = {"tables": tables, "output": str(out)}
        code = (f"import runpy; runpy.run_path({str(DEFAULTS_RUNNER)!r}, "
                f"init_globals={{'SQUASHKIT_DEFAULTS': {arguments!r}}}, run_name='__squashkit_defaults__')")
        manage.model_copy(update={"databases": {}}).run("shell", "-c", code, what="reading the models' field defaults")
        return json.loads(out.read_text()) if out.exists() else {}


def settle(report: LossReport, diff: freshdata.DataDiff, groups: dict[str, list[str]], unstable: dict[str, set[str]],
           host: str = "") -> list[losses.LostOperation]:
    """Each ``data`` operation of the report: carried as data (in ``host``'s migration), not needed, or lost,
    app by app; returns them."""
    settled = report.with_verdict("data")
    blamed: set[int] = set()
    for app in {op.app for op in settled}:
        tables = groups.get(app, [])
        if any(c.rsplit(".", 1)[0] in tables for c in diff.unstable) or any(t in unstable for t in tables):
            # Which operation made the rows is not recorded: code squashkit cannot read comes first.
            mine = [op for op in settled if op.app == app]
            blamed |= {id(op) for op in ([op for op in mine if _unreadable(op)] or mine)}
    for op in settled:
        tables = groups.get(op.app, [])
        shaky = [c for c in diff.unstable if c.rsplit(".", 1)[0] in tables] or [t for t in tables if t in unstable]
        if id(op) in blamed:
            op.verdict, op.reason = "lost", (
                f"what it leaves in a fresh database differs between two builds of the old history ({', '.join(shaky[:3])}: "
                "the clock or randomness, and no model default makes it): not carried with values that differ on every build")
        elif tables:
            rows = "; ".join(f"{t}: {diff.tables[t].describe()}" for t in tables)
            op.verdict, op.reason = "carried", f"carried as data in {host or op.app}'s {datamigration.NAME} migration ({rows})"
        else:
            op.verdict, op.reason = "not_needed", (
                "nothing to carry: a fresh build of the new files holds the same rows in "
                + ("every table" if diff.empty() else f"{op.app}'s tables")
                + " as one of the old history; it only rewrote rows existing databases had")
    return settled


def _unreadable(op: losses.LostOperation) -> bool:
    """A RunPython whose code or models squashkit cannot read (a lambda, get_model with computed names)."""
    return op.kind == "run_python" and ("own functions" in op.reason or "get_model() with names" in op.reason)


def _record(files_bundle: Path, alias: str, old: freshdata.CachedData) -> None:
    """The old history's fresh build in the squash's bundle: ``check`` holds the current files' build to it."""
    path = files_bundle / freshcheck.RECORD
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded[alias] = json.loads(old.model_dump_json())
    path.write_text(json.dumps(recorded))
    path.chmod(0o600)


def _keep_new(config: Config, target: Target, database: Database, data: freshdata.Snapshot, log: Log) -> None:
    digest, files = scratch_cache.key(target.manage, target.project, database, target.params(database.alias), config.extensions)
    freshdata.save(config.backup_dir, freshdata.entry(digest, database.alias, "squash (its new files)", 0.0, files, data), log)
