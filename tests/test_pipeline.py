"""restore, squash, promote and rollback keep every row, and put the target back when a step fails."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from squashkit.bundle import read_manifest, sha256
from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    SAMPLE,
    create_database,
    drop_database,
    squashkit,
    table_fingerprints,
    unique_name,
)

PROD_OWNER = "prod_owner"
PROD_PASSWORD = "prod:pass word"
SKIP = ("django_migrations",)


@pytest.fixture(scope="module")
def prod_role(pg):
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [PROD_OWNER]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(PROD_OWNER), sql.Literal(PROD_PASSWORD)))
    return PROD_OWNER


class Project:
    """A copy of sample_project (squash edits its files), with dev and prod databases of its own."""

    def __init__(self, pg, root: Path, dev: str, prod: str):
        self.pg, self.root, self.dev, self.prod = pg, root, dev, prod

    def run(self, *args: str, env: dict | None = None):
        return squashkit("--config", str(self.root / "squashkit.toml"), *args, env=env)

    def fingerprint(self, dbname: str) -> dict:
        with psycopg.connect(**self.pg.conninfo(dbname)) as conn:
            return table_fingerprints(conn, skip=SKIP)

    def applied(self, dbname: str) -> set[tuple[str, str]]:
        with psycopg.connect(**self.pg.conninfo(dbname)) as conn:
            return {tuple(row) for row in conn.execute("SELECT app, name FROM django_migrations")}

    def migration_files(self) -> dict[str, str]:
        """Every migration file of the project's apps, by path, with its sha256."""
        files = {}
        for folder in ("catalog/migrations", "orders/migrations", "community/migrations", "analytics/migrations"):
            for path in sorted((self.root / folder).glob("*.py")):
                files[str(path.relative_to(self.root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files

    def manage(self, dbname: str, *args: str, owner: str = OWNER, password: str = OWNER_PASSWORD) -> str:
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PG")}
        env["DATABASE_URL"] = self.pg.url(dbname, user=owner, password=password)
        result = subprocess.run([sys.executable, str(self.root / "manage.py"), *args], cwd=self.root, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout


@pytest.fixture
def project(pg, seeded_template, prod_role, tmp_path):
    yield from project_copy(pg, tmp_path, seeded_template)


def project_copy(pg, tmp_path: Path, template: str, prefix: str = ""):
    """A copy of sample_project, a dev copied from ``template`` and a prod name; dropped afterwards."""
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (root / "pyproject.toml").unlink()
    dev = create_database(pg, unique_name(prefix + "dev"), template=template)
    prod = unique_name(prefix + "prod")
    dev_url = pg.url(dev, user=OWNER, password=OWNER_PASSWORD)
    prod_url = pg.url(prod, user=PROD_OWNER, password=PROD_PASSWORD)
    (root / "squashkit.toml").write_text(
        f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
        f'[environments.dev]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{dev_url}" }}\n'
        f'[environments.prod]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{prod_url}" }}\n'
    )
    yield Project(pg, root, dev, prod)
    for name in (dev, prod):
        for suffix in ("", "__squashkit_new", "__squashkit_prev", "__squashkit_scratch", "__squashkit_new__squashkit_scratch",
                       "__squashkit_oldbuild", "__squashkit_freshbuild", "_fresh"):
            drop_database(pg, name + suffix)


def make_prod(project: Project) -> None:
    """A prod that differs from dev: migrated, owned by its own role, a little data of its own."""
    create_database(project.pg, project.prod, owner=PROD_OWNER)
    project.manage(project.prod, "migrate", "-v", "0", owner=PROD_OWNER, password=PROD_PASSWORD)
    with psycopg.connect(**project.pg.conninfo(project.prod), autocommit=True) as conn:
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('prod-only')")


def test_squash_keeps_every_row_and_leaves_only_fresh_initial_migrations(project):
    before = project.fingerprint(project.dev)
    third_party_before = {row for row in project.applied(project.dev) if row[0] not in ("catalog", "orders", "community", "analytics")}
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.dev) == before

    for folder in ("catalog/migrations", "orders/migrations", "community/migrations", "analytics/migrations"):
        names = sorted(p.name for p in (project.root / folder).glob("*.py"))
        assert names[0] == "0001_initial.py" and names[-1] == "__init__.py"
        assert all("initial" in n or n.endswith("_squashkit_carried.py") for n in names[:-1]), names
    assert (project.root / "community" / "migrations").is_symlink()
    assert sorted(p.name for p in (project.root / "migration_store" / "community").glob("*.py")) == ["0001_initial.py", "__init__.py"]
    orderline = (project.root / "orders" / "migrations" / "0001_initial.py").read_text()
    assert "('catalog'," in orderline or '("catalog",' in orderline  # cross-app dependency kept

    applied = project.applied(project.dev)
    assert {row for row in applied if row[0] not in ("catalog", "orders", "community", "analytics")} == third_party_before
    # catalog and orders point at each other, so catalog's foreign key to orders comes in a 0002.
    assert {row for row in applied if row[0] in ("catalog", "orders", "community", "analytics")} == {
        (app, "0001_initial") for app in ("catalog", "orders", "community", "analytics")
    } | {("catalog", "0002_initial")} | {
        (app, name.removesuffix(".py")) for app in ("catalog", "orders")
        for name in (p.name for p in (project.root / app / "migrations").glob("*_squashkit_carried.py"))
    }
    # The project still works: a row through the ORM in each app.
    project.manage(project.dev, "shell", "-c", (
        "from catalog.models import Tag; from orders.models import Order; from community.models import Comment;"
        "from analytics.models import PageView; from django.contrib.auth.models import User; import datetime;"
        "now = datetime.datetime.now(datetime.timezone.utc);"
        "Tag.objects.create(name='after-squash');"
        "u = User.objects.first(); o = Order.objects.create(user=u, reference='AFTER-SQUASH', created_at=now);"
        "Comment.objects.create(content_object=o, author=u, body='after squash', created_at=now);"
        "PageView.objects.create(product_id=1, path='/x', session_key='k', viewed_at=datetime.datetime.now(datetime.timezone.utc))"
    ))


def test_promote_dev_to_prod_copies_every_row_between_different_owners(project):
    make_prod(project)
    prod_before = project.fingerprint(project.prod)
    result = project.run("promote", "dev-to-prod", "--yes")
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    with psycopg.connect(**project.pg.conninfo(project.prod)) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").fetchone()[0]
        table_owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'catalog_product'").fetchone()[0]
    assert owner == PROD_OWNER and table_owner == PROD_OWNER
    project.manage(project.prod, "migrate", "--check", owner=PROD_OWNER, password=PROD_PASSWORD)
    # prod's previous state was saved first, in full.
    safety = sorted((project.root / "backups").glob("prod-*"))
    assert len(safety) == 1
    restored = create_database(project.pg, unique_name("prodbefore"))
    try:
        subprocess.run(["pg_restore", "--no-owner", "-d", restored, str(safety[0] / "db.dump")],
                       env={**project.pg.environ(), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
        with psycopg.connect(**project.pg.conninfo(restored)) as conn:
            assert table_fingerprints(conn, skip=SKIP) == prod_before
    finally:
        drop_database(project.pg, restored)


def test_promote_with_squash_squashes_once_and_copies_every_row(project):
    make_prod(project)
    result = project.run("promote", "dev-to-prod", "--squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    assert project.applied(project.prod) == project.applied(project.dev)
    assert ("catalog", "0001_initial") in project.applied(project.prod)
    assert not (project.root / "catalog" / "migrations" / "0002_tag_product_attributes_product_is_active_and_more.py").exists()


def truncated_copy(bundle: Path, destination: Path) -> Path:
    """A bundle whose dump lost its second half but whose manifest still vouches for it."""
    shutil.copytree(bundle, destination)
    dump = destination / "db.dump"
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) * 6 // 10])
    manifest = read_manifest(destination)
    manifest.files["db.dump"] = sha256(dump)
    (destination / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return destination


def test_promote_restore_and_rollback_put_django_migrations_back_as_the_source_had_it(project):
    """The dump leaves django_migrations' rows out; they come back as the source had them, ids and times
    included, and no migrate --fake runs: sample_project's post_migrate handler (community) reads
    catalog.Product through the apps it is given, which a fake into an emptied table would not hold."""
    make_prod(project)
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("UPDATE django_migrations SET id = id + 1000, applied = applied - interval '3 days'")

    def rows(dbname: str) -> list[tuple]:
        with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
            return conn.execute("SELECT id, app, name, applied FROM django_migrations ORDER BY id").fetchall()

    source = rows(project.dev)
    promoted = project.run("promote", "dev-to-prod", "--yes")
    assert promoted.code == 0, promoted.stderr
    assert rows(project.prod) == source
    made = project.run("backup", "--env", "dev")
    bundle = made.stdout.strip().splitlines()[-1]
    for args in (["restore", bundle, "--env", "prod", "--yes"], ["rollback", bundle, "--env", "prod", "--yes"]):
        result = project.run(*args)
        assert result.code == 0, (args, result.stderr)
        assert rows(project.prod) == source, args
    project.manage(project.prod, "migrate", "-v", "0", owner=PROD_OWNER, password=PROD_PASSWORD)  # numbers on after them
    assert rows(project.prod) == source


def test_rollback_kept_after_promote_squash_names_the_squash_to_undo_first_and_then_works(project):
    """The kept prod goes with the files from before the squash, which dev's rows no longer name: refused
    before anything is exchanged, with the command that undoes dev's squash; after it, --kept works."""
    make_prod(project)
    prod_before = project.fingerprint(project.prod)
    assert project.run("promote", "dev-to-prod", "--squash", "--yes", "--accept-loss").code == 0
    dev, prod, files = project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()
    refused = project.run("rollback", "--kept", "--env", "prod", "--yes")
    assert refused.code == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "which squashed dev's migration files" in line and "--migrations-only --env dev" in line
    assert (project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()) == (dev, prod, files)
    undo = line.split("(squashkit ", 1)[1].split(")", 1)[0].split()
    assert project.run(*undo[:1], *undo[1:], "--yes").code == 0
    kept = project.run("rollback", "--kept", "--env", "prod", "--yes")
    assert kept.code == 0, kept.stderr
    assert project.fingerprint(project.prod) == prod_before


def test_truncated_dump_fails_at_pg_restore_and_puts_the_target_back(project, tmp_path):
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    broken = truncated_copy(Path(made.stdout.strip().splitlines()[-1]), tmp_path / "broken")
    prod_before, files_before = project.fingerprint(project.prod), project.migration_files()

    result = project.run("restore", str(broken), "--env", "prod", "--yes")
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'pg_restore default' failed" in error and "Nothing was lost: prod's database is as before" in error
    assert "Traceback" not in result.stderr
    assert project.fingerprint(project.prod) == prod_before
    assert project.migration_files() == files_before
    project.manage(project.prod, "migrate", "--check", owner=PROD_OWNER, password=PROD_PASSWORD)


def test_a_restore_that_changes_a_value_but_no_count_fails_naming_the_table_and_column(project):
    """Row counts alone would pass it: the bundle's content hashes catch a changed value, the run
    names the table and a column, and the live database was never touched."""
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    prod_before, files_before = project.fingerprint(project.prod), project.migration_files()

    result = project.run("restore", str(bundle), "--env", "prod", "--yes", env={"SQUASHKIT_TEST_FAULT": "change-a-row:prod"})
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'verify' failed" in error and "public.auth_user: column first_name differs" in error, error
    assert "Nothing was lost" in error
    assert project.fingerprint(project.prod) == prod_before
    assert project.migration_files() == files_before


# In place, the safety bundle puts the target back; beside it, the side database is dropped and
# the live one was never touched.
PUT_BACK = {"in-place": "was put back from", "side": "Nothing was lost"}


@pytest.mark.parametrize("mode", ["side", "in-place"])
@pytest.mark.parametrize("squash", [False, True], ids=["promote", "promote-squash"])
def test_promote_with_a_truncated_dump_fails_at_pg_restore_and_puts_prod_back(project, squash, mode):
    make_prod(project)
    prod_before, dev_before, files_before = project.fingerprint(project.prod), project.fingerprint(project.dev), project.migration_files()
    args = ["promote", "dev-to-prod", "--yes", *(["--squash", "--accept-loss"] if squash else []), *(["--in-place"] if mode == "in-place" else [])]
    result = project.run(*args, env={"SQUASHKIT_TEST_FAULT": "truncate-dump:prod"})
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'pg_restore default' failed" in error and PUT_BACK[mode] in error, error
    assert project.fingerprint(project.prod) == prod_before
    assert project.fingerprint(project.dev) == dev_before
    assert project.migration_files() == files_before
    project.manage(project.prod, "migrate", "--check", owner=PROD_OWNER, password=PROD_PASSWORD)
    project.manage(project.dev, "migrate", "--check")


def test_a_rollback_falls_back_to_the_json_only_when_the_dump_does_not_restore(project):
    """A dump pg_restore refuses: the json is the way back. A verify that fails on what the dump restored
    (a changed value) is not the dump's fault: the run ends with that reason, prod as it was."""
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    bundle = made.stdout.strip().splitlines()[-1]
    prod = project.fingerprint(project.prod)
    verify = project.run("rollback", bundle, "--env", "prod", "--yes", env={"SQUASHKIT_TEST_FAULT": "change-a-row:prod"})
    assert verify.code == 1, verify.stderr
    assert "step 'verify' failed" in verify.stderr.strip().splitlines()[-1] and "falling back" not in verify.stderr
    assert project.fingerprint(project.prod) == prod
    restore = project.run("rollback", bundle, "--env", "prod", "--yes", env={"SQUASHKIT_TEST_FAULT": "truncate-dump:prod"})
    assert restore.code == 0, restore.stderr
    assert "falling back to db.json" in restore.stderr
    assert json_fingerprint(project, project.prod) == json_fingerprint(project, project.dev)


def test_squash_whose_bundle_dump_breaks_is_rebuilt_from_json(project):
    """The squash's own bundle is both source and safety net: when its dump is damaged on disk,
    the rollback falls back to its db.json, and the migration files come back as they were."""
    before, files = json_fingerprint(project, project.dev), project.migration_files()
    result = project.run("squash", "--rebuild", "--yes", "--accept-loss", "--in-place", env={"SQUASHKIT_TEST_FAULT": "damage-bundle:dev"})
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'pg_restore default' failed" in error and "rebuilt from" in error and "db.json" in error, error
    assert json_fingerprint(project, project.dev) == before
    assert project.migration_files() == files
    project.manage(project.dev, "migrate", "--check")


@pytest.mark.parametrize("mode", ["side", "in-place"])
def test_squash_that_fails_at_pg_restore_is_put_back_from_its_dump(project, mode):
    before, files = project.fingerprint(project.dev), project.migration_files()
    result = project.run("squash", "--rebuild", "--yes", "--accept-loss", *(["--in-place"] if mode == "in-place" else []),
                         env={"SQUASHKIT_TEST_FAULT": "truncate-dump:dev"})
    assert result.code == 1, result.stderr
    assert PUT_BACK[mode] in result.stderr.strip().splitlines()[-1]
    assert project.fingerprint(project.dev) == before
    assert project.migration_files() == files


def test_squash_then_rollback_bundle_restores_files_and_rows(project):
    before_rows, before_files = project.fingerprint(project.dev), project.migration_files()
    applied_before = project.applied(project.dev)
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    bundle = Path(result.stdout.strip().splitlines()[-1])
    assert project.migration_files() != before_files

    result = project.run("rollback", str(bundle), "--env", "dev", "--yes")
    assert result.code == 0, result.stderr
    assert project.migration_files() == before_files
    assert project.fingerprint(project.dev) == before_rows
    assert project.applied(project.dev) == applied_before


@pytest.mark.parametrize("command", [["squash", "--accept-loss"], ["promote", "dev-to-prod"], ["squash", "--yes", "--accept-loss", "--dry-run", "--rebuild"], ["promote", "dev-to-prod", "--dry-run"]])
def test_nothing_changes_without_yes_or_with_dry_run(project, command):
    make_prod(project)
    dev, prod, files = project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()
    result = project.run(*command)
    if "--dry-run" in command:
        assert result.code == 0, result.stderr
        assert "ALTER DATABASE" in result.stdout and "__squashkit_new" in result.stdout
        assert "DROP DATABASE IF EXISTS" not in result.stdout  # side mode drops nothing live
        assert OWNER_PASSWORD not in result.stdout and PROD_PASSWORD not in result.stdout
        owner = PROD_OWNER if command[0] == "promote" else OWNER
        assert f'OWNER "{owner}" TEMPLATE template0 ENCODING \'UTF8\'' in result.stdout
        assert 'CREATE EXTENSION IF NOT EXISTS "pg_trgm"' in result.stdout
    else:
        assert result.code == 2, result.stderr
        assert "pass --yes" in result.stderr.strip().splitlines()[-1]
    assert project.fingerprint(project.dev) == dev and project.fingerprint(project.prod) == prod
    assert project.migration_files() == files
    assert not (project.root / "backups").exists() or not any((project.root / "backups").iterdir())


def test_preflight_refuses_unapplied_migrations(project):
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        # The last one (catalog 0010, which nothing depends on): an earlier one would make the history
        # inconsistent rather than unapplied.
        conn.execute("DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM django_migrations WHERE app = 'catalog')")
    dev, files = project.fingerprint(project.dev), project.migration_files()
    result = project.run("squash", "--yes", "--accept-loss")
    assert result.code == 2
    assert "unapplied migrations" in result.stderr.strip().splitlines()[-1]
    assert project.fingerprint(project.dev) == dev and project.migration_files() == files


NO_CREATEDB = "no_createdb_owner"
NO_CREATEDB_PASSWORD = "no createdb:pw"


def test_a_user_who_may_drop_but_not_create_its_database_is_refused_unless_an_admin_creates_it(project, pg):
    """The owner of a database may drop it without CREATEDB: squashkit must not drop what it cannot create again."""
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [NO_CREATEDB]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
            sql.Identifier(NO_CREATEDB), sql.Literal(NO_CREATEDB_PASSWORD)))
    create_database(pg, project.prod, owner=NO_CREATEDB)
    project.manage(project.prod, "migrate", "-v", "0", owner=NO_CREATEDB, password=NO_CREATEDB_PASSWORD)
    config = project.root / "squashkit.toml"
    prod_url = pg.url(project.prod, user=NO_CREATEDB, password=NO_CREATEDB_PASSWORD)
    config.write_text(config.read_text().replace(pg.url(project.prod, user=PROD_OWNER, password=PROD_PASSWORD), prod_url))
    made = project.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    prod, files = project.fingerprint(project.prod), project.migration_files()

    for command in (["promote", "dev-to-prod"], ["rollback", made.stdout.strip().splitlines()[-1], "--env", "prod"]):
        result = project.run(*command, "--yes")
        assert result.code == 2, result.stderr
        assert "may not create databases" in result.stderr.strip().splitlines()[-1]
        assert project.fingerprint(project.prod) == prod and project.migration_files() == files

    config.write_text(config.read_text() + f'admin = {{ user = "{pg.superuser}", password_env = "SQUASHKIT_TEST_ADMIN" }}\n')
    result = project.run("promote", "dev-to-prod", "--yes", env={"SQUASHKIT_TEST_ADMIN": pg.password})
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    with psycopg.connect(**pg.conninfo(project.prod)) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").fetchone()[0]
    assert owner == NO_CREATEDB


def json_fingerprint(project: Project, dbname: str) -> dict:
    """What a json rollback must bring back: every table not excluded from dumpdata, by content."""
    excluded = ("django_migrations", "django_admin_log", "django_session")
    with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
        return table_fingerprints(conn, natural=True, skip=excluded)


def test_rollback_from_a_bundle_whose_dump_is_damaged_uses_the_json(project):
    made = project.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    before = json_fingerprint(project, project.dev)
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("DELETE FROM community_comment")
        conn.execute("UPDATE catalog_product SET name = 'changed'")
    dump = bundle / "db.dump"
    dump.chmod(0o600)
    dump.write_bytes(dump.read_bytes()[:1000])

    result = project.run("rollback", str(bundle), "--env", "dev", "--yes")
    assert result.code == 0, result.stderr
    assert "rebuilding from db.json" in result.stderr
    assert json_fingerprint(project, project.dev) == before


def test_rollback_of_a_db_json_rebuilds_every_row(project):
    made = project.run("backup", "--env", "dev", "--no-compress")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    before = json_fingerprint(project, project.dev)
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("DELETE FROM orders_orderline")
    result = project.run("rollback", str(bundle / "db.json"), "--env", "dev", "--yes")
    assert result.code == 0, result.stderr
    assert json_fingerprint(project, project.dev) == before


def test_rollback_of_a_lone_db_json_replaces_the_rows_data_migrations_made(project, tmp_path):
    """Without its bundle: orders 0007 creates shipping methods the source deleted or replaced."""
    made = project.run("backup", "--env", "dev", "--no-compress")
    assert made.code == 0, made.stderr
    lone = tmp_path / "lone.json"
    shutil.copyfile(Path(made.stdout.strip().splitlines()[-1]) / "db.json", lone)
    before = json_fingerprint(project, project.dev)
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as conn:
        conn.execute("DELETE FROM orders_orderline")
    result = project.run("rollback", str(lone), "--env", "dev", "--yes")
    assert result.code == 0, result.stderr
    after = json_fingerprint(project, project.dev)
    # No manifest: content types and permissions get new ids, matched by natural key.
    assert {t: v[0] for t, v in after.items()} == {t: v[0] for t, v in before.items()}
    same = [t for t in before if after[t] == before[t]]
    assert "public.orders_shippingmethod" in same and "public.orders_orderline" in same


def test_rollback_refuses_a_bundle_damaged_beyond_use(project):
    made = project.run("backup", "--env", "dev", "--no-compress")
    bundle = Path(made.stdout.strip().splitlines()[-1])
    for name in ("db.dump", "db.json"):
        (bundle / name).chmod(0o600)
        (bundle / name).write_bytes(b"garbage")
    before = project.fingerprint(project.dev)
    result = project.run("rollback", str(bundle), "--env", "dev", "--yes")
    assert result.code == 2 and "is damaged" in result.stderr.strip().splitlines()[-1]
    assert project.fingerprint(project.dev) == before


def test_restore_refuses_a_bundle_whose_history_diverges_from_the_code(project, tmp_path):
    """A bundle that applied a migration but never one it depends on in this code is not an older state
    of it: migrating it would stop halfway (InconsistentMigrationHistory). Refused before anything changes."""
    make_prod(project)
    made = project.run("backup", "--env", "dev")
    older = tmp_path / "older"
    shutil.copytree(Path(made.stdout.strip().splitlines()[-1]), older)
    manifest = read_manifest(older)
    entry = manifest.alias("default")
    entry.facts.applied_migrations = [row for row in entry.facts.applied_migrations if row[0] != "orders" or not row[1].startswith("0007")]
    (older / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    prod = project.fingerprint(project.prod)
    result = project.run("restore", str(older), "--env", "prod", "--yes")
    assert result.code == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "never orders.0007" in last and "histories diverge" in last and "Nothing was changed" in last
    assert project.fingerprint(project.prod) == prod


def test_a_rebuild_squash_refuses_while_a_session_it_may_not_end_holds_the_database(project):
    """A superuser's open session cannot be ended by the owner: refused before any file or row changes.
    (A squash that moves no data ends no session: test_a_squash_keeps_every_row_written_during_it_and_ends_no_session.)"""
    dev, files = project.fingerprint(project.dev), project.migration_files()
    with psycopg.connect(**project.pg.conninfo(project.dev), autocommit=True) as held:
        held.execute("SELECT 1")
        result = project.run("squash", "--rebuild", "--yes", "--accept-loss")
    assert result.code == 2, result.stderr
    assert "may not end" in result.stderr.strip().splitlines()[-1] and "nothing was changed" in result.stderr
    assert project.fingerprint(project.dev) == dev and project.migration_files() == files


def test_promote_refuses_to_overwrite_writes_prod_took_since_dev_was_refreshed_from_it(project):
    make_prod(project)
    refreshed = project.run("promote", "prod-to-dev", "--yes")
    assert refreshed.code == 0, refreshed.stderr
    with psycopg.connect(**project.pg.conninfo(project.prod), autocommit=True) as conn:
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('written on prod after the refresh')")
    dev, prod, files = project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()
    result = project.run("promote", "dev-to-prod", "--yes")
    assert result.code == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "catalog_tag" in error and "--force" in error, error
    assert project.fingerprint(project.dev) == dev and project.fingerprint(project.prod) == prod
    assert project.migration_files() == files
    forced = project.run("promote", "dev-to-prod", "--yes", "--force")
    assert forced.code == 0, forced.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)
    # The records follow the promote: the next one sees no drift of its own making.
    again = project.run("promote", "dev-to-prod", "--yes")
    assert again.code == 0, again.stderr


def protect_prod(project: Project) -> None:
    config = project.root / "squashkit.toml"
    config.write_text(config.read_text().replace("[environments.prod]\n", "[environments.prod]\nprotected = true\n"))


def test_a_protected_environment_needs_its_database_name_not_just_yes(project):
    make_prod(project)
    protect_prod(project)
    prod, files = project.fingerprint(project.prod), project.migration_files()
    for args, phrase in [
        ((), f"--yes --confirm {project.prod}"),
        (("--confirm", "prod"), f"does not name the protected database '{project.prod}'"),
    ]:
        result = project.run("promote", "dev-to-prod", "--yes", *args)
        assert result.code == 2 and phrase in result.stderr.strip().splitlines()[-1], result.stderr
    assert project.fingerprint(project.prod) == prod and project.migration_files() == files
    done = project.run("promote", "dev-to-prod", "--yes", "--confirm", project.prod)
    assert done.code == 0, done.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)


def test_at_a_terminal_a_protected_environment_asks_for_the_name_and_a_wrong_one_changes_nothing(project):
    import os
    import pty

    make_prod(project)
    protect_prod(project)
    prod = project.fingerprint(project.prod)
    pid, fd = pty.fork()
    if pid == 0:  # the child: squashkit at a terminal
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        os.execve(sys.executable, [sys.executable, "-m", "squashkit.cli", "--config", str(project.root / "squashkit.toml"),
                                   "promote", "dev-to-prod"], env)
    output = b""
    while b"type the database name" not in output:
        output += os.read(fd, 4096)
    os.write(fd, b"prod\n")  # the environment's name, not its database's
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, output
    assert b"the name typed does not match" in output
    assert project.fingerprint(project.prod) == prod


def test_promote_onto_a_prod_that_lacks_a_new_apps_tables_keeps_every_row(project):
    """dev's code has an app prod never migrated: prod's safety backup leaves its models out of
    the json (no table, no rows) instead of failing, and prod ends equal to dev."""
    make_prod(project)
    with psycopg.connect(**project.pg.conninfo(project.prod), autocommit=True) as conn:
        conn.execute("DROP TABLE analytics_pageview")
        conn.execute("DELETE FROM django_migrations WHERE app = 'analytics'")
    result = project.run("promote", "dev-to-prod", "--yes")
    assert result.code == 0, result.stderr
    assert "no table yet for analytics.pageview" in result.stderr
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)


def test_a_missing_interpreter_is_named_in_one_line(project):
    config = project.root / "squashkit.toml"
    config.write_text(config.read_text().replace(f'python = "{sys.executable}"', 'python = "/nonexistent/python9"'))
    result = project.run("backup")
    assert result.code == 2 and "python interpreter '/nonexistent/python9' not found" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
