"""`load_fixture`: a bundle's db.json loaded into a freshly migrated database equals the source.

The source is sample_project seeded with the traps a JSON reload meets: content type ids
that differ from a fresh `migrate`'s (conftest renumbers them), stale content types whose
permissions groups still hold, an unmanaged model over a SQL view, rows a data migration
creates that the source deleted or replaced, timestamps with microseconds, and sequences
above max(id).
"""

from __future__ import annotations

import json
import shutil
from datetime import time
from pathlib import Path

import psycopg
import pytest

from squashkit import config as config_module
from squashkit.bundle import read_manifest
from squashkit.errors import OperationFailed
from squashkit.fixture import load_fixture
from squashkit.project import introspect, manage_py
from tests.conftest import (
    SampleDatabase,
    create_database,
    drop_database,
    manage,
    sequences,
    squashkit,
    table_fingerprints,
    unique_name,
    write_config,
)

# Not in the fixture on purpose (admin log, sessions) or filled by `migrate` (django_migrations).
NOT_IN_FIXTURE = ("django_admin_log", "django_session", "django_migrations")
# A fixture stores a many-to-many as a list on its owner: the join rows get new ids.
JOIN_TABLES = ("auth_group_permissions", "auth_user_groups", "auth_user_user_permissions", "catalog_product_tags")


def target_for(pg, dbname: str, directory: Path):
    """(ManagePy, ConnectionParams) of sample_project pointed at ``dbname``, as the pipeline builds them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(directory, {"dev": {"DATABASE_URL": SampleDatabase(pg, dbname).url()}})
    config = config_module.load(path)
    env_name, environment = config.environment("dev")
    target = manage_py(config, env_name, environment)
    return target, introspect(target).connection("default")


@pytest.fixture(scope="module")
def source_bundle(pg, seeded_template, tmp_path_factory):
    source = SampleDatabase(pg, create_database(pg, unique_name("fixture_source"), template=seeded_template))
    directory = tmp_path_factory.mktemp("fixture-bundle")
    config = write_config(directory, {"dev": {"DATABASE_URL": source.url()}})
    result = squashkit("--config", str(config), "backup", "--env", "dev", "--no-compress")
    assert result.code == 0, result.stderr
    yield source, Path(result.stdout.strip().splitlines()[-1])
    drop_database(pg, source.name)


@pytest.fixture(scope="module")
def loaded(pg, source_bundle, tmp_path_factory):
    """A fresh database, migrated for real, then load_fixture of the bundle's db.json."""
    source, path = source_bundle
    name = create_database(pg, unique_name("fixture_target"))
    manage(pg, name, "migrate", "-v", "0")
    target, params = target_for(pg, name, tmp_path_factory.mktemp("fixture-target"))
    lines: list[str] = []
    load_fixture(target, params, path, read_manifest(path).alias("default"), lines.append)
    yield source, SampleDatabase(pg, name), lines
    drop_database(pg, name)


def test_every_table_equals_the_source_row_for_row(loaded):
    source, target, lines = loaded
    with source.connect() as before, target.connect() as after:
        exact_before, exact_after = table_fingerprints(before, skip=NOT_IN_FIXTURE), table_fingerprints(after, skip=NOT_IN_FIXTURE)
        natural_before = table_fingerprints(before, natural=True, skip=NOT_IN_FIXTURE)
        natural_after = table_fingerprints(after, natural=True, skip=NOT_IN_FIXTURE)
    assert set(exact_after) == set(exact_before)
    for table in exact_before:
        if table.split(".", 1)[1] in JOIN_TABLES:
            assert natural_after[table] == natural_before[table], table
            assert natural_before[table][0] > 0, table
        else:
            # Ids included: content types and permissions too, although a fresh migrate numbers them otherwise.
            assert exact_after[table] == exact_before[table], table
    assert exact_before["public.django_content_type"][0] > 15 and exact_before["public.community_comment"][0] > 100
    assert any("verified" in line for line in lines)


def test_content_type_ids_differed_before_the_load(pg, loaded, tmp_path):
    """The equality above means something: a plain migrate numbers content types otherwise."""
    source, target, _ = loaded
    fresh = create_database(pg, unique_name("fixture_fresh"))
    try:
        manage(pg, fresh, "migrate", "-v", "0")
        query = "SELECT id, app_label, model FROM django_content_type ORDER BY id"
        with psycopg.connect(**pg.conninfo(fresh)) as conn, source.connect() as before:
            assert conn.execute(query).fetchall() != before.execute(query).fetchall()
            methods = "SELECT id, code FROM orders_shippingmethod ORDER BY id"
            assert conn.execute(methods).fetchall() != before.execute(methods).fetchall()
    finally:
        drop_database(pg, fresh)


def test_timestamps_keep_their_microseconds(loaded):
    source, target, _ = loaded
    query = "SELECT id, created_at FROM community_comment ORDER BY id"
    with source.connect() as before, target.connect() as after:
        rows = before.execute(query).fetchall()
        assert after.execute(query).fetchall() == rows
        assert sum(1 for _, at in rows if at.microsecond % 1000) > len(rows) // 2
        cutoff = "SELECT cutoff_time FROM orders_shippingmethod WHERE code = 'pickup'"
        kept = after.execute(cutoff).fetchone()[0]
        assert kept == before.execute(cutoff).fetchone()[0] and isinstance(kept, time) and kept.microsecond % 1000


def test_sequences_equal_the_source(loaded):
    source, target, _ = loaded
    with source.connect() as before, target.connect() as after:
        expected, actual = sequences(before), sequences(after)
        comments = after.execute("SELECT max(id) FROM community_comment").fetchone()[0]
    expected.pop("public.django_migrations_id_seq")  # migrate's own rows: the target's numbering
    actual.pop("public.django_migrations_id_seq")
    assert actual == expected
    # loaddata alone would have reset it to max(id), handing out the deleted comments' ids again.
    assert actual["public.community_comment_id_seq"][0] > comments


def test_stale_content_type_and_its_group_permission_survive(loaded):
    source, target, _ = loaded
    query = """SELECT g.name, p.id, p.codename, ct.id, ct.app_label, ct.model FROM auth_group g
               JOIN auth_group_permissions gp ON gp.group_id = g.id JOIN auth_permission p ON p.id = gp.permission_id
               JOIN django_content_type ct ON ct.id = p.content_type_id
               WHERE (ct.app_label, ct.model) IN (('catalog', 'legacyitem'), ('retired', 'oldmodel')) ORDER BY 1, 3"""
    with source.connect() as before, target.connect() as after:
        stale = before.execute(query).fetchall()
        assert after.execute(query).fetchall() == stale
    assert {row[2] for row in stale} == {"archive_legacyitem", "audit_oldmodel"}


def test_generic_relations_point_at_the_same_objects(loaded):
    source, target, _ = loaded
    query = """SELECT c.id, ct.app_label, ct.model, c.object_id FROM community_comment c
               JOIN django_content_type ct ON ct.id = c.content_type_id ORDER BY c.id"""
    with source.connect() as before, target.connect() as after:
        rows = before.execute(query).fetchall()
        assert after.execute(query).fetchall() == rows
    assert {row[2] for row in rows} == {"product", "order"}


def test_unmanaged_model_is_not_in_the_json_and_its_view_works(loaded, source_bundle):
    source, target, _ = loaded
    _, path = source_bundle
    assert '"catalog.productstats"' not in (path / "db.json").read_text()
    query = "SELECT product_id, tag_count FROM catalog_productstats ORDER BY product_id"
    with source.connect() as before, target.connect() as after:
        stats = before.execute(query).fetchall()
        assert after.execute(query).fetchall() == stats and len(stats) > 100


def test_rows_a_migration_made_are_the_sources(loaded):
    """orders 0007 creates standard/express/legacy; the source deleted 'legacy' and replaced 'standard'."""
    source, target, _ = loaded
    query = "SELECT id, code, name, price, cutoff_time, is_active FROM orders_shippingmethod ORDER BY id"
    with source.connect() as before, target.connect() as after:
        methods = before.execute(query).fetchall()
        assert after.execute(query).fetchall() == methods
    assert "legacy" not in {row[1] for row in methods}


def test_a_table_that_differs_is_named(pg, source_bundle, tmp_path):
    """Verification: a fixture that does not fill a table as the source had it fails, naming that table."""
    source, path = source_bundle
    partial = tmp_path / "bundle"
    partial.mkdir()
    shutil.copy(path / "contenttypes.json", partial / "contenttypes.json")
    # Only the header objects: every data table stays empty, the first in order is named.
    header = [line for line in (path / "db.json").read_text().splitlines() if '"contenttypes.' in line or '"auth.permission"' in line]
    (partial / "db.json").write_text("[\n" + ",\n".join(line.strip(",") for line in header) + "\n]\n")
    entry = read_manifest(path).alias("default")
    name = create_database(pg, unique_name("fixture_short"))
    try:
        manage(pg, name, "migrate", "-v", "0")
        target, params = target_for(pg, name, tmp_path / "config")
        with pytest.raises(OperationFailed, match=r"public\.analytics_pageview has 0 rows, the source \d+"):
            load_fixture(target, params, partial, entry, lambda line: None)
    finally:
        drop_database(pg, name)


def test_an_unmigrated_database_is_refused_in_one_line(pg, source_bundle, tmp_path):
    source, path = source_bundle
    name = create_database(pg, unique_name("fixture_empty"))
    try:
        target, params = target_for(pg, name, tmp_path)
        with pytest.raises(OperationFailed, match="has no table public.analytics_pageview .*migrate it") as raised:
            load_fixture(target, params, path, read_manifest(path).alias("default"), lambda line: None)
        assert "\n" not in str(raised.value)
    finally:
        drop_database(pg, name)


def test_contenttypes_file_is_the_one_the_manifest_hashes(source_bundle):
    _, path = source_bundle
    manifest = read_manifest(path)
    assert manifest.alias("default").contenttypes_file in manifest.files
    saved = json.loads((path / "contenttypes.json").read_text())
    assert {"content_types", "permissions", "content_type_table", "permission_table"} <= set(saved)
