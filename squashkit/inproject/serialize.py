"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

Django's own serializer, for the few models squashkit cannot write in SQL the way Django
would (a field with its own ``value_to_string``, a type squashkit does not know), inside the
snapshot the backup exported, so their objects match the rest of db.json and the dump.

As ``dumpdata --all`` does, with three differences:

- it reads in the exported snapshot (``SET TRANSACTION SNAPSHOT``), not in autocommit;
- many-to-many lists come from the join table itself: dumpdata asks the target's *default*
  manager, which may filter rows out (their links would be lost) or refuse to run outside a
  scope (django-scopes); here each chunk's lists are read once and handed to the serializer
  as its prefetch cache, with scoped managers switched off (``scopes.py``);
- floats that JSON cannot hold (NaN, infinities) are written as the strings ``FloatField``
  reads back, so PostgreSQL's jsonb (squashkit's loader) can parse every line;
- a field that only changes how Python sees its column (its own ``from_db_value``, Django's
  ``value_to_string``: a list kept in a text column) is written as its column holds it
  (``get_prep_value``), not as the repr of its Python value, which nothing reads back; its
  ``to_python`` reads that text, so ``loaddata`` still takes the line.

Datetimes and times keep their microseconds (dumpdata.py's encoder, loaded by path). Content
type and permission ids stay ids: squashkit rewrites them to natural keys as it splices the
lines in. It must not import squashkit. Its arguments arrive as the global
``SQUASHKIT_SERIALIZE``: ``alias``, ``snapshot`` (or None), ``models`` (label -> output file).
"""

import importlib
import itertools
import json
import math
import re
import runpy
from pathlib import Path

CHUNK = 2000
SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$")


def _encoder():
    namespace = runpy.run_path(str(Path(__file__).with_name("dumpdata.py")), run_name="squashkit_dumpdata_library")
    return namespace["full_precision_encoder"]()


def _unscoped():
    """Scoped managers switched off (django-scopes by default, or what squashkit's ``unscoped`` names)."""
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def _enter_snapshot(connection, snapshot):
    """Make the open transaction see exactly the backup's snapshot (it must be its first statement)."""
    # The driver Django uses (psycopg or psycopg2; a project may have both installed): SET takes no
    # bind parameters, so the id is quoted by it, and handed over as text: a project's execute
    # wrappers (query taggers, tracing) edit the statement as a string.
    sql = importlib.import_module(f"{connection.Database.__name__}.sql")
    with connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot:
            if not SNAPSHOT_ID.match(snapshot):
                raise ValueError(f"not a snapshot id: {snapshot!r}")
            statement = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
            cursor.execute(statement.as_string(connection.connection))


def _attach_m2m(objects, model, alias):
    """Give each object its many-to-many lists as a prefetch cache, read from the join tables."""
    meta = model._meta.concrete_model._meta
    pks = [obj.pk for obj in objects]
    for field in meta.local_many_to_many:
        through = field.remote_field.through
        if not (field.serialize and through._meta.auto_created):
            continue
        source = through._meta.get_field(field.m2m_field_name()).attname
        target = through._meta.get_field(field.m2m_reverse_field_name()).attname
        target_model = field.related_model
        target_pk = target_model._meta.pk.attname
        links = {}
        rows = through._base_manager.using(alias).filter(**{f"{source}__in": pks}).order_by(target)
        for owner, value in rows.values_list(source, target):
            links.setdefault(owner, []).append(target_model.from_db(alias, [target_pk], [value]))
        for obj in objects:
            # The serializer takes the list from here, and never builds the related manager's
            # query (which would go through the target's default manager).
            cached = target_model._base_manager.using(alias).all()
            cached._result_cache = links.get(obj.pk, [])
            cached._prefetch_done = True
            obj.__dict__.setdefault("_prefetched_objects_cache", {})[field.name] = cached


def _json_safe(obj):
    for name, value in obj["fields"].items():
        if isinstance(value, float) and not math.isfinite(value):
            obj["fields"][name] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return obj


def _column_form_fields(model):
    """The fields whose serialized form is better taken from the column: a ``from_db_value`` of their own
    (below Django's classes) and Django's ``value_to_string``, which writes ``str()`` of the Python value."""
    found = []
    for field in model._meta.concrete_model._meta.local_concrete_fields:
        if field.is_relation:
            continue
        owner = next(klass for klass in type(field).__mro__ if "value_to_string" in vars(klass))
        converter = next((klass for klass in type(field).__mro__ if "from_db_value" in vars(klass)), None)
        if owner.__module__.startswith("django.") and converter and not converter.__module__.startswith("django."):
            found.append(field)
    return found


def serialize(model, alias, output, encoder):
    from django.core import serializers

    queryset = model._base_manager.using(alias).order_by(model._meta.pk.name)
    rows = queryset.iterator(chunk_size=CHUNK)
    column_form = _column_form_fields(model)
    with open(output, "w", encoding="utf-8") as out:
        while chunk := list(itertools.islice(rows, CHUNK)):
            _attach_m2m(chunk, model, alias)
            for obj, data in zip(chunk, serializers.serialize("python", chunk)):
                for field in column_form:
                    stored = field.get_prep_value(field.value_from_object(obj))
                    if isinstance(stored, str) or stored is None:
                        data["fields"][field.name] = stored
                out.write(json.dumps(_json_safe(data), cls=encoder, ensure_ascii=False) + "\n")


def main(arguments):
    from django.apps import apps
    from django.db import connections, transaction

    alias = arguments["alias"]
    encoder = _encoder()
    connections[alias].ensure_connection()  # its set-up queries run before the transaction
    with _unscoped(), transaction.atomic(using=alias):
        _enter_snapshot(connections[alias], arguments["snapshot"])
        for label, output in arguments["models"].items():
            serialize(apps.get_model(label), alias, output, encoder)


if __name__ == "__squashkit_serialize__":
    main(globals()["SQUASHKIT_SERIALIZE"])
