"""A squash proves itself: it refuses to forget what it cannot carry over, carries what it can,
and fakes the new migrations only when a scratch database built from them alone has exactly
the restored schema."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from tests.test_pipeline import make_prod, prod_role, project  # noqa: F401 (fixtures)
from tests.test_resume import databases


def test_squash_refuses_a_data_migration_it_cannot_carry_without_accept_loss(project):
    """Without the data proof (SQUASHKIT_DATA_PROOF=off, as before issue 14) the data migration
    written against older models is refused, nothing changed; with it, --rebuild compares fresh
    builds and settles the backfill as nothing to carry (tests/test_freshdata.py carries rows)."""
    before, files = project.fingerprint(project.dev), project.migration_files()
    result = project.run("squash", "--yes", "--rebuild", env={"SQUASHKIT_DATA_PROOF": "off"})
    assert result.code == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "orders/migrations/0003_populate_order_reference.py" in error and "--accept-loss" in error, error
    assert project.fingerprint(project.dev) == before and project.migration_files() == files
    assert databases(project) == {project.dev}

    proved = project.run("squash", "--yes", "--rebuild")
    assert proved.code == 0, proved.stderr
    assert "not needed orders/migrations/0003_populate_order_reference.py" in proved.stderr, proved.stderr
    assert project.fingerprint(project.dev) == before


def test_squash_carries_the_view_trigger_and_extension_into_migrations_a_fresh_database_can_run(project, pg):
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert "the new migrations build exactly the live schema" in result.stderr
    fresh = project.dev + "_fresh"
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh}" OWNER sample_owner')  # test-only name, no user input
    try:
        project.manage(fresh, "migrate", "-v", "0")
        with psycopg.connect(**pg.conninfo(fresh)) as conn:
            assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
            assert conn.execute("SELECT to_regclass('catalog_productstats')").fetchone()[0]
            assert conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()[0] >= 1
            assert conn.execute("SELECT count(*) FROM orders_shippingmethod").fetchone()[0] > 0
    finally:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


@pytest.mark.parametrize("rebuild", [[], ["--rebuild"]], ids=["in-place-history", "rebuild"])
def test_drift_between_models_and_database_refuses_the_fake_and_leaves_the_target_unchanged(project, rebuild):
    """A hand-added column, a dropped index and a changed default: the scratch build from the new
    migrations differs from the live database (or its restored copy), so nothing is recorded as
    applied and dev is exactly as before."""
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("ALTER TABLE catalog_tag ADD COLUMN added_by_hand integer")
        index = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'orders_order' AND indexname NOT LIKE '%pkey' "
            "AND indexdef NOT LIKE '%UNIQUE%' LIMIT 1"
        ).fetchone()[0]
        conn.execute(f'DROP INDEX "{index}"')
        conn.execute("ALTER TABLE catalog_product ALTER COLUMN is_active SET DEFAULT false")
    before, files = project.fingerprint(project.dev), project.migration_files()
    applied = project.applied(project.dev)
    result = project.run("squash", "--yes", "--accept-loss", *rebuild)
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'schema equivalence' failed" in error and "--allow-drift" in error and "Nothing was lost" in error, error
    for name in ("added_by_hand", index, "is_active"):
        assert name in result.stderr, name
    assert project.fingerprint(project.dev) == before and project.migration_files() == files
    assert project.applied(project.dev) == applied
    assert databases(project) == {project.dev}


def test_the_repair_case_is_explained_by_check_and_mended_by_squash(project):
    """Migration files deleted, tables and django_migrations rows still there (the seed's story)."""
    shutil.rmtree(project.root / "analytics" / "migrations")
    (project.root / "analytics" / "migrations").mkdir()
    (project.root / "analytics" / "migrations" / "__init__.py").write_text("")
    checked = project.run("check")
    assert checked.code == 1 and "analytics" in checked.stdout and "squashkit squash" in checked.stdout, checked.stdout
    before = project.fingerprint(project.dev)
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert "migration files are gone" in result.stderr
    assert project.fingerprint(project.dev) == before
    after = project.run("check")
    assert after.code == 0 and " fail " not in after.stdout, after.stdout


def test_a_missing_index_is_refused_with_its_create_index_and_creating_it_by_hand_lets_the_squash_pass(project):
    """Drift squashkit cannot carry (no history builds it that way): the refusal names the index and
    prints the statement that mends the live database; squashkit runs none of it itself."""
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        index, definition = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'community_comment' AND indexname NOT LIKE '%pkey' "
            "AND indexdef NOT LIKE '%UNIQUE%' ORDER BY indexname LIMIT 1").fetchone()
        conn.execute(f'DROP INDEX "{index}"')  # test-only name read from the catalog
    before, files = project.fingerprint(project.dev), project.migration_files()

    refused = project.run("squash", "--yes", "--accept-loss")

    assert refused.code == 1, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    wanted = definition.replace(f"CREATE INDEX {index} ON", f'CREATE INDEX CONCURRENTLY "{index}" ON') + ";"
    assert f"missing index {index}" in error and wanted in error and "squashkit applies none of it" in error, error
    assert project.fingerprint(project.dev) == before and project.migration_files() == files
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        assert not conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [index]).fetchone()  # not applied silently
        conn.execute(wanted.rstrip(";"))  # the user reviews it and runs it; the test runs exactly what was printed

    passed = project.run("squash", "--yes", "--accept-loss")
    assert passed.code == 0, passed.stderr
    assert project.fingerprint(project.dev) == before
