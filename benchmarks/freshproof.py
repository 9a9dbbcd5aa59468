"""Benchmark what the data proof (issue 14) costs a squash: the same ``squashkit squash`` of
sample_project with SAMPLE_FRESHDATA=1, with the proof and without it, side by side in one run.

Usage::

    .venv/bin/python benchmarks/freshproof.py [--rows 2000 20000] [--repeat 3]

With the proof, a squash builds the old history in an empty database beside the backup, compares
its rows with a scratch build of the new files, writes ``seeds/migrations/NNNN_squashkit_data.py``,
builds the new files again from nothing and compares once more (``squashkit.freshproof``).
Without it (``SQUASHKIT_DATA_PROOF=off``) the squash is as before issue 14: the data migrations it
cannot carry as code are reported lost, so both sides run ``squash --yes --accept-loss``.

Per scale (``seed_data --rows N``, then ``migrate`` with SAMPLE_FRESHDATA=1: the seeds app's
data migrations; seeded once into a template database and reused) and per repeat, each side on
a fresh copy of the template and of sample_project, with an empty backup directory (so the old
history's build is never found in the cache: the cold cost), the two sides alternating which
goes first. Timed around the process; the journal splits off the backup. Medians and ratios
(with / without) go to a table on stdout, every sample to
``benchmarks/results/freshproof-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from squashkit import cluster as cluster_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PYTHON, SAMPLE, Databases, ensure_template, log, machine_info, run, seed_fingerprint
from squash import journal_split, median, project_copy, start_cluster

SIDES = {"with": {}, "without": {"SQUASHKIT_DATA_PROOF": "off"}}
OLD_BUILD = re.compile(r"built the old history fresh beside the backup in ([0-9.]+) s")
PROVED = re.compile(r"rows compared(?:, carried and proved)? in ([0-9.]+) s")


def freshdata_template(dbs: Databases, rows: int) -> str:
    """The seeded template with the seeds app migrated in (its data migrations run on real data)."""
    seeded, _seconds = ensure_template(dbs, rows)
    name = f"bench_freshdata_{rows}"
    marker = f"squashkit-bench freshdata seed={seed_fingerprint()} rows={rows}"
    if dbs.comment(name) == marker:
        log(f"reusing template {name}")
        return name
    dbs.create(name, template=seeded)
    env = {**os.environ, "DATABASE_URL": f"postgres:///{name}", "SAMPLE_FRESHDATA": "1"}
    run([PYTHON, str(SAMPLE / "manage.py"), "migrate", "-v", "0"], cwd=SAMPLE, env=env)
    dbs.execute("VACUUM (ANALYZE)", dbname=name)
    dbs.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker)))
    return name


def squash_once(dbs: Databases, template: str, work: Path, side: str) -> dict:
    """One ``squash --yes --accept-loss`` of fresh copies, with or without the data proof."""
    dbname = "bench_freshproof"
    dbs.drop_prefixed(dbname)
    dbs.create(dbname, template=template)
    project = project_copy(work, dbname)
    argv = [PYTHON, "-m", "squashkit.cli", "--config", str(project / "squashkit.toml"), "squash", "--yes", "--accept-loss"]
    env = {**os.environ, "SAMPLE_FRESHDATA": "1", **SIDES[side]}
    clock = time.perf_counter()
    result = subprocess.run(argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - clock
    if result.returncode != 0:
        raise RuntimeError(f"squash ({side} the data proof) failed: {result.stderr[-2000:]}")
    carried = sorted(p.name for p in (project / "seeds" / "migrations").glob("*_squashkit_data.py"))
    if bool(carried) != (side == "with"):
        raise RuntimeError(f"squash {side} the data proof wrote {carried or 'no data migration'}: not the squash meant")
    backup, phase = journal_split(project)
    found, proved = OLD_BUILD.search(result.stderr), PROVED.findall(result.stderr)
    dbs.drop_prefixed(dbname)
    return {
        "wall_s": round(wall, 2),
        "backup_s": round(backup, 2),
        "own_s": round(wall - backup, 2),
        "phase_s": round(phase, 2),
        "old_build_s": float(found.group(1)) if found else 0.0,
        "proof_s": round(sum(float(seconds) for seconds in proved), 2),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark what the data proof costs squashkit squash.")
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000], help="seed_data --rows scales (default: 2000 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="squashes per side and scale; medians are reported (default: 3)")
    parser.add_argument("--cluster-dir", type=Path, default=Path("/tmp/squashkit-bench-freshproof-cluster"))
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "freshproof-latest.json")
    args = parser.parse_args(argv)
    dbs = start_cluster(args.cluster_dir, "SQUASHKIT_DATA_PROOF", "SAMPLE_FRESHDATA")
    results = {"command": "benchmarks/freshproof.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scales": []}
    try:
        results["machine"] = machine_info(dbs)
        with tempfile.TemporaryDirectory(prefix="squashkit-bench-freshproof-") as work:
            for rows in args.rows:
                template = freshdata_template(dbs, rows)
                table_rows = sum(dbs.table_rows(template).values())
                samples: dict[str, list[dict]] = {side: [] for side in SIDES}
                for index in range(args.repeat):
                    order = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))  # neither side always goes first
                    for side in order:
                        samples[side].append(squash_once(dbs, template, Path(work), side))
                        log(f"rows={rows} {side} the data proof #{index + 1}: {samples[side][-1]}")
                scale = {"seed_rows": rows, "table_rows": table_rows, "samples": samples}
                for side in SIDES:
                    scale[side] = {key: median(samples[side], key) for key in ("wall_s", "backup_s", "own_s", "phase_s", "old_build_s", "proof_s")}
                scale["ratio_wall"] = round(scale["with"]["wall_s"] / scale["without"]["wall_s"], 2)
                scale["ratio_own"] = round(scale["with"]["own_s"] / scale["without"]["own_s"], 2)
                results["scales"].append(scale)
    finally:
        cluster_module.stop(args.cluster_dir)
    print("| seed --rows | table rows | data proof | whole run | backup | own time (run - backup) | its phase (steps 2-7) "
          "| old history's build (beside the backup) | rows compared, carried, proved (in 5b) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in results["scales"]:
        for side in SIDES:
            m = s[side]
            print(f"| {s['seed_rows']} | {s['table_rows']} | {side} | {m['wall_s']:.1f} s | {m['backup_s']:.1f} s | {m['own_s']:.1f} s "
                  f"| {m['phase_s']:.1f} s | {m['old_build_s']:.1f} s | {m['proof_s']:.1f} s |")
    print("\n| seed --rows | whole run, with / without | own time, with / without |")
    print("|---|---|---|")
    for s in results["scales"]:
        print(f"| {s['seed_rows']} | ×{s['ratio_wall']:.2f} | ×{s['ratio_own']:.2f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
