"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

``migrate --check`` and ``makemigrations --check --dry-run`` in one process: every preflight and
every verification asks both, and a second Django start-up costs as much as the checks
themselves. Each command runs exactly as ``manage.py`` would run it (``call_command``), against
the databases the settings name, or the ones ``databases`` renames them to (a side database
being verified before its swap), as ``command.py`` does.

It must not import squashkit. Its arguments arrive as the global ``SQUASHKIT_CHECKS``
(``runpy.run_path(init_globals=...)``): ``databases`` (alias -> database name), ``checks``
(a list of argv lists) and ``output`` (a private file the result goes to, one JSON document:
``[{"argv": [...], "passed": bool, "error": str | null}, ...]``; settings and apps are free to
print on stdout). A check that crashes (a traceback, not a plain "no") has its last line in ``error``.

One check is squashkit's own, ``["squashkit-migrated", ALIAS]``: ``migrate --check --database ALIAS``
counting only the apps whose models the routers allow there. A project migrated app by app on its
aliases, as the seed's CI script does (``migrate auth --database=auth``), records each app on its
own alias only; plain ``migrate --check`` would call every other app unapplied there.
"""

import io
import json
import runpy
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def _unscoped():
    """Scoped managers switched off, as for every command squashkit runs (``scopes.py``)."""
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def _run(databases, checks):
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    for alias, name in databases.items():
        connections[alias].close()
        connections[alias].settings_dict["NAME"] = name
        settings.DATABASES[alias]["NAME"] = name
    results = []
    for argv in checks:
        passed, error = True, None
        sink = io.StringIO()
        try:
            with redirect_stdout(sink), redirect_stderr(sink), _unscoped():
                if argv[0] == "squashkit-migrated":
                    passed = not _unapplied_here(argv[1])
                else:
                    call_command(*argv)
        except SystemExit as exc:
            passed = exc.code in (0, None)
        except Exception as exc:  # a crash, not a "no": reported with its own words
            passed = False
            lines = [line for line in traceback.format_exception_only(type(exc), exc) if line.strip()]
            error = lines[-1].strip() if lines else type(exc).__name__
        results.append({"argv": argv, "passed": passed, "error": error})
    return results


def _unapplied_here(alias):
    """The migrations not applied on ``alias`` of the apps that have a model the routers allow there."""
    from django.apps import apps
    from django.db import connections, router
    from django.db.migrations.executor import MigrationExecutor

    here = {
        config.label for config in apps.get_app_configs()
        if any(router.allow_migrate_model(alias, model) for model in config.get_models(include_auto_created=True))
    }
    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [migration for migration, _backwards in plan if migration.app_label in here]


if __name__ == "__squashkit_checks__":
    arguments = globals()["SQUASHKIT_CHECKS"]
    outcome = _run(arguments["databases"], arguments["checks"])
    with open(arguments["output"], "w") as handle:
        json.dump(outcome, handle)
