"""Runs INSIDE sample_project (``manage.py shell -c``), for tests/test_fastjson.py.

Parses two db.json files with Django's own Deserializer (``field.to_python`` on every value,
natural keys resolved against the database the project points at) and writes what differs,
object by object and field by field, as JSON: ``[[model, pk, field, left, right], ...]``, plus
the objects only one side has. Values are compared as Python sees them after parsing, so
``"0E-10"`` equals ``"0.0000000000"`` and ``"Z"`` equals ``"+00:00"``; many-to-many lists are
compared as sets. Its arguments arrive as the global ``FASTJSON_COMPARE``: ``left``, ``right``,
``output``, ``sources`` (also read each object's row through the ORM, ``_base_manager``, and
report fields where a side differs from the row: ``[model, pk, field, "left"|"right", value, row]``).
"""

import json
import math


def _objects(path):
    from django.core import serializers

    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.strip().strip(b",")
            if not line or line in (b"[", b"]"):
                continue
            data = json.loads(line)
            for obj in serializers.deserialize("python", [data]):
                yield data, obj


def _plain(value):
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if hasattr(value, "name") and type(value).__name__ in ("FieldFile", "ImageFieldFile"):
        return value.name
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read(path):
    objects = {}
    for data, obj in _objects(path):
        model = type(obj.object)
        values = {}
        for name in data["fields"]:
            field = model._meta.get_field(name)
            if field.many_to_many:
                values[name] = sorted(str(v) for v in obj.m2m_data.get(name, []))
            else:
                values[name] = _plain(getattr(obj.object, field.attname))
        objects[(data["model"], str(obj.object.pk))] = (obj.object, values)
    return objects


def _row_values(instance, names):
    """What the ORM reads from the database for this object (the truth both files should carry)."""
    model = type(instance)
    row = model._base_manager.get(pk=instance.pk)
    values = {}
    for name in names:
        field = model._meta.get_field(name)
        if field.many_to_many:
            through = field.remote_field.through
            source = through._meta.get_field(field.m2m_field_name()).attname
            target = through._meta.get_field(field.m2m_reverse_field_name()).attname
            links = through._base_manager.filter(**{source: row.pk}).values_list(target, flat=True)
            values[name] = sorted(str(v) for v in links)
        else:
            values[name] = _plain(getattr(row, field.attname))
    return values


def _same(a, b):
    return a == b or repr(a) == repr(b)


def main(arguments):
    left, right = _read(arguments["left"]), _read(arguments["right"])
    differences = []
    for key in sorted(set(left) | set(right)):
        if key not in left or key not in right:
            differences.append([*key, None, "only left" if key in left else "only right", None])
            continue
        (instance, a), (_, b) = left[key], right[key]
        for name in sorted(set(a) | set(b)):
            if not _same(a.get(name), b.get(name)):
                differences.append([*key, name, repr(a.get(name)), repr(b.get(name))])
    truth = []
    if arguments.get("sources"):
        for key, (instance, a) in left.items():
            b = right.get(key, (None, {}))[1]
            row = _row_values(instance, set(a) | set(b))
            for side, values in (("left", a), ("right", b)):
                for name, value in values.items():
                    if not _same(value, row[name]):
                        truth.append([*key, name, side, repr(value), repr(row[name])])
    with open(arguments["output"], "w") as out:
        json.dump({"differences": differences, "against_rows": truth, "objects": [len(left), len(right)]}, out)


if __name__ == "__fastjson_compare__":
    main(globals()["FASTJSON_COMPARE"])
