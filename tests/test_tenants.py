"""Schema per tenant: a django-tenants project squashed, backed up and rolled back, whole or one tenant at a time.

``sample_project/tenancy``: public (the shared apps, the tenant model ``customers.Clinic``) and
three tenants of different sizes (north 40 patients, south 12, east 3), each with rows of its own
and a foreign key into public's ``auth_user``; the template ``tenant_template`` new tenants are
cloned from. The tenant app ``clinic`` has four migrations: a RunPython that seeds a lookup table
and a RenameField among them.

Every comparison is row for row (``table_fingerprints``: every table of every schema).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    SAMPLE,
    admin,
    create_database,
    drop_database,
    squashkit,
    table_fingerprints,
    unique_name,
)

TENANCY = SAMPLE / "tenancy"
SKIP = ("django_migrations",)
TENANTS = ("north", "south", "east")


def _env(pg, dbname: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env["DATABASE_URL"] = pg.url(dbname, user=OWNER, password=OWNER_PASSWORD)
    return env


def _manage(pg, root: Path, dbname: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(root / "manage.py"), *args], cwd=root, env=_env(pg, dbname),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def tenancy_template(pg) -> str:
    """tenancy migrated (public, the template, three tenants) and seeded once; tests copy it."""
    name = "tenancy_tpl"
    create_database(pg, name)
    _manage(pg, TENANCY, name, "migrate_schemas", "--shared", "-v", "0")
    _manage(pg, TENANCY, name, "seed_tenancy")
    return name


class Tenancy:
    """A copy of tenancy (a squash rewrites its files, committed in git) and a database of its own."""

    def __init__(self, pg, root: Path, dbname: str):
        self.pg, self.root, self.dbname = pg, root, dbname

    def run(self, *args: str, **env: str):
        return squashkit("--config", str(self.root / "squashkit.toml"), *args, env=env)

    def manage(self, *args: str, dbname: str | None = None) -> str:
        return _manage(self.pg, self.root / "tenancy", dbname or self.dbname, *args)

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        return admin(self.pg, dbname or self.dbname)

    def fingerprint(self, dbname: str | None = None) -> dict:
        with self.connect(dbname) as conn:
            return table_fingerprints(conn, skip=SKIP)

    def of(self, found: dict, schema: str) -> dict:
        return {table: value for table, value in found.items() if table.split(".", 1)[0] == schema}

    def rows(self, schema: str, dbname: str | None = None) -> set[tuple[str, str]]:
        """The project apps' rows of django_migrations in ``schema``."""
        with self.connect(dbname) as conn:
            return set(conn.execute(sql.SQL("SELECT app, name FROM {} WHERE app IN ('clinic', 'customers')").format(
                sql.Identifier(schema, "django_migrations"))).fetchall())


@pytest.fixture
def tenancy(pg, tenancy_template, tmp_path) -> Tenancy:
    root = tmp_path / "project"
    shutil.copytree(TENANCY, root / "tenancy", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "sample_project").mkdir()
    for name in ("__init__.py", "database_url.py"):
        shutil.copy(SAMPLE / "sample_project" / name, root / "sample_project" / name)
    dbname = create_database(pg, unique_name("tenancy"), template=tenancy_template)
    url = pg.url(dbname, user=OWNER, password=OWNER_PASSWORD).replace('"', '\\"')
    (root / "squashkit.toml").write_text(
        f'manage_py = "tenancy/manage.py"\npython = "{sys.executable}"\nbackup_dir = "{tmp_path / "backups"}"\n'
        f'default_env = "dev"\n[environments.dev]\nsettings = "tenancy.settings"\nenv = {{ DATABASE_URL = "{url}" }}\n')
    (root / ".gitignore").write_text("squashkit.toml\n.squashkit.lock\n__pycache__/\n")
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "sample"]):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)
    yield Tenancy(pg, root, dbname)
    drop_database(pg, dbname)


def _squashed(project: Tenancy) -> bool:
    files = sorted(p.name for p in (project.root / "tenancy" / "clinic" / "migrations").glob("0*.py"))
    return files == ["0001_initial.py", "0002_squashkit_carried.py"]


def test_squash_keeps_every_tenants_rows_and_a_new_tenant_migrates(tenancy):
    before = tenancy.fingerprint()
    check = tenancy.run("check")
    assert "ok   schema tenant_template: template" in check.stdout and "ok   schema north: tenant" in check.stdout, check.stdout
    result = tenancy.run("squash", "--yes")
    assert result.code == 0, result.stderr
    assert _squashed(tenancy)
    assert tenancy.fingerprint() == before  # every row of every schema, public and tenants
    expected = {("customers", "0001_initial"), ("clinic", "0001_initial"), ("clinic", "0002_squashkit_carried")}
    for schema in ("public", "tenant_template", *TENANTS):
        assert tenancy.rows(schema) == expected, schema
    tenancy.manage("migrate", "--check", "-v", "0")  # migrate_schemas --check: public and every tenant
    after = tenancy.run("check")
    assert "fail" not in after.stdout, after.stdout
    # A new tenant: cloned from the template (django-tenants' default here), and one migrated from the new files.
    tenancy.manage("add_clinic", "west")
    tenancy.manage("add_clinic", "west2", "--migrate")
    tenancy.manage("migrate", "--check", "-v", "0")
    found = tenancy.fingerprint()
    for schema in ("west", "west2"):
        assert tenancy.rows(schema) == expected
        assert found[f"{schema}.clinic_species"][0] == 4  # the carried RunPython's rows (cloned, or run again)
    assert tenancy.of(found, "north") == tenancy.of(before, "north")


@pytest.mark.parametrize("step", ["rewrite history", "verify"])
def test_killed_squash_leaves_every_schema_before_or_after(tenancy, step):
    before = tenancy.fingerprint()
    old = {schema: tenancy.rows(schema) for schema in ("public", "tenant_template", *TENANTS)}
    killed = tenancy.run("squash", "--yes", SQUASHKIT_TEST_KILL_AT=f"dev:{step}")
    assert killed.code == -9, killed.stderr[-2000:]
    resumed = tenancy.run("resume", "--yes")
    assert resumed.code == 0, resumed.stderr
    rows = {schema: tenancy.rows(schema) for schema in old}
    if step == "rewrite history":  # killed inside the one transaction: every schema as before, the files too
        assert rows == old and not _squashed(tenancy)
    else:  # killed after its commit: finished everywhere
        assert _squashed(tenancy) and len({frozenset(r) for r in rows.values()}) == 1
    tenancy.manage("migrate", "--check", "-v", "0")
    assert tenancy.fingerprint() == before


def test_a_single_tenant_rollback_changes_that_tenant_alone(tenancy):
    original = tenancy.fingerprint()
    full = tenancy.run("backup")
    assert full.code == 0, full.stderr
    with tenancy.connect() as conn:
        for schema in ("north", "south"):
            conn.execute(sql.SQL("UPDATE {} SET full_name = 'renamed' WHERE id % 3 = 0").format(sql.Identifier(schema, "clinic_patient")))
            conn.execute(sql.SQL("DELETE FROM {} WHERE id % 2 = 0").format(sql.Identifier(schema, "clinic_visit")))
        conn.execute("UPDATE public.auth_user SET first_name = 'changed'")
    changed = tenancy.fingerprint()
    result = tenancy.run("rollback", full.stdout.strip().splitlines()[-1], "--schema", "north", "--yes")
    assert result.code == 0, result.stderr
    after = tenancy.fingerprint()
    assert tenancy.of(after, "north") == tenancy.of(original, "north")
    assert {t: v for t, v in after.items() if not t.startswith("north.")} == {t: v for t, v in changed.items() if not t.startswith("north.")}
    tenancy.manage("migrate", "--check", "-v", "0")
    with tenancy.connect() as conn:  # the foreign keys into public are there and hold
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'north.clinic_patient'::regclass "
                            "AND confrelid = 'public.auth_user'::regclass").fetchone()[0] == 1


def test_a_single_tenant_backup_restores_into_a_database_with_public_and_the_other_tenants(tenancy):
    original = tenancy.fingerprint()
    made = tenancy.run("backup", "--schema", "east", "--schema", "south")
    assert made.code == 0, made.stderr
    path = made.stdout.strip().splitlines()[-1]
    with tenancy.connect() as conn:
        conn.execute("DROP SCHEMA east CASCADE")
        conn.execute("UPDATE south.clinic_patient SET weight = 1")
    result = tenancy.run("rollback", path, "--schema", "east", "--yes")
    assert result.code == 0, result.stderr
    after = tenancy.fingerprint()
    assert tenancy.of(after, "east") == tenancy.of(original, "east")
    assert tenancy.of(after, "south") != tenancy.of(original, "south")  # only east was asked for
    assert {t: v for t, v in after.items() if t.split(".")[0] not in ("east", "south")} == \
        {t: v for t, v in original.items() if t.split(".")[0] not in ("east", "south")}
    tenancy.manage("migrate", "--check", "-v", "0")
    refused = tenancy.run("rollback", path, "--schema", "north", "--yes")
    assert refused.code != 0 and "holds the schemas east, south, not 'north'" in refused.stderr.strip().splitlines()[-1]
    assert tenancy.fingerprint() == after


def _with_prod(tenancy: Tenancy, template: str) -> str:
    """prod: a second environment, tenancy's schemas with a value of its own in north; its database's name."""
    prod = create_database(tenancy.pg, unique_name("tenancy_prod"), template=template)
    with admin(tenancy.pg, prod) as conn:
        conn.execute("UPDATE north.clinic_patient SET weight = 99 WHERE id = 1")
    url = tenancy.pg.url(prod, user=OWNER, password=OWNER_PASSWORD).replace('"', '\\"')
    with (tenancy.root / "squashkit.toml").open("a") as toml:
        toml.write(f'[environments.prod]\nsettings = "tenancy.settings"\nenv = {{ DATABASE_URL = "{url}" }}\n')
    return prod


def test_promote_keeps_every_tenant_row_for_row_and_a_new_tenant_on_prod_migrates(tenancy, tenancy_template):
    prod = _with_prod(tenancy, tenancy_template)
    try:
        dev = tenancy.fingerprint()
        result = tenancy.run("promote", "dev-to-prod", "--yes")
        assert result.code == 0, result.stderr
        promoted = tenancy.fingerprint(prod)
        for schema in ("public", "tenant_template", *TENANTS):  # every schema, row for row
            assert tenancy.of(promoted, schema) == tenancy.of(dev, schema) != {}, schema
            assert tenancy.rows(schema, prod) == tenancy.rows(schema), schema
        assert promoted == dev
        tenancy.manage("migrate", "--check", "-v", "0", dbname=prod)
        tenancy.manage("add_clinic", "west", dbname=prod)  # cloned from prod's template
        tenancy.manage("add_clinic", "west2", "--migrate", dbname=prod)
        tenancy.manage("migrate", "--check", "-v", "0", dbname=prod)
        after = tenancy.fingerprint(prod)
        for schema in ("west", "west2"):
            assert tenancy.rows(schema, prod) == tenancy.rows("north", prod)
            assert after[f"{schema}.clinic_species"][0] == 4
        assert {t: v for t, v in after.items() if t.split(".")[0] not in ("west", "west2", "public")} == \
            {t: v for t, v in promoted.items() if t.split(".")[0] != "public"}
    finally:
        for name in (prod, prod + "__squashkit_prev"):
            drop_database(tenancy.pg, name)


def _lock_held(conn: psycopg.Connection, *, granted: bool) -> bool:
    return conn.execute("SELECT count(*) FROM pg_locks WHERE relation = 'public.customers_clinic'::regclass "
                        "AND mode = %s AND granted = %s", ["ShareLock" if granted else "RowExclusiveLock", granted]).fetchone()[0] > 0


def test_a_tenant_created_during_a_squash_waits_for_it_and_records_the_new_files(tenancy):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQUASHKIT_ENV"}
    squash = subprocess.Popen([sys.executable, "-m", "squashkit.cli", "--config", str(tenancy.root / "squashkit.toml"), "squash", "--yes"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    creating = None
    try:
        with tenancy.connect() as conn:
            deadline = time.monotonic() + 300
            while not _lock_held(conn, granted=True):
                assert squash.poll() is None and time.monotonic() < deadline, "the squash never locked the tenant table"
                time.sleep(0.05)
            # A tenant saved now waits: with a short lock_timeout its row cannot go in.
            with pytest.raises(psycopg.errors.LockNotAvailable), conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                conn.execute("INSERT INTO public.customers_clinic (schema_name, name, created_on) VALUES ('blocked', 'x', now())")
            # One created as a user would: it waits until the squash ends, then clones the rewritten template.
            creating = subprocess.Popen([sys.executable, str(tenancy.root / "tenancy" / "manage.py"), "add_clinic", "west"],
                                        cwd=tenancy.root / "tenancy", env=_env(tenancy.pg, tenancy.dbname),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while not _lock_held(conn, granted=False):
                assert creating.poll() is None and squash.poll() is None, "add_clinic did not wait for the squash"
                time.sleep(0.05)
        _out, err = squash.communicate(timeout=600)
        assert squash.returncode == 0, err
        assert creating.wait(timeout=120) == 0, creating.stderr.read()
    finally:
        for process in (squash, creating):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert _squashed(tenancy)
    assert tenancy.rows("west") == tenancy.rows("north") == {
        ("customers", "0001_initial"), ("clinic", "0001_initial"), ("clinic", "0002_squashkit_carried")}
    assert tenancy.fingerprint()["west.clinic_species"][0] == 4
    tenancy.manage("migrate", "--check", "-v", "0")


@pytest.mark.parametrize("step", ["restore tenant", "verify", "drop previous"])
def test_a_killed_single_tenant_rollback_resumes_to_before_or_after_and_touches_no_other_schema(tenancy, step):
    original = tenancy.fingerprint()
    full = tenancy.run("backup")
    assert full.code == 0, full.stderr
    path = full.stdout.strip().splitlines()[-1]
    with tenancy.connect() as conn:
        conn.execute("UPDATE north.clinic_patient SET full_name = 'renamed' WHERE id % 3 = 0")
        conn.execute("UPDATE south.clinic_patient SET weight = 1")
    changed = tenancy.fingerprint()
    killed = tenancy.run("rollback", path, "--schema", "north", "--yes", SQUASHKIT_TEST_KILL_AT=f"dev:{step}")
    assert killed.code == -9, killed.stderr[-2000:]
    refused = tenancy.run("rollback", path, "--schema", "north", "--yes")  # no other run meanwhile
    assert refused.code != 0 and "squashkit resume" in refused.stderr.strip().splitlines()[-1], refused.stderr
    resumed = tenancy.run("resume", "--yes")
    assert resumed.code == 0, resumed.stderr
    after = tenancy.fingerprint()
    # Before its transaction committed, north is as it was; once committed (verify, drop), it is the bundle's.
    assert tenancy.of(after, "north") == tenancy.of(original if step != "restore tenant" else changed, "north")
    # Every other schema untouched, and no north__squashkit_prev left (its tables would be listed here).
    assert {t: v for t, v in after.items() if not t.startswith("north.")} == \
        {t: v for t, v in changed.items() if not t.startswith("north.")}
    tenancy.manage("migrate", "--check", "-v", "0")
    assert tenancy.run("status").code == 0


def test_a_json_rollback_of_a_tenants_project_says_it_restores_public_alone_and_needs_public_only(tenancy):
    original = tenancy.fingerprint()
    made = tenancy.run("backup")
    assert made.code == 0, made.stderr
    fixture = next(Path(made.stdout.strip().splitlines()[-1]).glob("db.json*"))
    with tenancy.connect() as conn:
        conn.execute("UPDATE public.auth_user SET first_name = 'changed'")
        conn.execute("UPDATE north.clinic_patient SET weight = 1")
    changed = tenancy.fingerprint()
    refused = tenancy.run("rollback", str(fixture), "--yes")
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.code == 2 and "restores public only" in last and "--public-only" in last, refused.stderr
    assert "Traceback" not in refused.stderr
    assert tenancy.fingerprint() == changed
    done = tenancy.run("rollback", str(fixture), "--yes", "--public-only")
    assert done.code == 0, done.stderr
    after = tenancy.fingerprint()
    assert tenancy.of(after, "public") == tenancy.of(original, "public")
    assert {t.split(".")[0] for t in after} == {"public"}  # as it said: no tenant's schema came back
    # The database it replaced is kept: rollback --kept brings every tenant back.
    kept = tenancy.run("rollback", "--kept", "--yes")
    assert kept.code == 0, kept.stderr
    assert tenancy.fingerprint() == changed


def test_a_squash_of_multi_type_tenants_is_refused_in_one_line_and_changes_nothing(tenancy):
    config = tenancy.root / "squashkit.toml"
    config.write_text(config.read_text().replace('settings = "tenancy.settings"', 'settings = "tenancy.settings_multitype"'))
    before = tenancy.fingerprint()
    files = sorted(p.name for p in (tenancy.root / "tenancy" / "clinic" / "migrations").glob("0*.py"))
    refused = tenancy.run("squash", "--yes")
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.code == 2 and "HAS_MULTI_TYPE_TENANTS" in last and "nothing was changed" in last, refused.stderr
    assert "Traceback" not in refused.stderr
    assert tenancy.fingerprint() == before
    assert sorted(p.name for p in (tenancy.root / "tenancy" / "clinic" / "migrations").glob("0*.py")) == files
