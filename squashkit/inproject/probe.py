"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

It must not import squashkit: the project's interpreter may not have it installed. It
writes one JSON document to the file named by $SQUASHKIT_PROBE_OUTPUT (a private 0600
file: it holds the database settings, passwords included), because settings modules and
apps are free to print on stdout.
"""

import json
import os
import sys
import traceback
from importlib import util
from pathlib import Path


def _is_own(path: Path, root: Path) -> bool:
    """An app is the project's own when it lives under the project root and outside any site-packages."""
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return not any(part in ("site-packages", "dist-packages") for part in path.parts)


def _migrations_folder(app_config):
    """(module name, folder as the app sees it, folder with symlinks resolved) or Nones."""
    from django.db.migrations.loader import MigrationLoader

    module_name, _explicit = MigrationLoader.migrations_module(app_config.label)
    if module_name is None:
        return None, None, None
    try:
        spec = util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return module_name, None, None
    folder = Path(list(spec.submodule_search_locations)[0])
    return module_name, str(folder), str(folder.resolve())


def _natural_key_fields(model, targets):
    """Fields whose values dumpdata writes as ids of a content type or a permission."""
    found = {}
    for field in model._meta.get_fields():
        if not field.is_relation or field.auto_created or field.related_model not in targets:
            continue
        label = targets[field.related_model]
        if field.many_to_many:
            if field.remote_field.through._meta.auto_created:
                found[field.name] = label
        elif field.concrete and (field.many_to_one or field.one_to_one):
            if field.target_field == field.related_model._meta.pk:
                found[field.name] = label
    return found


def _m2m_tables(model):
    """db_table of each implicit many-to-many table that dumpdata writes as a list on ``model``."""
    return [
        field.remote_field.through._meta.db_table
        for field in model._meta.local_many_to_many
        if field.remote_field.through._meta.auto_created
    ]


def probe():
    import django
    from django.apps import apps
    from django.conf import settings
    from django.db import router
    from django.db.migrations.loader import MigrationLoader

    root = Path(os.environ["SQUASHKIT_PROJECT_ROOT"]).resolve()
    targets = {}
    if apps.is_installed("django.contrib.contenttypes"):
        targets[apps.get_model("contenttypes", "ContentType")] = "contenttype"
    if apps.is_installed("django.contrib.auth"):
        targets[apps.get_model("auth", "Permission")] = "permission"

    aliases = list(settings.DATABASES)
    loader = MigrationLoader(None, ignore_no_migrations=True)
    graph_nodes = sorted(loader.graph.nodes)

    app_list = []
    for app_config in apps.get_app_configs():
        path = Path(app_config.path).resolve()
        module_name, folder, real = _migrations_folder(app_config)
        models = []
        for model in app_config.get_models(include_auto_created=True):
            meta = model._meta
            models.append(
                {
                    "label": meta.label_lower,
                    "db_table": meta.db_table,
                    "auto_created": bool(meta.auto_created),
                    "managed": bool(meta.managed),
                    "proxy": bool(meta.proxy),
                    # dumpdata's own rule: every model the router allows, except proxies (their
                    # rows are the concrete model's) and implicit join tables (dumped with their owner).
                    "dumped_on": [
                        a for a in aliases if not meta.auto_created and not meta.proxy and router.allow_migrate_model(a, model)
                    ],
                    "m2m_tables": _m2m_tables(model),
                    "natural_key_fields": _natural_key_fields(model, targets),
                }
            )
        app_list.append(
            {
                "label": app_config.label,
                "name": app_config.name,
                "path": str(path),
                "own": _is_own(path, root),
                "migrations_module": module_name,
                "migrations_folder": folder,
                "migrations_folder_resolved": real,
                "migrations": [name for app, name in graph_nodes if app == app_config.label],
                "aliases": [
                    a for a in aliases
                    if any(router.allow_migrate_model(a, m) for m in app_config.get_models(include_auto_created=True))
                ],
                "models": models,
            }
        )
    return {
        "django_version": django.get_version(),
        "python": sys.executable,
        "databases": {
            alias: {key: value for key, value in conf.items() if key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")}
            for alias, conf in settings.DATABASES.items()
        },
        "apps": app_list,
    }


def main():
    out = os.environ["SQUASHKIT_PROBE_OUTPUT"]
    try:
        result = {"ok": probe()}
    except Exception as exc:  # reported to squashkit as one line, with the traceback for -v
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(out, "w") as handle:
        json.dump(result, handle, default=str)


if __name__ in ("__main__", "__squashkit_probe__"):
    main()
