"""Run a Django ``manage.py`` unchanged, counting the SQL statements it executes.

Usage: python benchmarks/manage_counting.py path/to/manage.py COMMAND [ARGS...]

The count (one per ``cursor.execute``/``executemany``, whatever the connection) is written as
JSON to the file named by ``$SQUASHKIT_BENCH_QUERY_COUNT`` when the process exits. Rows fetched
from a server-side cursor are not statements and are not counted.

Why a wrapper rather than ``DEBUG=True`` and ``connection.queries``: that list keeps every SQL
string in memory, which would distort the peak-RSS numbers measured on the same run. A counter
costs one function call per statement, nothing against the ~millisecond round trip it counts.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
from pathlib import Path

from django.db.backends.signals import connection_created

_count = 0


def _counter(execute, sql, params, many, context):
    global _count
    _count += 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs) -> None:
    # connection_created fires on every (re)connection; the wrapper list lives on the alias.
    if _counter not in connection.execute_wrappers:
        connection.execute_wrappers.append(_counter)


def _report() -> None:
    Path(os.environ["SQUASHKIT_BENCH_QUERY_COUNT"]).write_text(json.dumps({"queries": _count}))


def main() -> None:
    manage = Path(sys.argv[1]).resolve()
    connection_created.connect(_install)
    atexit.register(_report)
    # What `python manage.py ...` would see: the project directory first on sys.path.
    sys.argv = [str(manage), *sys.argv[2:]]
    sys.path.insert(0, str(manage.parent))
    runpy.run_path(str(manage), run_name="__main__")


if __name__ == "__main__":
    main()
