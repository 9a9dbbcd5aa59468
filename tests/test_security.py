"""Passwords stay secret, bundles stay private, and no name can inject SQL.

The README promises: "Passwords never reach a command line, a log or a manifest: client
programs get them through a private 0600 passfile named in their environment, and SQL
identifiers are always quoted by psycopg". These tests hold squashkit to it with the real
command, real children (pg_dump, pg_restore, manage.py) and a real server.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from squashkit.bundle import read_manifest
from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    REPO,
    SAMPLE,
    Result,
    create_database,
    drop_database,
    squashkit,
    table_fingerprints,
    unique_name,
)
from tests.test_pipeline import PROD_OWNER, PROD_PASSWORD, SKIP, Project, prod_role  # noqa: F401  (prod_role: a fixture)

ADMIN_VARIABLE = "SQUASHKIT_TEST_ADMIN_PASSWORD"
NO_CREATEDB = "security_nocreatedb"
NO_CREATEDB_PASSWORD = "nocreatedb:secret pw/ü@#'\""


# --- watching every descendant's command line -------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        parents[int(entry.name)] = int(text[text.rindex(b")") + 2 :].split()[1])
    return parents


@dataclass
class ArgvWatcher:
    """Polls /proc for every descendant of ``root`` and keeps each command line it sees."""

    root: int
    seen: dict[int, list[str]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            parents = _parents()
            family = {self.root}
            grew = True
            while grew:
                grew = False
                for pid, parent in parents.items():
                    if parent in family and pid not in family:
                        family.add(pid)
                        grew = True
            for pid in family:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        argv = handle.read()
                except OSError:
                    continue
                if argv:
                    words = argv.decode(errors="replace").rstrip("\0").split("\0")
                    key = hash((pid, tuple(words)))
                    self.seen[key] = words
            time.sleep(0.001)


def run_watched(*args: str, env: dict[str, str] | None = None) -> tuple[Result, list[list[str]]]:
    """``squashkit ARGS`` as conftest.squashkit runs it, with every descendant's argv recorded."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQUASHKIT_ENV"}
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "squashkit.cli", *args],
        env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watcher = ArgvWatcher(process.pid)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        watcher.stop.set()
        thread.join()
    return Result(process.returncode, stdout, stderr), list(watcher.seen.values())


def secret_forms(*passwords: str) -> list[bytes]:
    """Each password as it could leak: raw, percent-encoded (a URL), and libpq-passfile-escaped."""
    forms = set()
    for password in passwords:
        for text in (password, quote(password, safe=""), quote(password), password.replace("\\", "\\\\").replace(":", "\\:")):
            forms.add(text.encode())
    return sorted(forms)


def leaks(data: bytes | str, forms: list[bytes]) -> list[bytes]:
    data = data.encode() if isinstance(data, str) else data
    return [form for form in forms if form in data]


@pytest.fixture
def project(pg, seeded_template, prod_role, tmp_path):
    """sample_project copied, dev owned by the test owner, prod by a role without CREATEDB, so
    every drop and create of prod goes through the admin connection and its password."""
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [NO_CREATEDB]).fetchone()
        conn.execute(sql.SQL(("ALTER" if exists else "CREATE") + " ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
            sql.Identifier(NO_CREATEDB), sql.Literal(NO_CREATEDB_PASSWORD)))
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (root / "pyproject.toml").unlink()
    dev = create_database(pg, unique_name("secdev"), template=seeded_template)
    prod = create_database(pg, unique_name("secprod"), owner=NO_CREATEDB)
    dev_url = pg.url(dev, user=OWNER, password=OWNER_PASSWORD)
    prod_url = pg.url(prod, user=NO_CREATEDB, password=NO_CREATEDB_PASSWORD)
    (root / "squashkit.toml").write_text(
        f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
        f'[environments.dev]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{dev_url}" }}\n'
        f'[environments.prod]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{prod_url}" }}\n'
        f'admin = {{ user = "{pg.superuser}", password_env = "{ADMIN_VARIABLE}" }}\n'
    )
    made = Project(pg, root, dev, prod)
    made.manage(prod, "migrate", "-v", "0", owner=NO_CREATEDB, password=NO_CREATEDB_PASSWORD)
    yield made
    drop_database(pg, dev)
    drop_database(pg, prod)


def test_no_password_reaches_a_command_line_a_log_an_output_or_a_bundle(pg, project):
    forms = secret_forms(OWNER_PASSWORD, NO_CREATEDB_PASSWORD, pg.password)
    config = str(project.root / "squashkit.toml")
    env = {ADMIN_VARIABLE: pg.password}
    seen: list[list[str]] = []
    for command in (["backup", "--env", "dev"], ["backup", "--env", "prod", "--format", "directory", "--jobs", "2"],
                    ["promote", "dev-to-prod", "--yes"]):
        result, argvs = run_watched("--config", config, *command, env=env)
        assert result.code == 0, result.stderr
        assert leaks(result.stdout + result.stderr, forms) == [], command
        seen += argvs
    assert project.fingerprint(project.prod) == project.fingerprint(project.dev)

    # The watcher saw the children that matter, so an empty leak list means something.
    programs = {Path(argv[0]).name for argv in seen} | {Path(word).name for argv in seen for word in argv[1:2]}
    assert {"pg_dump", "pg_restore", "manage.py"} <= programs, sorted(programs)
    assert any("--jobs=2" in argv for argv in seen if Path(argv[0]).name == "pg_dump")
    leaked = [(argv, form) for argv in seen for form in leaks("\0".join(argv), forms)]
    assert leaked == []

    bundles = sorted(path for path in (project.root / "backups").iterdir() if (path / "manifest.json").is_file())
    assert len(bundles) == 4  # dev, prod (directory format), and promote's: dev's and prod's safety bundle
    journals = list((project.root / "backups").glob("*.journal"))
    assert journals and (project.root / "backups" / "lineage").is_dir()
    # Bundles, run journals, lineage records: everything squashkit wrote.
    for path in [p for p in (project.root / "backups").rglob("*") if p.is_file()]:
        assert leaks(path.read_bytes(), forms) == [], path


def test_every_bundle_directory_is_0700_and_every_file_0600(project):
    old_umask = os.umask(0o002)  # a permissive umask must not leak into the bundle
    try:
        made = [project.run("backup", "--env", "dev"), project.run("backup", "--env", "dev", "--format", "directory", "--jobs", "2")]
    finally:
        os.umask(old_umask)
    bundles = []
    for result in made:
        assert result.code == 0, result.stderr
        bundles.append(Path(result.stdout.strip().splitlines()[-1]))
    checked = 0
    for bundle in bundles:
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o700, bundle
        for path in bundle.rglob("*"):
            expected = 0o700 if path.is_dir() else 0o600
            assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
            checked += 1
    assert (bundles[1] / "db.dump").is_dir() and checked > 10
    assert stat.S_IMODE((project.root / "backups").stat().st_mode) == 0o700


# --- names that need quoting ------------------------------------------------------------------------

WEIRD = 'we"ird; DROP TABLE canary; -- ñ'


def canaries_alive(pg, *databases: str) -> bool:
    for dbname in databases:
        with psycopg.connect(**pg.conninfo(dbname), autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM canary").fetchone()[0] != 1:
                return False
    return True


@pytest.fixture
def weird(pg, seeded_template, tmp_path):
    """dev and prod whose database names quote, space, semicolon and inject; dev has an extra
    schema of such a name with a table and a sequence; canary tables wait to be dropped."""
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (root / "pyproject.toml").unlink()
    dev = create_database(pg, unique_name(f"{WEIRD} dev"), template=seeded_template)
    prod = unique_name(f"{WEIRD} prod")
    drop_database(pg, prod)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS canary (id int)")
        conn.execute("TRUNCATE canary")
        conn.execute("INSERT INTO canary VALUES (1)")
    with psycopg.connect(**pg.conninfo(dev, user=OWNER, password=OWNER_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id int)")
        conn.execute("INSERT INTO canary VALUES (1)")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(WEIRD)))
        conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, {} text)").format(sql.Identifier(WEIRD, WEIRD), sql.Identifier(WEIRD)))
        conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT 'row ' || g FROM generate_series(1, 25) g").format(
            sql.Identifier(WEIRD, WEIRD), sql.Identifier(WEIRD)))
    urls = {name: pg.url(db, user=OWNER, password=OWNER_PASSWORD) for name, db in (("dev", dev), ("prod", prod))}
    assert all(WEIRD not in url and " " not in url and ";" not in url for url in urls.values()), urls  # percent-encoded
    (root / "squashkit.toml").write_text(
        f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
        + "".join(f'[environments.{name}]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{url}" }}\n' for name, url in urls.items())
    )
    yield Project(pg, root, dev, prod)
    drop_database(pg, dev)
    drop_database(pg, prod)


def test_names_that_need_quoting_work_end_to_end_and_inject_nothing(pg, weird):
    dev_before = weird.fingerprint(weird.dev)
    assert f"{WEIRD}.{WEIRD}" in dev_before

    made = weird.run("backup", "--env", "dev")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    manifest = read_manifest(bundle)
    assert manifest.alias("default").database == weird.dev
    assert any(t.schema_name == WEIRD and t.name == WEIRD and t.rows == 25 for t in manifest.alias("default").facts.tables)

    promoted = weird.run("promote", "dev-to-prod", "--yes")
    assert promoted.code == 0, promoted.stderr
    assert weird.fingerprint(weird.prod) == dev_before
    with psycopg.connect(**pg.conninfo(weird.prod), autocommit=True) as conn:
        serial = conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ('next') RETURNING id").format(
            sql.Identifier(WEIRD, WEIRD), sql.Identifier(WEIRD))).fetchone()[0]
    assert serial == 26  # the sequence came along too

    # restore the bundle over the changed prod, then roll dev back from it
    restored = weird.run("restore", str(bundle), "--env", "prod", "--yes")
    assert restored.code == 0, restored.stderr
    assert weird.fingerprint(weird.prod) == dev_before
    with psycopg.connect(**pg.conninfo(weird.dev), autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(WEIRD, WEIRD)))
        conn.execute("UPDATE catalog_product SET name = 'changed'")
    rolled = weird.run("rollback", str(bundle), "--env", "dev", "--yes")
    assert rolled.code == 0, rolled.stderr
    assert weird.fingerprint(weird.dev) == dev_before

    assert canaries_alive(pg, "postgres", weird.dev, weird.prod)
    for result in (made, promoted, restored, rolled):
        assert "Traceback" not in result.stderr


# --- SQL is never built from strings -----------------------------------------------------------------

SQL_FACTORIES = {"SQL", "Composed"}


class _Checker:
    """Which ``execute(`` calls in a module pass something other than a literal or psycopg's sql objects."""

    def __init__(self, tree: ast.Module, composed_functions: set[str]):
        self.tree = tree
        self.composed_functions = composed_functions
        self.constants = {
            target.id: node.value
            for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)
        }
        self.parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def problems(self) -> list[tuple[int, str]]:
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("execute", "executemany") and node.args:
                why = self.unsafe(node.args[0], self.function_of(node))
                if why:
                    found.append((node.lineno, why))
        return found

    def function_of(self, node: ast.AST) -> ast.AST | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    def unsafe(self, expr: ast.AST, function: ast.AST | None, depth: int = 0) -> str | None:
        if depth > 5:
            return "too indirect to check"
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return None
        if isinstance(expr, ast.JoinedStr):
            return "an f-string"
        if isinstance(expr, ast.BinOp):
            if isinstance(expr.op, ast.Add) and not self.unsafe(expr.left, function, depth + 1) and self.is_composable(expr.right, function, depth):
                return None  # query += sql.SQL(...): still psycopg's
            return "a string built with an operator (% or +)"
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Attribute) and expr.func.attr == "as_string" and self.is_composable(expr.func.value, function, depth):
                return None  # psycopg's own rendering of its sql objects (for execute wrappers that edit text)
            return None if self.is_composable(expr, function, depth) else f"the result of {ast.unparse(expr.func)}()"
        if isinstance(expr, ast.Name):
            values = self.assigned(expr.id, function)
            if not values:
                return f"{expr.id}, which is not assigned from a literal or sql object here"
            for value in values:
                why = self.unsafe(value, function, depth + 1)
                if why:
                    return f"{expr.id}, assigned {why}"
            return None
        return f"{ast.unparse(expr)}"

    def is_composable(self, expr: ast.AST, function: ast.AST | None, depth: int) -> bool:
        """sql.SQL(<literal>), sql.Composed(...), their .format()/.join(), or a squashkit function returning sql.Composed."""
        if isinstance(expr, ast.Name):
            return all(self.is_composable(v, function, depth + 1) for v in self.assigned(expr.id, function) or [None])
        if not isinstance(expr, ast.Call):
            return False
        func = expr.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in SQL_FACTORIES:
            argument = expr.args[0] if expr.args else None
            if name == "SQL":
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    return True
                if isinstance(argument, ast.Name) and isinstance(self.constants.get(argument.id), ast.Constant):
                    return True
                return False
            return True
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            return self.is_composable(func.value, function, depth)
        return name in self.composed_functions

    def assigned(self, name: str, function: ast.AST | None) -> list[ast.AST]:
        scope = function if function is not None else self.tree
        values = []
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
                # query += <this>: what is added must be safe on its own
                values.append(node.value if isinstance(node.op, ast.Add) else ast.BinOp(left=node.target, op=node.op, right=node.value))
            elif isinstance(node, (ast.For, ast.comprehension)) and any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target)):
                values.append(ast.Name(id="<loop variable>"))
        if not values and name in self.constants:
            values.append(self.constants[name])
        return values


def composed_functions(trees: list[ast.Module]) -> set[str]:
    """Functions annotated to return psycopg sql objects (create_database_statement, ...)."""
    return {
        node.name
        for tree in trees for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.returns is not None
        and ast.unparse(node.returns) in ("sql.Composed", "sql.SQL", "sql.Composable", "Composed", "SQL")
    }


def unsafe_executes(sources: dict[str, str]) -> list[str]:
    trees = {name: ast.parse(text) for name, text in sources.items()}
    known = composed_functions(list(trees.values()))
    return [f"{name}:{line}: execute() gets {why}" for name, tree in trees.items() for line, why in _Checker(tree, known).problems()]


def test_every_execute_gets_a_literal_or_psycopg_sql_object():
    sources = {str(path.relative_to(REPO)): path.read_text() for path in sorted((REPO / "squashkit").rglob("*.py"))}
    assert sum(text.count(".execute(") for text in sources.values()) > 30  # the check looks at the real code
    assert unsafe_executes(sources) == []


BAD_EXAMPLES = {
    "f-string": 'def f(conn, name):\n    conn.execute(f"DROP DATABASE {name}")\n',
    "percent": 'def f(conn, name):\n    conn.execute("DROP DATABASE %s" % name)\n',
    "format": 'def f(conn, name):\n    conn.execute("DROP DATABASE {}".format(name))\n',
    "concatenation": 'def f(conn, name):\n    conn.execute("DROP DATABASE " + name)\n',
    "variable": 'def f(conn, name):\n    query = f"DROP DATABASE {name}"\n    conn.execute(query)\n',
    "sql-of-an-f-string": 'from psycopg import sql\ndef f(conn, name):\n    conn.execute(sql.SQL(f"DROP DATABASE {name}"))\n',
    "parameter": 'def f(conn, query):\n    conn.execute(query)\n',
    "augmented": 'from psycopg import sql\ndef f(conn, name):\n    q = sql.SQL("SELECT 1")\n    q += f" FROM {name}"\n    conn.execute(q)\n',
    "module-constant-built": 'Q = "SELECT " + "x"\ndef f(conn):\n    conn.execute(Q)\n',
}
GOOD_EXAMPLES = {
    "literal": 'def f(conn, name):\n    conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])\n',
    "composed": 'from psycopg import sql\ndef f(conn, name):\n    conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))\n',
    "composed-variable": 'from psycopg import sql\nQ = "SELECT {}"\ndef f(conn, name):\n    query = sql.SQL(Q).format(sql.Identifier(name))\n    conn.execute(query)\n',
    "rendered-by-psycopg": (
        'from psycopg import sql\ndef f(cursor, conn, value):\n    statement = sql.SQL("SET x = {}").format(sql.Literal(value))\n'
        '    cursor.execute(statement.as_string(conn))\n'
    ),
    "statement-function": (
        'from psycopg import sql\ndef stmt(name) -> sql.Composed:\n    return sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))\n'
        'def f(conn, name):\n    statement = stmt(name)\n    conn.execute(statement)\n'
    ),
}


@pytest.mark.parametrize("example", BAD_EXAMPLES)
def test_the_static_check_catches_sql_built_from_strings(example):
    assert len(unsafe_executes({example: BAD_EXAMPLES[example]})) == 1


@pytest.mark.parametrize("example", GOOD_EXAMPLES)
def test_the_static_check_accepts_literals_and_composed_sql(example):
    assert unsafe_executes({example: GOOD_EXAMPLES[example]}) == []
