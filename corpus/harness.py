"""Run squashkit's commands on the corpus of third-party projects and write corpus/RESULTS.md.

For each project: build it from its recipe (cached virtualenv, fresh source, fresh databases,
migrate, seed), then run the matrix below in order, each cell recorded with its exit code, its
seconds and what an independent check found (``corpus/fingerprint.py``: count and md5 of every
table's sorted rows). A failing cell never stops the matrix: it is recorded and the next runs
on whatever state is left, which the next cell's check measures again.

Usage: scripts/corpus [PROJECT...]   (default: every project; results of projects not run are kept)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fingerprint as fp  # noqa: E402
from recipes import PROJECTS, Project  # noqa: E402

CORPUS = Path(__file__).resolve().parent
REPO = CORPUS.parent
SQUASHKIT = REPO / ".venv" / "bin" / "squashkit"
WORK = Path(os.environ.get("SQUASHKIT_CORPUS_DIR", "/tmp/squashkit-corpus"))
CLUSTER_DIR = os.environ.get("SQUASHKIT_CORPUS_CLUSTER", "/tmp/sk-cluster-corpus")
RESULTS_DIR = CORPUS / "results"
KILL_AT = "migrate --fake"  # the journal steps a promote is killed at: before the swap (undone) ...
KILL_AT_SWAP = "swap default"  # ... and once the swap began (finished)

COLUMNS = [
    ("setup", "setup"),
    ("check", "check"),
    ("backup", "backup"),
    ("promote", "promote"),
    ("squash", "squash"),
    ("fresh", "fresh old = new"),
    ("check_squashed", "check after the squash"),
    ("rollback_migrations_only", "rollback --migrations-only"),
    ("promote_squash", "promote --squash"),
    ("rollback_kept", "rollback --kept"),
    ("rollback_dump", "rollback bundle"),
    ("rollback_json", "rollback db.json"),
    ("kill_resume", "promote killed (-9) at migrate --fake + resume"),
    ("kill_resume_swap", "promote killed (-9) at the swap + resume"),
]


def log(message: str) -> None:
    print(f"[corpus {datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


class Cell(dict):
    """One result: exit code, seconds, and 'verified equal' or the first difference / error line."""

    @classmethod
    def of(cls, code: int | None, seconds: float, note: str) -> Cell:
        return cls(code=code, seconds=round(seconds, 1), note=note.replace("|", "/").replace("\n", " ")[:300])


class Failed(Exception):
    """A step of the harness itself could not be done (not a squashkit result)."""


# ---------------------------------------------------------------- the machine: cluster, databases


def cluster_env() -> dict[str, str]:
    out = subprocess.run([str(SQUASHKIT), "cluster", "start", CLUSTER_DIR], capture_output=True, text=True, check=True).stdout
    env = {}
    for name, value in re.findall(r"(PG[A-Z]+)=(\S+)", out):
        env[name] = value.strip("'\"")
    if "PGHOST" not in env:
        raise Failed(f"squashkit cluster start printed no PGHOST: {out!r}")
    return env


def admin() -> psycopg.Connection:
    return psycopg.connect(dbname="postgres", autocommit=True)


def databases_of(project: Project) -> list[str]:
    with admin() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"corpus_{project.name}_%"])]


def drop_databases(project: Project) -> None:
    with admin() as conn:
        for name in databases_of(project):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(name: str, *, postgis: bool = False) -> None:
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if postgis:
        with psycopg.connect(dbname=name, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")


def db(project: Project, env: str) -> str:
    return f"corpus_{project.name}_{env}"


# ---------------------------------------------------------------- building a project


class Built:
    def __init__(self, project: Project):
        self.project = project
        self.root = WORK / project.name
        self.venv = self.root / "venv"
        self.python = str(self.venv / "bin" / "python")
        self.src = self.root / "src"
        self.backups = self.root / "backups"
        self.logs = self.root / "logs"
        self.cache = WORK / "downloads"

    def fill(self, text: str) -> str:
        return text.format(venv=self.venv, python=self.python, src=self.src, root=self.root)

    def env(self, database: str | None = None) -> dict[str, str]:
        env = {**os.environ, **{k: self.fill(v) for k, v in self.project.env.items()}}
        env["DJANGO_SETTINGS_MODULE"] = self.project.settings
        if database:
            env["CORPUS_DB"] = database
        env.pop("VIRTUAL_ENV", None)
        return env

    # -- the virtualenv, reused while the recipe's key is the same
    def ensure_venv(self) -> None:
        key = hashlib.sha256(json.dumps([sys.version_info[:2], self.project.key()]).encode()).hexdigest()
        stamp = self.venv / ".corpus-recipe"
        if stamp.is_file() and stamp.read_text() == key:
            log(f"{self.project.name}: virtualenv cached ({self.venv})")
            return
        log(f"{self.project.name}: building virtualenv {self.venv}")
        shutil.rmtree(self.venv, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        run_logged([sys.executable, "-m", "venv", str(self.venv)], self.logs / "venv.log", cwd=WORK)
        pip = [self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run_logged([*pip, *self.project.requirements], self.logs / "venv.log", cwd=WORK, timeout=3600)
        if self.project.own_dist:
            package = self.project.own_dist.split("==")[0]
            run_logged([self.python, "-m", "pip", "uninstall", "-y", "-q", package], self.logs / "venv.log", cwd=WORK)
        stamp.write_text(key)

    def distribution(self) -> Path:
        """The pinned distribution of the application, downloaded once (wheel if it has one, else sdist)."""
        spec = self.project.own_dist
        assert spec
        name, version = spec.split("==")
        self.cache.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[-_.]+", "_", name).lower() + "-" + version
        found = [p for p in self.cache.iterdir() if p.name.lower().startswith(stem) and p.suffix in (".whl", ".gz")]
        if not found:
            run_logged(
                [self.python, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-d", str(self.cache), spec],
                self.logs / "download.log", cwd=WORK,
            )
            found = [p for p in self.cache.iterdir() if p.name.lower().startswith(stem) and p.suffix in (".whl", ".gz")]
        if not found:
            raise Failed(f"pip download {spec} gave no file in {self.cache}")
        return sorted(found, key=lambda p: p.suffix != ".whl")[0]

    def unpack(self) -> None:
        dist = self.distribution()
        scratch = self.root / "unpacked"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        if dist.suffix == ".whl":
            with zipfile.ZipFile(dist) as archive:
                archive.extractall(scratch)
            top = scratch
        else:
            with tarfile.open(dist) as archive:
                archive.extractall(scratch, filter="data")
            top = next(scratch.iterdir())
            top = top / "src" if (top / "src").is_dir() else top
        for package in self.project.own_packages:
            shutil.copytree(top / package, self.src / package, symlinks=True)
        shutil.rmtree(scratch)
        site = next((self.venv / "lib").glob("python*/site-packages"))
        (site / "corpus-project.pth").write_text(f"{self.src}\n")

    def build(self) -> dict[str, str]:
        """From scratch: source, databases, migrate, seed. Returns dev's fingerprint."""
        drop_databases(self.project)
        for path in (self.src, self.backups):
            shutil.rmtree(path, ignore_errors=True)
        self.src.mkdir(parents=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ensure_venv()
        for argv in self.project.create:
            run_logged([self.fill(a) for a in argv], self.logs / "setup.log", cwd=self.src, env=self.env())
        if self.project.own_dist:
            self.unpack()
        shutil.copytree(CORPUS / "projects" / self.project.name, self.src, dirs_exist_ok=True)
        self.write_config()
        for argv in self.project.prepare:
            run_logged([self.fill(a) for a in argv], self.logs / "setup.log", cwd=self.src, env=self.env(db(self.project, "dev")))
        git(self.src, "init", "-q")
        git(self.src, "add", "-A")
        git(self.src, "commit", "-q", "-m", f"{self.project.name} as built by the corpus recipe")
        postgis = (CORPUS / "projects" / self.project.name / "corpus_postgis").exists()
        for env in ("dev", "prod"):
            create_database(db(self.project, env), postgis=postgis)
            run_logged([self.python, self.project.manage_py, "migrate", "--noinput"], self.logs / "setup.log",
                       cwd=self.src, env=self.env(db(self.project, env)), timeout=self.project.timeout)
        for argv in self.project.seed:
            run_logged([self.fill(a) for a in argv], self.logs / "setup.log", cwd=self.src,
                       env=self.env(db(self.project, "dev")), timeout=self.project.timeout)
        commit(self.src, "after seeding")
        return fp.database(db(self.project, "dev"))

    def write_config(self) -> None:
        envs = "".join(
            f'\n[environments.{env}]\nsettings = "{self.project.settings}"\n'
            f'env = {{ CORPUS_DB = "{db(self.project, env)}"'
            + "".join(f', {k} = "{self.fill(v)}"' for k, v in self.project.env.items())
            + " }\n"
            for env in ("dev", "prod")
        )
        config = self.src / Path(self.project.manage_py).parent / "squashkit.toml"
        config.write_text(
            f'# written by corpus/harness.py\nmanage_py = "{Path(self.project.manage_py).name}"\npython = "{self.python}"\n'
            f'backup_dir = "{self.backups}"\nstate_dir = "{self.root / "state"}"\ndefault_env = "dev"\n{envs}'
        )
        ignore = self.src / ".gitignore"
        ignore.write_text("__pycache__/\n*.pyc\n.squashkit.lock\n.squashkit/\n/static/\n/media/\n/data/\n")

    def manage(self, *args: str, database: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, self.project.manage_py, *args], cwd=self.src, env=self.env(database),
                              capture_output=True, text=True, timeout=self.project.timeout)


def run_logged(argv: list[str], logfile: Path, *, cwd: Path, env: dict | None = None, timeout: int = 1800) -> None:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        raise Failed(f"{' '.join(argv[:4])}... exited {result.returncode}: {last_line(logfile.read_text())}")


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@localhost",
           "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@localhost"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def commit(cwd: Path, message: str) -> str:
    """Commit whatever a command changed (a user commits the squashed files); the commit's id."""
    git(cwd, "add", "-A")
    if git(cwd, "status", "--porcelain").strip():
        git(cwd, "commit", "-q", "-m", message)
    return git(cwd, "rev-parse", "HEAD").strip()


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("squashkit: error")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(no output)"


# ---------------------------------------------------------------- the matrix


class Matrix:
    def __init__(self, built: Built):
        self.b = built
        self.p = built.project
        self.dev = db(self.p, "dev")
        self.prod = db(self.p, "prod")
        self.cells: dict[str, Cell] = {}
        self.state: dict = {}
        self.ids_only: list[str] = []  # tables the last comparisons found equal but for ids

    def same_data(self, expected: dict[str, str], actual: dict[str, str], *, what: str) -> str | None:
        """The first real difference of two fingerprints' data, None when equal; tables equal but
        for their ids are noted for the cell (``verdict``)."""
        self.ids_only += [t for t in fp.ids_only_differences(expected, actual) if t not in self.ids_only]
        return fp.first_difference(fp.data_only(expected), fp.data_only(actual), what=what)

    def squashkit(self, name: str, *args: str) -> tuple[int, float, str, str]:
        """Run squashkit in the project directory; (exit code, seconds, stdout, first error line)."""
        logfile = self.b.logs / f"{name}.log"
        start = time.monotonic()
        try:
            result = subprocess.run([str(SQUASHKIT), *args], cwd=self.b.src / Path(self.p.manage_py).parent,
                                    env=self.b.env(), capture_output=True, text=True, timeout=self.p.timeout)
            code, out, err = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = None, str(exc.stdout or ""), f"timed out after {self.p.timeout} s"
        seconds = time.monotonic() - start
        logfile.write_text(f"$ squashkit {' '.join(args)}\nexit {code}, {seconds:.1f} s\n--- stdout\n{out}\n--- stderr\n{err}\n")
        return code, seconds, out, last_line(err) if code else ""

    def record(self, key: str, cell: Cell) -> None:
        self.cells[key] = cell
        log(f"{self.p.name} {key}: exit {cell['code']}, {cell['seconds']} s, {cell['note']}")

    def verdict(self, code, seconds, error, differences: list[str | None], extra: str = "") -> Cell:
        if code != 0:
            return Cell.of(code, seconds, error)
        found = [d for d in differences if d]
        note = found[0] if found else "verified equal"
        if not found and self.ids_only:
            note = f"equal but for ids: {', '.join(self.ids_only[:4])}"
        self.ids_only = []
        return Cell.of(code, seconds, note + (f" ({extra})" if extra else ""))

    def newest_bundle(self, env: str) -> Path | None:
        bundles = [p for p in self.b.backups.glob(f"{env}-*") if p.is_dir() and (p / "manifest.json").exists()]
        return max(bundles, key=lambda p: p.stat().st_mtime) if bundles else None

    def django_checks(self) -> str | None:
        """migrate --check and makemigrations --check on dev, as a user's CI would run them."""
        for args in (("migrate", "--check"), ("makemigrations", "--check", "--dry-run")):
            result = self.b.manage(*args, database=self.dev)
            if result.returncode != 0:
                return f"manage.py {' '.join(args)} exits {result.returncode}: {last_line(result.stderr or result.stdout)}"
        return None

    # -- the cells, in order
    def run(self) -> None:
        start = time.monotonic()
        try:
            self.state["dev0"] = self.b.build()
        except (Failed, subprocess.SubprocessError, OSError) as exc:
            self.record("setup", Cell.of(1, time.monotonic() - start, f"harness: {exc}"))
            return
        rows = fp.total_rows(self.state["dev0"])
        migrations = sum(len(v.split("\n")) for k, v in self.state["dev0"].items() if k.startswith("migrations:"))
        self.state["rows"] = rows
        self.state["migrations"] = migrations
        self.state["tables"] = len(fp.data_only(self.state["dev0"]))
        self.record("setup", Cell.of(0, time.monotonic() - start, f"{rows} rows in {self.state['tables']} tables, {migrations} applied migrations"))
        for key, _title in COLUMNS[1:]:
            step = getattr(self, key)
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the harness records and goes on
                self.record(key, Cell.of(None, 0, f"harness: {type(exc).__name__}: {exc}"))
            commit(self.b.src, f"after {key}")

    def check(self) -> None:
        code, seconds, out, error = self.squashkit("check", "check", "--env", "dev")
        fails = [line.strip() for line in out.splitlines() if line.strip().lower().startswith("fail")]
        note = "ok" if code == 0 else (fails[0] if fails else error)
        self.record("check", Cell.of(code, seconds, note))

    def backup(self) -> None:
        before = fp.database(self.dev)
        code, seconds, out, error = self.squashkit("backup", "backup", "--env", "dev")
        if code != 0:
            return self.record("backup", Cell.of(code, seconds, error))
        bundle = Path(out.strip().splitlines()[-1])
        self.state["bundle0"], self.state["dev_at_bundle0"] = bundle, before
        manifest = json.loads((bundle / "manifest.json").read_text())
        counts = {f"{t['schema']}.{t['name']}": t["rows"] for alias in manifest["databases"] for t in alias["facts"]["tables"]}
        owned = fp.extension_tables(self.dev)
        ours = {k.split(".", 1)[1] if k.startswith("public.") else k: int(v.split()[0])
                for k, v in fp.data_only(before).items() if k not in owned}
        theirs = {k.split(".", 1)[1] if k.startswith("public.") else k: v for k, v in counts.items()}
        wrong = [f"manifest counts {t}: {theirs[t]} rows, the table has {ours.get(t)}" for t in sorted(theirs)
                 if t in ours and theirs[t] != ours[t]]
        missing = [f"manifest lacks {t} ({ours[t]} rows)" for t in sorted(ours) if ours[t] and t not in theirs]
        self.record("backup", self.verdict(code, seconds, error, [*wrong, *missing][:1], f"{len(theirs)} tables in the manifest"))

    def _promote(self, key: str, *extra: str) -> None:
        dev_before = fp.database(self.dev)
        self.state["prod_before_" + key] = fp.database(self.prod)
        before_commit = commit(self.b.src, f"before {key}")
        code, seconds, error, accepted = self.squash_accepting(key, "promote", "dev-to-prod", "--yes", *extra)
        self.state["seconds_" + key] = seconds
        if code != 0:
            return self.record(key, Cell.of(code, seconds, accepted + error))
        self.state["prod_kept"] = (key, self.state["prod_before_" + key], before_commit)
        dev_after, prod_after = fp.database(self.dev), fp.database(self.prod)
        self.record(key, self.verdict(code, seconds, error, [
            self.same_data(dev_before, prod_after, what="prod vs dev: "),
            self.same_data(dev_before, dev_after, what="dev changed: "),
            fp.first_difference({k: v for k, v in dev_after.items() if k.startswith("migrations:")},
                                {k: v for k, v in prod_after.items() if k.startswith("migrations:")}, what="prod vs dev "),
            self.django_checks(),
        ], accepted.removesuffix("; with it: ")))

    def promote(self) -> None:
        self._promote("promote")

    def squash(self) -> None:
        before = fp.database(self.dev)
        self.state["pre_squash_commit"] = commit(self.b.src, "before squash")
        self.state["dev_migrations_before_squash"] = {k: v for k, v in before.items() if k.startswith("migrations:")}
        newest = self.newest_bundle("dev")
        code, seconds, error, accepted = self.squash_accepting("squash", "squash", "--env", "dev", "--yes")
        if code != 0:
            return self.record("squash", Cell.of(code, seconds, accepted + error))
        bundle = self.newest_bundle("dev")
        self.state["squash_bundle"] = bundle if bundle != newest else None
        changed = git(self.b.src, "status", "--porcelain").strip().splitlines()
        self.state["squash_commit"] = commit(self.b.src, "squashed by squashkit")
        after = fp.database(self.dev)
        self.record("squash", self.verdict(code, seconds, error, [
            self.same_data(before, after, what="dev changed: "),
            None if changed else "no migration file changed",
            self.django_checks(),
        ], f"{accepted}{len(changed)} files changed"))

    def squash_accepting(self, name: str, *args: str) -> tuple[int | None, float, str, str]:
        """A squash as a user runs it: plainly, and once more with --accept-loss when it refused
        to lose operations (the refusal names them); (code, seconds, error, what was accepted)."""
        code, seconds, _out, error = self.squashkit(name, *args)
        if code == 2 and "--accept-loss" in error:
            lost = re.search(r"(\d+) operation\(s\)", error)
            accepted = f"refused without --accept-loss ({lost.group(1) if lost else '?'} operations lost); with it: "
            code, seconds, _out, error = self.squashkit(name + "_accept_loss", *args, "--accept-loss")
            return code, seconds, error, accepted
        return code, seconds, error, ""

    def fresh(self) -> None:
        """Fresh migrates of the old files (twice: what differs between two builds of the same files
        is the clock's or randomness's, not the squash's) and of the new files, compared table by table."""
        if not self.state.get("squash_commit"):
            return self.record("fresh", Cell.of(None, 0, "not run: no squash to compare"))
        start = time.monotonic()
        postgis = (CORPUS / "projects" / self.p.name / "corpus_postgis").exists()
        builds = (("old", self.state["pre_squash_commit"]), ("old2", self.state["pre_squash_commit"]),
                  ("new", self.state["squash_commit"]))
        names = {which: db(self.p, f"fresh_{which}") for which, _commit in builds}
        current = git(self.b.src, "rev-parse", "HEAD").strip()
        prints = {}
        try:
            for which, commit_id in builds:
                create_database(names[which], postgis=postgis)
                git(self.b.src, "checkout", "-q", commit_id)
                git(self.b.src, "clean", "-qfd", "--", ".")
                result = self.b.manage("migrate", "--noinput", database=names[which])
                if result.returncode != 0:
                    return self.record("fresh", Cell.of(result.returncode, time.monotonic() - start,
                                                        f"migrate of the {which} files: {last_line(result.stderr)}"))
                prints[which] = fp.database(names[which])
            git(self.b.src, "checkout", "-q", current)
            schema_difference = fp.first_difference(fp.schema(names["old"]), fp.schema(names["new"]), what="columns of ")
        finally:
            git(self.b.src, "checkout", "-q", current)
            git(self.b.src, "clean", "-qfd", "--", ".")
            with admin() as conn:
                for name in names.values():
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        noise = {r.split(" (")[0] for r in fp.differing_tables(prints["old"], prints["old2"])}
        rows = [r for r in fp.differing_tables(prints["old"], prints["new"]) if r.split(" (")[0] not in noise]
        real = [r for r in rows if not r.endswith("(ids only)")]
        if real:
            row_note = f"rows of {len(rows)} tables differ: {', '.join(real[:3])}"
        elif rows:
            row_note = f"equal but for ids: {', '.join(r.removesuffix(' (ids only)') for r in rows)}"
        else:
            row_note = None
        extra = f"{fp.total_rows(prints['new'])} rows in a fresh build"
        if noise:
            extra += f"; {len(noise)} tables differ between two builds of the old files too: {', '.join(sorted(noise)[:3])}"
        self.record("fresh", self.verdict(0, time.monotonic() - start, "", [schema_difference, row_note], extra))

    def check_squashed(self) -> None:
        """squashkit's own word on the squashed files: `check`, whose `fresh data` finding says
        whether a fresh build of them still holds the rows the squash recorded for the old history."""
        if not self.state.get("squash_commit"):
            return self.record("check_squashed", Cell.of(None, 0, "not run: no squash"))
        code, seconds, out, error = self.squashkit("check_squashed", "check", "--env", "dev")
        lines = [line.strip() for line in out.splitlines()]
        fresh = [line for line in lines if "fresh data" in line]
        fails = [line for line in lines if line.startswith("fail")]
        note = (fails[0] if fails else error) if code else "ok" + (f"; {fresh[0]}" if fresh else "; no fresh data finding")
        self.record("check_squashed", Cell.of(code, seconds, note))

    def rollback_migrations_only(self) -> None:
        bundle = self.state.get("squash_bundle")
        if not bundle:
            return self.record("rollback_migrations_only", Cell.of(None, 0, "not run: no squash bundle"))
        before = fp.database(self.dev)
        code, seconds, _out, error = self.squashkit("rollback_migrations_only", "rollback", str(bundle), "--migrations-only",
                                                    "--env", "dev", "--yes")
        if code != 0:
            return self.record("rollback_migrations_only", Cell.of(code, seconds, error))
        after = fp.database(self.dev)
        files = git(self.b.src, "diff", "--stat", self.state["pre_squash_commit"], commit(self.b.src, "rolled back")).strip()
        self.record("rollback_migrations_only", self.verdict(code, seconds, error, [
            self.same_data(before, after, what="dev changed: "),
            fp.first_difference(self.state["dev_migrations_before_squash"],
                                {k: v for k, v in after.items() if k.startswith("migrations:")}, what="django_migrations vs before the squash: "),
            f"files differ from before the squash: {files.splitlines()[-1]}" if files else None,
            self.django_checks(),
        ]))

    def promote_squash(self) -> None:
        self._promote("promote_squash", "--squash")

    def rollback_kept(self) -> None:
        made_by, expected, files_then = self.state.get("prod_kept", (None, None, None))
        code, seconds, _out, error = self.squashkit("rollback_kept", "rollback", "--kept", "--env", "prod", "--yes")
        followed = ""
        advice = re.search(r"\(squashkit (rollback \S+ --migrations-only --env \S+)\)", error or "")
        if code == 2 and advice:
            # As a user would: the refusal names the squash to undo first (the files are shared by dev and prod).
            undo = advice.group(1).split()
            undone, more, _out, undo_error = self.squashkit("rollback_kept_undo_squash", *undo, "--yes")
            commit(self.b.src, "squash undone before rollback --kept")
            if undone != 0:
                return self.record("rollback_kept", Cell.of(undone, seconds + more, f"refused naming {' '.join(undo)}; "
                                                            f"that failed: {undo_error}"))
            code, again, _out, error = self.squashkit("rollback_kept_again", "rollback", "--kept", "--env", "prod", "--yes")
            seconds += more + again
            followed = f"refused until dev's squash was undone ({' '.join(undo[:1] + undo[2:])}); then "
        if code != 0:
            return self.record("rollback_kept", Cell.of(code, seconds, followed + error))
        after = fp.database(self.prod)
        files = git(self.b.src, "diff", "--stat", files_then, commit(self.b.src, "rolled back --kept"), "--",
                    "*/migrations/*").strip() if files_then else ""
        self.record("rollback_kept", self.verdict(code, seconds, error, [
            self.same_data(expected, after, what=f"prod vs before {made_by}: ")
            if expected else "no promote kept a database to compare with",
            f"the migration files are not those the kept database went with: {files.splitlines()[-1].strip()}"
            if files else None,
        ], f"{followed}the database {made_by} kept"))

    def _rollback_bundle(self, key: str, path: Path | None) -> None:
        expected = self.state.get("dev_at_bundle0")
        if not path or not expected:
            return self.record(key, Cell.of(None, 0, "not run: no bundle from the backup cell"))
        code, seconds, _out, error = self.squashkit(key, "rollback", str(path), "--env", "dev", "--yes")
        if code != 0:
            return self.record(key, Cell.of(code, seconds, error))
        after = fp.database(self.dev)
        self.record(key, self.verdict(code, seconds, error, [
            self.same_data(expected, after, what="dev vs the bundle's moment: "),
            fp.first_difference({k: v for k, v in expected.items() if k.startswith("migrations:")},
                                {k: v for k, v in after.items() if k.startswith("migrations:")}, what="dev "),
            self.django_checks(),
        ]))

    def rollback_dump(self) -> None:
        self._rollback_bundle("rollback_dump", self.state.get("bundle0"))

    def rollback_json(self) -> None:
        bundle = self.state.get("bundle0")
        json_file = next((p for p in (bundle / "db.json.gz", bundle / "db.json") if p.exists()), None) if bundle else None
        self._rollback_bundle("rollback_json", json_file)

    def kill_resume(self) -> None:
        self._kill_resume("kill_resume", KILL_AT)

    def kill_resume_swap(self) -> None:
        self._kill_resume("kill_resume_swap", KILL_AT_SWAP)

    def _kill_resume(self, key: str, step: str) -> None:
        """promote dev-to-prod killed (SIGKILL, its whole process group) once its journal says
        ``step`` started, then resume."""
        with fp.connect(self.dev) as conn:  # a row prod lacks, so that "finished" and "undone" differ
            conn.execute("INSERT INTO auth_group (name) VALUES (%s) ON CONFLICT DO NOTHING", [f"corpus marker {key}"])
        prod_before, dev_now = fp.database(self.prod), fp.database(self.dev)
        logfile = self.b.logs / f"{key}.log"
        journals = set(self.b.backups.glob("promote-prod-*.journal"))
        start = time.monotonic()
        killed = False
        with open(logfile, "w") as out:
            child = subprocess.Popen([str(SQUASHKIT), "promote", "dev-to-prod", "--yes"], cwd=self.b.src / Path(self.p.manage_py).parent,
                                     env=self.b.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            marker = f'"step":"{step}","event":"started"'
            while child.poll() is None and time.monotonic() - start < self.p.timeout:
                new = set(self.b.backups.glob("promote-prod-*.journal")) - journals
                if any(marker in p.read_text() for p in new):
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    killed = True
                    break
                time.sleep(0.01)
        if not killed:
            return self.record(key, Cell.of(child.returncode, time.monotonic() - start,
                                            f"promote ended (exit {child.returncode}) before the kill at {step!r}: "
                                            + last_line(logfile.read_text())))
        code, seconds, _out, error = self.squashkit(f"{key}_resume", "resume", "--yes")
        total = time.monotonic() - start
        if code != 0:
            return self.record(key, Cell.of(code, total, f"resume: {error}"))
        after = fp.database(self.prod)
        stray = [name for name in databases_of(self.p) if "__squashkit_" in name and not name.endswith("__squashkit_prev")]
        finished = fp.first_difference(fp.data_only(dev_now), fp.data_only(after)) is None
        undone = fp.first_difference(fp.data_only(prod_before), fp.data_only(after)) is None
        problems = [f"stray databases: {', '.join(stray)}" if stray else None,
                    None if (finished or undone) else "prod is neither as before nor as dev: "
                    + (fp.first_difference(fp.data_only(dev_now), fp.data_only(after)) or "")]
        outcome = "finished" if finished else "undone" if undone else "?"
        self.record(key, self.verdict(code, total, error, problems, f"killed at {step!r}; resume {outcome} it"))


# ---------------------------------------------------------------- RESULTS.md


def write_results() -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json"))}
    lines = [
        "# Corpus results",
        "",
        "Written by `scripts/corpus` (corpus/harness.py); one row per project, the cells in the order they ran.",
        "Each cell: exit code · seconds · `verified equal` (the harness's own per-table count + md5 of sorted",
        "rows, see corpus/fingerprint.py) or the first difference, or the first line of the error.",
        "✅ verified equal · ⚠️ equal but for ids (see README.md) · ❌ failed, or a difference found · — not run.",
        f"squashkit's code (squashkit/) is that of commit {squashkit_code()}; the commit named per project is the branch's",
        "(the harness) when that project ran. Full output of every cell: /tmp/squashkit-corpus/<project>/logs/.",
        "",
    ]
    for name, result in results.items():
        lines.append(f"- **{name}**: run {result['when']} at {result['squashkit']}; {result.get('summary', '')}")
    lines += ["", "| command | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for key, title in COLUMNS:
        row = []
        for result in results.values():
            cell = result["cells"].get(key)
            if cell is None:
                row.append("—")
                continue
            good = cell["code"] == 0 and (key == "setup" or cell["note"].startswith(("verified equal", "ok")))
            if key == "check_squashed":  # squashkit's fresh data finding itself must be ok
                good = good and cell["note"].startswith("ok; ok")
            mark = "✅" if good else "⚠️" if cell["code"] == 0 and cell["note"].startswith("equal but for ids") else "❌"
            row.append(f"{mark} {cell['code']} · {cell['seconds']} s · {cell['note']}")
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    (CORPUS / "RESULTS.md").write_text("\n".join(lines) + "\n")


def squashkit_code() -> str:
    """The last commit that changed squashkit/, and whether the work tree changes it still."""
    last = subprocess.run(["git", "log", "-1", "--format=%h", "--", "squashkit"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "squashkit"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return last + (" with uncommitted changes" if dirty else "")


def squashkit_version() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return f"{head}"


def main(argv: list[str]) -> int:
    names = argv or list(PROJECTS)
    unknown = [n for n in names if n not in PROJECTS]
    if unknown:
        print(f"corpus: unknown project(s) {', '.join(unknown)} (known: {', '.join(PROJECTS)})", file=sys.stderr)
        return 2
    os.environ.update(cluster_env())
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    for name in names:
        log(f"{name}: start")
        matrix = Matrix(Built(PROJECTS[name]))
        matrix.run()
        s = matrix.state
        summary = (f"{s['rows']} rows in {s['tables']} tables, {s['migrations']} applied migrations" if "rows" in s else "not built")
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps({
            "when": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "squashkit": squashkit_version(),
            "summary": summary, "cells": matrix.cells,
        }, indent=1, default=str))
        write_results()
        # the databases stay until the next run of this project, to look into what failed
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
