"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

squashkit loads db.json with SQL, in one transaction of its own. The objects of the few models
whose values only Django can read (a field with its own ``value_to_string``: their text in the
fixture is that field's, not the column's) go through Django here, as loaddata would save them:
Django's Deserializer (``to_python``), then each concrete field's ``get_db_prep_save``, then the
database driver's text form of that value (what PostgreSQL's input function reads). Nothing is
written to the database: squashkit inserts these rows itself, casting each text to the target
column's real type, inside its transaction. One JSON line per row::

    {"object": true, "table": db_table, "model": label, "pk": pk, "values": {column: text or null},
     "natural": {column: ["contenttype" | "permission", natural key]}}

and one per many-to-many link (without ``object``; ``table`` is then the join table). References to content types
and permissions given by natural key are handed to squashkit unresolved, since the ids they
stand for exist only inside squashkit's transaction. Generated columns are left out, as
loaddata leaves them.

It must not import squashkit. Its arguments arrive as the global ``SQUASHKIT_DESERIALIZE``:
``alias``, ``fixture``, ``output``, ``models`` (label -> {field name: "contenttype" | "permission"}).
With psycopg 3 the text form of a value is its dumper's; with psycopg2, PostgreSQL's cast of its literal.
"""

import gzip
import json
import re
import runpy
from pathlib import Path

# The head of one object line, in either comma shape and with PostgreSQL's or Python's spacing.
LINE = re.compile(rb'^\s*,?\s*\{"model"\s*:\s*"([^"]+)"')


def _text_forms(connection):
    """values -> the text PostgreSQL's input function reads for each, by the driver Django uses."""
    if connection.Database.__name__ == "psycopg":
        from psycopg.adapt import PyFormat, Transformer

        transformer = Transformer(connection.connection)

        def texts(values):
            dumped = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
            return [None if value is None else bytes(value).decode() for value in dumped]

        return texts
    # psycopg2 has no text dumpers: it writes each value as an SQL literal, which PostgreSQL casts
    # to text (one query per object; only the few models only Django can read come here).
    from psycopg2 import sql

    def texts(values):
        if not values:
            return []
        query = sql.SQL("SELECT {}").format(sql.SQL(", ").join(sql.SQL("({})::text").format(sql.Placeholder()) for _ in values))
        with connection.connection.cursor() as cursor:  # the driver's own: no execute wrapper edits it
            cursor.execute(query, list(values))
            return list(cursor.fetchone())

    return texts


def _held_back(model, fields, natural):
    """Take the natural-key references out of the object: the Deserializer would look them up."""
    held = {}
    for name, kind in natural.items():
        value = fields.get(name)
        many = model._meta.get_field(name).many_to_many
        if many and value:
            held[name] = (kind, value)
            fields[name] = []
        elif not many and isinstance(value, list):
            held[name] = (kind, value)
            fields[name] = None
    return held


def rows(obj, natural, alias, connection, texts):
    from django.apps import apps
    from django.core.serializers import python

    model = apps.get_model(obj["model"])
    held = _held_back(model, obj["fields"], natural)
    (deserialized,) = list(python.Deserializer([obj], using=alias))
    instance = deserialized.object
    meta = model._meta
    base = {"model": obj["model"], "pk": obj.get("pk")}

    columns, values, references = [], [], {}
    for field in meta.local_concrete_fields:
        if getattr(field, "generated", False):
            continue
        if field.name in held:
            references[field.column] = list(held[field.name])
            continue
        columns.append(field.column)
        values.append(field.get_db_prep_save(getattr(instance, field.attname), connection))
    values = dict(zip(columns, texts(values)))
    yield {**base, "object": True, "table": meta.db_table, "values": values, "natural": references}

    for field in meta.local_many_to_many:
        through = field.remote_field.through
        if field.name not in obj["fields"] or not through._meta.auto_created:
            continue
        source = through._meta.get_field(field.m2m_field_name())
        target = through._meta.get_field(field.m2m_reverse_field_name())
        (owner,) = texts([source.get_db_prep_save(instance.pk, connection)])
        kind, keys = held.get(field.name, (None, []))
        links = [(None, key) for key in keys if isinstance(key, list)]
        ids = [target.target_field.to_python(key) for key in keys if not isinstance(key, list)]
        ids += deserialized.m2m_data.get(field.name, [])
        links += [(text, None) for text in texts([target.get_db_prep_save(value, connection) for value in ids])]
        for text, key in links:
            row = {**base, "table": through._meta.db_table, "values": {source.column: owner}, "natural": {}}
            if key is None:
                row["values"][target.column] = text
            else:
                row["natural"][target.column] = [kind, key]
            yield row


def _unscoped():
    """Scoped managers switched off: the Deserializer may look objects up through a default manager."""
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def main(arguments):
    from django.db import connections

    alias, wanted = arguments["alias"], arguments["models"]
    connection = connections[alias]
    connection.ensure_connection()
    texts = _text_forms(connection)
    # db.json.gz (backup --compress) is read as loaddata reads it, through gzip.
    opener = gzip.open if arguments["fixture"].endswith(".gz") else open
    with _unscoped(), opener(arguments["fixture"], "rb") as source, open(arguments["output"], "w", encoding="utf-8") as out:
        for raw in source:
            match = LINE.match(raw)
            if match is None or match.group(1).decode() not in wanted:
                continue
            obj = json.loads(raw.strip().strip(b","))
            for row in rows(obj, wanted[obj["model"]], alias, connection, texts):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__squashkit_deserialize__":
    main(globals()["SQUASHKIT_DESERIALIZE"])
