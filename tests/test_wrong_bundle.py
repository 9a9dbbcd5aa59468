"""Never the wrong bundle into the wrong database: what a bundle belongs to is checked before anything changes.

Two projects on one cluster: a copy of sample_project, and a plain ``django-admin startproject`` one
(Django's own apps and nothing else). Each one's bundle is handed to the other's rollback, json
rollback and restore. And a bundle taken before a third-party app from PyPI gained a migration
(django-rest-knox 4.2.0, then 5.0.2 with its 0009) comes back with that migration run for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from squashkit.bundle import read_manifest
from tests.conftest import OWNER, OWNER_PASSWORD, _toml, create_database, drop_database, squashkit, table_fingerprints, unique_name
from tests.test_pipeline import make_prod, project_copy, prod_role  # noqa: F401 - prod_role is a fixture

OTHER_SETTINGS = """
import os
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": os.environ["OTHER_DB"], "USER": os.environ["OTHER_USER"],
    "PASSWORD": os.environ["OTHER_PASSWORD"], "HOST": os.environ["OTHER_HOST"], "PORT": os.environ["OTHER_PORT"],
}}
INSTALLED_APPS += [app for app in os.environ.get("OTHER_APPS", "").split(",") if app]
"""


class Other:
    """A ``django-admin startproject`` project (no app of its own) on a database of its own."""

    def __init__(self, pg, root: Path, dbname: str, pythonpath: str = "", apps: str = ""):
        self.pg, self.root, self.dbname = pg, root, dbname
        self.env = {"OTHER_DB": dbname, "OTHER_USER": OWNER, "OTHER_PASSWORD": OWNER_PASSWORD, "OTHER_HOST": pg.host,
                    "OTHER_PORT": str(pg.port), "OTHER_APPS": apps, "PYTHONPATH": pythonpath}
        self.configure()

    def configure(self) -> None:
        env = ", ".join(f"{key} = {_toml(value)}" for key, value in self.env.items())
        (self.root / "squashkit.toml").write_text(
            f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
            f'[environments.dev]\nsettings = "mysite.settings"\nenv = {{ {env} }}\n')

    def manage(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | self.env
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=self.root, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    def run(self, *args: str):
        return squashkit("--config", str(self.root / "squashkit.toml"), *args)

    def fingerprint(self) -> dict:
        with psycopg.connect(**self.pg.conninfo(self.dbname)) as conn:
            return table_fingerprints(conn, skip=("django_migrations",))


def start_other(pg, where: Path, **kwargs) -> Other:
    where.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(where)], check=True)
    with (where / "mysite" / "settings.py").open("a") as settings:
        settings.write(OTHER_SETTINGS)
    other = Other(pg, where, create_database(pg, unique_name("other")), **kwargs)
    other.manage("migrate", "-v", "0")
    return other


def add_user(pg, dbname: str, name: str) -> None:
    with psycopg.connect(**pg.conninfo(dbname), autocommit=True) as conn:
        conn.execute("""INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                        is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now())""", [name])


def databases(pg) -> set[str]:
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def last_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture
def project(pg, seeded_template, prod_role, tmp_path):  # noqa: F811 - prod_role is the fixture imported above
    yield from project_copy(pg, tmp_path, seeded_template)


@pytest.fixture
def other(pg, tmp_path):
    made = start_other(pg, tmp_path / "other")
    add_user(pg, made.dbname, "someone-else")
    yield made
    drop_database(pg, made.dbname)
    for suffix in ("__squashkit_new", "__squashkit_prev"):
        drop_database(pg, made.dbname + suffix)


def test_another_projects_bundle_is_refused_before_anything_changes_and_the_kept_database_stays(pg, project, other):
    """rollback BUNDLE, rollback its db.json.gz, a lone copy of that json, and restore, each way round."""
    make_prod(project)
    assert project.run("promote", "dev-to-prod", "--yes").code == 0  # leaves prod's old database kept
    kept = project.prod + "__squashkit_prev"
    made = other.run("backup")
    assert made.code == 0, made.stderr
    theirs = Path(made.stdout.strip().splitlines()[-1])
    ours = sorted((project.root / "backups").glob("dev-*"))[-1]
    lone = other.root / "lone.json.gz"
    shutil.copyfile(theirs / "db.json.gz", lone)
    before = {name: project.fingerprint(name) for name in (project.dev, project.prod, kept)}
    before[other.dbname] = other.fingerprint()
    files = project.migration_files()
    names = databases(pg)

    attempts = [
        (project, ["rollback", str(theirs), "--env", "prod", "--yes"], "comes from another project: it holds none of this project's apps"),
        (project, ["rollback", str(theirs / "db.json.gz"), "--env", "prod", "--yes"], "comes from another project"),
        (project, ["rollback", str(lone), "--env", "prod", "--yes"], "its content types name none of this project's apps"),
        (project, ["restore", str(theirs), "--env", "prod", "--yes", "--force"], "comes from another project"),
        (other, ["rollback", str(ours), "--env", "dev", "--yes"], "its apps analytics, catalog, community, orders are not installed here"),
        (other, ["rollback", str(ours / "db.json.gz"), "--env", "dev", "--yes"], "are not installed here"),
        (other, ["restore", str(ours), "--env", "dev", "--yes"], "are not installed here"),
    ]
    for who, args, phrase in attempts:
        result = who.run(*args)
        assert result.code == 2, (args, result.stderr)
        assert phrase in last_line(result) and "Traceback" not in result.stderr, (args, result.stderr)
        assert "nothing was changed" in last_line(result).lower()
    after = {name: project.fingerprint(name) for name in (project.dev, project.prod, kept)}
    after[other.dbname] = other.fingerprint()
    assert after == before
    assert databases(pg) == names, "a side database was created or a kept one dropped"
    assert project.migration_files() == files
    assert not list((other.root / "mysite").glob("**/migrations"))


def test_a_project_without_apps_of_its_own_is_warned_and_its_squash_refused_up_front(other):
    checked = other.run("check")
    assert "no project apps" in checked.stdout + checked.stderr and "project_apps" in checked.stdout + checked.stderr
    tree = sorted(str(p) for p in other.root.rglob("*") if "__pycache__" not in p.parts)
    result = other.run("squash", "--yes")
    assert result.code == 2, result.stderr
    assert "no apps of its own to squash" in last_line(result) and "project_apps" in last_line(result)
    assert sorted(str(p) for p in other.root.rglob("*") if "__pycache__" not in p.parts) == tree
    assert not list((other.root / "backups").glob("dev-*")), "a backup was taken"
    losses = other.run("losses")
    assert "read no project app" in losses.stdout + losses.stderr


def test_a_kill_during_the_bundle_check_then_resume_changes_nothing(pg, project, other):
    make_prod(project)
    made = other.run("backup")
    theirs = Path(made.stdout.strip().splitlines()[-1])
    ours = project.run("backup", "--env", "dev")
    assert ours.code == 0, ours.stderr
    before = project.fingerprint(project.prod)
    names = databases(pg)
    killed = project.run("rollback", ours.stdout.strip().splitlines()[-1], "--env", "prod", "--yes",
                         env={"SQUASHKIT_TEST_KILL_AT": "check bundle"})
    assert killed.code == -9, killed.stderr
    resumed = project.run("resume", "--yes")
    assert resumed.code == 2 and "nothing to resume" in last_line(resumed), resumed.stderr
    assert project.fingerprint(project.prod) == before and databases(pg) == names
    assert project.run("rollback", str(theirs), "--env", "prod", "--yes").code == 2
    again = project.run("rollback", ours.stdout.strip().splitlines()[-1], "--env", "prod", "--yes")
    assert again.code == 0, again.stderr  # nothing was left held by the killed run


@pytest.fixture(scope="module")
def knox(tmp_path_factory) -> dict[str, str]:
    """django-rest-knox from PyPI at 4.2.0 (migrations up to 0008) and 5.0.2 (0009 alters a field), beside DRF."""
    where = tmp_path_factory.mktemp("knox")
    paths = {}
    for name, packages in (("drf", ["djangorestframework==3.16.1"]), ("old", ["django-rest-knox==4.2.0"]),
                           ("new", ["django-rest-knox==5.0.2"])):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--target", str(where / name), *packages], check=True, capture_output=True)
        paths[name] = str(where / name)
    return paths


def test_a_bundle_taken_before_a_third_party_upgrade_comes_back_with_the_new_migration_run_for_real(pg, tmp_path, knox):
    old = start_other(pg, tmp_path / "site", pythonpath=f"{knox['drf']}:{knox['old']}", apps="rest_framework,knox")
    try:
        add_user(pg, old.dbname, "before-the-upgrade")
        with psycopg.connect(**pg.conninfo(old.dbname), autocommit=True) as conn:
            conn.execute("""INSERT INTO knox_authtoken (digest, token_key, created, user_id, expiry)
                            SELECT 'd1', 'k1', now(), id, NULL FROM auth_user""")
        made = old.run("backup")
        assert made.code == 0, made.stderr
        bundle = Path(made.stdout.strip().splitlines()[-1])
        at_backup = old.fingerprint()
        assert ("knox", "0009_extend_authtoken_field") not in read_manifest(bundle).alias("default").facts.applied_migrations

        # pip install -U: the code is newer, the database migrated, rows written since.
        old.env["PYTHONPATH"] = f"{knox['drf']}:{knox['new']}"
        old.configure()
        old.manage("migrate", "-v", "0")
        add_user(pg, old.dbname, "after-the-upgrade")

        result = old.run("rollback", str(bundle), "--env", "dev", "--yes")
        assert result.code == 0, result.stderr
        assert "never applied" in result.stderr and "knox.0009_extend_authtoken_field" in result.stderr
        rolled = old.fingerprint()
        assert {k: v for k, v in rolled.items() if "knox" not in k} == {k: v for k, v in at_backup.items() if "knox" not in k}
        with psycopg.connect(**pg.conninfo(old.dbname)) as conn:
            assert conn.execute("SELECT digest, token_key FROM knox_authtoken").fetchall() == [("d1", "k1")]
            assert conn.execute("""SELECT character_maximum_length FROM information_schema.columns
                                   WHERE table_name = 'knox_authtoken' AND column_name = 'token_key'""").fetchone()[0] == 25
            recorded = conn.execute("SELECT app, name FROM django_migrations WHERE app = 'knox' ORDER BY id").fetchall()
        assert recorded[-1] == ("knox", "0009_extend_authtoken_field")
        old.manage("migrate", "--check")
        old.manage("makemigrations", "--check", "--dry-run")
        # The schema equals a fresh build of the code: the rollback proved it against a scratch migrate.
        assert "build exactly the restored schema" in result.stderr
    finally:
        drop_database(pg, old.dbname)
        drop_database(pg, old.dbname + "__squashkit_prev")
