"""Shared fixtures: a real throwaway PostgreSQL, sample_project databases, and fingerprints.

Nothing here mocks the database: tests run the real ``squashkit`` command, real
pg_dump/pg_restore and real ``manage.py`` against a real cluster.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from squashkit import cluster as cluster_module

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_project"
SEED_ROWS = int(os.environ.get("SQUASHKIT_TEST_ROWS", "1500"))

# A password with every character that breaks naive quoting, URLs and passfiles.
OWNER = "sample_owner"
OWNER_PASSWORD = "pw:with spaces/@'\"\\#%-Zoë"

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg() -> cluster_module.Cluster:
    """The throwaway cluster, started once per test session (reused if already running)."""
    directory = Path(os.environ.get("SQUASHKIT_TEST_CLUSTER_DIR", f"/tmp/squashkit-test-cluster-{os.getuid()}"))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # pytest -n: a cluster per worker, so their databases, roles and locks never meet
        directory = directory.with_name(f"{directory.name}-{worker}")
    was_running = cluster_module.running(directory) is not None
    started = cluster_module.start(directory)
    with psycopg.connect(**started.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OWNER]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(OWNER), sql.Literal(OWNER_PASSWORD))
        )
    yield started
    if not was_running:
        cluster_module.stop(directory)


def admin(pg: cluster_module.Cluster, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**pg.conninfo(dbname), autocommit=True)


def drop_database(pg: cluster_module.Cluster, name: str) -> None:
    with admin(pg) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(pg: cluster_module.Cluster, name: str, *, template: str | None = None, owner: str = OWNER) -> str:
    drop_database(pg, name)
    with admin(pg) as conn:
        query = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return name


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


def project_env(pg: cluster_module.Cluster, dbname: str, **extra: str) -> dict[str, str]:
    """Environment for running sample_project's manage.py against ``dbname`` as the owner role."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("DATABASE_URL", "ANALYTICS_DATABASE_URL")}
    env["DATABASE_URL"] = pg.url(dbname, user=OWNER, password=OWNER_PASSWORD)
    env.update(extra)
    return env


def manage(pg: cluster_module.Cluster, dbname: str, *args: str, **extra: str) -> str:
    result = subprocess.run(
        [sys.executable, str(SAMPLE / "manage.py"), *args],
        cwd=SAMPLE, env=project_env(pg, dbname, **extra), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def renumber_content_types(pg: cluster_module.Cluster, dbname: str) -> None:
    """Make ids differ from what a fresh ``migrate`` assigns, as in any long-lived database,
    and add a content type and permission the code no longer defines (a deleted model)."""
    with psycopg.connect(**pg.conninfo(dbname), autocommit=False) as conn:
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute("UPDATE django_content_type SET id = id + 1000")
        conn.execute("UPDATE auth_permission SET content_type_id = content_type_id + 1000, id = id + 500")
        ct = conn.execute(
            "INSERT INTO django_content_type (app_label, model) VALUES ('retired', 'oldmodel') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO auth_permission (name, content_type_id, codename) VALUES ('Can audit old model', %s, 'audit_oldmodel')",
            [ct],
        )
        conn.commit()


@pytest.fixture(scope="session")
def seeded_template(pg) -> str:
    """sample_project migrated and seeded once; tests copy it (CREATE DATABASE ... TEMPLATE)."""
    name = f"sample_template_{SEED_ROWS}"
    create_database(pg, name)
    manage(pg, name, "migrate", "-v", "0")
    renumber_content_types(pg, name)
    manage(pg, name, "seed_data", "--rows", str(SEED_ROWS))
    with psycopg.connect(**pg.conninfo(name), autocommit=False) as conn:
        # A group holding the permission of the retired model, so the fixture must carry it.
        conn.execute(
            """INSERT INTO auth_group_permissions (group_id, permission_id)
               SELECT (SELECT min(id) FROM auth_group), id FROM auth_permission WHERE codename = 'audit_oldmodel'"""
        )
        conn.commit()
    return name


@dataclass
class SampleDatabase:
    pg: cluster_module.Cluster
    name: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(**self.pg.conninfo(self.name), autocommit=True)

    def url(self) -> str:
        return self.pg.url(self.name, user=OWNER, password=OWNER_PASSWORD)


@pytest.fixture
def sample_db(pg, seeded_template) -> SampleDatabase:
    """A seeded sample_project database of the test's own."""
    name = create_database(pg, unique_name("sample"), template=seeded_template)
    yield SampleDatabase(pg, name)
    drop_database(pg, name)


def write_config(directory: Path, environments: dict[str, dict[str, str]], *, project: Path = SAMPLE, **top: object) -> Path:
    """A squashkit.toml for sample_project (or a copy of it, ``project``) in ``directory``; ``environments`` maps name -> env vars."""
    lines = [f'manage_py = "{project / "manage.py"}"', f'python = "{sys.executable}"', f'backup_dir = "{directory / "backups"}"']
    for key, value in top.items():
        lines.append(f"{key} = {_toml(value)}")
    for name, env in environments.items():
        lines.append(f"\n[environments.{name}]")
        lines.append('settings = "sample_project.settings"')
        lines.append("env = { " + ", ".join(f"{k} = {_toml(v)}" for k, v in env.items()) + " }")
    path = directory / "squashkit.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def squashkit(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 600) -> Result:
    """Run the real ``squashkit`` command line in a subprocess, without a terminal or stdin."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQUASHKIT_ENV"}
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    result = subprocess.run(
        [sys.executable, "-m", "squashkit.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
    )
    return Result(result.returncode, result.stdout, result.stderr)


# --- fingerprints: what a database holds, table by table -----------------------------------------

_REFERENCES = """
SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
WHERE c.contype = 'f' AND c.confrelid IN (to_regclass('django_content_type'), to_regclass('auth_permission'))
"""


def table_fingerprints(conn: psycopg.Connection, *, natural: bool = False, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """``schema.table -> (rows, sha256 of the sorted rows)`` for every user table.

    With ``natural=True`` a column referencing a content type or permission is compared by
    what it points at (app_label.model, codename), not by id: the ids of a fresh database differ.
    """
    references: dict[str, dict[str, str]] = {}
    if natural:
        for table, column, target in conn.execute(_REFERENCES):
            references.setdefault(table, {})[column] = target
    tables = conn.execute(
        """SELECT n.nspname, c.relname, c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
           ORDER BY 1, 2"""
    ).fetchall()
    result = {}
    for schema, name, regclass in tables:
        qualified = f"{schema}.{name}"
        if name in skip or qualified in skip:
            continue
        columns = [
            row[0] for row in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                [regclass],
            )
        ]
        natural_cols = references.get(regclass, {})
        if natural and _is_implicit_m2m(conn, regclass, columns):
            # A fixture stores a many-to-many as a list on its owner: the join rows' own ids are new.
            columns = [c for c in columns if c != "id"]
        if natural and name in ("django_content_type", "auth_permission"):
            columns = [c for c in columns if c != "id"]
        if natural and name == "auth_permission":
            columns = [c for c in columns if c != "content_type_id"]
        exprs = []
        for column in columns:
            target = natural_cols.get(column)
            if target == "django_content_type":
                exprs.append(sql.SQL("(SELECT ct.app_label || '.' || ct.model FROM django_content_type ct WHERE ct.id = t.{})").format(sql.Identifier(column)))
            elif target == "auth_permission":
                exprs.append(sql.SQL(
                    "(SELECT p.codename || '@' || ct.app_label || '.' || ct.model FROM auth_permission p "
                    "JOIN django_content_type ct ON ct.id = p.content_type_id WHERE p.id = t.{})"
                ).format(sql.Identifier(column)))
            else:
                exprs.append(sql.SQL("t.{}").format(sql.Identifier(column)))
        if natural and name == "auth_permission":
            exprs.append(sql.SQL("(SELECT ct.app_label || '.' || ct.model FROM django_content_type ct WHERE ct.id = t.content_type_id)"))
        query = sql.SQL("SELECT ROW({})::text AS r FROM {} t").format(sql.SQL(", ").join(exprs), sql.Identifier(schema, name))
        rows = sorted(row[0] for row in conn.execute(query))
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        result[qualified] = (len(rows), digest)
    return result


def _is_implicit_m2m(conn: psycopg.Connection, regclass: str, columns: list[str]) -> bool:
    """Django's auto-created join table: id plus exactly two foreign key columns."""
    if len(columns) != 3 or "id" not in columns:
        return False
    fk_columns = conn.execute(
        """SELECT count(DISTINCT a.attname) FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
           WHERE c.contype = 'f' AND c.conrelid = %s::regclass""",
        [regclass],
    ).fetchone()[0]
    return fk_columns == 2


SEQUENCES = """
SELECT n.nspname || '.' || c.relname, tn.nspname || '.' || t.relname || '.' || a.attname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
     AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def sequences(conn: psycopg.Connection) -> dict[str, tuple[int, bool, str | None]]:
    """Every sequence: schema.name -> (last_value, is_called, the schema.table.column owning it)."""
    result = {}
    for name, owner in conn.execute(SEQUENCES).fetchall():
        schema, relname = name.split(".", 1)
        last_value, is_called = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, relname))
        ).fetchone()
        result[name] = (last_value, is_called, owner)
    return result
