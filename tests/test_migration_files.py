"""Before migration files are deleted: git can give them back, and the bundle's tarball holds them byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from squashkit.errors import OperationFailed
from squashkit.project import (
    ManagePy,
    archive_migrations,
    introspect,
    uncommitted_migration_changes,
    verify_archive_matches_disk,
)
from tests.conftest import SAMPLE

GIT = ["git", "-c", "user.name=squashkit", "-c", "user.email=squashkit@example.invalid", "-c", "init.defaultBranch=main"]


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def root(tmp_path) -> Path:
    """A copy of sample_project (community/migrations a symlink into migration_store/)."""
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    return root


@pytest.fixture
def repo(root) -> Path:
    """The copy as a git repository with everything committed."""
    (root / ".gitignore").write_text("__pycache__/\n*.local.py\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    return root


def project_of(root: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DJANGO_SETTINGS_MODULE="sample_project.settings", DATABASE_URL="postgres:///not_connected_to")
    manage = ManagePy(python=sys.executable, script=root / "manage.py", cwd=root, env=env)
    return introspect(manage)


# --- uncommitted_migration_changes ----------------------------------------------------------------


def test_a_committed_checkout_has_nothing_git_could_not_give_back(repo):
    project = project_of(repo)
    (repo / "catalog" / "migrations" / "__pycache__").mkdir(exist_ok=True)
    (repo / "catalog" / "migrations" / "__pycache__" / "0001_initial.cpython-311.pyc").write_bytes(b"cache")
    (repo / "catalog" / "models.py").write_text("# not a migration\n", encoding="utf-8")  # outside the folders
    assert uncommitted_migration_changes(project, repo) == []


def test_every_migration_file_git_could_not_give_back_is_named(repo):
    project = project_of(repo)
    (repo / "catalog" / "migrations" / "0099_untracked.py").write_text("# new\n")
    with (repo / "orders" / "migrations" / "0001_initial.py").open("a") as handle:
        handle.write("# edited\n")
    (repo / "analytics" / "migrations" / "0002_pageview_referrer.py").unlink()
    # Through the symlink: reported where the file really is.
    (repo / "community" / "migrations" / "0099_staged.py").write_text("# staged, never committed\n")
    git(repo, "add", "migration_store/community/0099_staged.py")
    git(repo, "mv", "catalog/migrations/0003_rename_title_product_name.py", "catalog/migrations/0003_renamed.py")
    (repo / "orders" / "migrations" / "0098_mine.local.py").write_text("# ignored by .gitignore\n")
    (repo / "orders" / "migrations" / "nested").mkdir()
    (repo / "orders" / "migrations" / "nested" / "ñ weird name.py").write_text("# untracked, in a subfolder\n")

    assert sorted(uncommitted_migration_changes(project, repo)) == sorted([
        "catalog/migrations/0099_untracked.py: untracked",
        "orders/migrations/0001_initial.py: modified, not committed",
        "analytics/migrations/0002_pageview_referrer.py: deleted, not committed",
        "migration_store/community/0099_staged.py: added, not committed",
        "catalog/migrations/0003_renamed.py: renamed, not committed",
        "orders/migrations/0098_mine.local.py: ignored by git",
        "orders/migrations/nested/ñ weird name.py: untracked",
    ])


def test_a_symlinked_folder_in_another_repository_is_asked_of_that_repository(repo, tmp_path):
    elsewhere = tmp_path / "shared-migrations"
    shutil.move(repo / "migration_store" / "community", elsewhere)
    (repo / "community" / "migrations").unlink()
    (repo / "community" / "migrations").symlink_to(elsewhere)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "community's migrations live elsewhere")
    git(elsewhere, "init", "-q")
    git(elsewhere, "add", "-A")
    git(elsewhere, "commit", "-qm", "initial")
    project = project_of(repo)
    assert uncommitted_migration_changes(project, repo) == []
    (elsewhere / "0099_new.py").write_text("# new\n")
    assert uncommitted_migration_changes(project, repo) == [f"{elsewhere / '0099_new.py'}: untracked"]


def test_without_a_repository_or_without_git_there_is_nothing_to_report(root, monkeypatch, tmp_path):
    project = project_of(root)
    (root / "catalog" / "migrations" / "0099_untracked.py").write_text("# new\n")
    assert uncommitted_migration_changes(project, root) == []  # not a repository at all
    git(root, "init", "-q")
    assert "catalog/migrations/0099_untracked.py: untracked" in uncommitted_migration_changes(project, root)
    empty_bin = tmp_path / "bin-without-git"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert uncommitted_migration_changes(project, root) == []


# --- verify_archive_matches_disk ------------------------------------------------------------------


def test_the_archive_just_written_matches_the_disk(root, tmp_path):
    project = project_of(root)
    tarball = tmp_path / "migrations.tar.gz"
    names = archive_migrations(project, root, tarball)
    assert "community/migrations/0001_initial.py" in names  # as the app sees it, through the symlink
    verify_archive_matches_disk(project, root, tarball)


def _edited(root: Path) -> str:
    with (root / "orders" / "migrations" / "0001_initial.py").open("a") as handle:
        handle.write("# edited after the backup\n")
    return "orders/migrations/0001_initial.py (differs from the archived copy)"


def _added(root: Path) -> str:
    (root / "community" / "migrations" / "0099_after_backup.py").write_text("# new\n")
    return "community/migrations/0099_after_backup.py (not in the archive)"


def _same_size_edit(root: Path) -> str:
    path = root / "catalog" / "migrations" / "0001_initial.py"
    data = bytearray(path.read_bytes())
    data[-2] = ord("X") if data[-2] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))
    return "catalog/migrations/0001_initial.py (differs from the archived copy)"


@pytest.mark.parametrize("change", [_edited, _added, _same_size_edit], ids=["edited", "added", "same-size-edit"])
def test_a_file_the_archive_does_not_hold_as_it_is_stops_the_deletion(root, tmp_path, change):
    project = project_of(root)
    tarball = tmp_path / "migrations.tar.gz"
    archive_migrations(project, root, tarball)
    problem = change(root)
    with pytest.raises(OperationFailed) as failed:
        verify_archive_matches_disk(project, root, tarball)
    message = str(failed.value)
    assert problem in message and "no migration file was deleted" in message and "\n" not in message


def test_a_damaged_archive_stops_the_deletion(root, tmp_path):
    project = project_of(root)
    tarball = tmp_path / "migrations.tar.gz"
    archive_migrations(project, root, tarball)
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(OperationFailed, match="cannot read .*migrations.tar.gz.*no migration file was deleted"):
        verify_archive_matches_disk(project, root, tarball)
