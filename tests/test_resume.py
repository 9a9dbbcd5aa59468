"""Killed at any step, a run resumes to the state before it or the state it was heading for,
row for row, with the matching migration files and no stray database.

``SQUASHKIT_TEST_KILL_AT`` makes the real ``squashkit`` process SIGKILL itself right after its
journal says a step started: the worst moment, with the step announced and nothing of it done
(or, for the steps after, everything before it done). ``squashkit resume`` must then finish or
undo the run from the journal alone.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import OWNER, OWNER_PASSWORD
from tests.test_pipeline import PROD_PASSWORD, make_prod, prod_role, project  # noqa: F401 (fixtures)

SIDE, KEPT = "__squashkit_new", "__squashkit_prev"


def databases(project) -> set[str]:
    with psycopg.connect(**project.pg.conninfo()) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    return {name for name in names if name.startswith((project.dev, project.prod))}


def killed(project, *args: str, at: str):
    result = project.run(*args, env={"SQUASHKIT_TEST_KILL_AT": at})
    assert result.code == -9, f"not killed at {at}: {result.code} {result.stderr[-1500:]}"
    status = project.run("status")
    assert "interrupted" in status.stdout, status.stdout
    again = project.run(*args)
    assert again.code == 2 and "interrupted" in again.stderr and "squashkit resume" in again.stderr, again.stderr
    resumed = project.run("resume", "--yes")
    assert resumed.code == 0, resumed.stderr
    assert "interrupted" not in project.run("status").stdout
    return resumed


def assert_consistent(project, dbname: str) -> None:
    """The migration files and django_migrations agree: nothing half-squashed survived."""
    project.manage(dbname, "migrate", "--check", **({} if dbname == project.dev else {"owner": "prod_owner", "password": PROD_PASSWORD}))


def is_squashed(files: dict[str, str]) -> bool:
    return all(
        name.endswith(("/__init__.py", "_initial.py", "_squashkit_carried.py")) for name in files
    ) and any(name.endswith("_squashkit_carried.py") for name in files)


@pytest.mark.parametrize("step", ["delete migrations", "migrate --fake", "swap default"])
def test_killed_rebuild_squash_resumes_to_before_or_finished(project, step):
    """squash --rebuild; the squash that moves no data: tests/test_squash_moves_no_data.py."""
    before, files = project.fingerprint(project.dev), project.migration_files()
    killed(project, "squash", "--rebuild", "--yes", "--accept-loss", at=f"dev:{step}")
    assert project.fingerprint(project.dev) == before  # a squash keeps every row either way
    after = project.migration_files()
    if step.startswith("swap"):
        assert is_squashed(after) and after != files
        assert databases(project) == {project.dev, project.dev + KEPT}
    else:
        assert after == files
        assert databases(project) == {project.dev}
    assert_consistent(project, project.dev)


@pytest.mark.parametrize("step", ["backup target", "pg_restore default", "swap default"])
def test_killed_promote_resumes_to_before_or_finished(project, step):
    make_prod(project)
    dev, prod, files = project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()
    killed(project, "promote", "dev-to-prod", "--yes", at=f"prod:{step}")
    assert project.fingerprint(project.prod) == (dev if step.startswith("swap") else prod)
    assert project.fingerprint(project.dev) == dev
    assert project.migration_files() == files
    assert project.dev + SIDE not in databases(project) and project.prod + SIDE not in databases(project)
    assert_consistent(project, project.prod)


def test_killed_promote_with_squash_between_its_phases_unsquashes_the_source(project):
    """Killed after dev was squashed and swapped, before prod was touched: both go back."""
    make_prod(project)
    dev, prod, files = project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files()
    killed(project, "promote", "dev-to-prod", "--squash", "--yes", "--accept-loss", at="prod:create default")
    assert project.fingerprint(project.dev) == dev and project.fingerprint(project.prod) == prod
    assert project.migration_files() == files
    assert databases(project) == {project.dev, project.prod}
    assert_consistent(project, project.dev)
    assert_consistent(project, project.prod)


@pytest.mark.parametrize("step", ["put back migrations", "pg_restore default", "swap default"])
def test_killed_rollback_resumes_to_before_or_finished(project, step):
    original, original_files = project.fingerprint(project.dev), project.migration_files()
    squashed = project.run("squash", "--yes", "--accept-loss")
    assert squashed.code == 0, squashed.stderr
    bundle = squashed.stdout.strip().splitlines()[-1]
    files = project.migration_files()
    assert files != original_files
    project.run("cleanup", "--env", "dev", "--keep", "5", "--yes")  # the kept database of the squash
    killed(project, "rollback", bundle, "--yes", at=f"dev:{step}")
    assert project.fingerprint(project.dev) == original
    assert project.migration_files() == (original_files if step.startswith("swap") else files)
    assert project.dev + SIDE not in databases(project)
    assert_consistent(project, project.dev)


@pytest.mark.parametrize("command", ["squash", "rollback"])
def test_killed_in_place_run_resumes(project, command):
    """In place the database is dropped: a squash is put back from its bundle, a rollback is done again."""
    before, files = project.fingerprint(project.dev), project.migration_files()
    if command == "squash":
        killed(project, "squash", "--rebuild", "--yes", "--accept-loss", "--in-place", at="dev:pg_restore default")
        assert project.migration_files() == files
    else:
        made = project.run("backup")
        assert made.code == 0, made.stderr
        killed(project, "rollback", made.stdout.strip().splitlines()[-1], "--yes", "--in-place", at="dev:pg_restore default")
    assert project.fingerprint(project.dev) == before
    assert databases(project) == {project.dev}
    assert_consistent(project, project.dev)


def test_a_second_run_on_the_same_database_fails_fast_naming_the_first(project):
    # Held by the same role a second squashkit run would use (other roles' application names are hidden).
    with psycopg.connect(project.pg.url("postgres", user=OWNER, password=OWNER_PASSWORD), autocommit=True) as conn:
        conn.execute("SET application_name = 'squashkit squash-dev-held-by-test'")
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [0x5A5B, project.dev])
        before, files = project.fingerprint(project.dev), project.migration_files()
        result = project.run("squash", "--yes", "--accept-loss")
        assert result.code == 2, result.stderr
        assert "is busy" in result.stderr and "squash-dev-held-by-test" in result.stderr, result.stderr
    assert project.fingerprint(project.dev) == before and project.migration_files() == files
    assert OWNER_PASSWORD not in result.stderr


def test_rollback_kept_swaps_the_previous_database_back_with_its_files_and_again(project):
    """After a side-mode squash (``--rebuild``), ``rollback --kept`` is a rename, not a restore; the
    squashed database becomes the kept one, so a second ``rollback --kept`` returns to the squash."""
    before, files = project.fingerprint(project.dev), project.migration_files()
    assert project.run("squash", "--rebuild", "--yes", "--accept-loss").code == 0
    squashed = project.migration_files()
    back = project.run("rollback", "--kept", "--yes")
    assert back.code == 0, back.stderr
    assert project.fingerprint(project.dev) == before and project.migration_files() == files
    assert databases(project) == {project.dev, project.dev + KEPT}
    assert_consistent(project, project.dev)
    again = project.run("rollback", "--kept", "--yes")
    assert again.code == 0, again.stderr
    assert project.migration_files() == squashed and project.fingerprint(project.dev) == before
    assert_consistent(project, project.dev)


@pytest.mark.parametrize("step", ["exchange default", "put back migrations"])
def test_killed_rollback_kept_resumes(project, step):
    assert project.run("squash", "--rebuild", "--yes", "--accept-loss").code == 0
    squashed, data = project.migration_files(), project.fingerprint(project.dev)
    killed(project, "rollback", "--kept", "--yes", at=f"dev:{step}")
    assert project.fingerprint(project.dev) == data
    if step.startswith("exchange"):
        assert project.migration_files() == squashed
    else:
        assert project.migration_files() != squashed and not is_squashed(project.migration_files())
    assert databases(project) == {project.dev, project.dev + KEPT}
    assert_consistent(project, project.dev)


def test_rollback_without_a_kept_database_says_what_to_use(project):
    result = project.run("rollback", "--kept", "--yes")
    assert result.code == 2 and "no kept database" in result.stderr and "squashkit rollback BUNDLE" in result.stderr


def test_a_failed_run_whose_undo_fails_too_stays_open_for_resume(tmp_path):
    # Found on a wagtail project: the server went away mid-squash, so the undo could not drop the
    # side database either; the journal said "failed", resume had nothing to do, and the squashed
    # files stayed on disk beside a database that still had the old history.
    from types import SimpleNamespace

    from squashkit import journal
    from squashkit.errors import OperationFailed, UndoIncomplete
    from squashkit.runs import journalled

    config = SimpleNamespace(backup_dir=tmp_path, source=tmp_path / "squashkit.toml")
    with pytest.raises(UndoIncomplete):
        with journalled(config, "squash-dev-1", command="squash", target="dev", squash=True, mode="side") as record:
            record.started("pg_restore default", "dev")
            raise UndoIncomplete("step 'pg_restore default' failed: x; undoing it failed too: y")
    assert [run.header.run for run in journal.interrupted(tmp_path)] == ["squash-dev-1"]

    with pytest.raises(OperationFailed):  # an undo that worked closes the journal as before
        with journalled(config, "squash-dev-2", command="squash", target="dev", squash=True, mode="side") as record:
            record.started("pg_restore default", "dev")
            raise OperationFailed("step 'pg_restore default' failed: x. Nothing was lost")
    assert [run.header.run for run in journal.interrupted(tmp_path)] == ["squash-dev-1"]
