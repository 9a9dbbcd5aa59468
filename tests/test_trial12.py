"""Regressions found by issue 12's acceptance trial: a project laid out like the seed's, written
apart from the samples (custom SRID inserted by a RunSQL, PostGIS in another schema on a second
database, a function index whose SQL function calls PostGIS unqualified, ...)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from squashkit import losses, sql_objects
from tests.conftest import admin, create_database, drop_database, unique_name
from tests.test_multidb import postgis  # noqa: F401  (the fixture)

SRID_SQL = (
    "INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
    "VALUES (990002, 'TRIAL', 990002, '', '+proj=longlat +datum=WGS84 +no_defs') ON CONFLICT (srid) DO NOTHING"
)


def _gis_database(pg, schema: str, *statements: str):
    name = create_database(pg, unique_name("trial12_gis"))
    with admin(pg, name) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE EXTENSION postgis SCHEMA {}").format(sql.Identifier(schema)))
        for statement in statements:
            conn.execute(statement)
    yield name
    drop_database(pg, name)


@pytest.fixture
def gis_db(pg, postgis):  # noqa: F811
    yield from _gis_database(pg, "public", "CREATE TABLE things (id int)")


@pytest.fixture
def postgis_in_reporting(pg, postgis):  # noqa: F811
    """A database where GeoDjango put PostGIS: in the first schema of the alias's search_path."""
    yield from _gis_database(pg, "reporting")


def _verdict(conn: psycopg.Connection, text: str) -> tuple[str, str]:
    entry = {"run_sql": {"sql": text, "reverse_sql": None, "elidable": False, "has_state_operations": False, "hints": {}}}
    return losses._run_sql_verdict(entry, sql_objects.statements(text), conn, [])


def test_a_runsql_inserting_a_custom_srid_is_carried_not_lost(pg, gis_db):
    with admin(pg, gis_db) as conn:
        verdict, reason = _verdict(conn, SRID_SQL)
        assert verdict == "carried", reason
        assert "public.spatial_ref_sys" in reason
        # Rows of the project's own tables are still data a squash cannot carry.
        assert _verdict(conn, "INSERT INTO things VALUES (1)")[0] == "lost"
        assert _verdict(conn, SRID_SQL + "; UPDATE things SET id = 2")[0] == "lost"
    assert sql_objects.classify('DELETE FROM "public".spatial_ref_sys WHERE srid = 1').table == '"public".spatial_ref_sys'


def test_recreate_schemas_refuses_postgis_in_a_project_schema_with_advice_that_works(pg, postgis_in_reporting, monkeypatch):
    """GeoDjango put PostGIS in the first schema of the alias's search_path; PostGIS has no SET SCHEMA."""
    from types import SimpleNamespace

    from squashkit import schema_swap
    from squashkit.errors import BadInput
    from squashkit.postgres import ConnectionParams

    monkeypatch.setattr(schema_swap, "search_path", lambda connection: ["reporting", "public"])
    monkeypatch.setattr(schema_swap, "project_schemas", lambda project, database: ["reporting"])
    project = SimpleNamespace(connection=lambda alias: None)
    params = ConnectionParams(**{**pg.conninfo(postgis_in_reporting), "options": {}})
    with pytest.raises(BadInput) as refused:
        schema_swap.require_replaceable(project, SimpleNamespace(aliases=["reports"]), params)
    message = str(refused.value)
    assert "postgis (in reporting)" in message and "cannot be moved" in message and "SET SCHEMA public" not in message
    assert "\n" not in message


def test_a_database_migrations_build_leaves_them_the_extension_rows_they_insert(pg, gis_db, tmp_path):
    """check, squash and recreate lay the live database's custom SRIDs into the database they migrate:
    a migration that INSERTs its own SRID (no ON CONFLICT, as most do) then hit a duplicate key."""
    from squashkit import foundation, schema
    from squashkit.postgres import ConnectionParams

    with admin(pg, gis_db) as conn:
        conn.execute(SRID_SQL)
        conn.execute("INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
                     "VALUES (990003, 'DBA', 990003, '', '+proj=longlat +datum=WGS84 +no_defs')")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_initial.py").write_text(f"SQL = '''\n{SRID_SQL.replace(' ON CONFLICT (srid) DO NOTHING', '')}\n'''\n")
    params = ConnectionParams(**{**pg.conninfo(gis_db), "options": {}})
    with admin(pg, gis_db) as conn:
        found = foundation.read(conn)
    assert foundation.tables_written_by([folder, None, tmp_path / "missing"], found) == {"spatial_ref_sys"}

    srids = "SELECT array_agg(srid ORDER BY srid) FROM spatial_ref_sys WHERE srid > 990000"
    with schema.scratch_database(params, suffix="__t12a", migration_folders=[folder]) as name:
        with admin(pg, name) as conn:
            assert conn.execute(srids).fetchone()[0] is None  # the migration inserts its own
            conn.execute(SRID_SQL.replace(" ON CONFLICT (srid) DO NOTHING", ""))  # as migrate would: no duplicate
        after = params.model_copy(update={"dbname": name})
        foundation.lay_missing_rows(after, None, found.rows_of({"spatial_ref_sys"}))  # recreate, after migrate
        with admin(pg, name) as conn:
            assert conn.execute(srids).fetchone()[0] == [990002, 990003]  # the DBA's row too
    with schema.scratch_database(params, suffix="__t12b") as name, admin(pg, name) as conn:
        assert conn.execute(srids).fetchone()[0] == [990002, 990003]  # no migrations named: every row, as before


def test_a_target_with_postgis_in_another_schema_is_refused_with_advice_that_works(pg, postgis_in_reporting):
    from squashkit import foundation
    from squashkit.errors import BadInput
    from squashkit.postgres import ConnectionParams

    source = foundation.Foundation(extensions=[foundation.Extension(name="postgis", schema="public", version="3")])
    params = ConnectionParams(**{**pg.conninfo(postgis_in_reporting), "options": {}})
    with pytest.raises(BadInput) as refused:
        foundation.require_same_schemas(params, source, "dev")
    message = str(refused.value)
    assert "postgis in schema reporting, dev has it in public" in message
    assert "cannot be moved" in message and "move the extension" not in message and "\n" not in message
