"""Progress of the long steps: pg_dump and pg_restore (tables of the table of contents), db.json
(rows), uploads and downloads (bytes).

Whoever does the work calls ``update(task, done, total, unit)`` as it goes; what the user sees is
chosen once per command by ``showing``: a rich progress display on a terminal, else one plain
line per task every few seconds (no control characters, no padding, so ``> log 2>&1`` stays
readable), or nothing with ``--quiet``. Without ``showing`` (squashkit called from Python),
``update`` does nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from rich.console import Console

INTERVAL = 5.0  # seconds between two plain lines of one task
_lock = threading.Lock()
_shown: list[Callable[[str, int, int | None, str], None]] = []


def update(task: str, done: int, total: int | None, unit: str) -> None:
    """``done`` of ``total`` ``unit`` (tables, rows, bytes) of ``task`` so far; cheap, thread-safe."""
    if _shown:
        with _lock:
            _shown[-1](task, done, total, unit)


def counting(task: str, marker: str, total: int) -> Callable[[str], None]:
    """A watcher of a client program's ``-v`` lines: each line holding ``marker`` is one more of
    ``total`` done (pg_dump's "dumping contents of table", pg_restore's "processing data for table")."""
    done = [0]

    def watch(text: str) -> None:
        if marker in text:
            done[0] += 1
            update(task, done[0], total, "tables")

    return watch


def _amount(value: int, unit: str) -> str:
    if unit != "bytes":
        return f"{value}"
    for size, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value} B"


def line(task: str, done: int, total: int | None, unit: str) -> str:
    """The plain form: 'pg_dump of default: 12 of 40 tables'."""
    of = f" of {_amount(total, unit)}" if total else ""
    return f"{task}: {_amount(done, unit)}{of} {'' if unit == 'bytes' else unit}".rstrip()


@contextlib.contextmanager
def showing(console: Console, *, quiet: bool = False) -> Iterator[None]:
    """Show progress on ``console`` (stderr) for the block."""
    if quiet:
        yield
        return
    if console.is_terminal:
        with _rich(console):
            yield
        return
    last: dict[str, float] = {}

    def plain(task: str, done: int, total: int | None, unit: str) -> None:
        now = time.monotonic()
        if task not in last:
            last[task] = now  # the first line of a task only after INTERVAL: short steps print none
            return
        if now - last[task] >= INTERVAL:
            last[task] = now
            console.file.write(f"squashkit: {line(task, done, total, unit)}\n")
            console.file.flush()

    _shown.append(plain)
    try:
        yield
    finally:
        _shown.remove(plain)


@contextlib.contextmanager
def _rich(console: Console) -> Iterator[None]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    bars = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                    console=console, transient=True)

    def rich_update(task: str, done: int, total: int | None, unit: str) -> None:
        if not tasks:
            bars.start()
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, amount="")
        bars.update(tasks[task], completed=done, total=total, amount=line(task, done, total, unit).split(": ", 1)[1])

    _shown.append(rich_update)
    try:
        yield
    finally:
        _shown.remove(rich_update)
        if tasks:
            bars.stop()
