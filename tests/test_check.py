"""`squashkit check` answers, one line per check, what a later command would otherwise fail on."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from tests.conftest import squashkit, write_config


def findings(result) -> dict[str, dict]:
    return {item["name"]: item for item in json.loads(result.stdout)}


def test_check_reports_a_healthy_environment(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    result = squashkit("--config", str(config), "check", "--env", "dev", "--json")
    assert result.code == 0, result.stderr
    found = findings(result)
    assert found["connection (default)"]["status"] == "ok"
    assert "PostgreSQL 15" in found["server (default)"]["detail"] or "PostgreSQL" in found["server (default)"]["detail"]
    assert found["pg_dump (default)"]["status"] == "ok"
    assert found["privileges (default)"]["status"] == "ok"  # the owner has CREATEDB
    assert found["extension pg_trgm (default)"]["status"] == "ok"  # trusted: the owner may create it
    assert found["connections (default)"]["status"] == "ok"
    for app in ("catalog", "orders", "community"):
        assert found[f"migrations {app} (default)"]["status"] == "ok"
    assert "migration_store" in found["migrations community (default)"]["detail"]  # symlink resolved


def test_check_plain_output_is_one_line_per_check(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    result = squashkit("--config", str(config), "check", "--env", "dev")
    assert result.code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 10
    assert all(line.split()[0] in ("ok", "warn", "fail") for line in lines)


def test_check_warns_about_unapplied_migrations_and_missing_createdb(pg, sample_db, tmp_path):
    with sample_db.connect() as conn:  # as if the last orders migration had never been applied
        conn.execute("DELETE FROM django_migrations WHERE app = 'orders' AND name LIKE '0005%%'")
    with psycopg.connect(**pg.conninfo()) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOCREATEDB").format(sql.Identifier("sample_owner")))
    try:
        config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
        found = findings(squashkit("--config", str(config), "check", "--env", "dev", "--json"))
        assert found["migrations orders (default)"]["status"] == "warn"
        assert "0005" in found["migrations orders (default)"]["detail"]
        assert found["privileges (default)"]["status"] == "warn"
        assert "CREATEDB" in found["privileges (default)"]["detail"]
    finally:
        with psycopg.connect(**pg.conninfo()) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier("sample_owner")))
