"""A squash moves no data (issue 11): it rewrites django_migrations in one transaction on the live
database, ends no session, keeps every write made during it, and is undone, killed or finished,
without touching the data."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import OWNER, OWNER_PASSWORD
from tests.test_pipeline import PROD_OWNER, PROD_PASSWORD, make_prod, prod_role, project  # noqa: F401 (fixtures)
from tests.test_resume import assert_consistent, databases, is_squashed, killed

OWN = ("catalog", "orders", "community", "analytics")


def own_rows(project, dbname: str) -> list[tuple]:
    """The project apps' rows of django_migrations, ids and times included."""
    with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
        return conn.execute(
            "SELECT id, app, name, applied FROM django_migrations WHERE app = ANY(%s) ORDER BY id", [list(OWN)]).fetchall()


def third_party_rows(project, dbname: str) -> list[tuple]:
    with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
        return conn.execute(
            "SELECT id, app, name, applied FROM django_migrations WHERE NOT app = ANY(%s) ORDER BY id", [list(OWN)]).fetchall()


def assert_clean(project, dbname: str) -> None:
    """Files and rows agree both ways: every file applied, no model change without a file."""
    assert_consistent(project, dbname)
    project.manage(dbname, "makemigrations", "--check", "--dry-run")


def journal_events(project) -> list[dict]:
    events = []
    for path in sorted((project.root / "backups").glob("*.journal")) if (project.root / "backups").is_dir() else []:
        for line in path.read_text().splitlines()[1:]:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line being written
    return events


class Writer(threading.Thread):
    """A client writing through a whole squash, on one connection it never reopens: it updates a
    product, adds a session and adds a tag every few tens of milliseconds, from the start (the
    backup reads one snapshot, so rows added meanwhile are simply not in it)."""

    def __init__(self, project):
        super().__init__(daemon=True)
        self.project, self.stop = project, threading.Event()
        self.tags: list[tuple[float, int]] = []
        self.sessions: list[str] = []
        self.price = None
        self.errors: list[str] = []
        self.pid = None

    def run(self):
        try:
            # A superuser's session: one a rebuild would have to end, and could not as the owner.
            with psycopg.connect(**self.project.pg.conninfo(self.project.dev), autocommit=True) as conn:
                self.pid = conn.info.backend_pid
                product = conn.execute("SELECT min(id) FROM catalog_product").fetchone()[0]
                number = 0
                while not self.stop.is_set():
                    number += 1
                    self.price = conn.execute(
                        "UPDATE catalog_product SET price = price + 1 WHERE id = %s RETURNING price", [product]).fetchone()[0]
                    key = f"writer-{number:06d}"
                    conn.execute("INSERT INTO django_session (session_key, session_data, expire_date) VALUES (%s, 'x', now())",
                                 [key])
                    self.sessions.append(key)
                    tag = conn.execute("INSERT INTO catalog_tag (name) VALUES (%s) RETURNING id", [f"written {key}"]).fetchone()[0]
                    self.tags.append((time.time(), tag))
                    time.sleep(0.03)
        except psycopg.Error as exc:
            self.errors.append(str(exc))


def test_a_squash_keeps_every_row_written_during_it_and_ends_no_session(project):
    files = project.migration_files()
    writer = Writer(project)
    writer.start()
    try:
        result = project.run("squash", "--yes", "--accept-loss")
    finally:
        writer.stop.set()
        writer.join(30)
    assert result.code == 0, result.stderr
    assert writer.errors == [], writer.errors  # its session was never ended, nothing it did failed
    # Tags went in before, during and after the rewrite of django_migrations.
    events = journal_events(project)
    rewrite = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
               for e in events if e.get("step") == "rewrite history"]
    assert len(rewrite) == 2
    assert any(at < rewrite[0] for at, _ in writer.tags) and any(at > rewrite[1] for at, _ in writer.tags)
    with psycopg.connect(**project.pg.conninfo(project.dev)) as conn:
        assert conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = %s", [writer.pid]).fetchone() is None  # closed by us
        tags = {row[0] for row in conn.execute("SELECT id FROM catalog_tag WHERE name LIKE 'written writer-%%'")}
        sessions = {row[0] for row in conn.execute("SELECT session_key FROM django_session WHERE session_key LIKE 'writer-%%'")}
        price = conn.execute("SELECT price FROM catalog_product WHERE id = (SELECT min(id) FROM catalog_product)").fetchone()[0]
    assert tags == {tag for _, tag in writer.tags} and len(tags) > 10
    assert sessions == set(writer.sessions)
    assert price == writer.price
    assert is_squashed(project.migration_files()) and project.migration_files() != files
    assert_clean(project, project.dev)
    assert databases(project) == {project.dev}  # nothing built beside it, nothing kept


def test_a_squash_rewrites_only_the_project_apps_rows_and_fakes_nothing_else(project):
    before, third_party = project.fingerprint(project.dev), third_party_rows(project, project.dev)
    old = own_rows(project, project.dev)
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert "the new migrations build exactly the live schema" in result.stderr
    assert project.fingerprint(project.dev) == before
    assert third_party_rows(project, project.dev) == third_party  # ids and times too
    new = own_rows(project, project.dev)
    assert not {row[0] for row in old} & {row[0] for row in new}
    assert len({row[3] for row in new}) == 1  # one transaction: one now()
    bundle = Path(result.stdout.strip().splitlines()[-1])
    saved = json.loads((bundle / "history.json").read_text())
    assert [(r["id"], r["app"], r["name"]) for r in saved["databases"][0]["before"]] == [row[:3] for row in old]
    assert [tuple(n) for n in saved["databases"][0]["after"]] == [row[1:3] for row in new]
    # makemigrations ran against the empty scratch database, never against the live rows naming the old files.
    (made,) = [e for e in journal_events(project) if e.get("step") == "makemigrations" and e["event"] == "started"]
    assert made["changed"]["databases"] == {"default": project.dev + "__squashkit_scratch"}


def test_rollback_migrations_only_keeps_every_write_made_after_the_squash(project):
    files, rows = project.migration_files(), own_rows(project, project.dev)
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    bundle = result.stdout.strip().splitlines()[-1]
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('written after the squash')")
        conn.execute("UPDATE orders_order SET reference = reference || '-after' WHERE id = (SELECT min(id) FROM orders_order)")
    written = project.fingerprint(project.dev)

    back = project.run("rollback", bundle, "--migrations-only", "--yes")
    assert back.code == 0, back.stderr
    assert project.fingerprint(project.dev) == written  # every write since the squash is there
    assert project.migration_files() == files and own_rows(project, project.dev) == rows  # ids and times too
    assert_clean(project, project.dev)
    again = project.run("rollback", bundle, "--migrations-only", "--yes")
    assert again.code == 2 and "nothing to roll back" in again.stderr, again.stderr


def test_rollback_migrations_only_refuses_when_migrations_were_applied_since(project):
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    bundle = result.stdout.strip().splitlines()[-1]
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('catalog', '0004_added_since', now())")
    files, rows, data = project.migration_files(), own_rows(project, project.dev), project.fingerprint(project.dev)
    refused = project.run("rollback", bundle, "--migrations-only", "--yes")
    assert refused.code == 2, refused.stderr
    assert "migrations applied since" in refused.stderr.strip().splitlines()[-1]
    assert project.migration_files() == files and own_rows(project, project.dev) == rows and project.fingerprint(project.dev) == data
    plain = project.run("backup")
    refused = project.run("rollback", plain.stdout.strip().splitlines()[-1], "--migrations-only", "--yes")
    assert refused.code == 2 and "holds no history.json" in refused.stderr, refused.stderr


def test_a_squash_that_fails_after_its_commit_puts_the_rows_and_the_files_back(project):
    files, rows, data = project.migration_files(), own_rows(project, project.dev), project.fingerprint(project.dev)
    result = project.run("squash", "--yes", "--accept-loss", env={"SQUASHKIT_TEST_FAULT": "after-rewrite:dev"})
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "Nothing was lost" in error and "django_migrations rows were put back" in error, error
    assert project.migration_files() == files and own_rows(project, project.dev) == rows
    assert project.fingerprint(project.dev) == data
    assert not list((project.root / "backups").glob("*/history.json"))  # the bundle is a plain backup again
    assert_clean(project, project.dev)
    assert "rolled back" in project.run("status").stdout or "failed" in project.run("status").stdout


@pytest.mark.parametrize("step", ["backup", "delete migrations", "makemigrations", "schema equivalence",
                                  "rewrite history", "verify"])
def test_killed_squash_resumes_to_before_or_finished(project, step):
    data, files, rows = project.fingerprint(project.dev), project.migration_files(), own_rows(project, project.dev)
    third_party = third_party_rows(project, project.dev)
    killed(project, "squash", "--yes", "--accept-loss", at=f"dev:{step}")
    assert project.fingerprint(project.dev) == data  # the data is never touched
    assert third_party_rows(project, project.dev) == third_party
    if step == "verify":  # the rewrite had committed: finished
        assert is_squashed(project.migration_files())
        assert {row[1:3] for row in own_rows(project, project.dev)} != {row[1:3] for row in rows}
    else:  # before it committed: undone, to the very rows
        assert project.migration_files() == files and own_rows(project, project.dev) == rows
    assert databases(project) == {project.dev}  # the scratch database is gone too
    assert_clean(project, project.dev)


@pytest.mark.parametrize("step", ["put back migrations", "restore history default", "verify"])
def test_killed_rollback_migrations_only_is_finished_by_resume(project, step):
    files, rows = project.migration_files(), own_rows(project, project.dev)
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('written after the squash')")
    written = project.fingerprint(project.dev)
    killed(project, "rollback", result.stdout.strip().splitlines()[-1], "--migrations-only", "--yes", at=f"dev:{step}")
    assert project.fingerprint(project.dev) == written
    assert project.migration_files() == files and own_rows(project, project.dev) == rows
    assert_clean(project, project.dev)


def test_squash_in_place_without_rebuild_is_refused(project):
    data, files = project.fingerprint(project.dev), project.migration_files()
    result = project.run("squash", "--yes", "--accept-loss", "--in-place")
    assert result.code == 2 and "goes with --rebuild" in result.stderr.strip().splitlines()[-1], result.stderr
    assert project.fingerprint(project.dev) == data and project.migration_files() == files


def test_a_second_squash_replaces_rows_whose_names_the_new_files_reuse(project):
    """Squashed once, then a model change migrated: the next squash regenerates 0001_initial, whose
    name an old applied row already holds. The rows are replaced, not matched by name, and the new
    files are proved against the live schema (the added column included)."""
    assert project.run("squash", "--yes", "--accept-loss").code == 0
    project.run("cleanup", "--keep", "0", "--yes")
    subprocess_commit(project)
    models = project.root / "catalog" / "models.py"
    text = models.read_text()
    marker = "class Tag(models.Model):\n"
    models.write_text(text.replace(marker, marker + "    note = models.TextField(blank=True, default='')\n", 1))
    project.manage(project.dev, "makemigrations", "catalog", "-n", "tag_note")
    project.manage(project.dev, "migrate", "-v", "0")
    subprocess_commit(project)
    rows, data = own_rows(project, project.dev), project.fingerprint(project.dev)
    assert ("catalog", "0001_initial") in {row[1:3] for row in rows}
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert not (project.root / "catalog" / "migrations" / "0004_tag_note.py").exists()
    assert "note" in (project.root / "catalog" / "migrations" / "0001_initial.py").read_text()
    new = own_rows(project, project.dev)
    assert not {row[0] for row in rows} & {row[0] for row in new}
    assert ("catalog", "0004_tag_note") not in {row[1:3] for row in new}
    assert project.fingerprint(project.dev) == data
    assert_clean(project, project.dev)


def subprocess_commit(project) -> None:
    """Commit the project copy's files, as a team would between squashes (squash refuses uncommitted files)."""
    import subprocess

    git = ["git", "-C", str(project.root), "-c", "user.name=t", "-c", "user.email=t@t"]
    if not (project.root / ".git").exists():
        subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "squash", "--allow-empty"], check=True)


def test_restore_with_squash_restores_then_squashes_without_a_second_copy(project):
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    result = project.run("restore", made.stdout.strip().splitlines()[-1], "--env", "prod", "--squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    assert is_squashed(project.migration_files())
    project.manage(project.prod, "migrate", "--check", owner=PROD_OWNER, password=PROD_PASSWORD)
    assert "django_migrations rewritten" in result.stderr
    assert databases(project) == {project.dev, project.prod, project.prod + "__squashkit_prev"}  # the restore's kept one


def test_killed_restore_with_squash_resumes_to_before(project):
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    prod, files = project.fingerprint(project.prod), project.migration_files()
    killed(project, "restore", made.stdout.strip().splitlines()[-1], "--env", "prod", "--squash", "--yes", "--accept-loss",
           at="prod:rewrite history")
    assert project.fingerprint(project.prod) == prod and project.migration_files() == files
    assert databases(project) == {project.dev, project.prod}
    project.manage(project.prod, "migrate", "--check", owner=PROD_OWNER, password=PROD_PASSWORD)


def test_the_dry_run_plan_shows_the_rewrite_and_no_copy(project):
    result = project.run("squash", "--dry-run", "--accept-loss")
    assert result.code == 0, result.stderr
    plan = result.stdout
    assert 'LOCK TABLE "django_migrations" IN SHARE ROW EXCLUSIVE MODE' in plan
    assert "DELETE FROM \"django_migrations\" WHERE app = ANY('{catalog,orders,community,analytics}'::text[])" in plan
    assert f'CREATE DATABASE "{project.dev}__squashkit_scratch" OWNER "{OWNER}"' in plan
    assert "__squashkit_new" not in plan and "ALTER DATABASE" not in plan and "pg_restore" not in plan
    assert OWNER_PASSWORD not in plan
    rebuild = project.run("squash", "--dry-run", "--rebuild", "--accept-loss")
    assert rebuild.code == 0 and "__squashkit_new" in rebuild.stdout and "pg_restore" in rebuild.stdout


def test_a_squash_rewrites_every_database_of_the_project(project):
    """analytics on a database of its own (the router's second alias): both django_migrations are
    rewritten, each proved against its own scratch database, and neither database's data moves."""
    import os
    import subprocess
    import sys

    from tests.conftest import create_database, drop_database

    analytics = create_database(project.pg, project.dev + "_an")
    try:
        urls = {"DATABASE_URL": project.pg.url(project.dev, user=OWNER, password=OWNER_PASSWORD),
                "ANALYTICS_DATABASE_URL": project.pg.url(analytics, user=OWNER, password=OWNER_PASSWORD)}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **urls}
        subprocess.run([sys.executable, str(project.root / "manage.py"), "migrate", "--database", "analytics", "-v", "0"],
                       cwd=project.root, env=env, check=True, capture_output=True)
        with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
            conn.execute("DROP TABLE analytics_pageview")  # it lives on the analytics database now
        with psycopg.connect(**project.pg.conninfo(analytics), autocommit=True) as conn:
            conn.execute("INSERT INTO analytics_pageview (product_id, path, session_key, viewed_at) "
                         "SELECT i, '/p/' || i, md5(i::text), now() FROM generate_series(1, 50) i")
        config = project.root / "squashkit.toml"
        config.write_text(config.read_text().replace(
            f'env = {{ DATABASE_URL = "{urls["DATABASE_URL"]}" }}',
            f'env = {{ DATABASE_URL = "{urls["DATABASE_URL"]}", ANALYTICS_DATABASE_URL = "{urls["ANALYTICS_DATABASE_URL"]}" }}', 1))
        data = {name: project.fingerprint(name) for name in (project.dev, analytics)}
        rows = {name: own_rows(project, name) for name in (project.dev, analytics)}
        result = project.run("squash", "--yes", "--accept-loss")
        assert result.code == 0, result.stderr
        assert {name: project.fingerprint(name) for name in data} == data
        for name in (project.dev, analytics):
            new = own_rows(project, name)
            assert new and not {row[0] for row in rows[name]} & {row[0] for row in new}
            assert ("catalog", "0001_initial") in {row[1:3] for row in new}
        subprocess.run([sys.executable, str(project.root / "manage.py"), "migrate", "--check", "--database", "analytics"],
                       cwd=project.root, env=env, check=True, capture_output=True)
        assert_clean(project, project.dev)
    finally:
        drop_database(project.pg, analytics)


def test_promote_with_squash_keeps_the_source_in_place_and_its_record_sees_no_drift_after(project):
    """dev is squashed where it is (no copy, nothing kept), prod gets dev's rows; the drift record of
    dev takes the squash's own rewrite of django_migrations in, so promoting back needs no --force."""
    make_prod(project)
    result = project.run("promote", "dev-to-prod", "--squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert databases(project) == {project.dev, project.prod, project.prod + "__squashkit_prev"}
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    assert_clean(project, project.dev)
    back = project.run("promote", "prod-to-dev", "--yes")
    assert back.code == 0, back.stderr
    assert "has taken no writes since" in back.stderr
