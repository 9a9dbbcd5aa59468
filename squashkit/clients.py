"""PostgreSQL's client programs (pg_dump, pg_restore): finding them, running them, reading dumps.

Rules this module keeps for everyone else:
- a password never reaches a command line: client programs get it through a temporary
  0600 passfile named in their environment (PGPASSFILE), and only there;
- a client program's exit code and stderr are always checked; it never prompts (``-w``);
- a dump's table of contents is read by ``pg_restore -l``, which also proves it is whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import sh

from squashkit import bundlefiles
from squashkit.errors import NO_SPACE, BadInput, DiskFull, OperationFailed
from squashkit.postgres import LIBPQ_OPTIONS, ConnectionParams

# --- client programs --------------------------------------------------------------------------


def client_program(name: str, bindir: Path | None = None) -> sh.Command:
    """pg_dump, pg_restore, ... from ``bindir`` or PATH; a clear error when missing."""
    path = str(bindir / name) if bindir else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        where = f"in {bindir}" if bindir else "on PATH"
        raise BadInput(f"{name} not found {where}: install the PostgreSQL client tools (e.g. apt-get install postgresql-client)")
    return sh.Command(path)


def client_major_version(program: sh.Command) -> int:
    """The major version a client program reports, e.g. 15 for 'pg_dump (PostgreSQL) 15.18'."""
    try:
        text = str(program("--version"))
    except (sh.ErrorReturnCode, OSError) as exc:
        raise BadInput(f"{program} --version failed: {exc}") from None
    match = re.search(r"\(PostgreSQL\) (\d+)", text)
    if not match:
        raise BadInput(f"cannot read the version of {program}: {text.strip()!r}")
    return int(match.group(1))


def require_client_for_server(program: sh.Command, server_version_num: int) -> int:
    """pg_dump refuses servers newer than itself: say so before anything is written."""
    client = client_major_version(program)
    server = server_version_num // 10000
    if client < server:
        raise BadInput(
            f"{Path(str(program)).name} is version {client} but the server is PostgreSQL {server}: "
            f"install postgresql-client-{server} or newer"
        )
    return client


@contextlib.contextmanager
def client_env(params: ConnectionParams) -> Iterator[dict[str, str]]:
    """Environment for a client program: libpq variables, the password in a private passfile."""
    # Start from our own environment, as the project's Django does: libpq fills what
    # DATABASES leaves empty from the same PG* variables, so both reach the same server.
    env = dict(os.environ)
    env["PGDATABASE"] = params.dbname
    env["PGCONNECT_TIMEOUT"] = "10"
    if params.user:
        env["PGUSER"] = params.user
    if params.host:
        env["PGHOST"] = params.host
    if params.port:
        env["PGPORT"] = str(params.port)
    for key, value in params.options.items():
        env[LIBPQ_OPTIONS[key]] = value
    with tempfile.TemporaryDirectory(prefix="squashkit-") as private:
        if params.password is not None:
            passfile = Path(private) / "pgpass"
            passfile.touch(mode=0o600)
            escaped = params.password.get_secret_value().replace("\\", "\\\\").replace(":", "\\:")
            passfile.write_text(f"*:*:*:*:{escaped}\n")
            env["PGPASSFILE"] = str(passfile)
            env.pop("PGPASSWORD", None)  # it would win over the passfile, unlike in Django
        yield env


def run_client(
    program: sh.Command, args: list[str], params: ConnectionParams, *, what: str, stdin=None, watch: Callable[[str], None] | None = None
) -> str:
    """Run a client program against ``params``; never prompts (-w), raises with its stderr.
    ``stdin``: what it reads instead of a file (a decrypted bundle file, ``bundlefiles.program_input``);
    ``watch``: called with each line of its stderr as it comes (``-v`` progress)."""
    lines: list[str] = []
    with client_env(params) as env:
        try:
            result = program(*args, _env=env, _in=stdin, **_watching(watch, lines))
        except sh.ErrorReturnCode as exc:
            raise _failure(what, exc, lines) from None
    return str(result)


def _watching(watch: Callable[[str], None] | None, lines: list[str]) -> dict:
    """sh arguments that hand each stderr line to ``watch`` and keep the lines for the error."""
    if watch is None:
        return {}

    def each(line: str) -> None:
        lines.append(line.rstrip("\n"))
        del lines[:-200]
        watch(line)

    return {"_err": each}


def _failure(what: str, exc: sh.ErrorReturnCode, lines: list[str]) -> OperationFailed:
    text = exc.stderr.decode(errors="replace") if exc.stderr else "\n".join(
        line for line in lines if not _VERBOSE.search(line))
    error = DiskFull if NO_SPACE in text else OperationFailed
    return error(f"{what} failed: {_summary(text, exc.exit_code)}")


# What -v adds to pg_dump's and pg_restore's stderr: progress, not the error.
_VERBOSE = re.compile(r"^(pg_dump|pg_restore): (?!(error|warning|detail|hint):)", re.IGNORECASE)


@contextlib.contextmanager
def started(
    program: sh.Command, args: list[str], params: ConnectionParams, *, what: str, pass_fds: list[int] | None = None,
    watch: Callable[[str], None] | None = None,
) -> Iterator[Callable[[], str]]:
    """Start a client program in the background for the block; yield the function that waits for
    it and raises as ``run_client`` would. Leaving the block early (an error elsewhere, Ctrl-C)
    ends the program, so nothing goes on writing after its caller gave up. ``pass_fds``: file
    descriptors the program inherits (``-f /dev/fd/N`` into an encrypting pipe)."""
    with client_env(params) as env:
        extra = {"_pass_fds": set(pass_fds)} if pass_fds else {}
        lines: list[str] = []
        extra.update(_watching(watch, lines))
        process = program(*args, _env=env, _in=None, _bg=True, _bg_exc=False, **extra)

        def wait() -> str:
            try:
                process.wait()
            except sh.ErrorReturnCode as exc:
                raise _failure(what, exc, lines) from None
            return str(process)

        try:
            yield wait
        finally:
            if process.is_alive():
                process.terminate()
                with contextlib.suppress(sh.ErrorReturnCode, sh.SignalException):
                    process.wait()


def _stderr_summary(exc: sh.ErrorReturnCode) -> str:
    return _summary(exc.stderr.decode(errors="replace"), exc.exit_code)


def _summary(text: str, exit_code: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if any(NO_SPACE in line for line in lines):
        return "no space left on device"
    return " | ".join(lines[-3:]) if lines else f"exit code {exit_code}"


def _toc(pg_restore: sh.Command, dump: Path) -> list[tuple[str, str]]:
    """(line, entry) of each item in a dump's table of contents (``pg_restore -l``).

    The entry is what follows "dumpId; catalogOid oid ", e.g. "TABLE DATA public t owner".
    Reading the TOC proves the archive is complete enough to list; a truncated custom-format
    file fails here.
    """
    try:
        with bundlefiles.program_input(dump) as (files, stdin):
            toc = str(pg_restore("-l", *files, _in=stdin))
    except sh.ErrorReturnCode as exc:
        raise OperationFailed(f"pg_restore cannot read {dump.name}: {_stderr_summary(exc)}") from None
    return [
        (line, line.split("; ", 1)[1].split(" ", 2)[-1] if "; " in line and not line.startswith(";") else "")
        for line in toc.splitlines()
    ]


def _table_data_of(entry: str, tables: Iterable[str] | None = None) -> str | None:
    """``schema.table`` of a TABLE DATA entry, else None.

    ``pg_restore -l`` prints "TABLE DATA schema name owner" without quoting, so a schema or
    table name holding a space cannot be split off reliably: given the ``tables`` that may be
    there (``schema.table``), the entry is matched against them, the longest match winning
    ("a b" before "a"). Without them the first word is taken for the schema.
    """
    if not entry.startswith("TABLE DATA "):
        return None
    rest = entry.removeprefix("TABLE DATA ")
    if tables is not None:
        matches = [
            qualified
            for qualified in tables
            for dot in (i for i, char in enumerate(qualified) if char == ".")
            if rest.startswith(f"{qualified[:dot]} {qualified[dot + 1:]} ")
        ]
        if matches:
            return max(matches, key=len)
    schema, rest = rest.split(" ", 1)
    return f"{schema}.{rest.rsplit(' ', 1)[0]}"


def dump_table_data(pg_restore: sh.Command, dump: Path, tables: Iterable[str] | None = None) -> set[str]:
    """``schema.table`` of every TABLE DATA entry in a dump; pass the ``tables`` expected there
    so names with spaces are read right (see ``_table_data_of``)."""
    tables = list(tables) if tables is not None else None
    return {table for _line, entry in _toc(pg_restore, dump) if (table := _table_data_of(entry, tables))}


def filtered_toc(
    pg_restore: sh.Command, dump: Path, skip_tables: set[str], schemas: set[str] = frozenset()
) -> tuple[str, list[str]]:
    """The dump's table of contents without what the new database has already; returns (list, dropped entries).

    squashkit creates the schemas, the extensions and their configuration rows itself before the
    restore (``foundation.lay``, with the admin connection where needed), so their CREATE/COMMENT
    entries and the data of the extensions' own tables and sequences (``skip_tables``) would only
    fail: "must be owner of extension", a duplicate spatial_ref_sys row, "schema already exists".
    With them gone, any error left is a real one.
    """
    kept, dropped = [], []
    for line, entry in _toc(pg_restore, dump):
        is_extension = entry.startswith(("EXTENSION ", "COMMENT - EXTENSION "))
        made = is_extension or any(entry.startswith(f"SCHEMA - {name} ") or entry == f"SCHEMA - {name}" for name in schemas)
        if made or _table_data_of(entry, skip_tables) in skip_tables or _sequence_set_of(entry, skip_tables) in skip_tables:
            dropped.append(entry)
        else:
            kept.append(line)
    return "\n".join(kept) + "\n", dropped


def _sequence_set_of(entry: str, sequences: set[str]) -> str | None:
    """``schema.sequence`` of a SEQUENCE SET entry among ``sequences``, else None."""
    if not entry.startswith("SEQUENCE SET "):
        return None
    return _table_data_of("TABLE DATA " + entry.removeprefix("SEQUENCE SET "), sequences)

