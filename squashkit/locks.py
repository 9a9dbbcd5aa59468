"""One run at a time: a PostgreSQL advisory lock per target database, a file lock per project.

Two operators squashing the same database at once would each drop what the other restored.
The advisory lock is held by a session on the server's maintenance database for the whole
run; the server releases it when the process dies, however it dies. Its session's
``application_name`` names the run, so a second run can say who holds it. The file lock
(``flock`` on ``.squashkit.lock`` next to manage.py) guards the migration files, which two
runs on different databases of one checkout would otherwise both rewrite; the kernel
releases it with the process, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg

from squashkit import postgres
from squashkit.errors import BadInput

LOCK_FILE = ".squashkit.lock"
# First key of every squashkit advisory lock; the second is hashtext(database name).
NAMESPACE = 0x5A5B  # "squashkit"


@contextlib.contextmanager
def migration_files(root: Path, run: str) -> Iterator[None]:
    """Hold the project's file lock, or fail at once naming the run that holds it."""
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another squashkit run"
            raise BadInput(f"the migration files of {root} are in use by {holder}: wait for it to finish (nothing was changed)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{run} (pid {os.getpid()} on {socket.gethostname()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def database(params: postgres.ConnectionParams, run: str) -> Iterator[None]:
    """Hold the advisory lock on ``params.dbname`` for the block, or fail naming its holder."""
    name = params.dbname
    maintenance = params.with_dbname("postgres").model_copy(
        update={"options": {**params.options, "application_name": f"squashkit {run} pid {os.getpid()}"[:63]}}
    )
    with postgres.connect(maintenance) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [NAMESPACE, name]).fetchone()[0]
        if not got:
            raise BadInput(f"{name} is busy: {_holder(conn, name)} is running on it (nothing was changed)")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [NAMESPACE, name])


def _holder(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute(
        """SELECT a.application_name, a.client_addr::text, a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = hashtext(%s)::oid AND l.granted""",
        [NAMESPACE, name],
    ).fetchone()
    if row is None:
        return "another squashkit run"
    application, address, since = row  # NULL for a role whose sessions we may not see
    where = f" (from {address or 'a local socket'}, since {since:%H:%M:%S})" if since else ""
    return f"{application or 'another squashkit run'}{where}"
