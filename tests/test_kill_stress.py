"""Random kills (opt-in: ``SQUASHKIT_STRESS=N`` runs N kills per command; skipped otherwise).

Unlike ``test_resume.py``, which kills at the start of named steps, this kills the whole process
group (squashkit and its pg_dump, pg_restore, manage.py children: a power cut) at a random moment
of a real run, then resumes and checks the invariants row for row: each database equals its
state before or after the run, the migration files equal the before or the finished set and
agree with django_migrations, and no side database is left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.test_pipeline import make_prod, prod_role, project  # noqa: F401 (fixtures)
from tests.test_resume import SIDE, assert_consistent, databases

RUNS = int(os.environ.get("SQUASHKIT_STRESS", "0"))
pytestmark = pytest.mark.skipif(RUNS == 0, reason="set SQUASHKIT_STRESS=N to kill N runs per command at random moments")


def _start(project, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.Popen(
        [sys.executable, "-m", "squashkit.cli", "--config", str(project.root / "squashkit.toml"), *args],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _duration(project, *args: str) -> float:
    started = time.monotonic()
    result = project.run(*args)
    assert result.code == 0, result.stderr
    return time.monotonic() - started


@pytest.mark.parametrize("command", [
    ("squash", "--yes", "--accept-loss"),
    ("promote", "dev-to-prod", "--yes"),
    ("promote", "dev-to-prod", "--squash", "--yes", "--accept-loss"),
])
def test_random_kills_resume_to_before_or_after(project, command):
    make_prod(project)
    seen = {"killed": 0, "finished before the kill": 0, "rolled back": 0, "finished": 0, "nothing to do": 0}
    # One undisturbed run gives the finished state and how long a run takes.
    before = (project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files())
    length = _duration(project, *command)
    after = (project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files())
    rng = random.Random(int(os.environ.get("SQUASHKIT_STRESS_SEED", "1")))
    for _ in range(RUNS):
        state = (project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files())
        process = _start(project, *command)
        # Preflight and the backups take the first half of a run; the destructive steps come after.
        time.sleep(rng.uniform(length * 0.45, length * 1.05))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            seen["killed"] += 1
        else:
            seen["finished before the kill"] += 1
        process.wait()
        resumed = project.run("resume", "--yes")
        if resumed.code == 0:
            outcome = next((k for k in ("rolled back", "finished", "nothing to do") if k in project.run("status").stdout.splitlines()[-1]), None)
            seen[outcome or "finished"] += 1
        else:
            assert "no interrupted run" in resumed.stderr, resumed.stderr
        now = (project.fingerprint(project.dev), project.fingerprint(project.prod), project.migration_files())
        assert now[:2] in (state[:2], after[:2]), "data neither before nor after"
        # Regenerated files carry their generation time: the finished set is judged by its names.
        assert now[2] in (before[2], state[2]) or set(now[2]) == set(after[2]), "migration files neither before nor after"
        assert not any(name.endswith((SIDE, "__squashkit_scratch")) for name in databases(project)), databases(project)
        assert_consistent(project, project.dev)
        if command[0] == "promote":  # a squash of dev alone leaves prod on the old files, by design
            assert_consistent(project, project.prod)
    print(f"\n{' '.join(command)}: {seen} (full run {length:.1f} s)")
