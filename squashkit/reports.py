"""What ``--json`` prints: one pydantic model per command, whose JSON schema is the contract.

``squashkit schema NAME`` prints a schema; ``docs/schemas/NAME.json`` holds the same, published
(``tests/test_reports.py`` keeps them equal and validates real output against them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from squashkit import bundle, journal
from squashkit.commands.check import CheckResult
from squashkit.commands.kept import Kept
from squashkit.plan import PlannedStep


class DatabaseReport(BaseModel):
    """One alias of a backup."""

    alias: str
    database: str
    dump: str = Field(description="The dump's file name in the bundle.")
    json_file: str = Field(description="The fixture's file name in the bundle.")
    rows: dict[str, int] = Field(description="Exact row count per table (schema.name), in the backup's snapshot.")
    objects: int = Field(description="Objects in the fixture.")


class BackupReport(BaseModel):
    """``squashkit backup --json``."""

    path: str = Field(description="The bundle: a local directory or a URL (s3://...).")
    environment: str
    created_at: datetime
    files: dict[str, int] = Field(description="Size in bytes of every file of the bundle, manifest.json included.")
    compressed: bool = Field(description="db.json is written as db.json.gz.")
    encrypted: bool = Field(description="Every file but the manifest is age-encrypted (NAME.age).")
    databases: list[DatabaseReport]
    durations: dict[str, float] = Field(description="Seconds: 'backup' (writing and verifying), 'upload' when remote, 'total'.")


class RunReport(BaseModel):
    """One run of ``squashkit status``."""

    run: str
    command: str
    target: str
    argument: str | None
    mode: str
    outcome: Literal["finished", "failed", "rolled back", "nothing to do", "interrupted"]
    step: str | None = Field(description="The step an interrupted run stopped at.")
    started_at: datetime


class StatusReport(BaseModel):
    """``squashkit status --json``."""

    location: str = Field(description="Where bundles are kept (backup_dir, a local path or a URL).")
    state_dir: str = Field(description="Where journals and the rest of a run's state are kept (local).")
    runs: list[RunReport]


class PlanReport(BaseModel):
    """``--dry-run --json``: the steps a command would take, in order."""

    steps: list[PlannedStep]


# name -> the shape of that output; check and cleanup print lists (check's was one before --json elsewhere).
SCHEMAS: dict[str, TypeAdapter] = {
    "backup": TypeAdapter(BackupReport),
    "status": TypeAdapter(StatusReport),
    "cleanup": TypeAdapter(list[Kept]),
    "check": TypeAdapter(list[CheckResult]),
    "plan": TypeAdapter(PlanReport),
}


def schema(name: str) -> dict:
    """The JSON schema of ``name``'s ``--json`` output, titled so a reader knows which it is."""
    return {**SCHEMAS[name].json_schema(), "title": f"squashkit {name} --json"}


def backup_report(path: str, manifest: bundle.Manifest, sizes: dict[str, int], durations: dict[str, float]) -> BackupReport:
    return BackupReport(
        path=path,
        environment=manifest.environment,
        created_at=manifest.created_at,
        files=sizes,
        compressed=any(e.json_file.removesuffix(".age").endswith(".gz") for e in manifest.databases),
        encrypted=bool(manifest.encrypted),
        databases=[
            DatabaseReport(alias=e.alias, database=e.database, dump=e.dump, json_file=e.json_file,
                           rows={t.qualified: t.rows for t in e.facts.tables}, objects=sum(e.json_objects.values()))
            for e in manifest.databases
        ],
        durations={key: round(value, 3) for key, value in durations.items()},
    )


def run_report(run: journal.Run) -> RunReport:
    step = None
    if run.end is None:
        open_step = run.open_step() or (run.entries[-1] if run.entries else None)
        step = open_step.step if open_step else None
    h = run.header
    return RunReport(run=h.run, command=h.command, target=h.target, argument=h.argument, mode=h.mode,
                     outcome=run.end.outcome if run.end else "interrupted", step=step, started_at=h.started_at)
