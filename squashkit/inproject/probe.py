"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

It must not import squashkit: the project's interpreter may not have it installed. It
writes one JSON document to the file named by $SQUASHKIT_PROBE_OUTPUT (a private 0600
file: it holds the database settings, passwords included), because settings modules and
apps are free to print on stdout.
"""

import json
import os
import runpy
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


# --- field plans: what the SQL renderer and the set-based loader need ------------------------------
#
# A plan mirrors exactly what Django's serializer writes for a model: the pk apart, then
# ``concrete_model._meta.local_fields`` with ``serialize``, then ``local_many_to_many`` whose
# through table is auto-created. Each field gets a *kind*, chosen by the nearest Django (or
# contrib.postgres, GIS) class in its MRO: squashkit renders and loads the column's value by that
# kind. A custom field that only changes how Python sees the value (from_db_value, to_python,
# get_prep_value) keeps its base's kind, since the column is what is copied. A field whose
# serialized form is its own (value_to_string, value_from_object overridden), or whose type is
# unknown, sends its model to Django's serializer (``slow_reason``), that model alone.

SERIALIZER_METHODS = ("value_to_string", "value_from_object")
# Kinds whose text form PostgreSQL prints (``col::text[]``) and Django's ``to_python`` reads back.
ARRAY_ELEMENT_KINDS = ("plain", "bool", "float", "decimal", "datetime", "date", "time", "duration")
RANGE_BOUND_KINDS = ("plain", "decimal", "datetime", "date")
# Values Django's serializer passes through as they are (protected types): a generated column of
# another type would be written with str(), which the renderer does not imitate.
GENERATED_KINDS = ("plain", "bool", "float", "decimal", "datetime", "date", "time")


def _known_field_classes():
    """Field class -> kind, for the classes Django, contrib.postgres and (when it imports) GIS ship."""
    from django.db import models

    plain = [
        models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField, models.BigIntegerField,
        models.SmallIntegerField, models.PositiveIntegerField, models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField, models.CharField, models.TextField, models.SlugField,
        models.EmailField, models.URLField, models.UUIDField, models.GenericIPAddressField, models.FilePathField,
    ]
    known = {cls: "plain" for cls in plain}
    known.update({
        models.BooleanField: "bool", models.FloatField: "float", models.DecimalField: "decimal",
        models.DateTimeField: "datetime", models.DateField: "date", models.TimeField: "time",
        models.DurationField: "duration", models.BinaryField: "binary", models.JSONField: "json",
        models.FileField: "file", models.ImageField: "file", models.ForeignKey: "fk", models.OneToOneField: "fk",
    })
    if hasattr(models, "GeneratedField"):  # Django 5.0+
        known[models.GeneratedField] = "generated"
    try:
        from django.contrib.postgres import fields as pg
    except ImportError:  # psycopg missing: the project cannot be on PostgreSQL anyway
        pg = None
    if pg is not None:
        known[pg.ArrayField] = "array"
        known[pg.HStoreField] = "hstore"
        for cls in (pg.IntegerRangeField, pg.BigIntegerRangeField, pg.DecimalRangeField, pg.DateTimeRangeField, pg.DateRangeField):
            known[cls] = "range"
    # Only when the project has imported GeoDjango itself: importing it loads GDAL and GEOS
    # (30 MiB) into a probe that a project without geometry fields should not pay for.
    GeometryField = None
    if "django.contrib.gis.db.models" in sys.modules:
        try:
            from django.contrib.gis.db.models import GeometryField
        except Exception:  # GDAL/GEOS not installed: no project field can be a geometry then
            GeometryField = None
    if GeometryField is not None:
        known[GeometryField] = "geometry"
    return known


def _kind(field, known):
    """(kind, None) for a field the renderer knows, else (None, why it must go through Django)."""
    cls = type(field)
    base = next((klass for klass in cls.__mro__ if klass in known), None)
    if base is None:
        return None, f"field {field.name} is a {cls.__module__}.{cls.__qualname__}, a type squashkit does not know"
    for method in SERIALIZER_METHODS:
        if getattr(cls, method) is not getattr(base, method):
            return None, f"field {field.name} ({cls.__qualname__}) overrides {method}"
    return known[base], None


def _field_plan(field, known, natural):
    """The plan of one concrete field, or raise _Slow with the reason its model takes Django's path."""
    kind, why = _kind(field, known)
    if why:
        raise _Slow(why)
    plan = {"name": field.name, "column": getattr(field, "column", None), "kind": kind, "null": bool(field.null)}
    if kind == "generated":
        output = _field_plan(field.output_field, known, {})
        if output["kind"] not in GENERATED_KINDS:
            raise _Slow(f"field {field.name} is generated as a {output['kind']}, which Django writes with str()")
        plan.update(kind=output["kind"], generated=True)
    elif kind == "fk":
        try:
            target = _field_plan(field.target_field, known, {})
        except _Slow as why:
            raise _Slow(f"field {field.name} references {field.related_model._meta.label}, whose {why}") from None
        plan["target_kind"] = target.get("target_kind") or target["kind"]
        plan["natural"] = natural.get(field.name)
    elif kind == "array":
        base_kind, why = _kind(field.base_field, known)
        if why or base_kind not in ARRAY_ELEMENT_KINDS:
            what = "a multi-dimensional array" if base_kind == "array" else f"an array of {base_kind or 'an unknown type'}"
            raise _Slow(f"field {field.name} is {what}")
        plan["base_kind"] = base_kind
    elif kind == "range":
        base_kind, why = _kind(field.base_field, known)
        if why or base_kind not in RANGE_BOUND_KINDS:
            raise _Slow(f"field {field.name} is a range of {base_kind or 'an unknown type'}")
        plan["base_kind"] = base_kind
    return plan


class _Slow(Exception):
    """This model goes through Django's serializer; the message says why."""


def _m2m_plan(field, known, natural):
    through = field.remote_field.through
    target = _field_plan(field.related_model._meta.pk, known, {})
    return {
        "name": field.name,
        "through_table": through._meta.db_table,
        "source_column": field.m2m_column_name(),
        "target_column": field.m2m_reverse_name(),
        "target_kind": target.get("target_kind") or target["kind"],
        "natural": natural.get(field.name),
    }


def _serialization_plan(model, known, natural):
    """pk, fields, m2m and slow_reason of one model, as its dumpdata objects are made."""
    from django.db import models

    meta = model._meta.concrete_model._meta
    try:
        if isinstance(meta.pk, getattr(models, "CompositePrimaryKey", ())):
            raise _Slow("its primary key is a CompositePrimaryKey")
        pk = _field_plan(meta.pk, known, {})
        fields = [_field_plan(f, known, natural) for f in meta.local_fields if f.serialize]
        m2m = [
            _m2m_plan(f, known, natural)
            for f in meta.local_many_to_many
            if f.serialize and f.remote_field.through._meta.auto_created
        ]
    except _Slow as slow:
        return {"pk": None, "fields": [], "m2m": [], "slow_reason": str(slow)}
    return {"pk": pk, "fields": fields, "m2m": m2m, "slow_reason": None}


def _app_labels(entries, apps):
    """The labels of the apps a settings list (SHARED_APPS, TENANT_APPS) names, by module or AppConfig path."""
    labels = []
    for config in apps.get_app_configs():
        paths = {config.name, f"{type(config).__module__}.{type(config).__qualname__}"}
        if paths & set(entries):
            labels.append(config.label)
    return labels


def _tenancy(settings, apps):
    """django-tenants' layout (schema per tenant), or None for a project that does not use it."""
    if not getattr(settings, "TENANT_MODEL", None) or not apps.is_installed("django_tenants"):
        return None
    from django_tenants import utils

    model = apps.get_model(settings.TENANT_MODEL)
    bases = [getattr(settings, "TENANT_BASE_SCHEMA", None)]
    bases += [config.get("BASE_SCHEMA") for config in (getattr(settings, "TENANT_TYPES", None) or {}).values()]
    return {
        "alias": utils.get_tenant_database_alias(),
        "public_schema": utils.get_public_schema_name(),
        "tenant_model": model._meta.label,
        "tenant_table": model._meta.db_table,
        "schema_column": model._meta.get_field("schema_name").column,
        "shared_apps": _app_labels(getattr(settings, "SHARED_APPS", []), apps),
        "tenant_apps": _app_labels(getattr(settings, "TENANT_APPS", []), apps),
        "base_schemas": [base for base in dict.fromkeys(bases) if base],
        "creation_fakes_migrations": bool(getattr(settings, "TENANT_CREATION_FAKES_MIGRATIONS", False)),
        "extra_search_paths": list(getattr(settings, "PG_EXTRA_SEARCH_PATHS", []) or []),
        "multi_type": bool(getattr(settings, "HAS_MULTI_TYPE_TENANTS", False)),
    }


def probe():
    import django
    from django.apps import apps
    from django.conf import settings
    from django.db import connections, router
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
    # Squashed migrations (``replaces``): Django records the migrations they replace as applied and
    # needs no file for them; without a connection the graph holds the squashed ones instead.
    replaces = {}
    for (label, name), migration in sorted(loader.disk_migrations.items()):
        if migration.replaces and (label, name) in loader.graph.nodes:
            replaces.setdefault(label, {})[name] = [list(key) for key in migration.replaces]
    known = _known_field_classes()

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
                    **_serialization_plan(model, known, _natural_key_fields(model, targets)),
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
                "replaces": replaces.get(app_config.label, {}),
                "parents": {
                    name: sorted([list(parent.key) for parent in loader.graph.node_map[(app, name)].parents])
                    for app, name in graph_nodes if app == app_config.label
                },
                "depends_on": {
                    name: sorted([list(dependency) for dependency in migration.dependencies])
                    for (app, name), migration in sorted(loader.disk_migrations.items()) if app == app_config.label
                },
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
            alias: {key: value for key, value in conf.items()
                    if key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS", "TEST")}
            for alias, conf in settings.DATABASES.items()
        },
        # The backend's own word: a custom ENGINE (PostGIS, django-tenants) is still 'postgresql'.
        "vendors": {alias: connections[alias].vendor for alias in aliases},
        "apps": app_list,
        # USE_TZ = False: Django reads and writes datetimes as naive times of this zone.
        "tenancy": _tenancy(settings, apps),
        "naive_time_zones": {} if settings.USE_TZ else {alias: connections[alias].timezone_name for alias in aliases},
    }


def _unscoped():
    """Scoped managers switched off, as for everything squashkit runs in the project (``scopes.py``)."""
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def main():
    out = os.environ["SQUASHKIT_PROBE_OUTPUT"]
    try:
        with _unscoped():
            result = {"ok": probe()}
    except Exception as exc:  # reported to squashkit as one line, with the traceback for -v
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(out, "w") as handle:
        json.dump(result, handle, default=str)


if __name__ in ("__main__", "__squashkit_probe__"):
    main()
