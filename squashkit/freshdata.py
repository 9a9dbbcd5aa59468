"""What a fresh database holds: the rows a real ``migrate`` into an empty database leaves, kept and compared.

A squash proves that the new migration files build the live schema; CI, ``manage.py test`` and
every new environment also get the ROWS an empty database ends up with: lookup rows, a home
page, what data migrations and ``post_migrate`` made. This module reads them and tells two
builds apart:

- ``snapshot``: every row of every table of a scratch database (``django_migrations`` left
  out), matched by primary key; content types and permissions, which ``post_migrate`` numbers
  in its own order, are compared by natural key, in their own tables and in every column that
  references them.
- ``compare``: what a build of the old history holds and a build of the new files does not
  (rows to insert), the other way round (rows to delete), and rows whose values differ.
- ``volatile``: the cells two builds of the same files do not agree on (the clock, uuid4,
  random): a difference there is no difference, and a row that needs one carried is refused.
- The old history's build is kept in ``<backup_dir>/cache/data-<key>.json`` (0600), under
  ``scratch_cache.key`` of the files it was built from, so a second squash of the same history
  builds nothing.

``freshproof`` runs it in a squash; ``datamigration`` writes the difference as a migration.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from squashkit.scratch_cache import FOLDER, KEEP

FORMAT = 2  # bump when Snapshot changes meaning (2: foreign_keys): a kept build of another format is built again
CONTENT_TYPES = "django_content_type"
PERMISSIONS = "auth_permission"
SKIPPED = {"django_migrations"}
Log = Callable[[str], None]


class TableRows(BaseModel):
    """One table of a fresh build."""

    identity: list[str] = Field(description="The columns a row is matched by: the primary key, or a natural key.")
    types: dict[str, str] = Field(default_factory=dict, description="column -> its type, as format_type prints it.")
    references: list[str] = Field(default_factory=list, description="Tables its foreign keys point at (insert order).")
    foreign_keys: dict[str, str] = Field(
        default_factory=dict, description="column -> the table its (one-column) foreign key points at, itself included.")
    natural: dict[str, str] = Field(
        default_factory=dict, description="column -> 'contenttype' or 'permission': its values are natural keys.")
    rows: dict[str, dict] = Field(default_factory=dict, description="identity (JSON of its values) -> the row, column -> value.")


class Snapshot(BaseModel):
    """Every row a fresh build holds, table by table (``schema.table`` outside public)."""

    tables: dict[str, TableRows] = Field(default_factory=dict)

    def count(self) -> int:
        return sum(len(t.rows) for t in self.tables.values())


class CachedData(BaseModel):
    """A fresh build of one set of migration files, kept under ``scratch_cache.key``."""

    key: str
    format: int = Field(1, description="FORMAT when it was kept: an entry of another format is never taken.")
    alias: str
    made_by: str
    built_at: datetime.datetime
    seconds: float = Field(description="What the build took (migrate and reading its rows).")
    files: int
    data: Snapshot
    volatile: dict[str, dict[str, list[str]]] | None = Field(
        None, description="table -> identity -> columns a second build of the same files gave other values for "
        "('*': the row itself); None while only one build was made.")

    def describe(self) -> str:
        return (f"the fresh build {self.made_by} made at {self.built_at:%Y-%m-%d %H:%M:%S} UTC "
                f"({self.seconds:.1f} s, {self.files} migration files, {self.data.count()} rows)")


# --- reading a build ------------------------------------------------------------------------------


def _name(schema_name: str, table: str) -> str:
    return table if schema_name == "public" else f"{schema_name}.{table}"


def _identifier(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split(".", 1)) if "." in name else sql.Identifier(name)


def snapshot(conn: psycopg.Connection) -> Snapshot:
    """Every row of every ordinary table ``conn``'s database holds (extensions' tables and
    django_migrations left out), content types and permissions by natural key."""
    tables = conn.execute(
        """SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
           ORDER BY 2, 3""").fetchall()
    oids = {oid: _name(nsp, rel) for oid, nsp, rel in tables if rel not in SKIPPED}
    columns: dict[str, dict[str, str]] = {name: {} for name in oids.values()}
    for oid, column, type_name in conn.execute(
            """SELECT attrelid, attname, format_type(atttypid, atttypmod) FROM pg_attribute
               WHERE attrelid = ANY(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attrelid, attnum""", [list(oids)]):
        columns[oids[oid]][column] = type_name
    keys: dict[str, list[str]] = {name: [] for name in oids.values()}
    for oid, column in conn.execute(
            """SELECT i.indrelid, a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, position)
               JOIN pg_attribute a ON a.attnum = k.attnum
               WHERE i.indisprimary AND i.indrelid = ANY(%s) AND a.attrelid = i.indrelid ORDER BY i.indrelid, k.position""",
            [list(oids)]):
        keys[oids[oid]].append(column)
    references: dict[str, set[str]] = {name: set() for name in oids.values()}
    natural: dict[str, dict[str, str]] = {name: {} for name in oids.values()}
    foreign: dict[str, dict[str, str]] = {name: {} for name in oids.values()}
    for oid, target, column in conn.execute(
            """SELECT c.conrelid, c.confrelid, a.attname FROM pg_constraint c
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
               WHERE c.contype = 'f' AND c.conrelid = ANY(%s)""", [list(oids)]):
        if target in oids:
            references[oids[oid]].add(oids[target])
            foreign[oids[oid]][column] = oids[target]
            kind = {CONTENT_TYPES: "contenttype", PERMISSIONS: "permission"}.get(oids[target])
            if kind and len(keys[oids[oid]]) and column not in keys[oids[oid]]:
                natural[oids[oid]][column] = kind
    content_types, permissions = _natural_keys(conn, set(oids.values()))
    found = Snapshot()
    for name in oids.values():
        table = TableRows(identity=keys[name], types=columns[name], references=sorted(references[name] - {name}),
                          natural=natural[name], foreign_keys=foreign[name])
        for row in _rows(conn, name, columns[name]):
            for column, kind in table.natural.items():
                if row.get(column) is not None:
                    row[column] = (content_types if kind == "contenttype" else permissions).get(row[column])
            identity, row = _identity(name, table, row, content_types)
            while identity in table.rows:  # no primary key and the same content twice
                identity += "+"
            table.rows[identity] = row
        if name in (CONTENT_TYPES, PERMISSIONS):
            table.identity = ["app_label", "model"] if name == CONTENT_TYPES else ["content_type_id", "codename"]
        found.tables[name] = table
    return found


def _natural_keys(conn: psycopg.Connection, tables: set[str]) -> tuple[dict[int, list], dict[int, list]]:
    content_types, permissions = {}, {}
    if CONTENT_TYPES in tables:
        content_types = {pk: [app, model] for pk, app, model in conn.execute("SELECT id, app_label, model FROM django_content_type")}
    if PERMISSIONS in tables and content_types:
        permissions = {pk: [*content_types.get(ct, [None, None]), codename]
                       for pk, ct, codename in conn.execute("SELECT id, content_type_id, codename FROM auth_permission")}
    return content_types, permissions


def _rows(conn: psycopg.Connection, name: str, types: dict[str, str]) -> list[dict]:
    """The table's rows as JSON objects; numerics as their exact text (JSON numbers would go through a float)."""
    exact = [column for column, type_name in types.items() if type_name.startswith("numeric")]
    value = sql.SQL("to_jsonb(t)")
    for start in range(0, len(exact), 50):
        pairs = sql.SQL(", ").join(sql.SQL("{}, {}::text").format(sql.Literal(c), sql.Identifier("t", c)) for c in exact[start:start + 50])
        value = sql.SQL("{} || jsonb_build_object({})").format(value, pairs)
    query = sql.SQL("SELECT ({})::text FROM {} t").format(value, _identifier(name))
    return [json.loads(text, parse_float=Decimal) for (text,) in conn.execute(query)]


def _identity(name: str, table: TableRows, row: dict, content_types: dict[int, list]) -> tuple[str, dict]:
    if name == CONTENT_TYPES:
        row = {k: v for k, v in row.items() if k != "id"}
        return _key([row["app_label"], row["model"]]), row
    if name == PERMISSIONS:
        row = {k: v for k, v in row.items() if k != "id"}
        if isinstance(row["content_type_id"], int):  # its foreign key made it a natural key already, else here
            row["content_type_id"] = content_types.get(row["content_type_id"])
        return _key([row["content_type_id"], row["codename"]]), row
    if table.identity:
        return _key([row.get(c) for c in table.identity]), row
    return _key(row), row


def _key(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def row_key(values: list) -> str:
    """A row's identity from the values of its table's ``identity`` columns, as ``snapshot`` writes it."""
    return _key(values)


# --- comparing two builds --------------------------------------------------------------------------


class TableDiff(BaseModel):
    """How a build of the new files differs from the old history's in one table."""

    insert: list[str] = Field(default_factory=list, description="Identities the old build has and the new one lacks.")
    delete: list[str] = Field(default_factory=list, description="Identities the new build has and the old one lacks.")
    update: dict[str, list[str]] = Field(default_factory=dict, description="identity -> columns whose values differ.")
    defaulted: dict[str, list[str]] = Field(
        default_factory=dict, description="identity -> volatile columns of a row carried: the model's default makes them.")

    def empty(self) -> bool:
        return not (self.insert or self.delete or self.update)

    def describe(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("to insert", self.insert), ("to delete", self.delete), ("to update", self.update)) if v]
        return ", ".join(parts)


class DataDiff(BaseModel):
    tables: dict[str, TableDiff] = Field(default_factory=dict)
    unstable: list[str] = Field(default_factory=list, description="'table.column' a carried row needs and builds disagree on.")

    def empty(self) -> bool:
        return all(t.empty() for t in self.tables.values())

    def summary(self, limit: int = 4) -> str:
        busy = [(name, t) for name, t in self.tables.items() if not t.empty()]
        text = "; ".join(f"{name}: {t.describe()}" for name, t in busy[:limit])
        return text + (f"; {len(busy) - limit} more tables" if len(busy) > limit else "")


def compare(old: Snapshot, new: Snapshot, volatile: dict[str, dict[str, list[str]]] | None = None) -> DataDiff:
    """What ``new`` lacks, has in excess and holds otherwise than ``old``; volatile cells are no difference."""
    volatile = volatile or {}
    diff = DataDiff()
    for name, before in old.tables.items():
        after = new.tables.get(name)
        if after is None:
            continue  # a table the new files do not build: the schema proof speaks of it
        shaky = volatile.get(name, {})
        table = TableDiff()
        for identity, row in before.rows.items():
            if identity not in after.rows:
                table.insert.append(identity)
                if shaky.get(identity):
                    table.defaulted[identity] = shaky[identity]
                continue
            changed = [c for c, v in row.items() if after.rows[identity].get(c) != v and c not in shaky.get(identity, [])]
            if changed and "*" not in shaky.get(identity, []):
                table.update[identity] = changed
        # post_migrate makes a content type and permissions for every installed model after every migrate: a
        # data migration cannot take them away, and an old history that lacks some (its files deleted) is no reason to.
        table.delete = [identity for identity in after.rows if identity not in before.rows and "*" not in shaky.get(identity, [])
                        and name not in (CONTENT_TYPES, PERMISSIONS)]
        if not table.empty():
            diff.tables[name] = table
    return diff


def volatile(first: Snapshot, second: Snapshot) -> dict[str, dict[str, list[str]]]:
    """The cells two builds of the same files disagree on ('*' for a row only one of them has)."""
    found: dict[str, dict[str, list[str]]] = {}
    for name, table in first.tables.items():
        other = second.tables.get(name, TableRows(identity=table.identity))
        cells = {}
        for identity, row in table.rows.items():
            if identity not in other.rows:
                cells[identity] = ["*"]
            elif changed := [c for c, v in row.items() if other.rows[identity].get(c) != v]:
                cells[identity] = changed
        cells.update({identity: ["*"] for identity in other.rows if identity not in table.rows})
        if cells:
            found[name] = cells
    return found


def fingerprint(data: Snapshot, volatile_cells: dict[str, dict[str, list[str]]] | None = None) -> str:
    """A sha256 of every row, volatile cells left out: two builds holding the same rows have the same one."""
    digest = hashlib.sha256()
    for name in sorted(data.tables):
        shaky = (volatile_cells or {}).get(name, {})
        for identity in sorted(data.tables[name].rows):
            if "*" in shaky.get(identity, []):
                continue
            row = {k: v for k, v in data.tables[name].rows[identity].items() if k not in shaky.get(identity, [])}
            digest.update(_key([name, identity, row]).encode())
    return digest.hexdigest()


# --- the cache ------------------------------------------------------------------------------------


def _path(backup_dir: Path, digest: str) -> Path:
    return backup_dir / FOLDER / f"data-{digest[:40]}.json"


def load(backup_dir: Path, digest: str) -> CachedData | None:
    try:
        cached = CachedData.model_validate_json(_path(backup_dir, digest).read_text())
    except (OSError, ValueError, ValidationError):
        return None
    return cached if cached.key == digest and cached.format == FORMAT else None


def save(backup_dir: Path, entry: CachedData, log: Log | None = None) -> None:
    """Keep a build (rows of fresh builds: 0600, in a 0700 folder); one that cannot be written is only built again."""
    path = _path(backup_dir, entry.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.touch(0o600)
        partial.write_text(entry.model_dump_json())
        partial.replace(path)
        entries = sorted(path.parent.glob("data-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        if log:
            log(f"the fresh build's rows could not be kept in {path.parent} ({exc.strerror}): the next squash builds them again")


def entry(digest: str, alias: str, made_by: str, seconds: float, files: int, data: Snapshot,
          volatile_cells: dict[str, dict[str, list[str]]] | None = None) -> CachedData:
    return CachedData(key=digest, format=FORMAT, alias=alias, made_by=made_by, built_at=datetime.datetime.now(datetime.timezone.utc),
                      seconds=round(seconds, 2), files=files, data=data, volatile=volatile_cells)
