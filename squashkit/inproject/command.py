"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

A management command against databases other than the ones the settings name: a side
database being restored before a swap, a scratch database built from migrations alone. The
settings module cannot be asked to point elsewhere (each project spells its DATABASES its
own way), so this does what Django's test runner does for test databases: it changes
``NAME`` in the connection's settings before the first query, then runs the command as
``manage.py`` would, exit code included.

Every management command squashkit runs goes through here, also against the settings' own
databases: it runs with scoped managers switched off (``scopes.py``), as the project's own
commands do, so a data migration, a ``post_migrate`` handler or a ``loaddata`` that reads
through a scoped default manager sees every row instead of failing.

It must not import squashkit. Its arguments arrive as the global ``SQUASHKIT_COMMAND``
(``runpy.run_path(init_globals=...)``): ``databases`` (alias -> database name), ``argv``, and
``unmigrated``: app labels whose migrations the command must not load (``MIGRATION_MODULES``
None), for a makemigrations while an installed package still depends on a deleted migration.
"""

import runpy
import sys
from pathlib import Path


def _unscoped():
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def _run(databases, argv, unmigrated=()):
    from django.conf import settings
    from django.core.management import ManagementUtility
    from django.db import connections

    if unmigrated:
        settings.MIGRATION_MODULES = {**getattr(settings, "MIGRATION_MODULES", {}), **dict.fromkeys(unmigrated)}
    for alias, name in databases.items():
        connections[alias].close()
        connections[alias].settings_dict["NAME"] = name
        settings.DATABASES[alias]["NAME"] = name
    with _unscoped():
        ManagementUtility(["manage.py", *argv]).execute()


if __name__ == "__squashkit_command__":
    arguments = globals()["SQUASHKIT_COMMAND"]
    try:
        _run(arguments["databases"], arguments["argv"], arguments.get("unmigrated", ()))
    except SystemExit as exc:
        sys.stdout.flush()
        raise SystemExit(exc.code) from None
