"""Benchmark ``squashkit squash`` at two (or more) data sizes: a squash that moves no data must not
take longer on more data.

Usage::

    .venv/bin/python benchmarks/squash.py [--rows 2000 50000] [--repeat 3] [--rebuild [--rebuild-repeat 1]]

Per scale (``seed_data --rows N``, seeded once into a template database and reused) and per
repeat, on a fresh copy of the template and a fresh copy of sample_project (a squash rewrites
its migration files): ``squashkit squash --yes --accept-loss`` through its command line, timed
around the process. Its journal splits the time: the backup (a full bundle, whose time grows
with the data: it is the undo of the files and is not what issue 11 is about), and the rest,
"the squash's own time" (start-up, preflight, loss report, then steps 2-7: delete the files,
makemigrations, the schema proof in a scratch database, the rewrite of django_migrations,
verify). ``--rebuild`` measures ``squash --rebuild`` the same way, for comparison.

Medians go to a table on stdout, everything to ``benchmarks/results/squash-latest.json``; the
exit code is 1 when the squash's own time grows by 1.3x or more from the smallest to the
largest scale. The benchmark runs its own throwaway cluster (``--cluster-dir``) and stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from squashkit import cluster as cluster_module
from squashkit import journal, postgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PYTHON, SAMPLE, Databases, ensure_template, log, machine_info  # noqa: E402 (the backup benchmark's helpers)

LIMIT = 1.3  # issue 11: the squash's own time grows by less than this from 2k to ~50k rows


def start_cluster(cluster_dir: Path, *unset: str) -> Databases:
    """The benchmark's own cluster, and this process's environment pointed at it alone."""
    pg = cluster_module.start(cluster_dir)
    for key in [k for k in os.environ if k.startswith("PG") or k in ("DATABASE_URL", "ANALYTICS_DATABASE_URL", "SQUASHKIT_ENV", *unset)]:
        del os.environ[key]
    os.environ.update(pg.environ())
    os.environ["DJANGO_SETTINGS_MODULE"] = "sample_project.settings"
    return Databases(pg)


def project_copy(work: Path, dbname: str) -> Path:
    """A fresh copy of sample_project (a squash rewrites its files), its one environment ``bench`` on ``dbname``."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(SAMPLE, project, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (project / "pyproject.toml").unlink()
    (project / "squashkit.toml").write_text(
        f'python = "{PYTHON}"\nbackup_dir = "backups"\n[environments.bench]\nsettings = "sample_project.settings"\n'
        f'env = {{ DATABASE_URL = "postgres:///{dbname}" }}\n'
    )
    return project


def journal_split(project: Path) -> tuple[float, float]:
    """(the backup's seconds, the phase's seconds) of the one run journalled in ``project``."""
    (path,) = (project / "backups").glob(f"*{journal.SUFFIX}")
    at = {(e.step, e.event): e.at.timestamp() for e in journal.read(path).entries}
    return at[("backup", "finished")] - at[("backup", "started")], at[("phase", "finished")] - at[("phase", "started")]


def squash_once(dbs: Databases, template: str, work: Path, rebuild: bool) -> dict:
    """One ``squash`` of a fresh copy; the wall time and the journal's split of it."""
    dbname = "bench_squash"
    for suffix in ("", "__squashkit_new", "__squashkit_prev", "__squashkit_scratch", "__squashkit_new__squashkit_scratch"):
        dbs.drop(dbname + suffix)
    dbs.create(dbname, template=template)
    project = project_copy(work, dbname)
    argv = [PYTHON, "-m", "squashkit.cli", "--config", str(project / "squashkit.toml"), "squash", "--yes", "--accept-loss",
            *(["--rebuild"] if rebuild else [])]
    clock = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - clock
    if result.returncode != 0:
        raise RuntimeError(f"squash failed: {result.stderr[-2000:]}")
    backup, phase = journal_split(project)
    with psycopg.connect(**dbs.pg.conninfo(dbname)) as conn:
        rows = (sum(postgres.table_counts(conn).values()),
                conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    dbs.drop(dbname + "__squashkit_prev")
    return {
        "wall_s": round(wall, 2),
        "backup_s": round(backup, 2),
        "own_s": round(wall - backup, 2),
        "phase_s": round(phase, 2),
        "rows": rows[0],
        "database_bytes": rows[1],
    }


def median(samples: list[dict], key: str) -> float:
    return round(statistics.median(sample[key] for sample in samples), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark squashkit squash at two data sizes.")
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 50000], help="seed_data --rows scales (default: 2000 50000)")
    parser.add_argument("--repeat", type=int, default=3, help="squashes per scale; medians are reported (default: 3)")
    parser.add_argument("--rebuild", action="store_true", help="also measure squash --rebuild (dump and restore) for comparison")
    parser.add_argument("--rebuild-repeat", type=int, default=1, help="squash --rebuild runs per scale (default: 1)")
    parser.add_argument("--cluster-dir", type=Path, default=Path("/tmp/squashkit-bench-squash-cluster"))
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "squash-latest.json")
    args = parser.parse_args(argv)
    dbs = start_cluster(args.cluster_dir)
    results = {"command": "benchmarks/squash.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scales": []}
    try:
        results["machine"] = machine_info(dbs)
        with tempfile.TemporaryDirectory(prefix="squashkit-bench-squash-") as work:
            for rows in args.rows:
                template, _seeded = ensure_template(dbs, rows)
                for rebuild in ([False, True] if args.rebuild else [False]):
                    samples = []
                    for index in range(args.rebuild_repeat if rebuild else args.repeat):
                        samples.append(squash_once(dbs, template, Path(work), rebuild))
                        log(f"rows={rows} {'--rebuild ' if rebuild else ''}#{index + 1}: {samples[-1]}")
                    results["scales"].append({"seed_rows": rows, "rebuild": rebuild, "samples": samples,
                                              **{key: median(samples, key) for key in ("wall_s", "backup_s", "own_s", "phase_s")},
                                              "rows": samples[0]["rows"], "database_bytes": samples[0]["database_bytes"]})
    finally:
        cluster_module.stop(args.cluster_dir)
    online = [s for s in results["scales"] if not s["rebuild"]]
    results["own_growth"] = round(online[-1]["own_s"] / online[0]["own_s"], 2)
    print("| squash | seed --rows | table rows | database after | whole run | backup | own time (run - backup) | its phase (steps 2-7; --rebuild: 2-8) |")
    print("|---|---|---|---|---|---|---|---|")
    for s in results["scales"]:
        print(f"| {'--rebuild' if s['rebuild'] else 'default'} | {s['seed_rows']} | {s['rows']} | {s['database_bytes'] / 2**20:.0f} MiB "
              f"| {s['wall_s']:.1f} s | {s['backup_s']:.1f} s | {s['own_s']:.1f} s | {s['phase_s']:.1f} s |")
    print(f"\nthe squash's own time grows {results['own_growth']}x from {online[0]['seed_rows']} to {online[-1]['seed_rows']} rows "
          f"(limit {LIMIT}x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["own_growth"] < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
