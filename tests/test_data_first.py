"""Two aliases on one database, the second's search_path reaching the first's django_migrations.

``sample_project/depot``: ``default`` (Django's apps and ``desk``, schema ``public``) and ``data``
(``inventory``, ``-csearch_path=data,public``, its first migration creates schema ``data``, a
later one writes three items with ``RunPython``) reach one database, built as the seed's CI job builds it: the schemas, then the data alias's apps
first. Each alias keeps its own history: ``data.django_migrations`` and ``public.django_migrations``.
A build that migrates ``default`` first gives ``data`` nothing to do (it reads public's table as
its own), so every scratch build, and ``recreate``, must migrate ``data`` first.

Every comparison is row for row (``table_fingerprints``: every table of every schema).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import OWNER, OWNER_PASSWORD, SAMPLE, create_database, drop_database, squashkit, table_fingerprints, unique_name

DEPOT = SAMPLE / "depot"
SKIP = ("django_migrations",)
SUFFIXES = ("", "__squashkit_new", "__squashkit_prev", "__squashkit_scratch", "__squashkit_oldbuild", "__squashkit_fresh")


def _env(pg, dbname: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env["DATABASE_URL"] = pg.url(dbname, user=OWNER, password=OWNER_PASSWORD)
    return env


def manage(pg, root: Path, dbname: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(root / "manage.py"), *args], cwd=root, env=_env(pg, dbname),
                            capture_output=True, text=True)
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


def _superuser(pg, dbname: str) -> psycopg.Connection:
    return psycopg.connect(**pg.conninfo(dbname), autocommit=True)


@pytest.fixture(scope="session")
def depot_template(pg) -> str:
    """depot built as the seed's CI job builds it (schemas, then data's apps, then default's), seeded once."""
    name = "depot_tpl"
    create_database(pg, name)
    with _superuser(pg, name) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA data AUTHORIZATION {}").format(sql.Identifier(OWNER)))
    manage(pg, DEPOT, name, "migrate", "--database", "data", "-v", "0")
    manage(pg, DEPOT, name, "migrate", "--database", "default", "-v", "0")
    with _superuser(pg, name) as conn:
        conn.execute("""INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email,
                                                      is_staff, is_active, date_joined)
                        SELECT '!', false, 'user' || i, '', '', '', false, true, now() FROM generate_series(1, 20) i""")
        conn.execute("""INSERT INTO public.desk_ticket (title, opened_by_id, closed)
                        SELECT 'ticket ' || i, (SELECT min(id) FROM auth_user) + i % 20, i % 3 = 0 FROM generate_series(1, 40) i""")
        conn.execute("INSERT INTO data.inv_item (sku, name) SELECT 'SKU' || i, 'item ' || i FROM generate_series(1, 30) i")
        conn.execute("""INSERT INTO data.inv_move (item_id, delta, note)
                        SELECT (SELECT min(id) FROM data.inv_item) + i % 30, i - 45, 'move ' || i FROM generate_series(1, 90) i""")
    return name


class Depot:
    """A copy of depot (a squash rewrites its files), with dev's and prod's databases."""

    def __init__(self, pg, root: Path, names: dict[str, str]):
        self.pg, self.root, self.names = pg, root, names

    def run(self, *args: str):
        return squashkit("--config", str(self.root / "squashkit.toml"), *args)

    def fingerprint(self, env: str) -> dict:
        with _superuser(self.pg, self.names[env]) as conn:
            return table_fingerprints(conn, skip=SKIP)

    def history(self, env: str) -> dict[str, set[str]]:
        """schema -> the apps its django_migrations records."""
        found = {}
        with _superuser(self.pg, self.names[env]) as conn:
            for (schema,) in conn.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'django_migrations'"):
                query = sql.SQL("SELECT DISTINCT app FROM {}").format(sql.Identifier(schema, "django_migrations"))
                found[schema] = {row[0] for row in conn.execute(query)}
        return found

    def manage(self, env: str, *args: str) -> str:
        return manage(self.pg, self.root / "depot", self.names[env], *args)


@pytest.fixture
def depot(pg, depot_template, tmp_path) -> Depot:
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "backups")
    shutil.copytree(DEPOT, root / "depot", ignore=ignore)
    shutil.copytree(SAMPLE / "sample_project", root / "sample_project", ignore=ignore)  # its URL parser
    base = unique_name("depot")
    names = {"dev": base + "_dev", "prod": base + "_prod"}
    create_database(pg, names["dev"], template=depot_template)
    lines = ['manage_py = "depot/manage.py"', f'python = "{sys.executable}"', 'backup_dir = "backups"', 'default_env = "dev"']
    for env, name in names.items():
        lines += [f"[environments.{env}]", 'settings = "depot.settings"',
                  f'env = {{ DATABASE_URL = "{pg.url(name, user=OWNER, password=OWNER_PASSWORD)}" }}']
    (root / "squashkit.toml").write_text("\n".join(lines) + "\n")
    yield Depot(pg, root, names)
    for name in names.values():
        for suffix in SUFFIXES:
            drop_database(pg, name + suffix)


def _own_histories(depot: Depot, env: str) -> bool:
    """Each alias records every app (routed or not) in a django_migrations of its own: public's, data's."""
    history = depot.history(env)
    assert sorted(history) == ["data", "public"], history
    assert all({"inventory", "desk", "auth"} <= apps for apps in history.values()), history
    return True


def _migrated(depot: Depot, env: str) -> None:
    for alias in ("default", "data"):
        depot.manage(env, "migrate", "--check", "--database", alias)


def test_promote_squash_keeps_every_row_of_both_aliases(depot):
    dev = depot.fingerprint("dev")
    assert dev["data.inv_item"][0] == 33 and dev["data.inv_move"][0] == 90 and dev["public.desk_ticket"][0] == 40
    assert _own_histories(depot, "dev")

    promoted = depot.run("promote", "dev-to-prod", "--squash", "--yes")
    assert promoted.code == 0, promoted.stderr[-3000:]

    # dev squashed in place, prod rebuilt from it: both hold dev's rows, each alias its own history.
    assert depot.fingerprint("dev") == dev
    assert depot.fingerprint("prod") == dev
    initial = (depot.root / "depot" / "inventory" / "migrations" / "0001_initial.py").read_text()
    assert initial.index("CREATE SCHEMA IF NOT EXISTS data") < initial.index("CreateModel")
    assert not (depot.root / "depot" / "inventory" / "migrations" / "0002_move.py").exists()
    for env in ("dev", "prod"):
        assert _own_histories(depot, env)
        _migrated(depot, env)


def test_check_names_the_order_an_alias_reaching_anothers_history_needs(depot):
    result = depot.run("check", "--json")
    found = {item["name"]: item for item in json.loads(result.stdout)}
    order = found["migrate order (default, data)"]
    assert order["status"] == "warn", order
    assert "data before default" in order["detail"] and "public.django_migrations" in order["detail"], order
    assert found["schema (default, data)"]["status"] == "ok", found["schema (default, data)"]["detail"]  # built data first


def test_recreate_gives_each_alias_its_own_history(depot):
    before = depot.fingerprint("dev")
    recreated = depot.run("recreate", "--yes")
    assert recreated.code == 0, recreated.stderr[-3000:]
    after = depot.fingerprint("dev")
    assert set(after) == set(before) and after["data.inv_item"][0] == 3  # every table, with what the migrations write
    assert _own_histories(depot, "dev")
    _migrated(depot, "dev")


def test_check_says_when_two_aliases_share_one_history(pg, depot):
    # Built the other way round (default first): data took public.django_migrations for its own.
    wrong = depot.names["prod"]
    create_database(pg, wrong)
    with _superuser(pg, wrong) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA data AUTHORIZATION {}").format(sql.Identifier(OWNER)))
    for alias in ("default", "data"):
        depot.manage("prod", "migrate", "--database", alias, "-v", "0")
    assert sorted(depot.history("prod")) == ["public"]
    result = depot.run("check", "--env", "prod", "--json")
    found = {item["name"]: item for item in json.loads(result.stdout)}
    shared = found["django_migrations (default, data)"]
    assert shared["status"] == "warn" and "share public.django_migrations" in shared["detail"], shared
    assert "migrate order (default, data)" not in found  # one table: nothing to order


def test_rollback_from_json_rebuilds_both_aliases_data_first(depot):
    dev = depot.fingerprint("dev")
    made = depot.run("backup")
    assert made.code == 0, made.stderr[-3000:]
    bundle = Path(made.stdout.strip().splitlines()[-1])
    back = depot.run("rollback", str(bundle / "db.json.gz"), "--env", "prod", "--yes")
    assert back.code == 0, back.stderr[-3000:]
    assert depot.fingerprint("prod") == dev
    assert _own_histories(depot, "prod")
    _migrated(depot, "prod")
