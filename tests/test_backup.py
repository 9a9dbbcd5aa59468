"""`squashkit backup` writes a bundle from which every row comes back, both ways."""

from __future__ import annotations

import json
from datetime import datetime, time
import stat
import subprocess
import threading
import time as time_module
import tarfile
from pathlib import Path

import psycopg
import pytest

from squashkit.bundle import read_manifest, sha256
from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    SAMPLE,
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

# What dumpdata leaves out on purpose, and what pg_dump leaves out on purpose.
JSON_EXCLUDED_TABLES = ("auth_permission", "django_content_type", "django_admin_log", "django_session", "django_migrations")

def fixture_objects(path: Path) -> list[dict]:
    """Every object of a db.json written by squashkit (one object a line, its comma at the end or the head)."""
    lines = (line.strip().strip(",") for line in path.open(encoding="utf-8"))
    return [json.loads(line) for line in lines if line.startswith("{")]


def run_backup(sample_db, tmp_path: Path, *args: str) -> Path:
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    result = squashkit("--config", str(config), "backup", "--env", "dev", "--no-compress", *args)
    assert result.code == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def backed_up(pg, seeded_template, tmp_path_factory):
    """One seeded database and one bundle of it, shared by the tests that only read both."""
    database = SampleDatabase(pg, create_database(pg, unique_name("backedup"), template=seeded_template))
    path = run_backup(database, tmp_path_factory.mktemp("shared-backup"))
    yield database, path
    drop_database(pg, database.name)


def restore_with_pg_restore(pg, dump: Path, *extra: str) -> str:
    target = create_database(pg, unique_name("restored"))
    subprocess.run(
        ["pg_restore", "--no-owner", "-d", target, *extra, str(dump)],
        env={**pg.environ(), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True,
    )
    return target


def test_backup_writes_a_complete_private_bundle(backed_up):
    sample_db, path = backed_up
    assert path.parent.name == "backups" and path.name.startswith("dev-")
    names = {p.name for p in path.iterdir()}
    assert {"manifest.json", "db.json", "contenttypes.json", "db.dump", "migrations.tar.gz", "log.txt"} <= names
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]

    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for file in path.rglob("*"):
        assert stat.S_IMODE(file.stat().st_mode) == (0o700 if file.is_dir() else 0o600), file

    manifest = read_manifest(path)
    for relative, digest in manifest.files.items():
        assert sha256(path / relative) == digest
    assert set(manifest.files) == {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {"manifest.json"}


def test_manifest_matches_the_database(backed_up):
    sample_db, path = backed_up
    entry = read_manifest(path).alias("default")
    with sample_db.connect() as conn:
        truth = table_fingerprints(conn)
        applied = conn.execute("SELECT app, name FROM django_migrations ORDER BY applied, id").fetchall()
        extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
    assert {t.qualified: t.rows for t in entry.facts.tables} == {name: rows for name, (rows, _) in truth.items()}
    assert [tuple(row) for row in entry.facts.applied_migrations] == [tuple(row) for row in applied]
    assert entry.facts.extensions == extensions and "pg_trgm" in extensions
    assert entry.database == sample_db.name and entry.user == OWNER
    assert entry.facts.server_version.startswith(str(entry.facts.server_version_num // 10000))
    assert "public" in entry.facts.schemas
    assert entry.snapshot_consistent
    assert read_manifest(path).format_version == 6


def test_manifest_records_each_tables_content_as_the_database_holds_it(backed_up):
    """Content hashes, read in the dump's snapshot: the same hashes of the database now, and what a
    json cannot keep (an implicit many-to-many row's id) left out."""
    from squashkit import content

    sample_db, path = backed_up
    entry = read_manifest(path).alias("default")
    assert set(entry.contents) == {t.qualified for t in entry.facts.tables} - {"public.django_migrations"}
    assert {name: c.rows for name, c in entry.contents.items()} == {
        t.qualified: t.rows for t in entry.facts.tables if t.qualified != "public.django_migrations"
    }
    assert entry.contents["public.catalog_product_tags"].left_out == ["id"]
    assert "id" in entry.contents["public.catalog_product"].columns
    with sample_db.connect() as conn:
        now = content.read(conn, list(entry.contents), leave_out={t: c.left_out for t, c in entry.contents.items()})
        assert content.differences(entry.contents, now) == []
        with conn.transaction(force_rollback=True):  # the database is shared with other tests
            conn.execute("UPDATE catalog_tag SET name = name || 'x' WHERE id = (SELECT min(id) FROM catalog_tag)")
            changed = content.read(conn, list(entry.contents), leave_out={t: c.left_out for t, c in entry.contents.items()})
    assert content.differences(entry.contents, changed) == ["public.catalog_tag: column name differs from the source"]


def test_manifest_records_every_sequence_and_the_tables_the_json_fills(backed_up):
    sample_db, path = backed_up
    entry = read_manifest(path).alias("default")
    with sample_db.connect() as conn:
        truth = sequences(conn)
        comments = conn.execute("SELECT max(id) FROM community_comment").fetchone()[0]
    recorded = {name: (s.last_value, s.is_called, s.owned_by) for name, s in entry.facts.sequences.items()}
    assert recorded == truth
    # The last comments were deleted: the sequence stands above max(id), and the manifest says where.
    assert recorded["public.community_comment_id_seq"][0] > comments
    assert recorded["public.community_comment_id_seq"][2] == "public.community_comment.id"
    assert "public.catalog_product_tags" in entry.json_tables and "public.auth_user_groups" in entry.json_tables
    assert not {"public.django_content_type", "public.auth_permission", "public.django_session"} & set(entry.json_tables)
    assert entry.contenttypes_file == "contenttypes.json"


def test_contenttypes_file_holds_the_source_ids(backed_up):
    sample_db, path = backed_up
    saved = json.loads((path / "contenttypes.json").read_text())
    with sample_db.connect() as conn:
        content_types = [list(row) for row in conn.execute("SELECT id, app_label, model FROM django_content_type ORDER BY id")]
        permissions = [
            list(row) for row in conn.execute("SELECT id, name, codename, content_type_id FROM auth_permission ORDER BY id")
        ]
    assert saved["content_types"] == content_types and saved["permissions"] == permissions
    assert saved["content_type_table"] == "public.django_content_type" and saved["permission_table"] == "public.auth_permission"
    # The stale content types (models deleted long ago) are there with their permissions.
    assert any(ct[1:] == ["catalog", "legacyitem"] for ct in saved["content_types"])
    assert any(p[2] == "archive_legacyitem" for p in saved["permissions"])


def test_json_keeps_microseconds_and_leaves_unmanaged_models_out(backed_up):
    sample_db, path = backed_up
    objects = fixture_objects(path / "db.json")
    assert not [o for o in objects if o["model"] in ("catalog.productstats", "catalog.activeproduct")]
    entry = read_manifest(path).alias("default")
    assert "catalog.productstats" in entry.excluded_from_json
    assert "catalog.productstats" not in entry.json_objects and "catalog.activeproduct" not in entry.json_objects
    assert "leaving the unmanaged models out" in (path / "log.txt").read_text()

    written = {
        o["pk"]: datetime.fromisoformat(o["fields"]["created_at"].replace("Z", "+00:00"))
        for o in objects if o["model"] == "community.comment"
    }
    with sample_db.connect() as conn:
        stored = dict(conn.execute("SELECT id, created_at FROM community_comment").fetchall())
        cutoff = conn.execute("SELECT cutoff_time FROM orders_shippingmethod WHERE code = 'pickup'").fetchone()[0]
    assert written == stored
    assert sum(1 for value in stored.values() if value.microsecond % 1000) > len(stored) // 2, "microseconds expected"
    methods = {o["fields"]["code"]: o["fields"] for o in objects if o["model"] == "orders.shippingmethod"}
    assert cutoff.microsecond % 1000 and time.fromisoformat(methods["pickup"]["cutoff_time"]) == cutoff


def test_dump_restores_every_row(pg, backed_up):
    sample_db, path = backed_up
    target = restore_with_pg_restore(pg, path / "db.dump")
    try:
        with sample_db.connect() as source, psycopg.connect(**pg.conninfo(target)) as restored:
            expected = table_fingerprints(source, skip=("django_migrations",))
            restored_prints = table_fingerprints(restored)
            # django_migrations keeps its table, not its rows: migrate --fake writes them into it.
            assert restored_prints.pop("public.django_migrations")[0] == 0
            assert restored_prints == expected
            assert len(expected) > 15 and sum(rows for rows, _ in expected.values()) > 1000
    finally:
        drop_database(pg, target)


def test_a_backup_of_a_database_being_written_is_one_moment(pg, sample_db, tmp_path):
    """A client commits every few milliseconds for the whole backup: the backup succeeds, and its
    dump and its json, each loaded into a database of its own, give the same rows (db.json is
    written in pg_dump's snapshot)."""
    stop, committed = threading.Event(), []

    def write() -> None:
        with psycopg.connect(**pg.conninfo(sample_db.name), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO analytics_pageview (product_id, path, session_key, viewed_at) VALUES (1, '/w', 'w', now())"
                )
                conn.execute("UPDATE catalog_product SET price = price + 1 WHERE id = (SELECT min(id) FROM catalog_product)")
                committed.append(1)
                time_module.sleep(0.003)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        path = run_backup(sample_db, tmp_path)
    finally:
        stop.set()
        writer.join()
    assert len(committed) > 20, "the writer did not write during the backup"

    from_dump = restore_with_pg_restore(pg, path / "db.dump")
    from_json = unique_name("fromjson")
    (tmp_path / "json").mkdir()
    config = write_config(tmp_path / "json", {"copy": {"DATABASE_URL": pg.url(from_json, user=OWNER, password=OWNER_PASSWORD)}})
    try:
        result = squashkit("--config", str(config), "rollback", str(path / "db.json"), "--env", "copy", "--yes")
        assert result.code == 0, result.stderr
        with psycopg.connect(**pg.conninfo(from_dump)) as dumped, psycopg.connect(**pg.conninfo(from_json)) as loaded:
            expected = table_fingerprints(dumped, natural=True, skip=JSON_EXCLUDED_TABLES)
            assert table_fingerprints(loaded, natural=True, skip=JSON_EXCLUDED_TABLES) == expected
    finally:
        drop_database(pg, from_dump)
        drop_database(pg, from_json)


def test_directory_format_restores_in_parallel(pg, sample_db, tmp_path):
    path = run_backup(sample_db, tmp_path, "--format", "directory", "--jobs", "2")
    assert (path / "db.dump").is_dir() and (path / "db.dump" / "toc.dat").is_file()
    target = restore_with_pg_restore(pg, path / "db.dump", "-j", "2")
    try:
        with sample_db.connect() as source, psycopg.connect(**pg.conninfo(target)) as restored:
            assert table_fingerprints(restored, skip=("django_migrations",)) == table_fingerprints(source, skip=("django_migrations",))
    finally:
        drop_database(pg, target)


def test_plain_loaddata_reads_the_json_into_an_empty_database(pg, backed_up):
    """db.json needs no squashkit: after `migrate` and `flush`, plain `loaddata db.json` brings
    every row back, microseconds included, with generic relations and group permissions
    pointing at the same things although a fresh database numbers content types differently
    (the source was renumbered, as long-lived databases are).

    `flush` because straight after `migrate` the rows of a data migration collide with the
    source's (orders 0007's 'standard' shipping method, replaced in the source under a new id):
    that is what `load_fixture` empties the tables for (tests/test_fixture.py)."""
    sample_db, path = backed_up
    target = create_database(pg, unique_name("fromjson"))
    try:
        manage(pg, target, "migrate", "-v", "0")
        manage(pg, target, "flush", "--no-input", "-v", "0")
        with psycopg.connect(**pg.conninfo(target)) as fresh, sample_db.connect() as source:
            fresh_ct = fresh.execute("SELECT max(id) FROM django_content_type").fetchone()[0]
            source_ct = source.execute("SELECT min(id) FROM django_content_type WHERE app_label = 'auth'").fetchone()[0]
            assert fresh_ct < source_ct, "the test needs ids that differ between source and fresh database"
        manage(pg, target, "loaddata", str(path / "db.json"), "-v", "0")
        with sample_db.connect() as source, psycopg.connect(**pg.conninfo(target)) as restored:
            expected = table_fingerprints(source, natural=True, skip=JSON_EXCLUDED_TABLES)
            actual = table_fingerprints(restored, natural=True, skip=JSON_EXCLUDED_TABLES)
            assert actual == expected
            # The generic relations and group permissions really are there, not just equal-and-empty.
            assert expected["public.auth_group_permissions"][0] > 0
            assert any(rows for name, (rows, _) in expected.items() if "comment" in name)
            # Every content type and permission of the source exists, the retired ones too.
            assert table_fingerprints(restored, natural=True)["public.auth_permission"][0] >= \
                table_fingerprints(source, natural=True)["public.auth_permission"][0]
            for codename in ("audit_oldmodel", "archive_legacyitem"):
                assert restored.execute("SELECT count(*) FROM auth_permission WHERE codename = %s", [codename]).fetchone()[0] == 1
    finally:
        drop_database(pg, target)


def test_json_keeps_dangling_ids_of_unconstrained_keys(backed_up):
    """A db_constraint=False key keeping a deleted user's id is written as it is, not aborted on."""
    sample_db, path = backed_up
    with sample_db.connect() as conn:
        dangling = conn.execute(
            """SELECT count(*) FROM community_activitylog a
               WHERE a.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user u WHERE u.id = a.user_id)"""
        ).fetchone()[0]
    assert dangling > 0, "sample data should hold activity rows of deleted users"
    objects = fixture_objects(path / "db.json")
    logged = [o for o in objects if o["model"] == "community.activitylog"]
    with sample_db.connect() as conn:
        assert len(logged) == conn.execute("SELECT count(*) FROM community_activitylog").fetchone()[0]
        users = {row[0] for row in conn.execute("SELECT id FROM auth_user")}
    assert sum(1 for o in logged if o["fields"]["user"] is not None and o["fields"]["user"] not in users) == dangling


def test_migrations_archive_holds_the_symlinked_folder(backed_up):
    assert (SAMPLE / "community" / "migrations").is_symlink()
    sample_db, path = backed_up
    manifest = read_manifest(path)
    with tarfile.open(path / "migrations.tar.gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    community = sorted(name for name in members if name.startswith("community/migrations/") and name.endswith(".py"))
    on_disk = sorted(p.name for p in (SAMPLE / "community" / "migrations").resolve().glob("*.py"))
    assert [Path(n).name for n in community] == on_disk and len(on_disk) >= 5
    for name in community:
        assert members[name] == (SAMPLE / name).read_bytes()
    assert sorted(members) == sorted(manifest.migration_files)
    for app in ("catalog", "orders", "community"):
        assert len(manifest.own_apps[app].migrations) >= 4
    community = manifest.own_apps["community"]
    assert community.folder == "community/migrations" and community.resolved_folder == "migration_store/community"
    assert community.aliases == ["default"]
    assert not any("__pycache__" in name for name in members)


def test_password_never_on_a_command_line_in_the_manifest_or_the_log(sample_db, tmp_path):
    """Every child program runs through a wrapper that records its argv and environment names."""
    record = tmp_path / "argv.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for program in ("pg_dump", "pg_restore"):
        script = wrappers / program
        script.write_text(f'#!/bin/sh\nprintf "%s\\0" "$0" "$@" >> "{record}"; echo >> "{record}"\nexec /usr/bin/{program} "$@"\n')
        script.chmod(0o755)
    python = wrappers / "python"
    import sys

    python.write_text(f'#!/bin/sh\nprintf "%s\\0" "$0" "$@" >> "{record}"; echo >> "{record}"\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}}, pg_bin=str(wrappers))
    config.write_text(config.read_text().replace(f'python = "{sys.executable}"', f'python = "{python}"'))

    result = squashkit("--config", str(config), "backup", "--env", "dev")
    assert result.code == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    argv = record.read_text()
    assert "pg_dump" in argv and "manage.py" in argv and "pg_restore" in argv
    secret_forms = {OWNER_PASSWORD, OWNER_PASSWORD.replace(" ", "%20"), __import__("urllib.parse").parse.quote(OWNER_PASSWORD, safe="")}
    for secret in secret_forms:
        assert secret not in argv
        assert secret not in result.stdout and secret not in result.stderr
        for file in path.rglob("*"):
            if file.is_file() and file.suffix != ".gz":
                assert secret.encode() not in file.read_bytes(), file
        with tarfile.open(path / "migrations.tar.gz") as archive:
            for member in archive.getmembers():
                if member.isfile():
                    assert secret.encode() not in archive.extractfile(member).read()


def test_other_postgres_aliases_get_their_own_files(pg, sample_db, tmp_path):
    analytics = create_database(pg, unique_name("analytics"))
    try:
        url = pg.url(analytics, user=OWNER, password=OWNER_PASSWORD)
        manage(pg, sample_db.name, "migrate", "--database", "analytics", "-v", "0", ANALYTICS_DATABASE_URL=url)
        with psycopg.connect(**pg.conninfo(analytics), autocommit=True) as conn:
            conn.execute(
                """INSERT INTO analytics_pageview (product_id, path, session_key, referrer, viewed_at)
                   SELECT i, '/products/' || i, md5(i::text), CASE WHEN i % 3 = 0 THEN NULL ELSE 'https://example.org/ü' END,
                          '2026-01-01'::timestamptz + i * interval '1 minute'
                   FROM generate_series(1, 300) i"""
            )
        config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url(), "ANALYTICS_DATABASE_URL": url}})
        result = squashkit("--config", str(config), "backup", "--env", "dev")
        assert result.code == 0, result.stderr
        path = Path(result.stdout.strip().splitlines()[-1])
        assert (path / "analytics.json.gz").is_file() and (path / "analytics.dump").is_file()
        entry = read_manifest(path).alias("analytics")
        assert entry.database == analytics
        restored = restore_with_pg_restore(pg, path / "analytics.dump")
        try:
            with psycopg.connect(**pg.conninfo(analytics)) as source, psycopg.connect(**pg.conninfo(restored)) as copy:
                expected = table_fingerprints(source, skip=("django_migrations",))
                assert table_fingerprints(copy, skip=("django_migrations",)) == expected
                assert sum(rows for rows, _ in expected.values()) > 0
        finally:
            drop_database(pg, restored)
    finally:
        drop_database(pg, analytics)


@pytest.mark.parametrize("how", ["--env", "SQUASHKIT_ENV"])
def test_environment_is_chosen_by_flag_or_variable(sample_db, tmp_path, how):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}, "prod": {"DATABASE_URL": "postgres:///nope"}})
    if how == "--env":
        result = squashkit("--config", str(config), "backup", "--env", "dev")
    else:
        result = squashkit("--config", str(config), "backup", env={"SQUASHKIT_ENV": "dev"})
    assert result.code == 0, result.stderr
    assert read_manifest(Path(result.stdout.strip().splitlines()[-1])).environment == "dev"
