"""The promote drift guard sees every write prod took since dev was refreshed from it, and nothing else."""

from __future__ import annotations

import os
import stat
import time

import psycopg
import pytest
from psycopg import sql

from squashkit import cluster as cluster_module
from squashkit import lineage, postgres
from squashkit.errors import BadInput
from tests.conftest import SEED_ROWS


def take(sample_db, **connect) -> lineage.Fingerprint:
    with psycopg.connect(**sample_db.pg.conninfo(sample_db.name), autocommit=True, **connect) as conn:
        return lineage.fingerprint(conn)


def write(sample_db, *statements: str) -> None:
    with sample_db.connect() as conn:
        for statement in statements:
            conn.execute(statement)


def test_an_untouched_database_has_the_same_fingerprint(sample_db):
    first, second = take(sample_db), take(sample_db)
    assert lineage.changes(first, second) == []
    labels = [t.label for t in first.tables]
    assert "catalog_product" in labels and "django_migrations" in labels and "django_session" not in labels
    product = first.by_table()[("public", "catalog_product")]
    assert product.rows == SEED_ROWS and product.content != "0:0"


WRITES = {
    "insert": (
        ["INSERT INTO catalog_tag (name) VALUES ('drift'), ('drift 2'), ('drift 3')"],
        lambda before: [f"catalog_tag: {before['catalog_tag']:,} -> {before['catalog_tag'] + 3:,} rows"],
    ),
    "update": (
        ["UPDATE catalog_product SET name = name || '!' WHERE id = (SELECT min(id) FROM catalog_product)"],
        lambda before: ["catalog_product: same count, contents changed"],
    ),
    "delete": (
        ["DELETE FROM community_comment WHERE id = (SELECT max(id) FROM community_comment)"],
        lambda before: [f"community_comment: {before['community_comment']:,} -> {before['community_comment'] - 1:,} rows"],
    ),
    # One row out, another in: the count stays, the contents do not.
    "replace": (
        [
            "DELETE FROM catalog_product_tags WHERE id = (SELECT max(id) FROM catalog_product_tags)",
            "INSERT INTO catalog_product_tags (product_id, tag_id) SELECT min(id), (SELECT max(id) FROM catalog_tag) FROM catalog_product "
            "ON CONFLICT DO NOTHING",
        ],
        lambda before: ["catalog_product_tags: same count, contents changed"],
    ),
    # Two rows swap a value: every value is still there, in other rows.
    "swap": (
        [
            """WITH two AS (SELECT min(id) AS a, max(id) AS b FROM catalog_product)
               UPDATE catalog_product p SET price = CASE WHEN p.id = two.a THEN (SELECT price FROM catalog_product WHERE id = two.b)
                                                          ELSE (SELECT price FROM catalog_product WHERE id = two.a) END
               FROM two WHERE p.id IN (two.a, two.b)
                 AND (SELECT price FROM catalog_product WHERE id = two.a) <> (SELECT price FROM catalog_product WHERE id = two.b)"""
        ],
        lambda before: ["catalog_product: same count, contents changed"],
    ),
    "migrated": (
        ["INSERT INTO django_migrations (app, name, applied) VALUES ('catalog', '9999_on_prod_only', now())"],
        lambda before: [f"django_migrations: {before['django_migrations']:,} -> {before['django_migrations'] + 1:,} rows"],
    ),
}


@pytest.mark.parametrize("kind", WRITES)
def test_every_kind_of_write_is_seen(sample_db, kind):
    statements, expected = WRITES[kind]
    recorded = take(sample_db)
    write(sample_db, *statements)
    rows = {t.label: t.rows for t in recorded.tables}
    assert lineage.changes(recorded, take(sample_db)) == expected(rows)


def test_sessions_do_not_count_as_drift(sample_db):
    recorded = take(sample_db)
    write(sample_db, "INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('k' || md5(random()::text), 'x', now())")
    assert lineage.changes(recorded, take(sample_db)) == []


def test_new_dropped_and_empty_tables(sample_db):
    write(sample_db, "CREATE TABLE empty_then_filled (id int, note text)", "CREATE TABLE doomed (id int)")
    recorded = take(sample_db)
    empty = recorded.by_table()[("public", "empty_then_filled")]
    assert (empty.rows, empty.content) == (0, "0:0")
    assert lineage.changes(recorded, take(sample_db)) == []
    write(sample_db, "INSERT INTO empty_then_filled VALUES (1, NULL)", "DROP TABLE doomed", "CREATE TABLE newcomer (id int)")
    assert lineage.changes(recorded, take(sample_db)) == [
        "table doomed dropped (had 0 rows)",
        "empty_then_filled: 0 -> 1 rows",
        "new table newcomer (0 rows)",
    ]


def test_a_row_of_nulls_differs_from_no_row_and_from_an_empty_string(sample_db):
    write(sample_db, "CREATE TABLE nullable (note text)")
    empty = take(sample_db)
    write(sample_db, "INSERT INTO nullable VALUES (NULL)")
    with_null = take(sample_db)
    write(sample_db, "UPDATE nullable SET note = ''")
    with_empty_string = take(sample_db)
    assert lineage.changes(empty, with_null) == ["nullable: 0 -> 1 rows"]
    assert lineage.changes(with_null, with_empty_string) == ["nullable: same count, contents changed"]


def test_maintenance_and_session_settings_are_not_drift(pg, sample_db):
    """VACUUM FULL rewrites every table in another physical order, VACUUM FREEZE rewrites tuple
    headers, a restart empties the caches; another TimeZone or float format prints rows
    differently. None of that is a write."""
    recorded = take(sample_db)
    with sample_db.connect() as conn:
        conn.execute("UPDATE catalog_product SET name = name WHERE id % 3 = 0")  # new row versions, same values
        conn.execute("VACUUM FULL")
        conn.execute("VACUUM FREEZE")
        conn.execute("CLUSTER catalog_product USING catalog_product_pkey")
    cluster_module._run_server_program(pg.bindir / "pg_ctl", "restart", "-w", "-m", "fast", "-D", str(pg.data_dir))
    for _ in range(50):
        try:
            psycopg.connect(**pg.conninfo()).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.2)
    settings = "-c TimeZone=Pacific/Chatham -c DateStyle=SQL,DMY -c extra_float_digits=-3 -c IntervalStyle=sql_standard -c bytea_output=escape"
    assert lineage.changes(recorded, take(sample_db, options=settings)) == []


def test_names_that_need_quoting_are_fingerprinted(sample_db):
    weird = 'we"ird; DROP TABLE x; -- ñ'
    with sample_db.connect() as conn:
        conn.execute("CREATE TABLE canary (id int)")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(weird)))
        conn.execute(sql.SQL("CREATE TABLE {} (id int, {} text)").format(sql.Identifier(weird, weird), sql.Identifier(weird)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(sql.Identifier(weird, weird)))
    recorded = take(sample_db)
    assert recorded.by_table()[(weird, weird)].rows == 1
    with sample_db.connect() as conn:
        conn.execute(sql.SQL("UPDATE {} SET {} = 'b'").format(sql.Identifier(weird, weird), sql.Identifier(weird)))
        assert conn.execute("SELECT to_regclass('canary')").fetchone()[0] is not None
    assert lineage.changes(recorded, take(sample_db)) == [f"{weird}.{weird}: same count, contents changed"]


def test_inside_a_backup_snapshot_it_sees_the_snapshot_and_leaves_its_settings(sample_db):
    """Taken in the snapshot pg_dump uses, the fingerprint describes exactly what the dump holds."""
    params = postgres.ConnectionParams(dbname=sample_db.name, **{k: v for k, v in sample_db.pg.conninfo().items() if k in ("host", "port", "user", "password")})
    with postgres.connect(params) as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        with postgres.snapshot(conn):
            conn.execute("SELECT 1")
            write(sample_db, "INSERT INTO catalog_tag (name) VALUES ('after the snapshot')")
            inside = lineage.fingerprint(conn)
            assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Kolkata"
    rows = {t.label: t.rows for t in inside.tables}
    assert lineage.changes(inside, take(sample_db)) == [f"catalog_tag: {rows['catalog_tag']:,} -> {rows['catalog_tag'] + 1:,} rows"]


def test_the_record_is_private_and_the_guard_refuses_with_the_changes(sample_db, tmp_path):
    recorded = take(sample_db)
    path = lineage.record(tmp_path, source_env="prod", target_env="dev", database=sample_db.name, fingerprint=recorded, bundle=tmp_path / "prod-x")
    assert path == tmp_path / "lineage" / "dev.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(os.listdir(path.parent)) == ["dev.json"]  # no temporary file left
    assert lineage.read(tmp_path, "dev").fingerprint == recorded
    assert lineage.read(tmp_path, "prod") is None

    unchanged = take(sample_db)
    assert lineage.require_unchanged(tmp_path, source_env="dev", target_env="prod", current=unchanged) == []

    write(sample_db, "INSERT INTO catalog_tag (name) VALUES ('order on prod')", "UPDATE catalog_product SET price = price + 1 WHERE id = (SELECT min(id) FROM catalog_product)")
    current = take(sample_db)
    with pytest.raises(BadInput) as refused:
        lineage.require_unchanged(tmp_path, source_env="dev", target_env="prod", current=current)
    message = str(refused.value)
    assert "\n" not in message and "prod took writes since dev was refreshed from it" in message
    assert "catalog_product: same count, contents changed" in message and "catalog_tag: " in message and "--force" in message
    assert lineage.require_unchanged(tmp_path, source_env="dev", target_env="prod", current=current, force=True) == lineage.changes(recorded, current)
    # A record of a refresh from somewhere else says nothing about prod.
    lineage.record(tmp_path, source_env="staging", target_env="dev", database="x", fingerprint=recorded, bundle=None)
    assert lineage.require_unchanged(tmp_path, source_env="dev", target_env="prod", current=current) == []


def test_a_damaged_record_is_a_one_line_bad_input(tmp_path):
    (tmp_path / "lineage").mkdir()
    (tmp_path / "lineage" / "dev.json").write_text('{"format_version": 1, "source_env": ')
    with pytest.raises(BadInput, match="dev.json is damaged .*delete it"):
        lineage.read(tmp_path, "dev")
