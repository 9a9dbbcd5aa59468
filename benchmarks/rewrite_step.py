"""Step 5's rewrite of ``squashkit backup`` alone: dumpdata jsonl -> db.json, in a fresh process.

run.py starts this once per measurement and reads the process's peak RSS from ``os.wait4``:
a fresh process, so that the peak belongs to this step and not to whatever ran before it.

Usage: python benchmarks/rewrite_step.py --dbname DB --jsonl IN --output OUT --map MAP.json
       [--tracemalloc] [--baseline]

MAP.json is ``{"natural_keys": bool, "rewrite": {model label: {field: kind}}}``, built by
run.py exactly as ``backup._backup_alias`` builds its arguments to ``write_fixture``. The
database is reached through libpq's PG* variables. Prints one JSON line on stdout.

``--baseline`` does everything but the rewrite (imports, connection, the two maps), so its
peak RSS is what the step costs before reading a single line. ``--tracemalloc`` measures the
peak of Python allocations exactly, at the price of a slower run (never timed).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import psycopg

from squashkit.fixture import NaturalKeys, write_fixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--jsonl", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    spec = json.loads(args.map.read_text())

    if args.tracemalloc:
        tracemalloc.start()
    clock = time.perf_counter()
    with psycopg.connect(dbname=args.dbname) as conn:
        keys = NaturalKeys.read(conn) if spec["natural_keys"] else None
    counts = {} if args.baseline else write_fixture(args.jsonl, args.output, keys, spec["rewrite"])
    seconds = time.perf_counter() - clock
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    print(json.dumps({"seconds": seconds, "objects": sum(counts.values()), "tracemalloc_peak_bytes": peak}))


if __name__ == "__main__":
    main()
