"""Benchmark squashkit's commands against the tools and the shell procedure they replace.

Usage::

    .venv/bin/python benchmarks/run.py [--rows 230 2300 17500] [--repeat 3] [--only backup,pg_dump]

Per scale (``seed_data --rows N``; 230, 2300 and 17500 give about 2k, 20k and 150k rows in
all) and per repeat, each command in a fresh process, side by side in one run:

- ``pg_dump``: ``pg_dump -Fc`` of the database;
- ``pg_restore``: that dump into a fresh database: ``createdb``, ``CREATE EXTENSION``, ``pg_restore``;
- ``shell_procedure``: steps 1-7 of the procedure squashkit replaces, as a literal script
  (``benchmarks/shell_procedure.sh``), on a copy of sample_project and of the database;
- ``backup``, ``promote`` (dev-to-prod), ``promote_squash`` (``--squash --accept-loss``),
  ``rollback_json`` (``rollback BUNDLE/db.json``), ``rollback_dump`` (``rollback BUNDLE``) and
  ``rollback_kept`` (``rollback --kept``): squashkit's command line with ``--yes``, on copies of
  sample_project configured by a squashkit.toml, with dev and prod databases of their own.

Every command's wall time is measured around its process, and the peak RSS of the largest
process of its tree by GNU time (``/usr/bin/time -f %M``; see ``measure``). squashkit runs
through ``benchmarks/process_log.py``, and the ``python`` of its squashkit.toml is a generated
interpreter that runs every ``manage.py`` through it too: each run logs how many Django
processes it started, how long each took, its own peak RSS and its SQL statements. A command
that exits non-zero is a failed sample, shown as failed in the table.

Medians go to a markdown table on stdout, everything to ``benchmarks/results/latest.json``
(``--output``). See benchmarks/README.md for what the numbers mean.

The benchmark runs its own throwaway cluster (``--cluster-dir``) and stops it at the end if it
started it. Seeded databases are kept as templates (``bench_template_N``) so that a rerun skips
the seeding; ``--drop-templates`` removes them too.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import django
import psycopg
from psycopg import sql

import squashkit
from squashkit import cluster as cluster_module

from report import LABELS, markdown  # benchmarks/report.py, beside this file

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SAMPLE = REPO / "sample_project"
PYTHON = sys.executable
PROCESS_LOG = "SQUASHKIT_BENCH_PROCESS_LOG"

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- measuring one process ----------------------------------------------------------------


@dataclass
class Measured:
    wall_s: float
    max_rss_kb: int
    returncode: int
    stdout: str
    stderr: str


# GNU time reports the peak RSS of the process it starts. Reading ru_maxrss from our own
# os.wait4 would be wrong: Linux counts the RSS of the process that forks and execs the
# child (this ~55 MiB benchmark) into the child's peak, so every small command would show
# at least that. GNU time is a ~2 MiB C program; without it the numbers carry that floor.
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")
RSS_METHOD = (
    "GNU time (/usr/bin/time -f %M): ru_maxrss of the process and its waited-for descendants"
    if GNU_TIME
    else "os.wait4 ru_maxrss (no /usr/bin/time): floored at the benchmark process's own RSS"
)


def measure(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run ``argv`` to its end; its wall time and the peak RSS of it and its descendants.

    The rusage covers every descendant the process waited for (squashkit waits for its
    manage.py, pg_dump and pg_restore). ``ru_maxrss`` is then the peak of the largest single
    process, not a sum of processes alive at the same time, and never includes the PostgreSQL
    server backends, which are not our descendants.
    """
    with tempfile.TemporaryDirectory(prefix="squashkit-measure-") as private:
        rusage_file = Path(private) / "rusage"
        full = [GNU_TIME, "-f", "%M", "-o", str(rusage_file), *argv] if GNU_TIME else argv
        with (Path(private) / "out").open("w+b") as out, (Path(private) / "err").open("w+b") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(full, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        # GNU time writes "Command exited with non-zero status N" before the number on failure.
        max_rss_kb = int(rusage_file.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return Measured(wall, max_rss_kb, proc.returncode, stdout, stderr)


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a setup command (not measured); raise with its stderr when it fails."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} ... failed: {result.stderr[-2000:]}")
    return result.stdout


def sample_of(measured: Measured) -> dict:
    """One measurement as it is stored: ok or failed, with the error line when it failed."""
    sample = {"ok": measured.returncode == 0, "wall_s": measured.wall_s, "max_rss_kb": measured.max_rss_kb}
    if measured.returncode != 0:
        lines = [line for line in measured.stderr.splitlines() if line.strip()]
        sample.update(returncode=measured.returncode, error=(lines[-1] if lines else "(no stderr)")[:500])
    return sample


def failed(reason: str) -> dict:
    """A measurement that could not run, because what it starts from could not be made."""
    return {"ok": False, "wall_s": None, "max_rss_kb": None, "error": reason}


# --- databases and project copies ---------------------------------------------------------


class Databases:
    """Admin operations on the benchmark cluster, as its superuser."""

    def __init__(self, pg: cluster_module.Cluster):
        self.pg = pg

    def execute(self, query, params=None, *, dbname: str = "postgres"):
        with psycopg.connect(**self.pg.conninfo(dbname), autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    def drop(self, name: str) -> None:
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_prefixed(self, prefix: str) -> None:
        """Every database named ``prefix...``: ours and what squashkit made beside them (``__squashkit_*``)."""
        rows = self.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix])
        for (name,) in rows:
            self.drop(name)

    def create(self, name: str, template: str | None = None) -> None:
        self.drop(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(query)

    def comment(self, name: str) -> str | None:
        rows = self.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name])
        return rows[0][0] if rows else None

    def extensions(self, name: str) -> list[str]:
        rows = self.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", dbname=name)
        return [row[0] for row in rows]

    def table_rows(self, name: str) -> dict[str, int]:
        """Exact row count of every table (a copied database has no statistics to estimate from)."""
        tables = self.execute("SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2", dbname=name)
        counts = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            counts[f"{schema}.{table}"] = self.execute(query, dbname=name)[0][0]
        return counts


def seed_fingerprint() -> str:
    """Hash of what decides a seeded database's content: migrations and seed_data itself."""
    files = sorted(SAMPLE.glob("*/migrations/*.py")) + [SAMPLE / "catalog/management/commands/seed_data.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(SAMPLE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_template(dbs: Databases, rows: int) -> tuple[str, float | None]:
    """A migrated, seeded database for ``rows``; reused when an identical one exists.

    Returns its name and the seconds seeding took (None when reused). The database comment
    marks a finished template, so one left half-seeded by an interrupted run is rebuilt.
    """
    name = f"bench_template_{rows}"
    marker = f"squashkit-bench seed={seed_fingerprint()} rows={rows}"
    if dbs.comment(name) == marker:
        log(f"reusing template {name}")
        return name, None
    log(f"creating template {name}: migrate + seed_data --rows {rows}")
    dbs.create(name)
    env = {**os.environ, "DATABASE_URL": f"postgres:///{name}"}
    run([PYTHON, str(SAMPLE / "manage.py"), "migrate", "-v", "0"], cwd=SAMPLE, env=env)
    clock = time.perf_counter()
    run([PYTHON, str(SAMPLE / "manage.py"), "seed_data", "--rows", str(rows)], cwd=SAMPLE, env=env)
    seed_s = time.perf_counter() - clock
    # Hint bits and statistics now, once, rather than during the first timed run of every copy.
    dbs.execute("VACUUM (ANALYZE)", dbname=name)
    dbs.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker)))
    log(f"seeded {name} in {seed_s:.1f}s")
    return name, seed_s


def copy_project(destination: Path) -> Path:
    """A copy of sample_project to run on: squash and the shell procedure delete its migration files."""
    shutil.rmtree(destination, ignore_errors=True)
    # symlinks=True keeps community/migrations a symlink, as the project has it.
    shutil.copytree(SAMPLE, destination, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "backups", ".squashkit.lock"))
    # Its [tool.squashkit] table names the repository's databases; the copy gets a squashkit.toml.
    (destination / "pyproject.toml").unlink()
    return destination


def quoted(identifier: str) -> str:
    """An SQL identifier in double quotes, for the one statement psql is given on its command line."""
    return '"' + identifier.replace('"', '""') + '"'


@functools.cache
def own_apps() -> list[str]:
    """The project's own installed apps (what makemigrations is given), asked of Django as squashkit
    asks it: an app folder that is not installed (fieldtypes, behind SAMPLE_FIELDTYPES) is left out."""
    code = (
        "from pathlib import Path; from django.apps import apps; root = Path.cwd().resolve(); "
        "print(' '.join(a.label for a in apps.get_app_configs() if Path(a.path).resolve().is_relative_to(root)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "SAMPLE_FIELDTYPES"}
    result = subprocess.run([PYTHON, str(SAMPLE / "manage.py"), "shell", "-v", "0", "-c", code], cwd=SAMPLE, env=env, capture_output=True, text=True, check=True)
    return sorted(result.stdout.strip().splitlines()[-1].split())


def write_config(project: Path, *, dev: str, prod: str, backups: Path, python: Path) -> Path:
    """squashkit.toml next to the copy's manage.py: dev and prod, reached through libpq's PG*
    variables (no password in the file), and the logging interpreter as the project's python."""
    toml = json.dumps  # a JSON string is a valid TOML basic string
    text = (
        f"python = {toml(str(python))}\nbackup_dir = {toml(str(backups))}\ndefault_env = \"dev\"\n"
        f"\n[environments.dev]\nsettings = \"sample_project.settings\"\nenv = {{ DATABASE_URL = {toml('postgres:///' + dev)} }}\n"
        f"\n[environments.prod]\nsettings = \"sample_project.settings\"\nenv = {{ DATABASE_URL = {toml('postgres:///' + prod)} }}\n"
    )
    path = project / "squashkit.toml"
    path.write_text(text)
    return path


def write_logging_python(directory: Path) -> Path:
    """An interpreter for squashkit.toml's ``python``: squashkit runs ``python manage.py ARGS``,
    and this runs the same through process_log.py, which logs the process and changes nothing else."""
    if any(c.isspace() for c in PYTHON):
        raise SystemExit(f"the interpreter path {PYTHON!r} holds whitespace and cannot be a #! line")
    path = directory / "python"
    path.write_text(
        f"#!{PYTHON}\n"
        "# Written by benchmarks/run.py: runs `manage.py ARGS` through process_log.py.\n"
        "import runpy, sys\n"
        "del sys.path[0]  # this file's directory holds the benchmark's work files, not modules\n"
        f"sys.argv[0] = {str(BENCH / 'process_log.py')!r}\n"
        f"runpy.run_path({str(BENCH / 'process_log.py')!r}, run_name='__main__')\n"
    )
    path.chmod(0o755)
    return path


# --- one scale, one repeat ----------------------------------------------------------------


@dataclass
class Repeat:
    """Where one repeat of one scale runs, and what its earlier steps left for the later ones."""

    dbs: Databases
    rows: int
    template: str
    work: Path
    python: Path
    extensions: list[str]
    dump: Path | None = None
    bundle: Path | None = None
    kept: bool = False
    ready: set[str] = field(default_factory=set)

    def db(self, role: str) -> str:
        return f"bench_{self.rows}_{role}"

    def fresh(self, role: str) -> str:
        """A new copy of the seeded template; a checkpoint after it, so that writing the copy
        out does not land in the next measurement."""
        name = self.db(role)
        self.dbs.create(name, template=self.template)
        self.dbs.execute("CHECKPOINT")
        return name


def squashkit_run(config: Path, *args: str, logfile: Path) -> tuple[Measured, list[dict]]:
    """``squashkit ARGS`` through its command line, with every process it starts logged."""
    logfile.unlink(missing_ok=True)
    env = {**os.environ, PROCESS_LOG: str(logfile), "COLUMNS": "200"}
    argv = [PYTHON, str(BENCH / "process_log.py"), "-m", "squashkit.cli", "--config", str(config), *args]
    measured = measure(argv, cwd=config.parent, env=env)
    processes = [json.loads(line) for line in logfile.read_text().splitlines()] if logfile.exists() else []
    return measured, processes


def squashkit_sample(measured: Measured, processes: list[dict]) -> dict:
    """The measurement plus what the process log says: squashkit's own peak and its Django children."""
    sample = sample_of(measured)
    own = [p for p in processes if p["role"] == "squashkit.cli"]
    children = sorted((p for p in processes if p["role"] == "manage.py"), key=lambda p: p["start"])
    sample.update(
        squashkit_rss_kb=own[0]["max_rss_kb"] if own else None,
        django_processes=len(children),
        django_wall_s=sum(p["end"] - p["start"] for p in children),
        django_startup_s=sum(p["django_ready"] - p["start"] for p in children if p["django_ready"]),
        django_max_rss_kb=max((p["max_rss_kb"] for p in children), default=None),
        django_queries=sum(p["queries"] for p in children),
        processes=[
            {"label": p["label"], "wall_s": round(p["end"] - p["start"], 3), "exit": p["exit"],
             "max_rss_kb": p["max_rss_kb"], "queries": p["queries"]}
            for p in children
        ],
    )
    return sample


def main_project(rep: Repeat) -> Path:
    """The project copy backup, promote and the rollbacks share, with a fresh dev database
    (prod is made by the promote that needs it)."""
    config = rep.work / "project" / "squashkit.toml"
    if "project" not in rep.ready:
        project = copy_project(rep.work / "project")
        write_config(project, dev=rep.fresh("dev"), prod=rep.db("prod"), backups=rep.work / "backups", python=rep.python)
        rep.ready.add("project")
    return config


def bundle_for(rep: Repeat) -> Path | None:
    """The bundle the rollbacks use: the one backup made, else one made here, unmeasured."""
    if rep.bundle is None:
        measured, _ = squashkit_run(main_project(rep), "backup", "--env", "dev", logfile=rep.work / "setup.log")
        if measured.returncode == 0:
            rep.bundle = Path(measured.stdout.strip().splitlines()[-1])
    return rep.bundle


def target_pg_dump(rep: Repeat) -> dict:
    source = rep.db("src") if "src" in rep.ready else rep.fresh("src")
    rep.ready.add("src")
    dump = rep.work / "pg.dump"
    sample = sample_of(measure(["pg_dump", "-w", "-Fc", "-f", str(dump), source]))
    if sample["ok"]:
        rep.dump = dump
        sample["dump_bytes"] = dump.stat().st_size
    return sample


def target_pg_restore(rep: Repeat) -> dict:
    if rep.dump is None:
        target_pg_dump(rep)
        if rep.dump is None:
            return failed("pg_dump -Fc failed, so there was no dump to restore")
    target = rep.db("restored")
    rep.dbs.drop(target)
    steps = [["createdb", "-w", target]]
    steps += [["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", f"CREATE EXTENSION {quoted(ext)}"]
              for ext in rep.extensions]
    steps += [["pg_restore", "-w", "-d", target, str(rep.dump)]]
    # Three programs, one measurement: their times add up, the peak is the largest.
    parts = []
    for argv in steps:
        parts.append(measure(argv))
        if parts[-1].returncode != 0:
            break
    combined = Measured(sum(p.wall_s for p in parts), max(p.max_rss_kb for p in parts), parts[-1].returncode, "", parts[-1].stderr)
    rep.dbs.drop(target)
    return sample_of(combined)


def target_shell_procedure(rep: Repeat) -> dict:
    project = copy_project(rep.work / "shell-project")
    database = rep.fresh("shell")
    steps = rep.work / "shell-steps.log"
    steps.unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": f"postgres:///{database}", "PYTHON": PYTHON,
           "EXTENSIONS": " ".join(rep.extensions), "STEP_LOG": str(steps)}
    argv = ["bash", str(BENCH / "shell_procedure.sh"), str(project), database, str(rep.work / "shell-backup"), *own_apps()]
    sample = sample_of(measure(argv, env=env))
    marks = [line.split(" ", 1) for line in steps.read_text().splitlines()] if steps.exists() else []
    sample["steps"] = {name: float(marks[i + 1][0]) - float(at) for i, (at, name) in enumerate(marks[:-1])}
    shutil.rmtree(project)
    shutil.rmtree(rep.work / "shell-backup", ignore_errors=True)
    rep.dbs.drop_prefixed(database)
    return sample


def target_backup(rep: Repeat) -> dict:
    measured, processes = squashkit_run(main_project(rep), "backup", "--env", "dev", logfile=rep.work / "backup.log")
    sample = squashkit_sample(measured, processes)
    if sample["ok"]:
        rep.bundle = bundle = Path(measured.stdout.strip().splitlines()[-1])  # backup prints it last
        sample["db_json_bytes"] = _json_file(bundle).stat().st_size
        sample["db_dump_bytes"] = (bundle / "db.dump").stat().st_size
    return sample


def _json_file(bundle: Path) -> Path:
    """default's json as the manifest names it (db.json.gz since compression became the default)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return bundle / next(d["json_file"] for d in manifest["databases"] if d["alias"] == "default")


def target_promote(rep: Repeat) -> dict:
    # prod holds the same data as dev, as in the procedure's story (dev is a copy of prod, plus
    # changes): its safety backup costs what a real one would.
    config = main_project(rep)
    rep.fresh("prod")
    return squashkit_sample(*squashkit_run(config, "promote", "dev-to-prod", "--yes", logfile=rep.work / "promote.log"))


def target_promote_squash(rep: Repeat) -> dict:
    # Its own project copy and databases: the squash rewrites the migration files, and the
    # rollbacks that follow run on the original ones.
    project = copy_project(rep.work / "squash-project")
    config = write_config(project, dev=rep.fresh("sqdev"), prod=rep.fresh("sqprod"), backups=rep.work / "squash-backups", python=rep.python)
    sample = squashkit_sample(*squashkit_run(config, "promote", "dev-to-prod", "--squash", "--accept-loss", "--yes",
                                             logfile=rep.work / "promote-squash.log"))
    shutil.rmtree(project)
    shutil.rmtree(rep.work / "squash-backups", ignore_errors=True)
    rep.dbs.drop_prefixed(rep.db("sqdev"))
    rep.dbs.drop_prefixed(rep.db("sqprod"))
    return sample


def _rollback(rep: Repeat, what: str) -> dict:
    bundle = bundle_for(rep)
    if bundle is None:
        return failed("squashkit backup failed, so there was no bundle to roll back to")
    path = _json_file(bundle) if what == "json" else bundle
    sample = squashkit_sample(*squashkit_run(main_project(rep), "rollback", str(path), "--env", "dev", "--yes",
                                             logfile=rep.work / f"rollback-{what}.log"))
    rep.kept = rep.kept or sample["ok"]  # side mode keeps the replaced database: what --kept swaps back
    return sample


def target_rollback_json(rep: Repeat) -> dict:
    return _rollback(rep, "json")


def target_rollback_dump(rep: Repeat) -> dict:
    return _rollback(rep, "dump")


def target_rollback_kept(rep: Repeat) -> dict:
    if not rep.kept:
        made = _rollback(rep, "dump")  # unmeasured: only so that there is a kept database
        if not made["ok"]:
            return failed(f"no kept database: the rollback that would have made one failed ({made['error']})")
    return squashkit_sample(*squashkit_run(main_project(rep), "rollback", "--kept", "--env", "dev", "--yes",
                                           logfile=rep.work / "rollback-kept.log"))


# The order they run in, within one repeat: the later rollbacks start from what the earlier
# ones leave (the bundle, a kept database), as a user's would.
MEASUREMENTS = {
    "pg_dump": target_pg_dump,
    "pg_restore": target_pg_restore,
    "shell_procedure": target_shell_procedure,
    "backup": target_backup,
    "promote": target_promote,
    "promote_squash": target_promote_squash,
    "rollback_json": target_rollback_json,
    "rollback_dump": target_rollback_dump,
    "rollback_kept": target_rollback_kept,
}
assert list(MEASUREMENTS) == list(LABELS), "every measurement has its label in report.py, in this order"


def one_repeat(dbs: Databases, rows: int, template: str, work: Path, python: Path, selected: list[str]) -> dict:
    """Every selected measurement once, on fresh copies; everything made is dropped after."""
    rep = Repeat(dbs, rows, template, work, python, dbs.extensions(template))
    work.mkdir(parents=True)
    samples = {}
    try:
        for name in selected:
            log(f"[{rows}] {name}")
            dbs.execute("CHECKPOINT")  # what earlier steps wrote is flushed before, not during, this one
            samples[name] = MEASUREMENTS[name](rep)
            state = "ok" if samples[name]["ok"] else f"FAILED: {samples[name]['error']}"
            log(f"[{rows}] {name}: {samples[name]['wall_s'] or 0:.2f} s, {state}")
    finally:
        dbs.drop_prefixed(f"bench_{rows}_")
        shutil.rmtree(work, ignore_errors=True)
    return samples


def bench_scale(dbs: Databases, rows: int, repeat: int, work_root: Path, python: Path, selected: list[str]) -> dict:
    template, seed_s = ensure_template(dbs, rows)
    dbs.drop_prefixed(f"bench_{rows}_")  # left by an interrupted run
    counts = dbs.table_rows(template)
    result: dict = {"rows": rows, "total_rows": sum(counts.values()), "table_rows": counts, "seed_s": seed_s,
                    "load_before": os.getloadavg()}
    log(f"[{rows}] {result['total_rows']:,} rows in all")
    samples = []
    for index in range(repeat):
        log(f"[{rows}] repeat {index + 1}/{repeat}")
        samples.append(one_repeat(dbs, rows, template, work_root / f"{rows}-{index}", python, selected))
    result["samples"] = samples
    result["median"] = medians(samples)
    result["load_after"] = os.getloadavg()
    return result


def medians(samples: list[dict]) -> dict:
    """Per measurement, the median of every number over the repeats that succeeded, and how
    many failed (with the first error): one failed repeat makes the cell 'failed'."""
    result = {}
    for name in samples[0]:
        runs = [s[name] for s in samples]
        ok = [r for r in runs if r["ok"]]
        summary: dict = {"failed": len(runs) - len(ok), "error": next((r["error"] for r in runs if not r["ok"]), None)}
        if ok:
            numbers = [k for k, v in ok[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            summary.update({k: statistics.median(r[k] for r in ok if r.get(k) is not None) for k in numbers if ok[0][k] is not None})
            if "steps" in ok[0]:
                summary["steps"] = {step: statistics.median(r["steps"][step] for r in ok) for step in ok[0]["steps"]}
        result[name] = summary
    return result


# --- reporting ----------------------------------------------------------------------------


def machine_info(dbs: Databases) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # Results written by earlier runs do not make the measured code dirty.
    status = ["git", "-C", str(REPO), "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"]
    dirty = bool(subprocess.run(status, capture_output=True, text=True).stdout.strip())
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql_server": dbs.execute("SHOW server_version")[0][0],
        "pg_dump": run([shutil.which("pg_dump"), "--version"]).strip(),
        "squashkit": squashkit.__version__,
        "squashkit_path": str(Path(squashkit.__file__).parent),
        "git_commit": git + ("+dirty" if dirty else ""),
    }


# --- main ---------------------------------------------------------------------------------


def parse_only(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measurement(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}")
    return [name for name in MEASUREMENTS if name in names]  # always in the order they run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark squashkit's commands beside pg_dump, pg_restore and the shell procedure.")
    parser.add_argument("--rows", type=int, nargs="+", default=[230, 2300, 17500],
                        help="seed_data --rows scales (default: 230 2300 17500, about 2k, 20k and 150k rows in all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported (default: 3)")
    parser.add_argument("--only", type=parse_only, default=list(MEASUREMENTS), metavar="NAME,...",
                        help=f"measure only these (default: all): {', '.join(MEASUREMENTS)}")
    parser.add_argument("--cluster-dir", type=Path, default=Path("/tmp/squashkit-bench-cluster"))
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--drop-templates", action="store_true", help="also drop the seeded template databases")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    was_running = cluster_module.running(args.cluster_dir) is not None
    pg = cluster_module.start(args.cluster_dir)
    # Every child (manage.py, squashkit, pg_dump, the shell procedure) reaches the cluster
    # through libpq's PG* variables, the password through the cluster's passfile.
    for key in [k for k in os.environ if k.startswith("PG") or k in ("DATABASE_URL", "ANALYTICS_DATABASE_URL", "SQUASHKIT_ENV")]:
        del os.environ[key]
    os.environ.update(pg.environ())
    os.environ["DJANGO_SETTINGS_MODULE"] = "sample_project.settings"
    dbs = Databases(pg)
    try:
        results = {
            "command": "benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(dbs),
            "rss_method": RSS_METHOD,
            "measurements": args.only,
            "scales": [],
        }
        with tempfile.TemporaryDirectory(prefix="squashkit-bench-") as work_root:
            python = write_logging_python(Path(work_root))
            for rows in args.rows:
                results["scales"].append(bench_scale(dbs, rows, args.repeat, Path(work_root), python, args.only))
        if args.drop_templates:
            for rows in args.rows:
                dbs.drop(f"bench_template_{rows}")
    finally:
        if not was_running:
            cluster_module.stop(args.cluster_dir)
    results["total_s"] = round(time.perf_counter() - started, 1)
    table = markdown(results["scales"], args.only)
    results["table_markdown"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nmachine: {json.dumps(results['machine'])}\ntotal {results['total_s']} s; results in {args.output}")
    failures = sum(m["failed"] for s in results["scales"] for m in s["median"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
