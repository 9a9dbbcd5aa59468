"""Every bad input gets one clear line, the right exit code, and leaves nothing behind.

The promise of the error model (squashkit/errors.py), checked against the real command:
exit 2 when the input, configuration or environment is wrong (nothing was attempted),
exit 1 when the backup ran and failed; one ``squashkit: error: ...`` line on stderr and no
traceback; no bundle and no ``.partial`` directory afterwards; the source database unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from squashkit.bundle import read_manifest, verify_hashes
from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    create_database,
    drop_database,
    squashkit,
    table_fingerprints,
    unique_name,
    write_config,
)


@pytest.fixture(scope="module")
def source(pg, seeded_template):
    """One seeded database for every case that must leave it alone; each test checks it did."""
    name = create_database(pg, unique_name("badinput"), template=seeded_template)
    yield name
    drop_database(pg, name)


def fingerprints(pg, dbname: str) -> dict:
    with psycopg.connect(**pg.conninfo(dbname), autocommit=True) as conn:
        return table_fingerprints(conn)


@pytest.fixture
def untouched(pg, source):
    """Fails the test if the source database differs afterwards."""
    before = fingerprints(pg, source)
    yield source
    assert fingerprints(pg, source) == before, "the source database changed"


def config_for(tmp_path: Path, database_url: str, **top: object) -> Path:
    """A config with the environment under test (dev) and a second one (prod), never used."""
    return write_config(tmp_path, {"dev": {"DATABASE_URL": database_url}, "prod": {"DATABASE_URL": "postgres:///nope"}}, **top)


def edit(config: Path, old: str, new: str) -> Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return config


def refused(result, code: int, *phrases: str) -> str:
    """The run exited with ``code``, printed nothing on stdout, and on stderr at most some
    progress lines and then one error line holding every phrase; no traceback. Returns the line."""
    assert result.code == code, f"exit {result.code}, expected {code}\nstderr: {result.stderr}\nstdout: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    lines = result.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if line.startswith("squashkit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith("squashkit: ") for line in lines), result.stderr
    for phrase in phrases:
        assert phrase in errors[0], f"{phrase!r} not in {errors[0]!r}"
    return errors[0]


def nothing_left(directory: Path) -> None:
    """No bundle, no partial directory, nothing at all."""
    if directory.exists():
        assert sorted(p.name for p in directory.iterdir()) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def backup(config: Path, *args: str, **kwargs):
    return squashkit("--config", str(config), "backup", "--env", "dev", "--no-compress", *args, **kwargs)


# --- the database cannot be reached as configured -----------------------------------------------


CONNECTION_CASES = {
    "unreachable": (lambda pg, db: f"postgres://{OWNER}@127.0.0.1:{closed_port()}/{db}", "cannot reach the PostgreSQL server"),
    "wrong-password": (lambda pg, db: pg.url(db, user=OWNER, password="not-the-password"), "wrong password for"),
    "missing-database": (lambda pg, db: pg.url("squashkit_no_such_db", user=OWNER, password=OWNER_PASSWORD), "does not exist"),
}


@pytest.mark.parametrize("case", CONNECTION_CASES)
def test_unusable_connection_is_refused_with_one_line(pg, untouched, tmp_path, case):
    url, phrase = CONNECTION_CASES[case]
    config = config_for(tmp_path, url(pg, untouched))
    line = refused(backup(config), 2, phrase)
    assert OWNER_PASSWORD not in line and "not-the-password" not in line
    nothing_left(tmp_path / "backups")


@pytest.mark.parametrize("case", CONNECTION_CASES)
def test_check_reports_an_unusable_connection_as_a_failed_check(pg, untouched, tmp_path, case):
    url, phrase = CONNECTION_CASES[case]
    config = config_for(tmp_path, url(pg, untouched))
    result = squashkit("--config", str(config), "check", "--env", "dev")
    assert result.code == 1, result.stderr
    # stderr holds at most the line naming the Django processes check started
    assert "Traceback" not in result.stderr
    assert all(line.startswith("squashkit: ") and "Django process" in line for line in result.stderr.splitlines())
    failed = [line for line in result.stdout.splitlines() if line.startswith("fail")]
    assert len(failed) == 1 and failed[0].startswith("fail connection (default): ") and phrase in failed[0], result.stdout


# --- the configuration is wrong ------------------------------------------------------------------


def test_unknown_environment_names_the_known_ones(tmp_path):
    config = config_for(tmp_path, "postgres:///unused")
    for command in ("backup", "check"):
        result = squashkit("--config", str(config), command, "--env", "nope")
        refused(result, 2, "unknown environment 'nope'", "known: dev, prod")
    nothing_left(tmp_path / "backups")


def _broken_toml(config: Path) -> str | tuple[str, ...]:
    config.write_text(config.read_text() + "backup_dir = [\n")
    return "is not valid TOML"


def _unknown_key(config: Path) -> str | tuple[str, ...]:
    config.write_text('colour = "red"\n' + config.read_text())
    return "invalid configuration in", "colour: unknown key"


def _no_settings(config: Path) -> str | tuple[str, ...]:
    config.write_text(config.read_text().replace('settings = "sample_project.settings"\n', "", 1))
    return "environments.dev.settings: Field required"


def _no_config_file(config: Path) -> str | tuple[str, ...]:
    config.unlink()
    return "no squashkit configuration found"


CONFIG_CASES = {
    "broken-toml": _broken_toml,
    "unknown-key": _unknown_key,
    "environment-without-settings": _no_settings,
    "no-config-file": _no_config_file,
}


@pytest.mark.parametrize("command", ["backup", "check"])
@pytest.mark.parametrize("case", CONFIG_CASES)
def test_invalid_configuration_is_refused_naming_the_problem(tmp_path, case, command):
    project = tmp_path / "project"
    project.mkdir()
    config = config_for(project, "postgres:///unused")
    phrases = CONFIG_CASES[case](config)
    phrases = (phrases,) if isinstance(phrases, str) else phrases
    # Found from the working directory, as a user runs it: nothing above tmp_path has one.
    result = squashkit(command, "--env", "dev", cwd=project)
    refused(result, 2, *phrases)
    nothing_left(project / "backups")


def test_unset_variable_in_the_env_table_is_named(tmp_path):
    config = config_for(tmp_path, "${SQUASHKIT_TEST_UNSET_VARIABLE}")
    refused(backup(config), 2, "env.DATABASE_URL uses ${SQUASHKIT_TEST_UNSET_VARIABLE}", "SQUASHKIT_TEST_UNSET_VARIABLE is not set")
    nothing_left(tmp_path / "backups")


# --- the project does not start ------------------------------------------------------------------


def test_missing_manage_py_is_refused(pg, untouched, tmp_path):
    config = config_for(tmp_path, pg.url(untouched, user=OWNER, password=OWNER_PASSWORD))
    missing = tmp_path / "nowhere" / "manage.py"
    config.write_text("\n".join(
        f'manage_py = "{missing}"' if line.startswith("manage_py = ") else line for line in config.read_text().splitlines()
    ) + "\n")
    refused(backup(config), 2, f"no manage.py at {missing}")
    nothing_left(tmp_path / "backups")


def _settings_raise(tmp_path: Path) -> tuple[str, dict[str, str], str]:
    (tmp_path / "boomsettings.py").write_text('raise RuntimeError("boom")\n')
    return "boomsettings", {"PYTHONPATH": str(tmp_path)}, "RuntimeError: boom"


SETTINGS_CASES = {
    "module-missing": lambda tmp_path: ("nonexistent.settings", {}, "ModuleNotFoundError: No module named 'nonexistent'"),
    "module-raises": _settings_raise,
}


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_settings_that_fail_to_import_show_the_error(pg, untouched, tmp_path, case):
    settings, extra, phrase = SETTINGS_CASES[case](tmp_path)
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": pg.url(untouched, user=OWNER, password=OWNER_PASSWORD), **extra}})
    edit(config, 'settings = "sample_project.settings"', f'settings = "{settings}"')
    refused(backup(config), 2, f"the project does not start with settings {settings}", phrase)
    nothing_left(tmp_path / "backups")


# --- the client tools do not fit the server ------------------------------------------------------


def _no_pg_dump(bindir: Path) -> str:
    return f"pg_dump not found in {bindir}"


def _old_pg_dump(bindir: Path) -> str:
    # A stand-in that only answers --version: the version check must stop before it runs.
    fake = bindir / "pg_dump"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = "--version" ] && { echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; }\n'
        'echo "fake pg_dump must not run" >&2; exit 1\n'
    )
    fake.chmod(0o755)
    (bindir / "pg_restore").symlink_to(shutil.which("pg_restore"))
    return "pg_dump is version 9 but the server is PostgreSQL {server}"


PG_DUMP_CASES = {"missing": _no_pg_dump, "too-old": _old_pg_dump}


@pytest.mark.parametrize("case", PG_DUMP_CASES)
def test_unusable_pg_dump_is_refused_before_writing(pg, untouched, tmp_path, case):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    with psycopg.connect(**pg.conninfo(untouched)) as conn:
        server = conn.info.server_version // 10000
    phrase = PG_DUMP_CASES[case](bindir).format(server=server)
    config = config_for(tmp_path, pg.url(untouched, user=OWNER, password=OWNER_PASSWORD), pg_bin=str(bindir))
    refused(backup(config), 2, phrase)
    nothing_left(tmp_path / "backups")


# --- the output directory cannot be written ------------------------------------------------------


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file", "in-proc"])
def test_unwritable_output_directory_is_refused(pg, untouched, tmp_path, where):
    """As root, permissions do not stop a write: a path mkdir cannot create does."""
    config = config_for(tmp_path, pg.url(untouched, user=OWNER, password=OWNER_PASSWORD))
    (tmp_path / "a-file").write_text("")
    output = {
        "under-a-file": tmp_path / "a-file" / "backups",
        "is-a-file": tmp_path / "a-file",
        "in-proc": Path("/proc/squashkit-test"),
    }[where]
    refused(backup(config, "--output", str(output)), 2, f"output directory {output}")
    assert (tmp_path / "a-file").read_text() == "" and not Path("/proc/squashkit-test").exists()
    nothing_left(tmp_path / "backups")


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: int):
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a small tmpfs, and mounting one needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture(scope="module")
def output_size(pg, source, tmp_path_factory):
    """Bytes of a whole bundle of ``source``, written once to a roomy disk, to size disks that fill part way."""
    where = tmp_path_factory.mktemp("sizes")
    result = backup(config_for(where, pg.url(source, user=OWNER, password=OWNER_PASSWORD)), "--output", str(where / "out"))
    assert result.code == 0, result.stderr
    bundle = Path(result.stdout.strip().splitlines()[-1])
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())


# The dump and db.json are written side by side, from one snapshot: a disk that fills early or
# late stops whichever writer meets the end of it first, squashkit's own or pg_dump.
DISK_FULL_AT = {"a quarter in": 0.25, "three quarters in": 0.75}


@pytest.mark.parametrize("share", DISK_FULL_AT)
def test_full_disk_fails_cleanly_and_leaves_the_disk_empty(pg, untouched, output_size, tmp_path, share):
    config = config_for(tmp_path, pg.url(untouched, user=OWNER, password=OWNER_PASSWORD))
    with small_tmpfs(tmp_path / "full", int(output_size * DISK_FULL_AT[share])) as full:
        result = backup(config, "--output", str(full))
        assert "free space there or pass --output" in refused(result, 1, "no space left on device")
        assert sorted(p.name for p in full.iterdir()) == []


# --- a failure after something was written -------------------------------------------------------


def test_a_model_the_database_does_not_match_fails_the_backup_and_leaves_no_bundle(pg, sample_db, tmp_path):
    """db.json cannot be written (a model's column is gone) while pg_dump writes its file beside it:
    exit 1, no trace left. (A model whose whole table is missing is left out of the json instead:
    test_pipeline.)"""
    with sample_db.connect() as conn:
        conn.execute("ALTER TABLE analytics_pageview DROP COLUMN referrer")
        before = table_fingerprints(conn)
    config = config_for(tmp_path, sample_db.url())
    result = backup(config)
    refused(result, 1, "db.json of 'default' failed", "referrer does not exist")
    nothing_left(tmp_path / "backups")
    with sample_db.connect() as conn:
        assert table_fingerprints(conn) == before


# --- usage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--jobs", "2"], "--jobs needs --format directory"),
        (["--format", "tar"], "--format must be one of custom, directory, not 'tar'"),
        (["--jobs", "0", "--format", "directory"], "--jobs must be at least 1"),
    ],
    ids=["jobs-without-directory-format", "unknown-format", "zero-jobs"],
)
def test_bad_option_values_are_refused_before_anything_runs(tmp_path, args, phrase):
    # The database URL points nowhere: the refusal must come before any connection.
    config = config_for(tmp_path, f"postgres://{OWNER}@127.0.0.1:{closed_port()}/none")
    refused(backup(config, *args), 2, phrase)
    nothing_left(tmp_path / "backups")


@pytest.mark.parametrize(
    "args, phrase",
    [(["--bogus"], "No such option: --bogus"), (["--jobs", "many"], "Invalid value for '--jobs'")],
    ids=["unknown-option", "not-a-number"],
)
def test_usage_errors_are_one_line_with_exit_2(tmp_path, args, phrase):
    config = config_for(tmp_path, "postgres:///unused")
    refused(backup(config, *args), 2, phrase, "see squashkit --help")
    nothing_left(tmp_path / "backups")


# --- killed in the middle ------------------------------------------------------------------------


def test_sigkill_mid_backup_leaves_nothing_that_looks_like_a_bundle(sample_db, tmp_path):
    config = config_for(tmp_path, sample_db.url())
    backups = tmp_path / "backups"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQUASHKIT_ENV"}
    process = subprocess.Popen(
        [sys.executable, "-m", "squashkit.cli", "--config", str(config), "backup", "--env", "dev"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (backups.is_dir() and any(p.name.endswith(".partial") for p in backups.iterdir())):
            assert process.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline, "no .partial directory appeared"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    left = sorted(p.name for p in backups.iterdir())
    assert left and all(name.startswith(".") and name.endswith(".partial") for name in left), left

    before = fingerprints(sample_db.pg, sample_db.name)
    result = backup(config)
    assert result.code == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == backups and not path.name.startswith(".")
    manifest = read_manifest(path)
    verify_hashes(path, manifest)
    assert {"manifest.json", "db.json", "db.dump", "migrations.tar.gz", "log.txt"} <= {p.name for p in path.iterdir()}
    assert sorted(p.name for p in backups.iterdir() if not p.name.endswith(".partial")) == [path.name]
    assert fingerprints(sample_db.pg, sample_db.name) == before


# --- restore, promote and rollback: refused before anything changes ------------------------------
#
# Each case below checks, besides the one line and the exit code, that both environments'
# data AND the project's migration files are exactly as before.

from squashkit.bundle import sha256  # noqa: E402
from tests.conftest import SAMPLE, table_fingerprints as _fingerprints  # noqa: E402,F811
from tests.test_pipeline import Project  # noqa: E402

MIGRATION_SKIP = ("django_migrations",)


@pytest.fixture(scope="module")
def made_bundle(pg, source, tmp_path_factory) -> Path:
    """One real bundle of ``source``, taken with sample_project's code; tests edit copies of it."""
    where = tmp_path_factory.mktemp("bundle")
    config = write_config(where, {"dev": {"DATABASE_URL": pg.url(source, user=OWNER, password=OWNER_PASSWORD)}})
    result = squashkit("--config", str(config), "backup", "--env", "dev", "--no-compress")
    assert result.code == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def envs(pg, seeded_template, tmp_path):
    """A copy of sample_project with a dev and a prod database of its own (both seeded, both migrated)."""
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (root / "pyproject.toml").unlink()
    dev = create_database(pg, unique_name("bad_dev"), template=seeded_template)
    prod = create_database(pg, unique_name("bad_prod"), template=seeded_template)
    with psycopg.connect(**pg.conninfo(prod), autocommit=True) as conn:
        conn.execute("INSERT INTO catalog_tag (name) VALUES ('prod-only')")
    (root / "squashkit.toml").write_text(
        f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
        + "".join(
            f'[environments.{name}]\nsettings = "sample_project.settings"\n'
            f'env = {{ DATABASE_URL = "{pg.url(db, user=OWNER, password=OWNER_PASSWORD)}" }}\n'
            for name, db in (("dev", dev), ("prod", prod))
        )
    )
    yield Project(pg, root, dev, prod)
    drop_database(pg, dev)
    drop_database(pg, prod)


def state(envs: Project) -> tuple:
    """Both databases, row for row, and every migration file with its sha256 (symlinked folder included)."""
    files = {
        str(path.relative_to(envs.root)): sha256(path)
        for folder in ("catalog/migrations", "orders/migrations", "community/migrations", "analytics/migrations")
        for path in sorted((envs.root / folder).rglob("*")) if path.is_file() and "__pycache__" not in path.parts
    }
    return envs.fingerprint(envs.dev), envs.fingerprint(envs.prod), files


@contextlib.contextmanager
def nothing_changes(envs: Project):
    before = state(envs)
    assert len(before[2]) > 20
    yield
    after = state(envs)
    assert after[2] == before[2], "the migration files changed"
    assert after[:2] == before[:2], "a database changed"
    backups = envs.root / "backups"
    assert not backups.exists() or not any(p.name.endswith(".partial") for p in backups.iterdir())


def edited_copy(bundle: Path, destination: Path, edit) -> Path:
    """A copy of ``bundle`` whose manifest.json went through ``edit(dict)`` (the manifest is not hashed)."""
    shutil.copytree(bundle, destination)
    path = destination / "manifest.json"
    path.chmod(0o600)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))
    return destination


def run(envs: Project, *args: str, **kwargs):
    return envs.run(*args, **kwargs)


# connection problems on the target of a promote or a restore


def _target_url(envs: Project, case: str) -> str:
    if case == "wrong-password":
        return envs.pg.url(envs.prod, user=OWNER, password="not-the-password")
    return f"postgres://{OWNER}@127.0.0.1:{closed_port()}/{envs.prod}"


@pytest.mark.parametrize("command", ["promote", "restore"])
@pytest.mark.parametrize("case, phrase", [("wrong-password", "wrong password for"), ("unreachable", "cannot reach the PostgreSQL server")])
def test_a_target_that_cannot_be_reached_is_refused_before_anything_changes(envs, made_bundle, command, case, phrase):
    config = envs.root / "squashkit.toml"
    good = envs.pg.url(envs.prod, user=OWNER, password=OWNER_PASSWORD)
    edit(config, good, _target_url(envs, case))
    args = ["promote", "dev-to-prod", "--yes"] if command == "promote" else ["restore", str(made_bundle), "--env", "prod", "--yes"]
    with nothing_changes(envs):
        line = refused(run(envs, *args), 2, phrase)
    assert OWNER_PASSWORD not in line and "not-the-password" not in line


# names that are not there


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["promote", "dev-to-nope", "--yes"], "unknown environment 'nope'"),
        (["promote", "nope-to-prod", "--yes"], "unknown environment 'nope'"),
        (["promote", "dev-to-dev", "--yes"], "promote needs two different environments"),
        (["promote", "devprod", "--yes"], "promote takes SOURCE-to-TARGET"),
        (["restore", "{bundle}", "--env", "nope", "--yes"], "unknown environment 'nope'"),
        (["rollback", "{bundle}", "--env", "nope", "--yes"], "unknown environment 'nope'"),
        (["restore", "/nonexistent/squashkit-bundle", "--env", "prod", "--yes"], "/nonexistent/squashkit-bundle does not exist"),
        (["rollback", "/nonexistent/squashkit-bundle", "--env", "prod", "--yes"], "/nonexistent/squashkit-bundle is neither a bundle"),
    ],
    ids=["promote-unknown-target", "promote-unknown-source", "promote-same-env", "promote-no-direction",
         "restore-unknown-env", "rollback-unknown-env", "restore-unknown-bundle", "rollback-unknown-bundle"],
)
def test_unknown_names_are_refused(envs, made_bundle, args, phrase):
    with nothing_changes(envs):
        refused(run(envs, *(arg.format(bundle=made_bundle) for arg in args)), 2, phrase)


# bundles that are not what they claim


@pytest.mark.parametrize("command", ["restore", "rollback"])
def test_a_bundle_directory_without_its_manifest_is_refused(envs, made_bundle, tmp_path, command):
    copy = tmp_path / "no-manifest"
    shutil.copytree(made_bundle, copy)
    (copy / "manifest.json").unlink()
    with nothing_changes(envs):
        refused(run(envs, command, str(copy), "--env", "prod", "--yes"), 2, "is not a squashkit bundle (no manifest.json)")


def _set(path: str, value):
    def apply(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return apply


HAND_EDITS = {
    "rows-not-a-number": (_set("databases.0.facts.tables.0.rows", "many"), "databases.0.facts.tables.0.rows: Input should be a valid integer"),
    "dump-outside-the-bundle": (_set("databases.0.dump", "../../../etc/passwd"), "databases.0.dump: '../../../etc/passwd' is not a relative path inside the bundle"),
    "absolute-archive": (_set("migrations_archive", "/etc/shadow"), "migrations_archive: '/etc/shadow' is not a relative path inside the bundle"),
    "folder-climbing-out": (_set("own_apps.catalog.resolved_folder", "../../.."), "own_apps.catalog.resolved_folder: '../../..' is not a migrations folder"),
    "created-at-not-a-time": (_set("created_at", "yesterday"), "created_at: Input should be a valid datetime"),
    "missing-field": (lambda data: data.pop("databases"), "databases: Field required"),
}


@pytest.mark.parametrize("command", ["restore", "rollback"])
@pytest.mark.parametrize("case", HAND_EDITS)
def test_a_hand_edited_manifest_is_refused_naming_the_field(envs, made_bundle, tmp_path, command, case):
    change, phrase = HAND_EDITS[case]
    copy = edited_copy(made_bundle, tmp_path / "edited", change)
    with nothing_changes(envs):
        refused(run(envs, command, str(copy), "--env", "prod", "--yes"), 2, "manifest.json is damaged or was edited by hand", phrase)


def test_a_manifest_that_is_not_json_is_refused(envs, made_bundle, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(made_bundle, copy)
    (copy / "manifest.json").chmod(0o600)
    (copy / "manifest.json").write_text((made_bundle / "manifest.json").read_text()[:500])
    with nothing_changes(envs):
        refused(run(envs, "restore", str(copy), "--env", "prod", "--yes"), 2, "manifest.json is damaged", "not valid JSON")


def test_a_corrupted_dump_is_refused_before_the_target_is_touched(envs, made_bundle, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(made_bundle, copy)
    dump = copy / "db.dump"
    dump.chmod(0o600)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the size unchanged
    dump.write_bytes(bytes(data))
    with nothing_changes(envs):
        refused(run(envs, "restore", str(copy), "--env", "prod", "--yes"), 2, "is damaged: db.dump", "nothing was changed")


def test_a_truncated_lone_fixture_is_refused_before_anything_is_dropped(envs, made_bundle, tmp_path):
    lone = tmp_path / "lone.json"
    lone.write_bytes((made_bundle / "db.json").read_bytes()[:100_000])
    with nothing_changes(envs):
        refused(run(envs, "rollback", str(lone), "--env", "prod", "--yes"), 2, "lone.json is not a JSON fixture", "nothing was changed")


def test_a_truncated_db_json_in_a_bundle_is_refused_before_anything_is_dropped(envs, made_bundle, tmp_path):
    copy = tmp_path / "truncated-json"
    shutil.copytree(made_bundle, copy)
    fixture = copy / "db.json"
    fixture.chmod(0o600)
    fixture.write_bytes(fixture.read_bytes()[: fixture.stat().st_size // 2])
    with nothing_changes(envs):
        refused(run(envs, "rollback", str(fixture), "--env", "prod", "--yes"), 2, "db.json", "nothing was changed")


def _another_project(data: dict) -> None:
    """The bundle of a project whose apps are blog and shop, not catalog, orders, community and analytics."""
    rename = {"catalog": "shop", "orders": "shop_orders", "community": "blog", "analytics": "stats"}
    data["own_apps"] = {rename[label]: app for label, app in data["own_apps"].items()}
    for entry in data["databases"]:
        entry["facts"]["applied_migrations"] = [[rename.get(app, app), name] for app, name in entry["facts"]["applied_migrations"]]


def _newer_schema(data: dict) -> None:
    data["databases"][0]["facts"]["applied_migrations"].append(["catalog", "0099_only_in_a_newer_checkout"])


def _missing_extension(data: dict) -> None:
    data["databases"][0]["facts"]["extensions"]["squashkit_no_such_extension"] = "1.0"


BUNDLE_MISMATCHES = {
    "another-project": (_another_project, "comes from another project: its apps blog, shop, shop_orders, stats are not installed here"),
    "schema-newer-than-the-code": (_newer_schema, "applied 1 migration(s) this code does not have (e.g. catalog.0099_only_in_a_newer_checkout)"),
    "extension-the-server-lacks": (_missing_extension, "the target server lacks the extension(s) squashkit_no_such_extension"),
}


@pytest.mark.parametrize("case", [
    "another-project",
    "schema-newer-than-the-code",
    "extension-the-server-lacks",
])
def test_a_bundle_the_code_or_server_cannot_take_is_refused(envs, made_bundle, tmp_path, case):
    change, phrase = BUNDLE_MISMATCHES[case]
    copy = edited_copy(made_bundle, tmp_path / case, change)
    with nothing_changes(envs):
        refused(run(envs, "restore", str(copy), "--env", "prod", "--yes"), 2, phrase)


def test_an_extension_the_server_lacks_refuses_promote(envs):
    config = envs.root / "squashkit.toml"
    config.write_text('extensions = ["squashkit_no_such_extension"]\n' + config.read_text())
    with nothing_changes(envs):
        refused(run(envs, "promote", "dev-to-prod", "--yes"), 2, "the target server lacks the extension(s) squashkit_no_such_extension")


# the project's migrations are not in a state a squash or a promote may fake


def _unapplied(envs: Project) -> str:
    with psycopg.connect(**envs.pg.conninfo(envs.dev), autocommit=True) as conn:
        conn.execute("DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM django_migrations WHERE app = 'catalog')")
    return "it has unapplied migrations: run migrate first on dev"


def _model_change(envs: Project) -> str:
    models = envs.root / "catalog" / "models.py"
    text = models.read_text()
    marker = "class Tag(models.Model):\n"
    assert marker in text
    models.write_text(text.replace(marker, marker + "    squashkit_unmigrated = models.IntegerField(null=True)\n", 1))
    return "its models have changes without a migration: run makemigrations first on dev"


@pytest.mark.parametrize("command", [["promote", "dev-to-prod", "--yes"], ["squash", "--yes"], ["promote", "dev-to-prod", "--squash", "--yes"]],
                         ids=["promote", "squash", "promote-squash"])
@pytest.mark.parametrize("dirty", [_unapplied, _model_change], ids=["unapplied", "model-changes"])
def test_dirty_migrations_are_refused(envs, command, dirty):
    phrase = dirty(envs)
    with nothing_changes(envs):
        refused(run(envs, *command), 2, phrase)


def test_a_symlink_loop_in_a_migrations_folder_is_left_alone(envs):
    """Links that loop back (a folder link to itself, its parent) are neither followed nor deleted."""
    (envs.root / "catalog" / "migrations" / "loop").symlink_to(".")
    (envs.root / "migration_store" / "community" / "up").symlink_to("..")
    before = envs.fingerprint(envs.dev)
    result = run(envs, "squash", "--yes", "--accept-loss")
    assert result.code == 0, result.stderr
    assert envs.fingerprint(envs.dev) == before
    assert os.readlink(envs.root / "catalog" / "migrations" / "loop") == "."
    assert sorted(p.name for p in (envs.root / "catalog" / "migrations").glob("0*.py")) == [
        "0001_initial.py", "0002_initial.py", "0003_squashkit_carried.py"  # catalog <-> orders split; the carried view and trigger
    ]


def test_a_migration_file_that_is_a_symlink_loop_is_refused(envs):
    (envs.root / "catalog" / "migrations" / "0098_loop.py").symlink_to("0098_loop.py")
    with nothing_changes(envs):
        refused(run(envs, "squash", "--yes"), 2, "the project does not start", "catalog.migrations.0098_loop")


def _without_root_powers(envs: Project) -> list[str]:
    """As root, permissions do not stop a read: run squashkit without CAP_DAC_OVERRIDE/READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("as root an unreadable folder needs setpriv to drop the capability that reads it anyway")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.mark.parametrize("command", [["backup", "--env", "dev"], ["squash", "--yes"], ["promote", "dev-to-prod", "--squash", "--yes"]],
                         ids=["backup", "squash", "promote-squash"])
def test_an_unreadable_migrations_folder_is_refused(envs, command):
    folder = envs.root / "analytics" / "migrations"  # no other app's migration depends on it
    prefix = _without_root_powers(envs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQUASHKIT_ENV"}
    with nothing_changes(envs):
        folder.chmod(0)
        try:
            completed = subprocess.run(
                [*prefix, sys.executable, "-m", "squashkit.cli", "--config", str(envs.root / "squashkit.toml"), *command],
                env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
            )
        finally:
            folder.chmod(0o755)
        from tests.conftest import Result

        refused(Result(completed.returncode, completed.stdout, completed.stderr), 2, f"cannot read {folder}", "Permission denied")
    assert not (envs.root / "backups").exists() or not any((envs.root / "backups").iterdir())


@pytest.mark.parametrize("args, phrase", [
    (["backup", "--env", "dev", "--format", "directory", "--jobs", "-1"], "--jobs must be at least 1"),
    (["restore", "{bundle}", "--env", "prod", "--jobs", "0", "--yes"], "--jobs must be at least 1"),
    (["restore", "{bundle}", "--env", "prod", "--jobs", "-3", "--yes"], "--jobs must be at least 1"),
], ids=["backup-negative", "restore-zero", "restore-negative"])
def test_jobs_below_one_are_refused(envs, made_bundle, args, phrase):
    with nothing_changes(envs):
        refused(run(envs, *(arg.format(bundle=made_bundle) for arg in args)), 2, phrase)


def test_provenance_tells_another_project_a_newer_and_an_older_code_apart(made_bundle):
    """The check every command that replaces a database makes (provenance.judge), against a real manifest."""
    from squashkit.provenance import BundleSide, Code, CodeApp, bundle_side, judge

    manifest = read_manifest(made_bundle)
    side: BundleSide = bundle_side(manifest)
    names: dict[str, list[str]] = {}
    for app, name in manifest.alias("default").facts.applied_migrations:
        names.setdefault(app, []).append(name)

    def code(migrations: dict[str, list[str]]) -> Code:
        return Code(apps=[CodeApp(label=label, project=label in manifest.own_apps, migrations=found, aliases=["default"])
                          for label, found in migrations.items()])

    assert judge(side, code(names)).kind == "same"  # the code it was taken with
    older = judge(side, code({**names, "catalog": [n for n in names["catalog"] if not n.startswith("0008")]}))
    assert older.kind == "older" and "applied 1 migration(s) this code does not have (e.g. catalog.0008_" in older.reason
    newer = judge(side, code({**names, "orders": [*names["orders"], "0099_new"]}))
    assert newer.kind == "newer" and newer.missing == {"default": [("orders", "0099_new")]}
    other = judge(side, code({label: found for label, found in names.items() if label not in ("community", "analytics")}))
    assert other.kind == "foreign" and "its apps analytics, community are not installed here" in other.reason


def test_more_jobs_than_the_server_has_free_connections_are_refused(envs, made_bundle):
    """pg_restore --jobs opens a connection per job: running out halfway would fail after the drop."""
    with nothing_changes(envs):
        refused(run(envs, "restore", str(made_bundle), "--env", "prod", "--jobs", "500", "--yes"), 2,
                "free connections", "--jobs 500")
