"""Benchmark ``squashkit backup`` and the ways of writing db.json, on sample_project.

Usage::

    .venv/bin/python benchmarks/run.py [--rows 2000 8000] [--repeat 3]

Per scale (``seed_data --rows N``) and per repeat, each in a fresh process:

- ``squashkit backup`` (custom format), end to end, through its command line;
- ``pg_dump -Fc`` alone, for reference;
- ``manage.py dumpdata --all`` (json), ``--natural-foreign`` (json), and ``--format jsonl``,
  all with the standard excludes squashkit uses;
- squashkit's rewrite of that jsonl into db.json (``squashkit.fixture.write_fixture``).

Every command's wall time is measured around its process, its peak RSS by GNU time
(``/usr/bin/time -f %M``; see ``measure``), and dumpdata's SQL statements are counted by
``benchmarks/manage_counting.py``. Medians go to a markdown table on stdout and everything
to ``benchmarks/results/latest.json``. See benchmarks/README.md for what the numbers mean.

The benchmark runs its own throwaway cluster (``--cluster-dir``) and stops it at the end.
Seeded databases are kept as templates (``bench_template_N``) so that a rerun skips the
seeding; ``--drop-templates`` removes them too.
"""

from __future__ import annotations

import argparse
import filecmp
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import django
import psycopg
from psycopg import sql

import squashkit
from squashkit import cluster as cluster_module
from squashkit import config as config_module
from squashkit.project import introspect, last_error_line, manage_py

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SAMPLE = REPO / "sample_project"
MANAGE = SAMPLE / "manage.py"
PYTHON = sys.executable
ENV_NAME = "bench"
ALIAS = "default"

# The dangling ids seed_data leaves in ActivityLog.user (a db_constraint=False key, users
# deleted since). `dumpdata --natural-foreign` dereferences every user key and aborts on them,
# so the timed runs use a copy where they are NULL: the same rows, just no dangling reference.
REPAIR_DANGLING_USERS = """
UPDATE community_activitylog SET user_id = NULL
WHERE user_id IS NOT NULL AND user_id NOT IN (SELECT id FROM auth_user)
"""


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


def measure(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> Measured:
    """Run ``argv`` to its end; its wall time and the peak RSS of it and its descendants.

    The rusage covers every descendant the process waited for (squashkit waits for its
    manage.py and pg_dump). ``ru_maxrss`` is then the peak of the largest single process, not
    a sum of processes alive at the same time, and never includes the PostgreSQL server
    backends, which are not our descendants.
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
    result = Measured(wall, max_rss_kb, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def run(argv: list[str], *, cwd: Path | None = None) -> str:
    """Run a setup command (not measured); raise with its stderr when it fails."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed: {result.stderr[-2000:]}")
    return result.stdout


# --- databases ----------------------------------------------------------------------------


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

    def create(self, name: str, template: str | None = None) -> None:
        self.drop(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(query)

    def comment(self, name: str) -> str | None:
        rows = self.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name])
        return rows[0][0] if rows else None


def manage_argv(*args: str) -> list[str]:
    return [PYTHON, str(MANAGE), *args]


def use_database(dbname: str) -> None:
    """Point sample_project (DATABASE_URL) at ``dbname``; host, port, user and password come
    from the cluster's PG* variables, so no password sits in a URL or a config file."""
    os.environ["DATABASE_URL"] = f"postgres:///{dbname}"


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
    use_database(name)
    run(manage_argv("migrate", "-v", "0"), cwd=SAMPLE)
    clock = time.perf_counter()
    run(manage_argv("seed_data", "--rows", str(rows)), cwd=SAMPLE)
    seed_s = time.perf_counter() - clock
    # Hint bits and statistics now, once, rather than during the first timed run.
    dbs.execute("VACUUM (ANALYZE)", dbname=name)
    dbs.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker)))
    log(f"seeded {name} in {seed_s:.1f}s")
    return name, seed_s


# --- the measured steps -------------------------------------------------------------------


@dataclass
class Setup:
    """What every measurement of one scale needs."""

    dbname: str
    work: Path
    config: Path
    excludes: list[str]
    rewrite_map: Path

    @property
    def exclude_args(self) -> list[str]:
        return [arg for label in self.excludes for arg in ("--exclude", label)]


def prepare(dbname: str, work: Path) -> Setup:
    """squashkit.toml for the database, and the excludes and rewrite map backup would use.

    They come from the same calls ``backup._backup_alias`` makes (``introspect``,
    ``installed_excludes``, ``dumped_models``), so the standalone rewrite does what backup does.
    """
    config_path = work / "squashkit.toml"
    config_path.write_text(
        f'manage_py = "{MANAGE}"\npython = "{PYTHON}"\nbackup_dir = "{work / "bundles"}"\n\n'
        f'[environments.{ENV_NAME}]\nsettings = "sample_project.settings"\n'
        f'env = {{ DATABASE_URL = "postgres:///{dbname}" }}\n'
    )
    cfg = config_module.load(config_path)
    env_name, environment = cfg.environment(ENV_NAME)
    project = introspect(manage_py(cfg, env_name, environment))
    excludes = project.installed_excludes(cfg.exclude)
    excludes += [label for label in project.unmanaged_models(ALIAS) if label not in excludes]  # as backup does
    models = project.dumped_models(ALIAS, excludes)
    rewrite = {m.label: m.natural_key_fields for m in models if m.natural_key_fields}
    natural_keys = "contenttypes" in [a.label for a in project.apps if ALIAS in a.aliases]
    rewrite_map = work / "rewrite-map.json"
    rewrite_map.write_text(json.dumps({"natural_keys": natural_keys, "rewrite": rewrite}))
    return Setup(dbname, work, config_path, excludes, rewrite_map)


def squashkit_backup(setup: Setup) -> tuple[Measured, Path]:
    """The whole command, as a user runs it; returns the measurement and the bundle."""
    out = setup.work / "bundles"
    shutil.rmtree(out, ignore_errors=True)
    measured = measure(
        [PYTHON, "-m", "squashkit.cli", "--config", str(setup.config), "backup", "--env", ENV_NAME, "--format", "custom", "--output", str(out)]
    )
    (bundle,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return measured, bundle


def pg_dump(setup: Setup) -> tuple[Measured, int]:
    """Plain ``pg_dump -Fc`` of the whole database (the PATH's pg_dump, as backup uses)."""
    target = setup.work / "alone.dump"
    measured = measure([shutil.which("pg_dump"), "-w", "-Fc", "-f", str(target), setup.dbname])
    size = target.stat().st_size
    target.unlink()
    return measured, size


def dumpdata(setup: Setup, output: Path, *options: str, check: bool = True) -> tuple[Measured, int | None]:
    """``manage.py dumpdata --all OPTIONS --output FILE`` with the excludes; and its SQL count."""
    counter = setup.work / "queries.json"
    counter.unlink(missing_ok=True)
    argv = [PYTHON, str(BENCH / "manage_counting.py"), str(MANAGE), "dumpdata", "--all", *options, "--output", str(output), *setup.exclude_args]
    measured = measure(argv, cwd=SAMPLE, env={**os.environ, "SQUASHKIT_BENCH_QUERY_COUNT": str(counter)}, check=check)
    queries = json.loads(counter.read_text())["queries"] if counter.exists() else None
    return measured, queries


def rewrite(setup: Setup, jsonl: Path, output: Path, *flags: str) -> tuple[Measured, dict]:
    """squashkit's jsonl -> db.json rewrite alone, in a fresh process (see rewrite_step.py)."""
    measured = measure(
        [PYTHON, str(BENCH / "rewrite_step.py"), "--dbname", setup.dbname, "--jsonl", str(jsonl), "--output", str(output), "--map", str(setup.rewrite_map), *flags]
    )
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def natural_foreign_on_dangling_ids(setup: Setup) -> dict:
    """One ``--natural-foreign`` run on the data as seeded, dangling user ids included."""
    output = setup.work / "natural-foreign-dangling.json"
    measured, queries = dumpdata(setup, output, "--natural-foreign", check=False)
    tail = output.read_bytes()[-200:] if output.exists() else b""
    result = {
        "returncode": measured.returncode,
        "wall_s": round(measured.wall_s, 2),
        "queries": queries,
        "error": last_error_line(measured.stderr.encode()) if measured.returncode else None,
        "bytes_written": output.stat().st_size if output.exists() else 0,
        "file_is_complete_json": tail.rstrip().endswith(b"]"),
    }
    output.unlink(missing_ok=True)
    return result


def one_repeat(setup: Setup, index: int) -> dict:
    """Every measurement once; the files of repeat 0 are also compared and sized."""
    files = setup.work / "files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    sample: dict = {}

    backup_run, bundle = squashkit_backup(setup)
    sample["backup"] = {"wall_s": backup_run.wall_s, "max_rss_kb": backup_run.max_rss_kb}
    dump_run, dump_size = pg_dump(setup)
    sample["pg_dump"] = {"wall_s": dump_run.wall_s, "max_rss_kb": dump_run.max_rss_kb}

    variants = {
        "dumpdata_json": ("db-plain.json", ()),
        "dumpdata_natural_foreign": ("db-natural-foreign.json", ("--natural-foreign",)),
        "dumpdata_jsonl": ("db.jsonl", ("--format", "jsonl")),
    }
    for key, (name, options) in variants.items():
        measured, queries = dumpdata(setup, files / name, *options)
        sample[key] = {"wall_s": measured.wall_s, "max_rss_kb": measured.max_rss_kb, "queries": queries}

    jsonl, fixture = files / "db.jsonl", files / "db.json"
    measured, report = rewrite(setup, jsonl, fixture)
    sample["rewrite"] = {"wall_s": measured.wall_s, "inner_s": report["seconds"], "max_rss_kb": measured.max_rss_kb, "objects": report["objects"]}
    sample["squashkit_way"] = {"wall_s": sample["dumpdata_jsonl"]["wall_s"] + sample["rewrite"]["wall_s"]}

    if index == 0:
        # Once per scale: sizes, the check that the standalone rewrite is exactly backup's,
        # and the rewrite's memory measured precisely (tracemalloc) and at rest (baseline).
        sample["sizes"] = {
            "db_json": (bundle / "db.json").stat().st_size,
            "db_dump": (bundle / "db.dump").stat().st_size,
            "pg_dump_alone": dump_size,
            "dumpdata_json": (files / "db-plain.json").stat().st_size,
            "dumpdata_natural_foreign": (files / "db-natural-foreign.json").stat().st_size,
            "dumpdata_jsonl": jsonl.stat().st_size,
        }
        sample["rewrite_matches_backup_db_json"] = filecmp.cmp(fixture, bundle / "db.json", shallow=False)
        _, traced = rewrite(setup, jsonl, files / "traced.json", "--tracemalloc")
        baseline, _ = rewrite(setup, jsonl, files / "unused.json", "--baseline")
        sample["rewrite"]["tracemalloc_peak_bytes"] = traced["tracemalloc_peak_bytes"]
        sample["rewrite"]["baseline_max_rss_kb"] = baseline.max_rss_kb
    shutil.rmtree(files)
    shutil.rmtree(bundle.parent)
    return sample


def bench_scale(dbs: Databases, rows: int, repeat: int, work_root: Path, failure_demo: bool) -> dict:
    template, seed_s = ensure_template(dbs, rows)
    dbname = f"bench_{rows}"
    dbs.create(dbname, template=template)
    try:
        use_database(dbname)
        work = work_root / dbname
        work.mkdir()
        setup = prepare(dbname, work)
        result: dict = {"rows": rows, "seed_s": seed_s, "excludes": setup.excludes, "load_before": os.getloadavg()}
        if failure_demo:
            log(f"[{rows}] dumpdata --natural-foreign on the data as seeded (dangling ids)")
            result["natural_foreign_on_dangling_ids"] = natural_foreign_on_dangling_ids(setup)
        repaired = dbs.execute(REPAIR_DANGLING_USERS + " RETURNING id", dbname=dbname)
        dbs.execute("VACUUM (ANALYZE) community_activitylog", dbname=dbname)
        result["dangling_user_ids_nulled"] = len(repaired or [])
        result["table_rows"] = table_rows(dbs, dbname)
        samples = []
        for index in range(repeat):
            log(f"[{rows}] repeat {index + 1}/{repeat}")
            samples.append(one_repeat(setup, index))
        result["samples"] = samples
        result["median"] = medians(samples)
        result["sizes"] = samples[0]["sizes"]
        result["rewrite_matches_backup_db_json"] = samples[0]["rewrite_matches_backup_db_json"]
        result["load_after"] = os.getloadavg()
        return result
    finally:
        dbs.drop(dbname)
        shutil.rmtree(work_root / dbname, ignore_errors=True)


def table_rows(dbs: Databases, dbname: str) -> dict[str, int]:
    """Exact row count of every table (a copied database has no statistics to estimate from)."""
    tables = dbs.execute(
        "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY schemaname, relname", dbname=dbname
    )
    counts = {}
    for schema, name in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        counts[f"{schema}.{name}"] = dbs.execute(query, dbname=dbname)[0][0]
    return counts


def medians(samples: list[dict]) -> dict:
    """Median of every numeric measurement over the repeats (sizes are the same every time)."""
    keys = [k for k, v in samples[0].items() if isinstance(v, dict) and k != "sizes"]
    result = {}
    for key in keys:
        fields = [f for f, v in samples[0][key].items() if isinstance(v, (int, float))]
        # Fields measured in repeat 0 only (tracemalloc, baseline) keep their single value.
        result[key] = {f: statistics.median(s[key][f] for s in samples if s[key].get(f) is not None) for f in fields}
    return result


# --- reporting ----------------------------------------------------------------------------


def machine_info(dbs: Databases) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
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
        "git_commit": git + ("+dirty" if dirty else ""),
    }


def _s(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def _mb(kb_or_bytes: float, unit: str = "kb") -> str:
    value = kb_or_bytes / 1024 if unit == "kb" else kb_or_bytes / 1024 / 1024
    return f"{value:.0f} MiB" if value >= 10 else f"{value:.1f} MiB"


def markdown_table(scales: list[dict]) -> str:
    """One column per scale, one row per number; medians of the repeats."""
    header = "| | " + " | ".join(f"--rows {s['rows']}" for s in scales) + " |"
    lines = [header, "|---" * (len(scales) + 1) + "|"]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in scales) + " |")

    m = lambda s, key, field="wall_s": s["median"][key][field]  # noqa: E731
    plain = lambda s: m(s, "dumpdata_json")  # noqa: E731
    row("objects in db.json", lambda s: f"{s['median']['rewrite']['objects']:,.0f}")
    row("`seed_data` (setup, once)", lambda s: _s(s["seed_s"]) if s["seed_s"] is not None else "template reused")
    row("load average (1 min), before → after", lambda s: f"{s['load_before'][0]:.1f} → {s['load_after'][0]:.1f}")
    row("**squashkit backup** (custom), wall", lambda s: _s(m(s, "backup")))
    row("squashkit backup, peak RSS (largest process)", lambda s: _mb(m(s, "backup", "max_rss_kb")))
    row("`pg_dump -Fc` alone, wall", lambda s: _s(m(s, "pg_dump")))
    row("`dumpdata --all` (json), wall", lambda s: _s(plain(s)))
    row(
        "`dumpdata --all --natural-foreign` (json), wall",
        lambda s: f"{_s(m(s, 'dumpdata_natural_foreign'))} (×{m(s, 'dumpdata_natural_foreign') / plain(s):.2f})",
    )
    row(
        "squashkit's way: `dumpdata --format jsonl` + rewrite, wall",
        lambda s: f"{_s(m(s, 'dumpdata_jsonl'))} + {_s(m(s, 'rewrite'))} = {_s(m(s, 'squashkit_way'))} (×{m(s, 'squashkit_way') / plain(s):.2f})",
    )
    row(
        "SQL statements: json / natural-foreign / jsonl",
        lambda s: " / ".join(f"{m(s, k, 'queries'):,.0f}" for k in ("dumpdata_json", "dumpdata_natural_foreign", "dumpdata_jsonl")),
    )
    row(
        "peak RSS: dumpdata json / natural-foreign / jsonl",
        lambda s: " / ".join(_mb(m(s, k, "max_rss_kb")) for k in ("dumpdata_json", "dumpdata_natural_foreign", "dumpdata_jsonl")),
    )
    row(
        "rewrite step: peak RSS (at rest before the rewrite)",
        lambda s: f"{_mb(m(s, 'rewrite', 'max_rss_kb'))} ({_mb(s['median']['rewrite']['baseline_max_rss_kb'])})",
    )
    row("rewrite step: tracemalloc peak", lambda s: _mb(s["median"]["rewrite"]["tracemalloc_peak_bytes"], "bytes"))
    row("dumpdata jsonl size (rewrite input)", lambda s: _mb(s["sizes"]["dumpdata_jsonl"], "bytes"))
    row("db.json size", lambda s: _mb(s["sizes"]["db_json"], "bytes"))
    row("db.dump size", lambda s: _mb(s["sizes"]["db_dump"], "bytes"))
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark squashkit backup on sample_project.")
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 8000], help="seed_data --rows scales (default: 2000 8000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported (default: 3)")
    parser.add_argument("--cluster-dir", type=Path, default=Path("/tmp/squashkit-bench-cluster"))
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--drop-templates", action="store_true", help="also drop the seeded template databases")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    pg = cluster_module.start(args.cluster_dir)
    # Every child (manage.py, squashkit, pg_dump) reaches the cluster through libpq's PG*
    # variables, the password through the cluster's passfile.
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
            "scales": [],
        }
        with tempfile.TemporaryDirectory(prefix="squashkit-bench-") as work_root:
            for position, rows in enumerate(args.rows):
                results["scales"].append(bench_scale(dbs, rows, args.repeat, Path(work_root), failure_demo=position == 0))
        if args.drop_templates:
            for rows in args.rows:
                dbs.drop(f"bench_template_{rows}")
    finally:
        cluster_module.stop(args.cluster_dir)
    results["total_s"] = round(time.perf_counter() - started, 1)
    table = markdown_table(results["scales"])
    results["table_markdown"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    for scale in results["scales"]:
        demo = scale.get("natural_foreign_on_dangling_ids")
        if demo:
            print(f"\n--rows {scale['rows']}, data as seeded: dumpdata --natural-foreign exit {demo['returncode']} "
                  f"after {demo['wall_s']} s: {demo['error']} (complete JSON: {demo['file_is_complete_json']})")
    print(f"\nmachine: {json.dumps(results['machine'])}\ntotal {results['total_s']} s; results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
