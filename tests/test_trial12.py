"""Regressions found by issue 12's acceptance trial: a project laid out like the seed's, written
apart from the samples (custom SRID inserted by a RunSQL, PostGIS in another schema on a second
database, a function index whose SQL function calls PostGIS unqualified, ...)."""

from __future__ import annotations

import psycopg
import pytest

from squashkit import losses, sql_objects
from tests.conftest import admin, create_database, drop_database, unique_name
from tests.test_multidb import postgis  # noqa: F401  (the fixture)

SRID_SQL = (
    "INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
    "VALUES (990002, 'TRIAL', 990002, '', '+proj=longlat +datum=WGS84 +no_defs') ON CONFLICT (srid) DO NOTHING"
)


@pytest.fixture
def gis_db(pg, postgis):  # noqa: F811
    name = create_database(pg, unique_name("trial12_gis"))
    with admin(pg, name) as conn:
        conn.execute("CREATE EXTENSION postgis")
        conn.execute("CREATE TABLE things (id int)")
    yield name
    drop_database(pg, name)


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
