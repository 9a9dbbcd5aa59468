"""db.json: a dumpdata fixture that survives a reload into a fresh database, and its faithful load.

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

dumpdata runs through ``inproject/dumpdata.py``: Django's jsonl serializer with an encoder that
keeps the microseconds ``DjangoJSONEncoder`` cuts off. Unmanaged models (views, tables
``migrate`` does not create) are excluded: loading them fails.

Memory stays flat: one object at a time, in and out.

Next to the fixture, ``contenttypes.json`` (``<alias>.contenttypes.json`` for other aliases)
holds the source's content types and permissions *with their ids*, read in the same snapshot.
A plain ``loaddata`` does not need it; ``load_fixture`` uses it to put those ids back, so
that every reference to them, in the fixture and outside it (a generic relation stored as a
plain integer, an id kept in a JSON column, another system), keeps meaning the same object.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from squashkit import bundlefiles
from squashkit.bundle import AliasBackup, holds_what_was_recorded
from squashkit.errors import BadInput, OperationFailed
from squashkit.postgres import ConnectionParams, SequenceState, connect, resolve_table
from squashkit.project import ManagePy

CONTENT_TYPE = "contenttypes.contenttype"
PERMISSION = "auth.permission"
_PREFIX = b'{"model": "'
# An object's head as Django's serializer writes it ('"model": ') or json_build_object ('"model" : ').
_OBJECT_LABEL = re.compile(rb'\{"model" ?: "([^"]+)"')


class NaturalKeys:
    """Content type and permission ids of one database, mapped to their natural keys."""

    def __init__(
        self,
        content_types: dict[int, list[str]],
        permissions: dict[int, list[str]],
        names: dict[int, str],
        permission_content_types: dict[int, int] | None = None,
        tables: tuple[str | None, str | None] = (None, None),
    ):
        self.content_types = content_types
        self.permissions = permissions
        self.permission_names = names
        self.permission_content_types = permission_content_types or {}
        self.content_type_table, self.permission_table = tables

    @classmethod
    def read(cls, conn: psycopg.Connection) -> NaturalKeys:
        """Read both maps; empty when the database has no content types (contenttypes not installed)."""
        ct_table = resolve_table(conn, "django_content_type")
        perm_table = resolve_table(conn, "auth_permission")
        content_types: dict[int, list[str]] = {}
        permissions: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        owners: dict[int, int] = {}
        if ct_table:
            query = sql.SQL("SELECT id, app_label, model FROM {} ORDER BY id").format(_identifier(ct_table))
            for pk, app_label, model in conn.execute(query):
                content_types[pk] = [app_label, model]
        if ct_table and perm_table:
            query = sql.SQL("SELECT id, codename, name, content_type_id FROM {} ORDER BY id").format(_identifier(perm_table))
            for pk, codename, name, ct_id in conn.execute(query):
                if ct_id in content_types:
                    permissions[pk] = [codename, *content_types[ct_id]]
                    names[pk] = name
                    owners[pk] = ct_id
        return cls(content_types, permissions, names, owners, (ct_table, perm_table if ct_table else None))

    def write_ids(self, path: Path, recipients: list | None = None) -> int:
        """Write contenttypes.json: both tables' rows with their ids; return the number of rows.

        ``{"content_type_table": "public.django_content_type", "permission_table": "public.auth_permission",
        "content_types": [[id, app_label, model], ...], "permissions": [[id, name, codename, content_type_id], ...]}``
        """
        content_types = [[pk, app_label, model] for pk, (app_label, model) in self.content_types.items()]
        permissions = [
            [pk, self.permission_names[pk], key[0], self.permission_content_types[pk]] for pk, key in self.permissions.items()
        ]

        def rows(items: list[list]) -> str:  # one row a line: a last-resort file should be readable
            return "[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]"

        text = (
            "{\n"
            f'"content_type_table": {json.dumps(self.content_type_table)},\n'
            f'"permission_table": {json.dumps(self.permission_table)},\n'
            f'"content_types": {rows(content_types)},\n'
            f'"permissions": {rows(permissions)}\n'
            "}\n"
        )
        with bundlefiles.open_write(path, recipients) as out:
            out.write(text.encode("utf-8"))
        return len(content_types) + len(permissions)

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
    """Read a fixture written by ``write_fixture`` or ``jsonfixture.write_fixture_sql`` back to its
    last line and count its objects by model: the array opens and closes, and every line between
    is one whole object (it opens with its model's label, its comma at the head or at the end, and
    closes its brace).

    The objects are not parsed again: PostgreSQL (or Django's serializer) wrote them, and what
    this read proves is that the disk gives back every line; the manifest's sha256 guards the
    file from then on. (Parsing each object would cost a backup as much as pg_dump does.)
    Raises ``OperationFailed`` naming the line when the file is truncated or damaged.
    """
    counts: Counter = Counter()
    with bundlefiles.open_read(path) as handle:
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
            line = line.removeprefix(b",").removesuffix(b",")
            label = _OBJECT_LABEL.match(line)
            if label is None or not line.endswith(b"}"):
                raise OperationFailed(f"{path.name} is damaged on line {number}: not one whole object")
            counts[label.group(1).decode()] += 1
        if not closed:
            raise OperationFailed(f"{path.name} is truncated: no closing bracket")
    return counts


def read_ids(path: Path) -> dict:
    """contenttypes.json, parsed and checked; one-line errors when damaged."""
    try:
        document = json.loads(bundlefiles.read_bytes(path).decode("utf-8"))
        assert isinstance(document["content_types"], list) and isinstance(document["permissions"], list)
    except FileNotFoundError:
        raise OperationFailed(f"{path} is missing") from None
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise OperationFailed(f"{path.name} is damaged: {exc or 'unexpected layout'}") from None
    return document


def _identifier(qualified: str) -> sql.Identifier:
    """``schema.name`` as a quoted identifier."""
    return sql.Identifier(*qualified.split(".", 1))


def _regclass(conn: psycopg.Connection, qualified: str) -> str | None:
    """The relation's name as the target sees it, or None when it does not exist there."""
    quoted = _identifier(qualified).as_string(conn)
    return conn.execute("SELECT to_regclass(%s)::text", [quoted]).fetchone()[0]


def _has_rows(conn: psycopg.Connection, qualified: str) -> bool:
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_identifier(qualified))).fetchone()[0]


def _pg_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    detail = diag.message_detail if diag is not None else None
    text = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{text} ({detail})" if detail else text


def load_fixture(
    manage: ManagePy, params: ConnectionParams, bundle_dir: Path, entry: AliasBackup, log: Callable[[str], None]
) -> None:
    """Load ``entry``'s fixture into a database just recreated and migrated (for real) with the
    bundle's migration files, so that every table the fixture fills equals the source's.

    1. Empty the tables the fixture fills (and django_content_type, auth_permission), and only
       those: rows a migration created would otherwise collide with the source's (same unique
       value, another id) or stay as extra rows the source had deleted.
       Why DELETE and not TRUNCATE: ``TRUNCATE ... CASCADE`` also empties every table holding a
       foreign key to these, whether the fixture refills it or not (django_admin_log, the
       configured excludes, a table a migration filled), so rows would vanish silently; plain
       TRUNCATE refuses as soon as one such table exists, even an empty one. DELETE touches only
       the listed tables. Django's foreign keys are DEFERRABLE INITIALLY DEFERRED, so the order
       does not matter inside the transaction, and at its end PostgreSQL checks that no row left
       outside the list points at a row that is gone: a real conflict fails loudly, with the
       constraint's name, instead of being hidden. On a just-migrated database these tables hold
       a handful of rows, so DELETE costs nothing; RESTART IDENTITY is not needed, step 4 sets
       every sequence.
    2. Insert the source's content types and permissions with their own ids (contenttypes.json),
       in the same transaction: a generic relation, a group permission, an id kept anywhere
       means the same object as in the source, and the stale ones (deleted models whose
       permissions groups still hold) are back too.
    3. ``manage.py loaddata`` the fixture: its header objects match those rows by natural key
       (same ids), every other object keeps its own primary key.
    4. Put every sequence where the source had it (loaddata resets them to max(id), which
       hands out the ids of deleted rows again). A sequence of a table the fixture does not
       fill is only set while that table is empty: if ``migrate`` put rows there
       (django_migrations), their ids belong to the target's own numbering.
    5. Verify: every table filled holds the source's content (row counts for bundles older than content hashes).
    """
    if not entry.json_tables and entry.json_objects:
        raise OperationFailed(
            f"{entry.json_file} comes from a bundle written before squashkit recorded the tables its fixture fills: "
            f"load it by hand (manage.py loaddata {bundle_dir / entry.json_file})"
        )
    fixture = bundle_dir / entry.json_file
    if not fixture.is_file():
        raise OperationFailed(f"{fixture} is missing")
    if fixture.name.endswith(bundlefiles.AGE):  # loaddata would need it decrypted on disk
        raise BadInput(f"{entry.json_file} is encrypted: loaddata cannot read it; roll back without --loaddata (nothing was changed)")
    ids = read_ids(bundle_dir / entry.contenttypes_file) if entry.contenttypes_file else None
    tables = tables_filled(entry, ids)
    where = f"[{entry.alias}]"

    with connect(params, autocommit=True) as conn:
        require_tables(conn, tables, params.dbname)

        # 1 and 2, one transaction: either the tables hold the source's ids or nothing changed.
        log(f"{where} emptying the {len(tables)} tables the fixture fills")
        try:
            with conn.transaction():
                put_back_ids(conn, tables, ids)
        except psycopg.Error as exc:
            raise OperationFailed(f"emptying the fixture's tables in {params.dbname} failed: {_pg_error(exc)}") from None
        if ids:
            log(f"{where} {len(ids['content_types'])} content types and {len(ids['permissions'])} permissions back with their ids")

    # 3. The fixture itself.
    log(f"{where} loaddata {entry.json_file} ({sum(entry.json_objects.values())} objects)")
    manage.run("loaddata", str(fixture), "--database", entry.alias, "-v", "0", what=f"loaddata of {entry.json_file}")

    with connect(params, autocommit=True) as conn:
        # 4. Sequences.
        try:
            exact, skipped = restore_sequences(conn, entry.facts.sequences, set(tables))
        except psycopg.Error as exc:
            raise OperationFailed(f"setting the sequences of {params.dbname} failed: {_pg_error(exc)}") from None
        log(f"{where} {exact} sequences set to the source's values")
        if skipped:
            log(f"{where} note: {len(skipped)} sequences of the source do not exist here (e.g. {skipped[0]})")

        # 5. Verify: by content where the bundle recorded it, else by row count.
        held = verify_loaded(conn, tables, entry)
        log(f"{where} verified: {len(tables)} tables hold the source's {held}")


def tables_filled(entry: AliasBackup, ids: dict | None) -> list[str]:
    """The tables loading ``entry``'s fixture empties and fills: its models' and join tables, and
    those of the content types and permissions ``ids`` (contenttypes.json) puts back."""
    tables = list(entry.json_tables)
    if ids:
        tables += [t for t in (ids["content_type_table"], ids["permission_table"]) if t and t not in tables]
    return tables


def require_tables(conn: psycopg.Connection, tables: list[str], dbname: str) -> None:
    """Refuse a target that lacks a table the fixture fills: it was not migrated (with the bundle's files)."""
    missing = [table for table in tables if _regclass(conn, table) is None]
    if missing:
        raise OperationFailed(
            f"{dbname} has no table {missing[0]} (of {len(missing)} missing): "
            "migrate it with the bundle's migration files before loading the fixture"
        )


def restore_sequences(
    conn: psycopg.Connection, sources: dict[str, SequenceState], filled: set[str]
) -> tuple[int, list[str]]:
    """Put every sequence where the source had it (``sources``: the manifest's, ``load_fixture``
    step 4); return how many, and the source's sequences this database does not have."""
    exact, skipped = 0, []
    for name, state in sorted(sources.items()):
        if _regclass(conn, name) is None:
            skipped.append(name)
            continue
        owner = state.owned_by.rsplit(".", 1)[0] if state.owned_by else None
        if owner and owner not in filled and _regclass(conn, owner) and _has_rows(conn, owner):
            continue  # rows ``migrate`` made: leave the target's numbering alone
        set_sequence(conn, name, state)
        exact += 1
    return exact, skipped


def set_sequence(conn: psycopg.Connection, name: str, state: SequenceState) -> None:
    """``setval``: not undone by a rollback, like every change to a sequence."""
    conn.execute("SELECT setval(%s::regclass, %s, %s)", [_identifier(name).as_string(conn), state.last_value, state.is_called])


def verify_loaded(conn: psycopg.Connection, tables: list[str], entry: AliasBackup) -> str:
    """Every table the fixture filled holds the source's content (``load_fixture`` step 5), or its
    row count for a bundle older than content hashes; returns which of the two was checked."""
    problems = holds_what_was_recorded(conn, entry, sorted(tables))
    if problems:
        more = f"; {len(problems) - 1} more tables differ" if len(problems) > 1 else ""
        raise OperationFailed(f"after loading {entry.json_file}: {problems[0]}{more}")
    return "content" if entry.contents else "row counts"


def put_back_ids(conn: psycopg.Connection, tables: list[str], ids: dict | None) -> None:
    """``load_fixture`` steps 1 and 2, inside the caller's transaction: empty ``tables``, then
    insert the source's content types and permissions (``ids``, contenttypes.json) with their ids."""
    empty_tables(conn, tables)
    if ids:
        _insert_ids(conn, ids)


def empty_tables(conn: psycopg.Connection, tables: list[str]) -> None:
    """DELETE every row of ``tables`` inside the caller's transaction (why not TRUNCATE: load_fixture, step 1).

    Foreign keys are checked when the transaction ends: a row left elsewhere that points at a
    deleted one fails it, with the constraint's name.
    """
    conn.execute("SET CONSTRAINTS ALL DEFERRED")
    for table in tables:
        conn.execute(sql.SQL("DELETE FROM {}").format(_identifier(table)))


def fixture_models(path: Path) -> set[str]:
    """The model labels of any JSON fixture (one object a line or indented): it is read whole, as loaddata does."""
    return fixture_apps(path)[0]


def fixture_apps(path: Path) -> tuple[set[str], set[str]]:
    """(the model labels of a JSON fixture, the apps its content types name): what it says of the project
    it came from. Read whole, as loaddata does: a truncated file is refused here, before anything changes."""
    try:
        with bundlefiles.open_read(path) as source:
            objects = json.loads(source.read())
        labels = {obj["model"] for obj in objects}
        apps = {obj["fields"]["app_label"] for obj in objects if obj["model"] == CONTENT_TYPE}
        return labels, apps
    except (ValueError, KeyError, TypeError, OSError, EOFError) as exc:  # OSError: a damaged .gz
        # Read before anything is dropped: a damaged file is the user's input, nothing changed.
        raise BadInput(f"{path.name} is not a JSON fixture ({str(exc).splitlines()[0]}): nothing was changed") from None


def _insert_ids(conn: psycopg.Connection, ids: dict) -> None:
    ct_table, perm_table = ids["content_type_table"], ids["permission_table"]
    with conn.cursor() as cursor:
        if ct_table and ids["content_types"]:
            cursor.executemany(
                sql.SQL("INSERT INTO {} (id, app_label, model) VALUES (%s, %s, %s)").format(_identifier(ct_table)),
                ids["content_types"],
            )
        if perm_table and ids["permissions"]:
            cursor.executemany(
                sql.SQL("INSERT INTO {} (id, name, codename, content_type_id) VALUES (%s, %s, %s, %s)").format(
                    _identifier(perm_table)
                ),
                ids["permissions"],
            )
