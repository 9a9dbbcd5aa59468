"""Run a Python program unchanged, and log one JSON line about its process when it exits.

Usage::

    python benchmarks/process_log.py path/to/manage.py COMMAND [ARGS...]   # as `python manage.py ...`
    python benchmarks/process_log.py -m squashkit.cli [ARGS...]            # as `python -m squashkit.cli ...`

The line goes to the file named by ``$SQUASHKIT_BENCH_PROCESS_LOG`` (appended to; nothing is
logged without it). It holds: ``role`` (``manage.py`` or the module), ``label`` (the management
command, or for squashkit's ``manage.py shell -c`` runners, which runner and command), ``pid``,
``ppid``, ``start`` (when the kernel started the process, so interpreter start-up counts),
``django_ready`` (when ``django.setup()`` returned, if it ran), ``end``, ``exit``,
``max_rss_kb`` (this process alone, since its exec: ``VmHWM``) and ``queries`` (SQL statements Django
executed: one per ``cursor.execute``/``executemany`` on any connection; rows fetched from a
server-side cursor are not statements).

benchmarks/run.py points squashkit's ``python`` setting at a small generated interpreter that
runs this file, so every ``manage.py`` process squashkit starts is logged without changing
squashkit; and it runs squashkit itself through ``-m squashkit.cli`` to log squashkit's own
process. The cost is one function call per SQL statement and a few at exit.

Why a wrapper rather than ``DEBUG=True`` and ``connection.queries``: that list keeps every SQL
string in memory, which would distort the peak-RSS numbers measured on the same run.
"""

from __future__ import annotations

import ast
import atexit
import json
import os
import re
import resource
import runpy
import sys
import time

LOG_VARIABLE = "SQUASHKIT_BENCH_PROCESS_LOG"

_record: dict = {"queries": 0, "exit": None, "django_ready": None}


def _process_start() -> float:
    """Epoch seconds at which the kernel started this process (to its 10 ms clock tick).

    /proc/self/stat's starttime counts ticks since boot; the boot clock read now turns it into
    an age, and the age into a time on the wall clock.
    """
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot)
    except (OSError, IndexError, ValueError, AttributeError):
        return time.time()


def _count(execute, sql, params, many, context):
    _record["queries"] += 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs) -> None:
    # connection_created fires on every (re)connection; the wrapper list lives on the alias.
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def _watch_django() -> None:
    """Count statements, and note when Django is set up: the fixed cost every process pays."""
    try:
        import django
        from django.db.backends.signals import connection_created
    except ImportError:
        return
    connection_created.connect(_install)
    setup = django.setup

    def timed_setup(*args, **kwargs):
        result = setup(*args, **kwargs)
        _record["django_ready"] = time.time()
        return result

    # ManagementUtility calls django.setup() through the module: the timed one is found.
    django.setup = timed_setup


def label(argv: list[str]) -> str:
    """What a run is, short: ``migrate --check``, ``shell:probe``, ``shell:command migrate --fake``."""
    if len(argv) >= 3 and argv[0] == "shell" and argv[1] == "-c":
        runner = re.search(r"inproject/(\w+)\.py", argv[2])
        command = re.search(r"'argv': (\[[^\]]*\])", argv[2])
        words = ast.literal_eval(command.group(1))[:3] if command else []
        return " ".join(["shell:" + (runner.group(1) if runner else "code"), *words])
    return " ".join(argv[:3]) or "(none)"


def _peak_rss_kb() -> int:
    """This process's peak RSS since it exec'd: VmHWM belongs to the process's current memory map.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the peak of the memory map a
    process had before exec into it, so every manage.py squashkit forks would show at least
    squashkit's own size.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _write() -> None:
    path = os.environ.get(LOG_VARIABLE)
    if not path:
        return
    line = json.dumps({
        **_record,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "end": time.time(),
        "max_rss_kb": _peak_rss_kb(),
    })
    # One write of one line, opened for appending: lines of processes that end together do not mix.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _run(program) -> None:
    """Run the program, noting its exit code for the log line."""
    try:
        program()
    except SystemExit as exc:
        code = exc.code
        _record["exit"] = code if isinstance(code, int) else (0 if code is None else 1)
        raise
    except BaseException:
        _record["exit"] = 1
        raise
    _record["exit"] = 0


def main() -> None:
    _record["start"] = _process_start()
    atexit.register(_write)
    if sys.argv[1] == "-m":
        module, args = sys.argv[2], sys.argv[3:]
        _record.update(role=module, label=label(args))
        sys.argv = [module, *args]
        _run(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))
    else:
        script, args = os.path.abspath(sys.argv[1]), sys.argv[2:]
        _record.update(role=os.path.basename(script), label=label(args))
        # What `python manage.py ...` would see: the script's directory first on sys.path.
        sys.argv = [script, *args]
        sys.path.insert(0, os.path.dirname(script))
        # Only here: importing Django into squashkit's own process would add to its peak.
        _watch_django()
        _run(lambda: runpy.run_path(script, run_name="__main__"))


if __name__ == "__main__":
    main()
