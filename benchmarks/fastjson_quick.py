"""A quick timing of the SQL-made db.json against pg_dump, and of its SQL load against pg_restore.

Usage::

    .venv/bin/python benchmarks/fastjson_quick.py [--rows 20000] [--repeat 3] [--django]

On sample_project seeded with ``seed_data --rows N`` (kept as a template database), per repeat:

- ``pg_dump -Fc`` of the database (its own process, as backup runs it);
- ``jsonfixture.write_fixture_sql`` in one exported snapshot, as backup will call it (in this
  process: the project probe that gives it the models is timed once, apart);
- ``pg_restore --no-owner --single-transaction`` into an empty database;
- ``jsonload``: content types and permissions put back, ``load_fixture_sql``, sequences, commit,
  into a database copied from a freshly migrated template (the migrate is not timed: both ways
  of rolling back create a database first, and rollback migrates before it loads).

With ``--django``, once: ``dumpdata`` + ``write_fixture`` (today's db.json) and ``loaddata`` of
the SQL-made file, for reference. Medians are printed. Not the benchmark harness
(benchmarks/run.py): a check of the ratios while the engine is built.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from squashkit import cluster as cluster_module
from squashkit import clients, postgres
from squashkit.fixture import NaturalKeys, put_back_ids, read_ids, restore_sequences, write_fixture
from squashkit.jsonfixture import write_fixture_sql
from squashkit.jsonload import load_fixture_sql
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy, dumpdata, introspect

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_project"


def clock(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--django", action="store_true", help="also time dumpdata and loaddata once")
    parser.add_argument("--cluster-dir", type=Path, default=Path("/tmp/sk-cluster-fastjson"))
    args = parser.parse_args()

    pg = cluster_module.start(args.cluster_dir)
    admin = psycopg.connect(**pg.conninfo(), autocommit=True)

    def database_exists(name: str) -> bool:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None

    def create(name: str, template: str | None = None) -> None:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(query)

    def manage_for(name: str) -> ManagePy:
        env = {**pg.environ(), "DATABASE_URL": pg.url(name), "DJANGO_SETTINGS_MODULE": "sample_project.settings"}
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
        return ManagePy(python=sys.executable, script=SAMPLE / "manage.py", cwd=SAMPLE, env=env)

    source, migrated = f"fastjson_bench_{args.rows}", "fastjson_bench_migrated"
    if not database_exists(source):
        create(source)
        manage_for(source).run("migrate", "-v", "0", what="migrate")
        manage_for(source).run("seed_data", "--rows", str(args.rows), what="seed_data")
    if not database_exists(migrated):
        create(migrated)
        manage_for(migrated).run("migrate", "-v", "0", what="migrate")

    manage = manage_for(source)
    started = time.perf_counter()
    project = introspect(manage)
    probe_seconds = time.perf_counter() - started
    excludes = [*project.installed_excludes([]), *project.unmanaged_models("default")]
    models = project.dumped_models("default", excludes)
    all_models = [m for app in project.apps for m in app.models if "default" in m.dumped_on]
    params = ConnectionParams.model_validate({**pg.conninfo(source), "password": pg.password})
    pg_dump, pg_restore = clients.client_program("pg_dump"), clients.client_program("pg_restore")

    work = Path(tempfile.mkdtemp(prefix="fastjson-bench-"))
    results: dict[str, list[float]] = {"pg_dump": [], "render": [], "pg_restore": [], "load": []}
    for repeat in range(args.repeat):
        dump = work / "db.dump"
        results["pg_dump"].append(clock(lambda: clients.run_client(pg_dump, ["-w", "-F", "c", "-f", str(dump)], params, what="pg_dump")))

        fixture = work / "db.json"
        with postgres.connect(params) as conn, postgres.snapshot(conn):
            def render() -> None:
                keys = NaturalKeys.read(conn)
                keys.write_ids(work / "contenttypes.json")
                render.counts = write_fixture_sql(conn, models, fixture, keys=keys)
            results["render"].append(clock(render))
            facts = postgres.read_facts(conn)

        create("fastjson_bench_restored")
        restore_params = params.with_dbname("fastjson_bench_restored")
        results["pg_restore"].append(clock(lambda: clients.run_client(
            pg_restore, ["-w", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                         "-d", "fastjson_bench_restored", str(dump)], restore_params, what="pg_restore")))

        create("fastjson_bench_loaded", template=migrated)
        ids = read_ids(work / "contenttypes.json")
        with postgres.connect(params.with_dbname("fastjson_bench_loaded")) as conn:
            tables = sorted({postgres.resolve_table(conn, t) for m in models for t in [m.db_table, *m.m2m_tables]})
            tables += [ids["content_type_table"], ids["permission_table"]]

            def load() -> None:
                with conn.transaction():
                    put_back_ids(conn, tables, ids)
                    load.counts = load_fixture_sql(conn, fixture, all_models)
                    restore_sequences(conn, facts.sequences, set(tables))
            results["load"].append(clock(load))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), flush=True)

    median = {key: statistics.median(values) for key, values in results.items()}
    objects = sum(render.counts.values())
    print(f"\nsample_project, seed_data --rows {args.rows}: {objects} objects, db.json {fixture.stat().st_size / 2**20:.1f} MiB, "
          f"dump {dump.stat().st_size / 2**20:.1f} MiB; medians of {args.repeat}")
    print(f"probe (manage.py shell, once per backup): {probe_seconds:.2f}s")
    print(f"pg_dump    {median['pg_dump']:.2f}s   render  {median['render']:.2f}s   render / pg_dump    = {median['render'] / median['pg_dump']:.2f}")
    print(f"pg_restore {median['pg_restore']:.2f}s   load    {median['load']:.2f}s   load / pg_restore   = {median['load'] / median['pg_restore']:.2f}")

    if args.django:
        jsonl = work / "dumpdata.jsonl"
        seconds = clock(lambda: dumpdata(manage, "default", jsonl, excludes))
        with postgres.connect(params) as conn:
            keys = NaturalKeys.read(conn)
        rewrite = {m.label: m.natural_key_fields for m in models if m.natural_key_fields}
        seconds += clock(lambda: write_fixture(jsonl, work / "django.json", keys, rewrite))
        print(f"dumpdata + write_fixture {seconds:.2f}s = {seconds / median['render']:.1f}x render, "
              f"{seconds / median['pg_dump']:.1f}x pg_dump")
        create("fastjson_bench_loaddata", template=migrated)
        target = manage_for("fastjson_bench_loaddata")
        with postgres.connect(params.with_dbname("fastjson_bench_loaddata")) as conn, conn.transaction():
            put_back_ids(conn, tables, ids)  # as load_fixture does before its loaddata
        seconds = clock(lambda: target.run("loaddata", str(fixture), "-v", "0", what="loaddata"))
        print(f"loaddata of the SQL-made db.json {seconds:.2f}s = {seconds / median['load']:.1f}x load, "
              f"{seconds / median['pg_restore']:.1f}x pg_restore")
    for name in ("fastjson_bench_restored", "fastjson_bench_loaded", "fastjson_bench_loaddata"):
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
