"""db.json: a dumpdata fixture that survives a reload into a fresh database.

The choice, and why
-------------------
A fresh database numbers content types and permissions in the order ``migrate`` creates
them, so the ids a plain ``dumpdata`` writes for ``content_type`` (generic relations) or
``Group.permissions`` point at the wrong rows after a reload: the procedure's complaint.
``dumpdata --natural-foreign`` fixes that for every foreign key at once, but costs one query
per foreign key of every object (~3x slower on a wagtail project, 1.7x on sample_project:
benchmarks/README.md) and aborts,
leaving a truncated file, on a dangling id kept by a ``db_constraint=False`` key.

squashkit runs plain ``dumpdata --all --format jsonl`` (fast, streaming, never dereferences
a foreign key) and then rewrites, line by line, only the references to content types and
permissions into natural keys, from two small maps read from the database in the same
snapshot. Every other foreign key keeps its id, dangling or not. The content types and
permissions themselves head the file in natural-key form (no pk), so loading into a fresh
database matches those ``migrate`` created and adds any the code no longer defines. The
result is an ordinary fixture: ``manage.py loaddata db.json`` needs no squashkit.

Memory stays flat: one object at a time, in and out.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psycopg

from squashkit.errors import OperationFailed
from squashkit.postgres import resolve_table

CONTENT_TYPE = "contenttypes.contenttype"
PERMISSION = "auth.permission"
_PREFIX = b'{"model": "'


class NaturalKeys:
    """Content type and permission ids of one database, mapped to their natural keys."""

    def __init__(self, content_types: dict[int, list[str]], permissions: dict[int, list[str]], names: dict[int, str]):
        self.content_types = content_types
        self.permissions = permissions
        self.permission_names = names

    @classmethod
    def read(cls, conn: psycopg.Connection) -> NaturalKeys:
        """Read both maps; empty when the database has no content types (contenttypes not installed)."""
        ct_table = resolve_table(conn, "django_content_type")
        perm_table = resolve_table(conn, "auth_permission")
        content_types: dict[int, list[str]] = {}
        permissions: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        if ct_table:
            for pk, app_label, model in conn.execute("SELECT id, app_label, model FROM django_content_type ORDER BY id"):
                content_types[pk] = [app_label, model]
        if ct_table and perm_table:
            for pk, codename, name, ct_id in conn.execute(
                "SELECT id, codename, name, content_type_id FROM auth_permission ORDER BY id"
            ):
                if ct_id in content_types:
                    permissions[pk] = [codename, *content_types[ct_id]]
                    names[pk] = name
        return cls(content_types, permissions, names)

    def header_objects(self) -> list[dict]:
        """The content types and permissions, in natural-key form, to load before anything else."""
        objects: list[dict] = [
            {"model": CONTENT_TYPE, "fields": {"app_label": app_label, "model": model}}
            for app_label, model in self.content_types.values()
        ]
        objects += [
            {
                "model": PERMISSION,
                "fields": {"name": self.permission_names[pk], "content_type": key[1:], "codename": key[0]},
            }
            for pk, key in self.permissions.items()
        ]
        return objects

    def rewrite(self, obj: dict, fields: dict[str, str]) -> dict:
        """Replace content type and permission ids in ``fields`` by natural keys; unknown ids stay."""
        values = obj["fields"]
        for name, kind in fields.items():
            mapping = self.content_types if kind == "contenttype" else self.permissions
            value = values.get(name)
            if isinstance(value, list):
                values[name] = [mapping.get(item, item) for item in value]
            elif value is not None:
                values[name] = mapping.get(value, value)
        return obj


def _label(line: bytes) -> str:
    """The model label of a dumpdata jsonl line, without parsing the whole object when possible."""
    if line.startswith(_PREFIX):
        end = line.find(b'"', len(_PREFIX))
        if end > 0:
            return line[len(_PREFIX):end].decode()
    return json.loads(line)["model"]


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def write_fixture(jsonl: Path, destination: Path, keys: NaturalKeys | None, rewrite_fields: dict[str, dict[str, str]]) -> Counter:
    """Turn dumpdata's jsonl into db.json (a JSON array, one object per line); count objects by model."""
    counts: Counter = Counter()
    first = True
    with jsonl.open("rb") as source, destination.open("wb") as out:
        out.write(b"[\n")

        def emit(line: bytes) -> None:
            nonlocal first
            if not first:
                out.write(b",\n")
            out.write(line)
            first = False

        for obj in keys.header_objects() if keys else []:
            emit(_dumps(obj))
            counts[obj["model"]] += 1
        for raw in source:
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            label = _label(line)
            fields = rewrite_fields.get(label) if keys else None
            emit(_dumps(keys.rewrite(json.loads(line), fields)) if fields else line)
            counts[label] += 1
        out.write(b"\n]\n")
    return counts


def read_counts(path: Path) -> Counter:
    """Parse a fixture written by ``write_fixture`` completely and count its objects by model.

    Raises ``OperationFailed`` naming the line when the file is truncated or damaged.
    """
    counts: Counter = Counter()
    with path.open("rb") as handle:
        opening = handle.readline()
        if opening.strip() != b"[":
            raise OperationFailed(f"{path.name} does not start with a JSON array")
        closed = False
        for number, raw in enumerate(handle, start=2):
            line = raw.strip()
            if line == b"]":
                closed = True
                continue
            if closed:
                raise OperationFailed(f"{path.name}: data after the closing bracket on line {number}")
            try:
                obj = json.loads(line.removesuffix(b","))
            except ValueError as exc:
                raise OperationFailed(f"{path.name} is damaged on line {number}: {exc}") from None
            counts[obj["model"]] += 1
        if not closed:
            raise OperationFailed(f"{path.name} is truncated: no closing bracket")
    return counts
