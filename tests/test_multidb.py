"""Every alias, every schema: a project laid out as the seed's CI project, through every command.

``sample_project/atlas``: ``default`` (Django's own apps, schema ``auth`` through its
search_path) and ``data`` (``places``, schema ``data``, one table named ``'data"."places_site'``,
GeoDjango geometries with GiST indexes, a function index that calls PostGIS unqualified) reach
one database; ``analytics`` (``metrics``) a second one; ``replica`` is a test mirror nothing
migrates to. PostGIS lives in public, with a custom ``spatial_ref_sys`` row (SRID 990001) one
column's type needs; the database has settings of its own (``ALTER DATABASE ... SET``, a role's).

Every comparison is row for row (``table_fingerprints``: every table of every schema, geometries
as their EWKB text), on both databases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from squashkit import cluster as cluster_module
from squashkit.bundle import read_manifest
from squashkit.errors import OperationFailed
from tests.conftest import OWNER, OWNER_PASSWORD, SAMPLE, create_database, drop_database, squashkit, table_fingerprints, unique_name

ATLAS = SAMPLE / "atlas"
ROWS = 60
SKIP = ("django_migrations",)
ADMIN_VARIABLE = "SQUASHKIT_TEST_ADMIN"
SUFFIXES = ("", "__squashkit_new", "__squashkit_prev", "__squashkit_scratch")


@pytest.fixture(scope="session")
def postgis(pg):
    """PostGIS and GDAL, installed with apt-get when missing; the test skips only when they cannot be."""
    try:
        cluster_module.install_postgis(pg)
    except OperationFailed as exc:
        pytest.skip(f"PostGIS cannot be installed here: {exc}")


def _superuser(pg, dbname: str, search_path: str | None = None) -> psycopg.Connection:
    options = {"options": f"-csearch_path={search_path}"} if search_path else {}
    return psycopg.connect(**pg.conninfo(dbname), autocommit=True, **options)


def _prepare(pg, dbname: str, *, schemas: bool) -> None:
    """What a DBA does before the first migrate: PostGIS (a superuser's), the custom SRID, the schemas."""
    create_database(pg, dbname)
    with _superuser(pg, dbname) as conn:
        conn.execute("CREATE EXTENSION postgis")
        if schemas:
            for name in ("auth", "data"):
                conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(name), sql.Identifier(OWNER)))
            conn.execute("""INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text)
                            SELECT 990001, 'atlas', 990001, srtext, proj4text FROM spatial_ref_sys WHERE srid = 3857""")


def _settings(pg, dbname: str) -> None:
    """Settings that live with the database, not its tables (a dump without --create drops them)."""
    with _superuser(pg, "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = \"$user\", public, data").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(OWNER), sql.Identifier(dbname)))


def atlas_env(pg, main: str, analytics: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("DATABASE_URL", "ANALYTICS_DATABASE_URL")}
    env["DATABASE_URL"] = pg.url(main, user=OWNER, password=OWNER_PASSWORD)
    if analytics:
        env["ANALYTICS_DATABASE_URL"] = pg.url(analytics, user=OWNER, password=OWNER_PASSWORD)
    return env


def manage(pg, root: Path, main: str, analytics: str | None, *args: str) -> str:
    result = subprocess.run([sys.executable, str(root / "manage.py"), *args], cwd=root, env=atlas_env(pg, main, analytics),
                            capture_output=True, text=True)
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def atlas_templates(pg, postgis) -> tuple[str, str]:
    """atlas migrated alias by alias (default, data, analytics) and seeded once; tests copy it."""
    main, analytics = f"atlas_tpl_{ROWS}", f"atlas_tpl_{ROWS}_an"
    _prepare(pg, main, schemas=True)
    _prepare(pg, analytics, schemas=False)
    for alias in ("default", "data", "analytics"):
        manage(pg, ATLAS, main, analytics, "migrate", "--database", alias, "-v", "0")
    manage(pg, ATLAS, main, analytics, "seed_atlas", "--rows", str(ROWS))
    return main, analytics


class Atlas:
    """A copy of atlas (a squash rewrites its files) with dev's and prod's two databases each."""

    def __init__(self, pg, root: Path, names: dict[str, str]):
        self.pg, self.root, self.names = pg, root, names

    def run(self, *args: str, env: dict | None = None):
        return squashkit("--config", str(self.root / "squashkit.toml"), *args, env={ADMIN_VARIABLE: self.pg.password, **(env or {})})

    def fingerprint(self, env: str, *, natural: bool = False) -> dict:
        found = {}
        for which in ("main", "analytics"):
            # natural: content types and permissions are found where default's search_path finds them
            with _superuser(self.pg, self.names[f"{env}_{which}"], "auth,data,public" if natural else None) as conn:
                found[which] = table_fingerprints(conn, skip=SKIP, natural=natural)
        return found

    def query(self, env: str, which: str, statement: str, params=()) -> list[tuple]:
        with _superuser(self.pg, self.names[f"{env}_{which}"]) as conn:
            return conn.execute(statement, params).fetchall()

    def manage(self, env: str, *args: str) -> str:
        return manage(self.pg, self.root / "atlas", self.names[f"{env}_main"], self.names[f"{env}_analytics"], *args)

    def databases(self) -> set[str]:
        with _superuser(self.pg, "postgres") as conn:
            names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        return {name for name in names if any(name.startswith(base) for base in self.names.values())}


def write_atlas_config(pg, root: Path, names: dict[str, str], **environments: dict) -> None:
    lines = [f'manage_py = "atlas/manage.py"', f'python = "{sys.executable}"', 'backup_dir = "backups"', 'default_env = "dev"']
    for env in ("dev", "prod"):
        urls = {"DATABASE_URL": pg.url(names[f"{env}_main"], user=OWNER, password=OWNER_PASSWORD)}
        if names.get(f"{env}_analytics"):
            urls["ANALYTICS_DATABASE_URL"] = pg.url(names[f"{env}_analytics"], user=OWNER, password=OWNER_PASSWORD)
        lines += [f"[environments.{env}]", 'settings = "atlas.settings"',
                  "env = { " + ", ".join(f'{k} = "{v}"' for k, v in urls.items()) + " }",
                  f'admin = {{ user = "{pg.superuser}", password_env = "{ADMIN_VARIABLE}" }}']
        lines += [f"{key} = {json.dumps(value)}" for key, value in environments.get(env, {}).items()]
    (root / "squashkit.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def atlas(pg, atlas_templates, tmp_path) -> Atlas:
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "backups")
    shutil.copytree(ATLAS, root / "atlas", ignore=ignore)
    shutil.copytree(SAMPLE / "sample_project", root / "sample_project", ignore=ignore)  # its URL parser
    base = unique_name("atlas")
    names = {"dev_main": base + "_dev", "dev_analytics": base + "_dev_an", "prod_main": base + "_prod", "prod_analytics": base + "_prod_an"}
    create_database(pg, names["dev_main"], template=atlas_templates[0])
    create_database(pg, names["dev_analytics"], template=atlas_templates[1])
    _settings(pg, names["dev_main"])
    write_atlas_config(pg, root, names)
    yield Atlas(pg, root, names)
    for name in names.values():
        for suffix in SUFFIXES:
            drop_database(pg, name + suffix)


def assert_like_dev(atlas: Atlas, dev: dict, *, natural: bool = False) -> None:
    """prod holds dev's rows in every table of both databases, its foundation, and its indexes."""
    assert atlas.fingerprint("prod", natural=natural) == dev
    for which in ("main", "analytics"):
        found = atlas.query("prod", which, "SELECT 1 FROM spatial_ref_sys WHERE srid = 990001")
        assert found == ([(1,)] if which == "main" else [])
    indexes = {row[0] for row in atlas.query("prod", "main", "SELECT indexdef FROM pg_indexes WHERE schemaname = 'data'")}
    assert any("USING gist (location)" in d and "places_site" in d for d in indexes), indexes
    assert any("USING gist (area)" in d for d in indexes) and any("site_x(location)" in d for d in indexes)
    config = atlas.query("prod", "main", "SELECT proconfig FROM pg_proc WHERE proname = 'site_x'")
    assert config == [(None,)]  # pinned for the restore only
    settings = atlas.query("prod", "main", """SELECT coalesce(r.rolname, '-'), s.setconfig FROM pg_db_role_setting s
                                             LEFT JOIN pg_roles r ON r.oid = s.setrole
                                             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())""")
    assert sorted(settings) == [("-", ['search_path="$user", public, data']), (OWNER, ["work_mem=8MB"])]


def ewkb(atlas: Atlas, env: str) -> list[tuple]:
    return atlas.query(env, "main", "SELECT id, ST_AsEWKB(location), ST_AsEWKB(survey) FROM data.places_site ORDER BY id")


def test_every_command_keeps_every_row_of_every_alias_and_schema(atlas):
    dev = atlas.fingerprint("dev")
    assert dev["main"]["data.places_site"][0] == ROWS and "auth.auth_user" in dev["main"]
    geometries = ewkb(atlas, "dev")

    # backup: the database two aliases reach is dumped once, each alias's rows in its own json.
    made = atlas.run("backup")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in bundle.iterdir() if p.suffix in (".json", ".dump", ".gz") and "migrations" not in p.name) == [
        "analytics.dump", "analytics.json.gz", "contenttypes.json", "data.json.gz", "db.dump", "db.json.gz", "manifest.json"]
    manifest = read_manifest(bundle)
    assert {e.alias: e.dump_of for e in manifest.databases} == {"default": None, "data": "default", "analytics": None}
    assert manifest.alias("data").json_objects["places.site"] == ROWS
    assert {e.alias: e.facts.django_migrations_table for e in manifest.databases} == {
        "default": "auth.django_migrations", "data": "data.django_migrations", "analytics": "public.django_migrations"}

    # squash: no data moves; each alias's django_migrations rewritten; CREATE SCHEMA carried.
    squashed = atlas.run("squash", "--yes")
    assert squashed.code == 0, squashed.stderr
    assert atlas.fingerprint("dev") == dev
    initial = (atlas.root / "atlas" / "places" / "migrations" / "0001_initial.py").read_text()
    assert initial.index("CREATE SCHEMA IF NOT EXISTS data") < initial.index("CreateModel")
    for alias in ("default", "data", "analytics"):
        atlas.manage("dev", "migrate", "--check", "--database", alias)

    # promote, killed as it swaps the second database: resume finishes it.
    killed = atlas.run("promote", "dev-to-prod", "--yes", env={"SQUASHKIT_TEST_KILL_AT": "prod:swap analytics"})
    assert killed.code == -9, killed.stderr[-2000:]
    resumed = atlas.run("resume", "--yes")
    assert resumed.code == 0 and "finished" in resumed.stdout, resumed.stderr
    assert_like_dev(atlas, dev)
    assert ewkb(atlas, "prod") == geometries

    # The squash undone on dev, data untouched: every alias's django_migrations rows come back.
    unsquashed = atlas.run("rollback", squashed.stdout.strip().splitlines()[-1], "--migrations-only", "--yes")
    assert unsquashed.code == 0, unsquashed.stderr
    assert atlas.fingerprint("dev") == dev
    for alias in ("default", "data", "analytics"):
        atlas.manage("dev", "migrate", "--check", "--database", alias)

    # rollback from the bundle (its dump), from its json, and back to the kept databases.
    for path, natural in ((bundle, False), (bundle / "db.json.gz", True)):
        back = atlas.run("rollback", str(path), "--env", "prod", "--yes")
        assert back.code == 0, back.stderr
        assert atlas.fingerprint("prod", natural=natural) == (atlas.fingerprint("dev", natural=True) if natural else dev)
        assert ewkb(atlas, "prod") == geometries
    kept = atlas.run("rollback", "--kept", "--env", "prod", "--yes")
    assert kept.code == 0, kept.stderr
    assert_like_dev(atlas, dev)
    for alias in ("default", "data", "analytics"):
        atlas.manage("prod", "migrate", "--check", "--database", alias)
    assert not [name for name in atlas.databases() if name.endswith(("__squashkit_new", "__squashkit_scratch"))]
    listed = atlas.run("cleanup", "--list", "--env", "prod")  # each kept database once, not once per alias
    kept_names = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith("database")]
    assert sorted(kept_names) == sorted(atlas.names[f"prod_{w}"] + "__squashkit_prev" for w in ("main", "analytics"))


def make_prod(atlas: Atlas) -> dict:
    """prod: atlas's databases with rows of their own (a site, a hit), its fingerprint."""
    for which, template in (("main", "dev_main"), ("analytics", "dev_analytics")):
        create_database(atlas.pg, atlas.names[f"prod_{which}"], template=atlas.names[template])
    _settings(atlas.pg, atlas.names["prod_main"])
    with _superuser(atlas.pg, atlas.names["prod_main"]) as conn:
        conn.execute("UPDATE data.places_site SET name = 'prod only', location = ST_SetSRID(ST_MakePoint(7, 7), 4326) WHERE id = 1")
    with _superuser(atlas.pg, atlas.names["prod_analytics"]) as conn:
        conn.execute("DELETE FROM metrics_hit WHERE id = 1")
    return atlas.fingerprint("prod")


def test_a_promote_that_fails_on_the_second_database_puts_the_first_back(atlas):
    before = make_prod(atlas)
    failed = atlas.run("promote", "dev-to-prod", "--yes", env={"SQUASHKIT_TEST_FAULT": "fail-swap:prod:analytics"})
    assert failed.code == 1 and "test fault" in failed.stderr, failed.stderr
    assert f"{atlas.names['prod_main']}__squashkit_prev is {atlas.names['prod_main']} again" in failed.stderr
    assert atlas.fingerprint("prod") == before
    assert atlas.databases() == set(atlas.names.values())  # nothing built is left, nothing kept


def test_an_extension_in_another_schema_on_the_target_is_refused_before_anything_changes(atlas, pg):
    before = make_prod(atlas)
    analytics = atlas.names["prod_analytics"]
    create_database(pg, analytics)  # as a managed platform makes it: PostGIS in schema extensions
    with _superuser(pg, analytics) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION postgis SCHEMA extensions")
    before["analytics"] = atlas.fingerprint("prod")["analytics"]
    refused = atlas.run("promote", "dev-to-prod", "--yes")
    assert refused.code == 2, refused.stderr
    assert f"{analytics} has the extension postgis in schema extensions, dev has it in public" in refused.stderr
    assert atlas.fingerprint("prod") == before and atlas.databases() == set(atlas.names.values())


FIXTURE = [
    {"model": "places.region", "pk": 1, "fields": {"name": "R1", "area": "SRID=4326;MULTIPOLYGON (((0 0, 1 0, 1 1, 0 1, 0 0)))"}},
    {"model": "places.site", "pk": 1, "fields": {"name": "S1", "region": 1, "location": "SRID=4326;POINT (0.5 0.5)",
                                                 "survey": "SRID=990001;POINT (10 20)", "elevation": 3.5}},
    {"model": "metrics.hit", "pk": 7, "fields": {"site_id": 1, "path": "/x", "at": "2024-01-01T00:00:00Z", "weight": 0.5}},
    {"model": "auth.group", "pk": 1, "fields": {"name": "ci", "permissions": []}},
]


def test_recreate_twice_gives_the_same_databases_with_the_fixtures_on_their_aliases(atlas, tmp_path):
    fixture = tmp_path / "ci.json"
    fixture.write_text(json.dumps(FIXTURE))
    first = atlas.run("recreate", "--env", "dev", "--fixture", str(fixture), "--yes")
    assert first.code == 0, first.stderr
    once = atlas.fingerprint("dev")
    assert once["main"]["data.places_site"][0] == 1 and once["analytics"]["public.metrics_hit"][0] == 1
    assert once["main"]["auth.auth_group"][0] == 1 and once["main"]["auth.auth_user"][0] == 0
    assert "loaded ci.json on default, data, analytics" in first.stderr
    files = sorted(p.name for p in (atlas.root / "atlas" / "places" / "migrations").glob("0*.py"))
    assert files == ["0001_initial.py", "0002_squashkit_carried.py"]
    again = atlas.run("recreate", "--env", "dev", "--fixture", str(fixture), "--yes")
    assert again.code == 0, again.stderr
    assert atlas.fingerprint("dev") == once
    # Killed once the new databases hold their tables: resume drops them, the files come back.
    migrations = {p.name: p.read_bytes() for p in (atlas.root / "atlas" / "places" / "migrations").glob("0*.py")}
    killed = atlas.run("recreate", "--env", "dev", "--fixture", str(fixture), "--yes", env={"SQUASHKIT_TEST_KILL_AT": "dev:verify"})
    assert killed.code == -9, killed.stderr[-2000:]
    resumed = atlas.run("resume", "--yes")
    assert resumed.code == 0 and "Nothing was lost" in resumed.stdout, resumed.stderr
    assert atlas.fingerprint("dev") == once
    assert {p.name: p.read_bytes() for p in (atlas.root / "atlas" / "places" / "migrations").glob("0*.py")} == migrations
    assert not [name for name in atlas.databases() if name.endswith("__squashkit_new")]
    for alias in ("default", "data", "analytics"):
        atlas.manage("dev", "migrate", "--check", "--database", alias)


def test_recreate_refuses_a_protected_environment(atlas):
    write_atlas_config(atlas.pg, atlas.root, atlas.names, dev={"protected": True})
    before = atlas.fingerprint("dev")
    refused = atlas.run("recreate", "--env", "dev", "--yes")
    assert refused.code == 2 and "protected" in refused.stderr, refused.stderr
    assert atlas.fingerprint("dev") == before


def test_recreating_the_project_schemas_leaves_every_other_schema_untouched(atlas, pg, tmp_path):
    """recreate = "schemas" (the user may not drop the database): auth and data are rebuilt inside it;
    a schema of someone else's, and public, keep their tables and rows."""
    names = {**atlas.names, "dev_analytics": None, "prod_analytics": None}  # metrics on data: one database
    write_atlas_config(pg, atlas.root, names, dev={"recreate": "schemas"})
    with _superuser(pg, names["dev_main"]) as conn:
        conn.execute("CREATE SCHEMA legacy")
        conn.execute("CREATE TABLE legacy.ledger AS SELECT g AS id, md5(g::text) AS entry FROM generate_series(1, 40) g")
        conn.execute("CREATE TABLE public.notes AS SELECT 'kept' AS note")
        others = {t: f for t, f in table_fingerprints(conn).items() if t.startswith(("legacy.", "public."))}
    fixture = tmp_path / "ci.json"
    fixture.write_text(json.dumps(FIXTURE))
    made = atlas.run("recreate", "--env", "dev", "--fixture", str(fixture), "--yes")
    assert made.code == 0, made.stderr
    with _superuser(pg, names["dev_main"]) as conn:
        after = table_fingerprints(conn)
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'")}
    assert {t: f for t, f in after.items() if t.startswith(("legacy.", "public."))} == others
    assert after["data.places_site"][0] == 1 and after["data.metrics_hit"][0] == 1 and after["auth.auth_group"][0] == 1
    assert schemas == {"public", "information_schema", "auth", "data", "legacy"}


def test_check_finds_no_false_difference_and_names_a_table_in_the_wrong_schema(atlas):
    clean = atlas.run("check", "--json")
    findings = {f["name"]: f for f in json.loads(clean.stdout)}
    assert clean.code == 0, [f for f in findings.values() if f["status"] == "fail"]
    assert findings["schema (default, data)"]["status"] == "ok" and findings["schema (analytics)"]["status"] == "ok"
    assert findings["alias replica"]["status"] == "ok" and "test mirror" in findings["alias replica"]["detail"]
    assert "connection (replica)" not in findings
    # A table made before its schema existed: where data's search_path found room, in public.
    with _superuser(atlas.pg, atlas.names["dev_main"]) as conn:
        conn.execute("ALTER TABLE data.places_region SET SCHEMA public")
    moved = {f["name"]: f for f in json.loads(atlas.run("check", "--json").stdout)}
    assert moved["schemas (data)"]["status"] == "warn"
    assert "places_region (places.region) is in schema public, but data's search_path (data, public) creates it in data" in (
        moved["schemas (data)"]["detail"])


def test_postgis_topology_and_raster_come_back_with_a_restore(atlas, pg):
    """Extensions a DBA added beside the project's: a topology (its rows in topology.topology, its
    own schema of tables) and a raster column. Their extensions are recreated, their rows restored."""
    with _superuser(pg, atlas.names["dev_main"]) as conn:
        conn.execute("CREATE EXTENSION postgis_raster")
        conn.execute("CREATE EXTENSION postgis_topology")
        for what in ("SCHEMA topology", "ALL TABLES IN SCHEMA topology", "ALL SEQUENCES IN SCHEMA topology"):
            conn.execute(sql.SQL("GRANT ALL ON " + what + " TO {}").format(sql.Identifier(OWNER)))
    with psycopg.connect(**pg.conninfo(atlas.names["dev_main"], user=OWNER, password=OWNER_PASSWORD), autocommit=True) as conn:
        conn.execute("SELECT topology.CreateTopology('atlas_topo', 4326)")
        conn.execute("SELECT topology.TopoGeo_AddLineString('atlas_topo', 'SRID=4326;LINESTRING(0 0, 1 1)'::geometry)")
        conn.execute("CREATE TABLE data.tiles (id serial PRIMARY KEY, rast raster)")
        conn.execute("INSERT INTO data.tiles (rast) SELECT ST_AddBand(ST_MakeEmptyRaster(4, 4, 0, 0, 1, -1, 0, 0, 4326), '8BUI'::text, 7)")
    made = atlas.run("backup")
    assert made.code == 0, made.stderr
    dev = atlas.fingerprint("dev")
    assert dev["main"]["atlas_topo.edge_data"][0] == 1 and dev["main"]["data.tiles"][0] == 1
    restored = atlas.run("restore", made.stdout.strip().splitlines()[-1], "--env", "prod", "--yes")
    assert restored.code == 0, restored.stderr
    assert atlas.fingerprint("prod") == dev
    topologies = atlas.query("prod", "main", "SELECT name, srid FROM topology.topology")
    assert topologies == [("atlas_topo", 4326)]
    assert atlas.query("prod", "main", "SELECT ST_Value(rast, 1, 1) FROM data.tiles") == [(7.0,)]
