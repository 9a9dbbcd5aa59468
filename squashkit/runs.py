"""What every destructive run shares: asking first, one run at a time, and its journal.

A run (restore, squash, promote, rollback) asks before anything is dropped (``confirm``), holds
the locks that keep a second run off the same databases and migration files (``exclusive``),
and writes every step to its journal before the step acts (``journalled``), so that
``squashkit resume`` can finish or undo it after a kill.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator

from squashkit import bundle, databases, journal, locks
from squashkit.config import Config
from squashkit.errors import BadInput, Interrupted, UndoIncomplete, first_line
from squashkit.journal import Journal
from squashkit.target import Target

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The default ``log`` of every command called from Python: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def confirm(question: str, *, yes: bool, protected: str | None = None, typed: str | None = None) -> None:
    """Go on only when the user said so; the default is always no.

    A protected environment (``protected = true``) wants its database's name, typed at the
    prompt or given as ``--confirm NAME`` with ``--yes``: ``--yes`` alone is not enough there.
    """
    if protected is not None:
        if typed is not None and typed != protected:
            raise BadInput(f"--confirm {typed!r} does not name the protected database {protected!r}: nothing was changed")
        if typed == protected and (yes or not sys.stdin.isatty()):
            return
        if not sys.stdin.isatty():
            raise BadInput(f"{question} The environment is protected: pass --yes --confirm {protected} to go on without a terminal")
        answer = input(f"{question} This environment is protected: type the database name ({protected}) to go on: ").strip()
        if answer != protected:
            raise BadInput("nothing was changed: the name typed does not match")
        return
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{question} Refusing without a terminal: pass --yes to confirm")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise BadInput("nothing was changed: not confirmed")


@contextlib.contextmanager
def exclusive(config: Config, run: str, targets: list[Target]) -> Iterator[None]:
    """One run at a time on these databases and this checkout's migration files; no run may start
    while an earlier one on the same environments is interrupted (resume it first)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(locks.migration_files(targets[0].manage.cwd, run))
        for target in targets:
            for alias in databases.primary_aliases(target.project):  # a database reached by two aliases is locked once
                stack.enter_context(locks.database(target.params(alias), run))
        left = journal.interrupted(config.backup_dir, {target.name for target in targets})
        if left:
            raise BadInput(
                f"an earlier run was interrupted ({left[-1].describe()}): run squashkit resume to finish or undo it "
                "first (nothing was changed)"
            )
        yield


@contextlib.contextmanager
def journalled(config: Config, run: str, **header) -> Iterator[Journal]:
    """The run's journal, ended with its outcome; a run interrupted after it changed something stays
    open, for ``squashkit resume``."""
    try:
        config.backup_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot write the run's journal in backup_dir {config.backup_dir}: {exc.strerror} (nothing was changed)") from None
    record = Journal.create(config.backup_dir, journal.Header(
        run=run, config=config.source, pid=os.getpid(), host=socket.gethostname(), started_at=bundle.utc_now(), **header
    ))
    try:
        yield record
    except KeyboardInterrupt:
        if not record.changed_anything:
            record.end("failed", "interrupted before anything changed")
            raise
        raise Interrupted(f"interrupted during run {run}: run squashkit resume to finish or undo it") from None
    except UndoIncomplete:
        raise  # the journal stays open: resume finishes the undo
    except BaseException as exc:
        record.end("failed", first_line(exc))
        raise
    record.end("finished")
