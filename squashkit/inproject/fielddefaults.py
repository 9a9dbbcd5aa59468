"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

Which columns of the given tables have a model field with a default (``uuid4``, ``timezone.now``):
two fresh builds give such a column other values, and a carried row may leave it to the
default, as the migration that made the row did. A column without one got its value from the
migration's own code (the clock, ``random``): such a row cannot be carried as it is.

It must not import squashkit. Its arguments arrive as the global ``SQUASHKIT_DEFAULTS``
(``runpy.run_path(init_globals=...)``): ``tables`` and ``output`` (a private file for the JSON).
"""

import json


def _defaults(tables):
    from django.apps import apps

    found = {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.db_table in tables:
            found[model._meta.db_table] = sorted(f.column for f in model._meta.local_concrete_fields if f.has_default())
    return found


if __name__ == "__squashkit_defaults__":
    arguments = globals()["SQUASHKIT_DEFAULTS"]
    with open(arguments["output"], "w") as out:
        json.dump(_defaults(set(arguments["tables"])), out)
