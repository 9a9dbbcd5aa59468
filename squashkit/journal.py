"""The run journal: every destructive run writes what it is about to do before it does it.

A run (restore, squash, promote, rollback) appends one JSON line per event to
``<backup_dir>/<run>.journal``, next to its bundles: the run's header, then for each step
``started`` (with what it is about to change), ``finished`` or ``failed``, and finally the
run's outcome. Each line is flushed and fsynced before the step acts, so after a SIGKILL or a
power loss the journal says exactly which step was under way. ``squashkit resume`` reads it to
finish or undo the run; ``squashkit status`` shows the last runs.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from squashkit.errors import BadInput

SUFFIX = ".journal"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)

Event = Literal["started", "finished", "failed"]
Outcome = Literal["finished", "failed", "rolled back", "nothing to do"]


class Header(BaseModel):
    """The first line of a journal: what was asked, so ``resume`` can act without the original command line."""

    run: str = Field(description="Run id, also the journal's file name.")
    command: Literal["restore", "squash", "promote", "rollback", "recreate"]
    target: str = Field(description="The environment whose database is replaced.")
    source: str | None = Field(None, description="promote's source environment.")
    argument: str | None = Field(None, description="The bundle or fixture path, or promote's spec.")
    squash: bool = False
    loaddata: bool = Field(False, description="rollback: the json is loaded by Django's loaddata, not by SQL.")
    public_only: bool = Field(False, description="rollback of a django-tenants project: db.json (public alone) may be used.")
    mode: Literal["side", "in-place", "online", "schemas", "tenant"] = Field(
        description="How the target's database changes: rebuilt beside it and swapped in, dropped and rebuilt, "
        "online (a squash or rollback --migrations-only: only django_migrations is rewritten, no data moves), "
        "schemas (recreate where the database may not be dropped: its project schemas rebuilt beside the old ones), or "
        "tenant (rollback --schema: one django-tenants schema replaced, nothing else touched).")
    config: Path = Field(description="The config file the run used.")
    pid: int
    host: str
    started_at: datetime


class Entry(BaseModel):
    """One event of a step. ``changed`` names what the step changes (databases, files, bundles)."""

    at: datetime
    step: str
    event: Event
    env: str | None = Field(None, description="The environment the step acts on.")
    changed: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""


class End(BaseModel):
    """The last line of a run that ended (a killed run has none)."""

    at: datetime
    outcome: Outcome
    detail: str = ""


class Run(BaseModel):
    """A journal read back."""

    path: Path
    header: Header
    entries: list[Entry]
    end: End | None

    def started(self, step: str, env: str | None = None) -> Entry | None:
        """The ``started`` entry of ``step`` (on ``env``), if it ever started."""
        return next((e for e in self.entries if e.step == step and e.event == "started" and (env is None or e.env == env)), None)

    def phases(self) -> list[Entry]:
        """The ``started`` entries of the run's phases (one per environment it rebuilt), in order."""
        return [e for e in self.entries if e.step == "phase" and e.event == "started"]

    def since(self, entry: Entry) -> list[Entry]:
        """``entry`` and every entry written after it (by position: clocks can tie or step back)."""
        return self.entries[self.entries.index(entry):]

    def within(self, started: Entry) -> list[Entry]:
        """The entries of the phase ``started`` began: up to the next phase's start (``restore --squash``
        runs two phases on one environment)."""
        later = self.since(started)
        following = next((i for i, e in enumerate(later[1:], 1) if e.step == "phase" and e.event == "started"), len(later))
        return later[:following]

    def done(self, step: str, env: str | None = None) -> bool:
        return any(e.step == step and e.event == "finished" and (env is None or e.env == env) for e in self.entries)

    def open_step(self) -> Entry | None:
        """The last step that started and neither finished nor failed: where the run was stopped."""
        closed = {(e.step, e.env) for e in self.entries if e.event != "started"}
        opened = [e for e in self.entries if e.event == "started" and e.step != "phase" and (e.step, e.env) not in closed]
        return opened[-1] if opened else None

    def describe(self) -> str:
        h = self.header
        what = f"{h.command} {h.argument or ''}".strip()
        state = self.end.outcome if self.end else "interrupted"
        where = ""
        if self.end is None:
            step = self.open_step() or (self.entries[-1] if self.entries else None)
            where = f" at step '{step.step}'" if step else " before its first step"
        return f"{h.run}: {what} on {h.target} ({h.mode}), {state}{where}, started {h.started_at:%Y-%m-%d %H:%M:%S} UTC"


class Journal:
    """Appends to one run's journal; every line reaches the disk before the step it announces acts."""

    def __init__(self, path: Path, header: Header, file, changed_anything: bool):
        self.path = path
        self.header = header
        self._file = file
        self.changed_anything = changed_anything

    @classmethod
    def create(cls, backup_dir: Path, header: Header) -> Journal:
        backup_dir.mkdir(parents=True, exist_ok=True)
        path = backup_dir / f"{header.run}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        journal = cls(path, header, os.fdopen(fd, "a", encoding="utf-8"), False)
        journal._write(header.model_dump_json())
        return journal

    @classmethod
    def reopen(cls, run: Run) -> Journal:
        return cls(run.path, run.header, open(run.path, "a", encoding="utf-8"), True)

    def read(self) -> Run:
        return read(self.path)

    @property
    def run(self) -> str:
        return self.header.run

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def started(self, step: str, env: str | None = None, **changed: Any) -> None:
        self.changed_anything = self.changed_anything or step == "phase"
        self._write(Entry(at=utc_now(), step=step, event="started", env=env, changed=changed).model_dump_json())
        _test_kill(step, env)

    def finished(self, step: str, env: str | None = None, **changed: Any) -> None:
        self._write(Entry(at=utc_now(), step=step, event="finished", env=env, changed=changed).model_dump_json())

    def failed(self, step: str, env: str | None, reason: str) -> None:
        self._write(Entry(at=utc_now(), step=step, event="failed", env=env, detail=reason).model_dump_json())

    def end(self, outcome: Outcome, detail: str = "") -> None:
        self._write(End(at=utc_now(), outcome=outcome, detail=detail).model_dump_json())
        self._file.close()

    def close(self) -> None:
        """Stop writing without an outcome: the run stays interrupted (``resume`` failed itself)."""
        self._file.close()


def new_run_id(command: str, target: str) -> str:
    return f"{command}-{target}-{utc_now():%Y%m%dT%H%M%S%fZ}"


def _test_kill(step: str, env: str | None) -> None:
    """Test-only: $SQUASHKIT_TEST_KILL_AT names a step (``env:step`` or ``step``) at whose start
    the process SIGKILLs itself, right after the journal says the step started (or, for a check
    made before any journal, ``kill_point``, as it starts)."""
    wanted = os.environ.get("SQUASHKIT_TEST_KILL_AT")
    if wanted and wanted in (step, f"{env}:{step}"):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_point(step: str) -> None:
    """Test-only: a point outside any journalled step where $SQUASHKIT_TEST_KILL_AT may kill the run."""
    _test_kill(step, None)


def read(path: Path) -> Run:
    """A journal file, parsed; a half-written last line (the power went off mid-write) is ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise BadInput(f"{path} is an empty journal")
    try:
        header = Header.model_validate_json(lines[0])
    except ValueError:
        raise BadInput(f"{path} is not a squashkit journal") from None
    entries, end = [], None
    for line in lines[1:]:
        try:
            if '"outcome"' in line:
                end = End.model_validate_json(line)
            else:
                entries.append(Entry.model_validate_json(line))
        except ValueError:
            continue
    return Run(path=path, header=header, entries=entries, end=end)


def runs(backup_dir: Path) -> list[Run]:
    """Every journal in ``backup_dir``, oldest first."""
    if not backup_dir.is_dir():
        return []
    found = []
    for path in backup_dir.glob(f"*{SUFFIX}"):
        try:
            found.append(read(path))
        except BadInput:
            continue
    return sorted(found, key=lambda run: run.header.started_at)


def interrupted(backup_dir: Path, envs: set[str] | None = None) -> list[Run]:
    """Runs that never ended (killed, or the machine went down), touching one of ``envs``."""
    return [
        run for run in runs(backup_dir)
        if run.end is None and (envs is None or {run.header.target, run.header.source} & envs)
    ]
