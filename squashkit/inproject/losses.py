"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

Lists every operation of the project's own migrations that ``makemigrations`` will not write
again, because it is not part of any model: RunSQL, RunPython, extensions (and the other
``django.contrib.postgres`` operations that create database objects without a model),
SeparateDatabaseAndState and operations of classes outside Django. The migrations are loaded
with Django's own ``MigrationLoader``, as ``migrate`` loads them: a grep would miss an
operation built by a helper or imported from elsewhere, and could not tell which historical
models a data migration saw.

For each operation it writes what carrying it needs: the SQL, a RunPython's source with the
module-level helpers, constants and imports it uses, the models it asks ``apps.get_model`` for
and whether they changed since (a function written against an older model cannot run against
the final one), an extension's name and the operation as Django would write it.

It must not import squashkit. Its arguments arrive as the global ``SQUASHKIT_LOSSES``
(``runpy.run_path(init_globals=...)``): ``apps`` (the own app labels) and ``output`` (a
private file the JSON goes to: settings and apps are free to print on stdout).
"""

import ast
import builtins
import inspect
import json
import runpy
import traceback
from pathlib import Path
from textwrap import dedent

# Operations that create database objects no model describes, so regenerated migrations lose them.
POSTGRES_BEFORE_MODELS = ("CreateExtension", "CreateCollation")


def _kind(operation):
    """What the report calls this operation, or None when makemigrations writes it again."""
    from django.db import migrations

    if isinstance(operation, migrations.RunSQL):
        return "run_sql"
    if isinstance(operation, migrations.RunPython):
        return "run_python"
    if isinstance(operation, migrations.SeparateDatabaseAndState):
        return "separate_database_and_state"
    names = {cls.__name__ for cls in type(operation).__mro__ if cls.__module__ == "django.contrib.postgres.operations"}
    if "CreateExtension" in names:
        return "extension"
    if "CreateCollation" in names:
        return "collation"
    if not type(operation).__module__.startswith("django."):
        return "custom"
    return None


# --- RunSQL ---------------------------------------------------------------------------------------


def _sql_value(value):
    """RunSQL's sql or reverse_sql as JSON: a string, a list of strings or [sql, params] pairs, or None."""
    from django.db.migrations import RunSQL

    if value is None or value == RunSQL.noop:
        return None if value is None else ""
    if isinstance(value, str):
        return value
    return [item if isinstance(item, str) else [item[0], list(item[1]) if len(item) > 1 else None] for item in value]


def _run_sql(operation):
    return {
        "sql": _sql_value(operation.sql),
        "reverse_sql": _sql_value(operation.reverse_sql),
        "elidable": bool(operation.elidable),
        "has_state_operations": bool(operation.state_operations),
        "hints": operation.hints or {},
    }


# --- RunPython ------------------------------------------------------------------------------------


def _module_bindings(module):
    """Top-level name -> (first line, kind, source) of the statement binding it in ``module``.

    An import is written for that one name, so carrying one helper does not drag in the
    module's other imports.
    """
    source = inspect.getsource(module)
    tree = ast.parse(source)
    bindings = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if isinstance(node, ast.Import):
                    text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                else:
                    text = f"from {'.' * node.level}{node.module or ''} import {alias.name}" + (
                        f" as {alias.asname}" if alias.asname else ""
                    )
                bindings[bound] = (node.lineno, "import", text)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            text = "\n".join(source.splitlines()[first - 1:node.end_lineno])
            bindings[node.name] = (first, "def", text)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            text = "\n".join(source.splitlines()[node.lineno - 1:node.end_lineno])
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bindings[name.id] = (node.lineno, "assign", text)
    return bindings


def _names_used(text):
    return {node.id for node in ast.walk(ast.parse(dedent(text))) if isinstance(node, ast.Name)}


def _needed_definitions(functions, bindings):
    """The module-level statements ``functions`` use, themselves included, in module order."""
    wanted, queue = {}, [f.__name__ for f in functions]
    while queue:
        name = queue.pop()
        if name in wanted or name not in bindings or name == "Migration":
            continue
        wanted[name] = bindings[name]
        if bindings[name][1] != "import":
            queue.extend(_names_used(bindings[name][2]) - set(dir(builtins)))
    seen, result = set(), []
    for name, (line, kind, text) in sorted(wanted.items(), key=lambda item: (item[1][0], item[0])):
        if (kind, text) in seen:
            continue  # one assignment binding several names
        seen.add((kind, text))
        result.append({"name": name, "kind": kind, "source": text})
    return result


def _function(func, migration_module):
    """A RunPython callable: its name and source, and why it cannot move if it cannot."""
    from django.db.migrations import RunPython

    if func is None:
        return None
    if func is RunPython.noop:
        return {"name": "noop", "noop": True, "module_level": True, "source": None, "problem": None}
    name = getattr(func, "__name__", repr(func))
    problem = None
    if getattr(func, "__module__", None) != migration_module.__name__:
        problem = f"{name} is defined in {getattr(func, '__module__', '?')}, not in the migration file"
    elif name == "<lambda>" or getattr(func, "__qualname__", name) != name or getattr(migration_module, name, None) is not func:
        problem = f"{name} is not a module-level function of the migration file"
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source, problem = None, problem or f"the source of {name} cannot be read"
    return {"name": name, "noop": False, "module_level": problem is None, "source": source, "problem": problem}


def _get_model_calls(sources):
    """(app_label, model) of every ``*.get_model(...)`` call; None in the list for one it cannot read."""
    found = []
    for text in sources:
        for node in ast.walk(ast.parse(dedent(text))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_model"):
                continue
            args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
            if len(args) == 2 and None not in args:
                found.append((args[0], args[1]))
            elif len(args) == 1 and args[0] and "." in args[0]:
                found.append(tuple(args[0].split(".", 1)))
            else:
                found.append(None)
    return found


def _fields(model_state):
    fields = {}
    for name, field in model_state.fields.items():
        _name, path, args, kwargs = field.deconstruct()
        fields[name] = repr((path, args, sorted(kwargs.items())))
    return fields


def _model_changes(models, state_then, state_final):
    """For each model the code asks for: what differs between the state it saw and the final one."""
    changes = []
    for app_label, model_name in models:
        key = (app_label, model_name.lower())
        then, final = state_then.models.get(key), state_final.models.get(key)
        label = f"{app_label}.{model_name}"
        if then is None:
            changes.append({"model": label, "differences": ["it did not exist yet"]})
            continue
        if final is None:
            changes.append({"model": label, "differences": ["it no longer exists"]})
            continue
        before, after = _fields(then), _fields(final)
        differences = [f"field {n} added since" for n in after if n not in before]
        differences += [f"field {n} removed since" for n in before if n not in after]
        differences += [f"field {n} changed since" for n in before if n in after and before[n] != after[n]]
        changes.append({"model": label, "differences": differences})
    return changes


def _run_python(operation, migration, index, loader, state_final):
    module = inspect.getmodule(type(migration))
    code = _function(operation.code, module)
    reverse = _function(operation.reverse_code, module)
    # Only functions that move as they are take their helpers along; a reverse that cannot
    # move leaves the carried operation irreversible rather than the forward code lost.
    movable = [
        func for func, part in ((operation.code, code), (operation.reverse_code, reverse))
        if part is not None and part["module_level"] and not part["noop"]
    ]
    sources = [part["source"] for part in (code, reverse) if part and part["source"]]
    definitions = []
    if movable:
        definitions = _needed_definitions(movable, _module_bindings(module))
        sources = [d["source"] for d in definitions if d["kind"] == "def"] or sources
    calls = _get_model_calls(sources)
    state_then = loader.project_state((migration.app_label, migration.name), at_end=False)
    for earlier in migration.operations[:index]:
        earlier.state_forwards(migration.app_label, state_then)
    models = sorted({call for call in calls if call is not None})
    return {
        "code": code,
        "reverse_code": reverse,
        "elidable": bool(operation.elidable),
        "atomic": operation.atomic,
        "hints": operation.hints or {},
        "definitions": definitions,
        "dynamic_get_model": None in calls,
        "models": _model_changes(models, state_then, state_final),
    }


# --- the rest -------------------------------------------------------------------------------------


def _serialized(operation):
    """The operation as makemigrations writes it, and the imports that needs."""
    from django.db.migrations.writer import OperationWriter

    text, imports = OperationWriter(operation, indentation=0).serialize()
    return {"python": text.rstrip().rstrip(","), "imports": sorted(imports)}


def _describe(operation):
    try:
        return operation.describe()
    except Exception:  # a custom operation's describe() is not ours to trust
        return type(operation).__name__


def _entry(app_label, migration, index, operation, loader, state_final):
    kind = _kind(operation)
    entry = {
        "app": app_label,
        "migration": migration.name,
        "index": index,
        "migration_atomic": bool(getattr(migration, "atomic", True)),
        "kind": kind,
        "operation_class": f"{type(operation).__module__}.{type(operation).__qualname__}",
        "description": _describe(operation),
        "file": inspect.getsourcefile(type(migration)),
    }
    if kind == "run_sql":
        entry["run_sql"] = _run_sql(operation)
    elif kind == "run_python":
        entry["run_python"] = _run_python(operation, migration, index, loader, state_final)
    elif kind in ("extension", "collation"):
        entry["extension"] = getattr(operation, "name", None)
        entry["serialized"] = _serialized(operation)
    elif kind == "separate_database_and_state":
        entry["database_operations"] = [_describe(op) for op in operation.database_operations]
    return entry


def scan(app_labels):
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    state_final = loader.project_state()
    leaves = [node for node in loader.graph.leaf_nodes() if node[0] in app_labels]
    # The order migrate applies them in, so carried operations keep their order.
    plan = []
    for leaf in leaves:
        plan.extend(node for node in loader.graph.forwards_plan(leaf) if node not in plan)
    operations = []
    for app_label, name in plan:
        if app_label not in app_labels:
            continue
        migration = loader.graph.nodes[(app_label, name)]
        for index, operation in enumerate(migration.operations):
            if _kind(operation) is not None:
                operations.append(_entry(app_label, migration, index, operation, loader, state_final))
    return {"operations": operations, "plan": [list(node) for node in plan if node[0] in app_labels]}


def _unscoped():
    """Scoped managers switched off, as for everything squashkit runs in the project (``scopes.py``)."""
    return runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]()


def main(arguments):
    try:
        with _unscoped():
            result = {"ok": scan(arguments["apps"])}
    except Exception as exc:  # reported to squashkit as one line, with the traceback for -v
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(arguments["output"], "w") as handle:
        json.dump(result, handle, default=str)


if __name__ == "__squashkit_losses__":
    main(globals()["SQUASHKIT_LOSSES"])
