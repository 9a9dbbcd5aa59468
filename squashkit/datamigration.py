"""Writing what a fresh build of the new files lacks as ``NNNN_squashkit_data.py``.

``freshdata.compare`` says which rows a fresh database built from the old history holds and one
built from the regenerated files does not (or holds otherwise). This writes them as one data
migration that stays valid when the models change later:

- literal rows, and the models asked of ``apps.get_model`` by name: nothing of the project is
  imported (a later squash finds the models unchanged and moves it as it is);
- after the last migration of every project app and of the third-party apps whose tables it
  writes, in one transaction: rows deleted (the new build has them, the old one not; referencing
  rows first), updated, then inserted in foreign-key order (a multi-table child after its parent
  row, whichever app owns that table), each on its own table only, with the values as the old
  build held them; a row that cannot be written is named (``NOT_WRITTEN``, read by ``not_written``);
- content types and permissions by natural key, found or created when it runs (``post_migrate``
  numbers them in its own order, after every migration);
- columns two builds of the old history disagree on (a uuid4 or clock default) left to the
  model's default, as the old history left them;
- sequences set past the inserted ids.

The migration lives in the first project app whose data migration left rows (``host``); the
loss report still answers, app by app, for the tables each app's data migrations changed.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path

from squashkit import carry
from squashkit.errors import OperationFailed
from squashkit.freshdata import CONTENT_TYPES, PERMISSIONS, DataDiff, Snapshot, row_key
from squashkit.project import ProjectInfo

NAME = "squashkit_data"
NOT_WRITTEN = "squashkit: carried rows not written: "  # then JSON: [{table, action, key, why}], read by ``not_written``

# The natural keys, written only when the rows hold some (their models are asked for by name).
CONTENT_TYPES_HELPER = '''
ContentTypeKey = namedtuple("ContentTypeKey", "app_label model")


def _content_type(apps, alias, key):
    """Found, or created as post_migrate would create it (after every migration, in its own order)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    return ContentType.objects.db_manager(alias).get_or_create(app_label=key.app_label, model=key.model)[0].pk
'''
PERMISSIONS_HELPER = '''
PermissionKey = namedtuple("PermissionKey", "app_label model codename name")


def _permission(apps, alias, key):
    Permission = apps.get_model("auth", "Permission")
    content_type = _content_type(apps, alias, ContentTypeKey(key.app_label, key.model))
    return Permission.objects.db_manager(alias).get_or_create(
        content_type_id=content_type, codename=key.codename, defaults={"name": key.name}
    )[0].pk
'''
HELPERS = '''

def _value(apps, alias, value):
    """A natural key resolved in this database, else the value itself."""
    if type(value).__name__ == "ContentTypeKey":
        return _content_type(apps, alias, value)
    if type(value).__name__ == "PermissionKey":
        return _permission(apps, alias, value)
    return value


def _fields(model, row):
    """column -> field of the model's own table, for the columns of ``row``."""
    fields = {field.column: field for field in model._meta.local_concrete_fields}
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise RuntimeError(f"the model has no field for column(s) {', '.join(unknown)}")
    return fields


def _attnames(apps, alias, model, row):
    fields = _fields(model, row)
    return {fields[column].attname: _value(apps, alias, value) for column, value in row.items()}


def apply_rows(apps, schema_editor, models, rows):
    """Delete, update, then insert each table's rows on that table alone; set sequences past the inserted ids.

    Each row is written in a savepoint and the foreign keys are checked before the end: a row that
    cannot be written is named with why (in one line, after NOT_WRITTEN), every such row at once."""
    alias = schema_editor.connection.alias
    mine = rows.get(alias, {})
    failed = []

    def attempt(action, label, key, write):
        try:
            with transaction.atomic(using=alias):
                write()
        except (DatabaseError, RuntimeError) as exc:
            failed.append({"table": models[label]._meta.db_table, "action": action, "key": key, "why": _why(exc)})

    for label, keys in mine.get("delete", {}).items():
        manager = models[label]._base_manager.using(alias)
        for key in keys:
            attempt("delete", label, key, lambda: manager.filter(**_attnames(apps, alias, models[label], key))._raw_delete(alias))
    for label, changes in mine.get("update", {}).items():
        manager = models[label]._base_manager.using(alias)
        for key, values in changes:
            attempt("update", label, key, lambda: manager.filter(**_attnames(apps, alias, models[label], key)).update(
                **_attnames(apps, alias, models[label], values)))
    inserted = []
    for label, new_rows in mine.get("insert", {}).items():
        model = models[label]
        if model._meta.db_table in ("django_content_type", "auth_permission"):
            for row in new_rows:
                _value(apps, alias, row)
            continue
        for row in new_rows:
            attempt("insert", label, {model._meta.pk.column: row.get(model._meta.pk.column)},
                    lambda: _insert(apps, alias, model, row, mine.get("defaulted", {}).get(label, [])))
        inserted.append(model)
    try:
        with transaction.atomic(using=alias), schema_editor.connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred foreign keys, checked now to name their rows
    except IntegrityError as exc:
        failed.extend(_broken_reference(exc, models, mine))
    if failed:
        raise RuntimeError(NOT_WRITTEN + json.dumps(failed, default=str))
    with schema_editor.connection.cursor() as cursor:
        for statement in schema_editor.connection.ops.sequence_reset_sql(no_style(), inserted):
            cursor.execute(statement)


def _insert(apps, alias, model, row, defaulted):
    obj = model(**_attnames(apps, alias, model, row))  # a defaulted column gets the model's default
    written = [f for f in model._meta.local_concrete_fields if f.column in row or f.column in defaulted]
    missing = [f.column for f in written if f.column in defaulted and not f.has_default()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} differ on every build and have no default")
    model._base_manager.using(alias)._insert([obj], fields=written, raw=True, using=alias)


def _why(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _broken_reference(exc, models, mine):
    """The rows a foreign key checked at the end names: one inserted or updated pointing at a row that is
    not there ("Key (column)=(value) is not present"), or one deleted that is still pointed at."""
    diag = getattr(exc.__cause__, "diag", None)
    detail = getattr(diag, "message_detail", None) or ""
    missing = re.search(r"Key \\((\\w+)\\)=\\((.*)\\) is not present", detail)
    referenced = re.search(r"Key \\((\\w+)\\)=\\((.*)\\) is still referenced", detail)
    deleted = re.search(r'update or delete on table "([^"]+)"', str(exc))
    wanted = {"insert": (missing, getattr(diag, "table_name", None)), "update": (missing, getattr(diag, "table_name", None)),
              "delete": (referenced, deleted.group(1) if deleted else None)}
    named = []
    for action, (found, table) in wanted.items():
        for label, items in mine.get(action, {}).items() if found else []:
            pk = models[label]._meta.pk.column
            for item in items if models[label]._meta.db_table == table else []:
                key, values = {"insert": ({pk: item.get(pk)}, item), "update": item, "delete": (item, item)}[action]
                if found.group(1) in values and str(values[found.group(1)]) == found.group(2):
                    named.append({"table": table, "action": action, "key": key, "why": _why(exc)})
    return named or [{"table": getattr(diag, "table_name", None) or "?", "action": "check", "key": None, "why": _why(exc)}]
'''


def assign(diff: DataDiff, project: ProjectInfo, data_apps: list[str]) -> dict[str, list[str]]:
    """app label -> the differing tables whose rows it answers for (the loss report's verdicts): a
    model's own app when it is a project app, else the first project app with a data migration
    among ``data_apps``."""
    owners = _table_owners(project)
    own = [app.label for app in project.own_apps()]
    fallback = next((label for label in data_apps if label in own), None) or (own[0] if own else None)
    groups: dict[str, list[str]] = {}
    for table, changes in diff.tables.items():
        if changes.empty():
            continue
        label = owners.get(table, (None, None))[0]
        app = label if label in own else fallback
        if app is None:
            raise OperationFailed(f"no project app to write the rows of {table} into")
        groups.setdefault(app, []).append(table)
    return groups


def host(groups: dict[str, list[str]], data_apps: list[str]) -> str:
    """The app whose folder holds the data migration: the first project app whose data migration left
    rows (the one a reader looks in), else the first app owning a differing table."""
    return next((app for app in data_apps if app in groups), None) or next(iter(groups))


def write(diff: DataDiff, old: Snapshot, new: Snapshot, project: ProjectInfo, alias: str, groups: dict[str, list[str]],
          *, data_apps: list[str] | None = None, now: datetime.datetime | None = None) -> list[Path]:
    """Write one ``NNNN_squashkit_data.py`` holding every differing row, in ``host``'s folder; returns the files.

    One migration, after the last migration of every project app and of the third-party apps whose
    tables it writes: the difference is what the new files' build holds at its end, so the rows are
    written once the migrations making them ran (a carried RunPython of another app may have made
    the row an update names), and in one transaction, so a
    multi-table child and its parent row (a third-party table) commit together whatever their
    apps' order (a child in one migration and its parent in a later one broke every fresh build)."""
    app = host(groups, data_apps or [])
    folder = next(a.migrations_folder for a in project.own_apps() if a.label == app)
    files = carry.regenerated_files(folder)
    if not files:
        raise OperationFailed(f"{app} has no regenerated migration to follow with its data migration")
    path = carry.next_migration(files, NAME)
    if path.exists():
        raise OperationFailed(f"{path.name} exists already (another database's rows for {app}): carry them by hand")
    tables = [t for t in insert_order(old, [t for tables in groups.values() for t in tables])]
    referenced = {ref for t in tables for ref in old.tables[t].references}
    referenced |= {CONTENT_TYPES for t in tables if "contenttype" in old.tables[t].natural.values() or t == PERMISSIONS}
    referenced |= {PERMISSIONS for t in tables if "permission" in old.tables[t].natural.values()}
    depends = dependencies(project, app, files[-1].stem, tables, referenced)
    carry.write_python(path, _module(diff, old, new, tables, _table_owners(project), alias, depends,
                                     now or datetime.datetime.now()))
    return [path]


def dependencies(project: ProjectInfo, app: str, last: str, written: list[str], referenced: set[str]
                 ) -> list[tuple[str, str]]:
    """(app, its last migration): ``app``'s, every other project app's (their carried RunPython may make
    a row the difference names), and those of the third-party apps owning ``written`` or ``referenced``
    tables. Not every app's: a dependency pulls that app's migrations earlier in migrate's plan, and
    a join table numbered by that plan (``auth_group_permissions``) would then differ."""
    owners = _table_owners(project)
    own = {a.label: a for a in project.own_apps()}
    found = [(app, last)]
    for label, other in own.items():
        files = carry.regenerated_files(other.migrations_folder) if other.migrations_folder else []
        if label != app and files:
            found.append((label, files[-1].stem))
    for label in sorted({owners[t][0] for t in [*written, *referenced] if t in owners} - set(own)):
        if (name := _last_migration(project, label)) != "__latest__":
            found.append((label, name))
    return found


def unowned(diff: DataDiff, project: ProjectInfo) -> dict[str, dict[str, str]]:
    """table -> identity -> why, for the differing rows of tables no model owns: no migration can write them."""
    owners = _table_owners(project)
    return {table: dict.fromkeys([*t.insert, *t.update, *t.delete], "no model owns the table")
            for table, t in diff.tables.items() if not t.empty() and table not in owners}


def not_written(message: str, old: Snapshot, diff: DataDiff) -> dict[str, dict[str, str]] | None:
    """table -> identity -> why: the rows a data migration named as not written (``apply_rows``) in
    ``message``, migrate's error; None when it names none (another failure)."""
    _head, marker, tail = message.partition(NOT_WRITTEN)
    try:
        named = json.JSONDecoder().raw_decode(tail)[0] if marker else None
    except ValueError:
        named = None
    if not isinstance(named, list):
        return None
    found: dict[str, dict[str, str]] = {}
    for item in named:
        table, key, why = item.get("table"), item.get("key") or {}, f"{item.get('action')}: {item.get('why')}"
        rows, changes = old.tables.get(table), diff.tables.get(table)
        if rows is None or changes is None:
            continue
        if rows.identity and all(column in key for column in rows.identity):
            found.setdefault(table, {})[row_key([key[column] for column in rows.identity])] = why
        else:  # the check named a table, not a row: every row carried into it
            found.setdefault(table, {}).update(dict.fromkeys([*changes.insert, *changes.update, *changes.delete], why))
    return found or None


def describe(old: Snapshot, rows: dict[str, dict[str, str]], limit: int = 3) -> str:
    """'seeds_category id=4 (insert: new row ... violates check constraint ...)', the first few, the rest counted."""
    named = []
    for table, identities in rows.items():
        columns = old.tables[table].identity if table in old.tables else []
        for identity, why in identities.items():
            values = json.loads(identity)
            shown = ", ".join(f"{c}={v}" for c, v in zip(columns, values)) if isinstance(values, list) else identity
            named.append(f"{table} {shown} ({why})")
    return "; ".join(named[:limit]) + (f"; and {len(named) - limit} more" if len(named) > limit else "")


def _last_migration(project: ProjectInfo, label: str) -> str:
    """The app's last migration by name: not ``__latest__``, which Django may resolve to a squashed
    migration whose replaced ones stay (wagtailcore's ``0001_squashed_0016``), before the fields added since."""
    app = next((a for a in project.apps if a.label == label), None)
    if app is not None and app.own and app.migrations_folder and (files := carry.regenerated_files(app.migrations_folder)):
        return files[-1].stem
    return max(app.migrations) if app is not None and app.migrations else "__latest__"


def _table_owners(project: ProjectInfo) -> dict[str, tuple[str, str]]:
    """db_table -> (app label, model name) of the model whose table it is."""
    found = {}
    for app in project.apps:
        for model in app.models:
            if model.managed and not model.proxy:
                found.setdefault(model.db_table, (app.label, model.label.split(".", 1)[1]))
    return found


def insert_order(old: Snapshot, tables: list[str]) -> list[str]:
    """Referenced tables before those referencing them, a multi-table child after its parent (a cycle
    keeps its given order: the foreign keys Django makes are checked at commit). Rows are inserted in
    this order and deleted in the reverse one, so a foreign key made ``IMMEDIATE`` (by RunSQL) holds too."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(table: str) -> None:
        if table in done or table in visiting:
            return
        visiting.add(table)
        for ref in old.tables[table].references:
            if ref in tables:
                visit(ref)
        visiting.discard(table)
        done.append(table)

    for table in sorted(tables):
        visit(table)
    return done


# --- the module -----------------------------------------------------------------------------------


def _module(diff: DataDiff, old: Snapshot, new: Snapshot, tables: list[str], owners: dict[str, tuple[str, str]], alias: str,
            dependencies: list[tuple[str, str]], now: datetime.datetime) -> str:
    permissions = {_perm_key(row["content_type_id"], row["codename"]): row["name"]
                   for row in (old.tables[PERMISSIONS].rows.values() if PERMISSIONS in old.tables else [])}
    rows: dict[str, dict] = {"delete": {}, "update": {}, "insert": {}, "defaulted": {}}
    models: dict[str, tuple[str, str]] = {}
    counts = []
    for table in tables:
        if table not in owners:
            raise OperationFailed(f"no model owns the table {table}, whose rows a fresh build of the old history holds: "
                                  "carry them by hand")
        label = ".".join(owners[table])
        models[label] = owners[table]
        source, changes = old.tables[table], diff.tables[table]

        def literal(row: dict, columns: list[str] | None = None, source=source) -> dict:
            return {c: _literal(source, c, row[c], permissions) for c in (columns or row)}

        key_of = (lambda identity, source=source: dict(zip(source.identity, json.loads(identity))))
        if changes.delete:
            gone = new.tables[table].rows
            rows["delete"][label] = [_Noted(literal(key_of(i)), {c: v for c, v in gone[i].items() if c not in source.identity})
                                     for i in _sorted(changes.delete)]
        if changes.update:
            rows["update"][label] = [(literal(key_of(i)), literal(source.rows[i], cols)) for i, cols in changes.update.items()]
        if changes.insert:
            defaulted = sorted({c for i in changes.insert for c in changes.defaulted.get(i, []) if c != "*"})
            rows["insert"][label] = [_natural_row(table, literal(source.rows[i]), defaulted) for i in _sorted(changes.insert)]
            if defaulted:
                rows["defaulted"][label] = defaulted
        counts.append(f"  {table}: {changes.describe()}")
    rows["delete"] = dict(reversed(rows["delete"].items()))  # a referencing row goes before the row it points at
    rows = {k: v for k, v in rows.items() if v}
    data = _pretty({alias: rows})
    helpers = (CONTENT_TYPES_HELPER if "ContentTypeKey(" in data else "") + (PERMISSIONS_HELPER if "PermissionKey(" in data else "")
    getters = "".join(f"        {label!r}: apps.get_model({app!r}, {name!r}),\n" for label, (app, name) in models.items())
    header = (
        "Rows a fresh database built from the migrations a squash deleted holds, and one built from the\n"
        "regenerated files would not: what their data migrations left. Literal rows, written with the\n"
        "historical models (nothing of the project is imported), content types and permissions by\n"
        "natural key. An existing database has its own rows already: it records this as applied.\n"
        + "\n".join(counts)
    )
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    deps = "".join(f"        ({app!r}, {name!r}),\n" for app, name in dependencies)
    return (
        f"# Generated by squashkit on {now:%Y-%m-%d %H:%M}\n#\n{comment}\n"
        + "import json\nimport re\n" + ("from collections import namedtuple\n" if helpers else "")
        + "\nfrom django.core.management.color import no_style\n"
        + "from django.db import DatabaseError, IntegrityError, migrations, transaction\n"
        + f"\nNOT_WRITTEN = {NOT_WRITTEN!r}\n"
        + f"{helpers}{HELPERS}\n\n# alias -> what to delete, update (key, values), insert (foreign-key order) and leave to the model's default.\n"
        f"ROWS = {data}\n\n\n"
        "def forward(apps, schema_editor):\n"
        "    models = {\n" + getters + "    }\n"
        "    apply_rows(apps, schema_editor, models, ROWS)\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        f"    dependencies = [\n{deps}    ]\n\n"
        "    operations = [\n        migrations.RunPython(forward, migrations.RunPython.noop),\n    ]\n"
    )


def _perm_key(content_type: list | None, codename: str) -> str:
    return json.dumps([content_type, codename])


class _Noted:
    """A row key written with what the row held, as a comment."""

    def __init__(self, key: dict, note: dict):
        self.key, self.note = key, note

    def line(self) -> str:
        return f"{self.key!r},  # {_plain(self.note)!r}"[:300]


class _Code(str):
    """Python written as it is (a natural key's constructor), not as a string."""

    def __repr__(self) -> str:
        return str(self)


def _literal(table, column: str, value, permissions: dict[str, str]):
    """A value of the old build as the migration writes it."""
    kind = table.natural.get(column)
    if value is not None and kind == "contenttype":
        return _Code(f"ContentTypeKey({value[0]!r}, {value[1]!r})")
    if value is not None and kind == "permission":
        name = permissions.get(_perm_key(value[:2], value[2]), value[2])
        return _Code(f"PermissionKey({value[0]!r}, {value[1]!r}, {value[2]!r}, {name!r})")
    type_name = table.types.get(column, "")
    if type_name == "bytea" and isinstance(value, str) and value.startswith("\\x"):
        return bytes.fromhex(value[2:])
    return _plain(value)


def _plain(value):
    """JSON as parsed for comparing (Decimal for every number with a fraction) back to plain Python."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _sorted(identities: list[str]) -> list[str]:
    try:
        return sorted(identities, key=json.loads)
    except TypeError:
        return sorted(identities)


def _natural_row(table: str, row: dict, defaulted: list[str]):
    """A row to insert; a content type or permission as its natural key (found or created when it runs)."""
    if table == CONTENT_TYPES:
        return _Code(f"ContentTypeKey({row['app_label']!r}, {row['model']!r})")
    if table == PERMISSIONS:
        return _Code(repr(row["content_type_id"]).replace("ContentTypeKey(", "PermissionKey(")[:-1]
                     + f", {row['codename']!r}, {row['name']!r})")
    return {c: v for c, v in row.items() if c not in defaulted}


def _pretty(rows: dict) -> str:
    """alias -> action -> model -> rows, one row per line."""
    lines = ["{"]
    for alias, actions in rows.items():
        lines.append(f"    {alias!r}: {{")
        for action, models in actions.items():
            lines.append(f"        {action!r}: {{")
            for label, items in models.items():
                lines.append(f"            {label!r}: [")
                lines += [f"                {item.line() if isinstance(item, _Noted) else repr(item) + ','}" for item in items]
                lines.append("            ],")
            lines.append("        },")
        lines.append("    },")
    return "\n".join([*lines, "}"])
