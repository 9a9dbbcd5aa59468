"""Every bad input gets one clear line, the right exit code, and leaves nothing behind.

The promise of the error model (squashkit/errors.py), checked against the real command:
exit 2 when the input, configuration or environment is wrong (nothing was attempted),
exit 1 when the backup ran and failed; one ``squashkit: error: ...`` line on stderr and no
traceback; no bundle and no ``.partial`` directory afterwards; the source database unchanged.
"""

from __future__ import annotations

import contextlib
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
    manage,
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
    return squashkit("--config", str(config), "backup", "--env", "dev", *args, **kwargs)


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
    assert "Traceback" not in result.stderr and result.stderr == ""
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
def output_sizes(pg, source, tmp_path_factory):
    """Bytes of pg_dump's file and of dumpdata's jsonl for ``source``, to size a disk that fills at each step."""
    where = tmp_path_factory.mktemp("sizes")
    subprocess.run(
        ["pg_dump", "-Fc", "-f", str(where / "db.dump"), source],
        env={**os.environ, **pg.environ()}, check=True, capture_output=True,
    )
    excludes = [arg for label in ("auth.permission", "contenttypes", "admin.logentry", "sessions") for arg in ("--exclude", label)]
    manage(pg, source, "dumpdata", "--all", "--format", "jsonl", "--output", str(where / "db.jsonl"), *excludes)
    return (where / "db.dump").stat().st_size, (where / "db.jsonl").stat().st_size


# Where the disk fills: in pg_dump, in dumpdata (pg_dump's file fits), or in squashkit itself
# writing db.json (the jsonl fits too). Sizes in bytes from (dump, jsonl).
DISK_FULL_IN = {
    "pg_dump": (lambda dump, jsonl: dump // 2, "pg_dump of 'default' failed: no space left on device"),
    "dumpdata": (lambda dump, jsonl: dump + jsonl // 2, "dumpdata of 'default' failed: no space left on device"),
    "db.json": (lambda dump, jsonl: dump + jsonl + jsonl // 2, "no space left on device in "),
}


@pytest.mark.parametrize("step", DISK_FULL_IN)
def test_full_disk_fails_cleanly_and_leaves_the_disk_empty(pg, untouched, output_sizes, tmp_path, step):
    size, phrase = DISK_FULL_IN[step]
    config = config_for(tmp_path, pg.url(untouched, user=OWNER, password=OWNER_PASSWORD))
    with small_tmpfs(tmp_path / "full", size(*output_sizes)) as full:
        result = backup(config, "--output", str(full))
        assert "free space there or pass --output" in refused(result, 1, phrase)
        assert ("pg_dump done" in result.stderr) == (step != "pg_dump")
        assert sorted(p.name for p in full.iterdir()) == []


# --- a failure after something was written -------------------------------------------------------


def test_failure_after_pg_dump_leaves_no_bundle(pg, sample_db, tmp_path):
    """dumpdata fails (a model's table is gone) after pg_dump wrote its file: exit 1, no trace left."""
    with sample_db.connect() as conn:
        conn.execute("DROP TABLE analytics_pageview")
        before = table_fingerprints(conn)
    config = config_for(tmp_path, sample_db.url())
    result = backup(config)
    refused(result, 1, "dumpdata of 'default' failed", 'relation "analytics_pageview" does not exist')
    assert "pg_dump done" in result.stderr, "the failure should come after pg_dump wrote its file"
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
