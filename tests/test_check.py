"""`squashkit check` answers, one line per check, what a later command would otherwise fail on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
from psycopg import sql

from squashkit import schema
from squashkit.commands.check import migration_finding
from tests.conftest import project_env, squashkit, write_config
from tests.test_schema import copy_project, database_exists


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
    assert found["models"]["status"] == "ok"
    assert found["schema (default)"]["status"] == "ok", found["schema (default)"]["detail"]
    assert "schema names (default)" not in found  # migrated from these very files: not even a name differs
    squash = found["squash (default)"]
    assert squash["status"] == "ok" and "moves no data" in squash["detail"] and "squash --rebuild" in squash["detail"]


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
        assert found["squash (default)"]["status"] == "warn" and "scratch database" in found["squash (default)"]["detail"]
        assert "CREATEDB" in found["privileges (default)"]["detail"]
    finally:
        with psycopg.connect(**pg.conninfo()) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier("sample_owner")))


def test_check_fails_on_schema_drift(pg, sample_db, tmp_path):
    with sample_db.connect() as conn:
        conn.execute("ALTER TABLE catalog_product ADD COLUMN note text")
        conn.execute("ALTER INDEX catalog_product_category_id_35bf920b RENAME TO catalog_item_category_id_35bf920b")
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})

    result = squashkit("--config", str(config), "check", "--env", "dev", "--json")

    assert result.code == 1
    found = findings(result)
    assert found["schema (default)"]["status"] == "fail"
    assert "extra column catalog_product.note" in found["schema (default)"]["detail"]
    assert found["schema names (default)"]["status"] == "ok"  # the renamed index is only a name
    assert "catalog_item_category_id_35bf920b" in found["schema names (default)"]["detail"]
    assert found["migrations catalog (default)"]["status"] == "warn"  # its rows and files agree, its tables do not
    assert not database_exists(pg, schema.scratch_name(sample_db.name))


def test_check_explains_deleted_migration_files_and_names_the_repair(pg, sample_db, tmp_path):
    project = copy_project(tmp_path)
    for path in (project / "analytics" / "migrations").glob("0*.py"):
        path.unlink()
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}}, project=project)

    result = squashkit("--config", str(config), "check", "--env", "dev")

    assert result.code == 1
    lines = {}  # "fail migrations analytics (default)" -> the whole line
    for line in result.stdout.splitlines():
        status, rest = line.split(None, 1)
        lines[f"{status} {rest.split(':', 1)[0]}"] = line
    app = lines["fail migrations analytics (default)"]
    assert "migration files were deleted" in app and "0001_initial, 0002_pageview_referrer" in app
    assert "squashkit squash" in app
    assert "DELETE FROM django_migrations WHERE app = 'analytics'" in app and "manage.py migrate analytics --fake" in app
    assert "extra table analytics_pageview" in lines["fail schema (default)"]  # the files build no such table
    assert "analytics" in lines["warn models"]  # makemigrations would write a new 0001_initial
    assert "ok migrations catalog (default)" in lines


def test_check_explains_a_regenerated_initial_migration_whose_row_exists(pg, sample_db, tmp_path):
    """The seed's story: files deleted, a field added, makemigrations writes 0001_initial, its old row hides it."""
    project = copy_project(tmp_path)
    for path in (project / "analytics" / "migrations").glob("0*.py"):
        path.unlink()
    models = project / "analytics" / "models.py"
    models.write_text(models.read_text().replace(
        "    viewed_at = models.DateTimeField()\n",
        "    viewed_at = models.DateTimeField()\n    duration_ms = models.IntegerField(null=True)\n",
    ))
    subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "analytics", "-v", "0"],
        cwd=project, env=project_env(pg, sample_db.name), check=True, capture_output=True,
    )
    assert sorted(p.name for p in (project / "analytics" / "migrations").glob("0*.py")) == ["0001_initial.py"]
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}}, project=project)

    found = findings(squashkit("--config", str(config), "check", "--env", "dev", "--json"))

    app = found["migrations analytics (default)"]
    assert app["status"] == "fail"
    assert "regenerated" in app["detail"] and "0002_pageview_referrer have no file" in app["detail"]
    assert "manage.py migrate analytics --fake" in app["detail"]
    assert found["schema (default)"]["status"] == "fail"
    assert "missing column analytics_pageview.duration_ms" in found["schema (default)"]["detail"]
    assert found["models"]["status"] == "ok"  # the models and the files agree: only the database is behind


def test_check_says_stale_rows_are_harmless_when_the_schema_matches(pg, sample_db, tmp_path):
    with sample_db.connect() as conn:  # a row left by a squashed-away migration
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('orders', '0000_gone', now())")
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})

    found = findings(squashkit("--config", str(config), "check", "--env", "dev", "--json"))

    assert found["migrations orders (default)"]["status"] == "warn"
    assert "0000_gone" in found["migrations orders (default)"]["detail"]
    assert "migrate --prune" in found["migrations orders (default)"]["detail"]
    assert found["schema (default)"]["status"] == "ok"


def test_check_takes_seconds_not_minutes(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    started = time.monotonic()
    result = squashkit("--config", str(config), "check", "--env", "dev")
    took = time.monotonic() - started
    assert result.code == 0, result.stdout + result.stderr
    assert took < 30, f"check took {took:.1f} s"


def test_rows_a_squashed_migration_replaces_are_not_migrations_without_a_file():
    """Django records the migrations a squashed one replaces, and needs no file for them; the squashed
    one counts as applied once all it replaces are recorded (migrate writes its own row later)."""
    files = ["0001_squashed_0003_ticket", "0004_index"]
    replaces = {"0001_squashed_0003_ticket": ["0001_initial", "0002_starts_at", "0003_ticket"]}
    replaced = set(replaces["0001_squashed_0003_ticket"])
    rows = ["0001_initial", "0002_starts_at", "0003_ticket", "0004_index"]

    assert migration_finding("events", files, rows, False, replaces=replaces, replaced=replaced) == (
        "ok", "2 applied (3 recorded rows are migrations a squashed one replaces)")
    assert migration_finding("events", files, rows + ["0001_squashed_0003_ticket"], False, replaces=replaces, replaced=replaced)[0] == "ok"
    status, detail = migration_finding("events", files, rows[:2] + ["0004_index"], False, replaces=replaces, replaced=replaced)
    assert status == "warn" and "0001_squashed_0003_ticket" in detail  # half of what it replaces: not applied
    status, detail = migration_finding("events", files, rows, False)  # what check said before it read replaces
    assert status == "warn" and "3 recorded migrations have no file" in detail
