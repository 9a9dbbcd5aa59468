"""Writing what a squash carries over into the regenerated migration files.

``losses.scan`` judges every operation makemigrations will not write again; after step 5's
``makemigrations`` this writes those it carries, and what the schema proof finds the old
history built that the new files do not (``drift.carry_stray_objects``):

- extensions (and collations): at the head of the app's first regenerated migration, before
  the models whose indexes or fields need them, so ``migrate`` works on an empty database;
- RunSQL and RunPython: in their original order into ``NNNN_squashkit_carried.py``, after the
  app's last regenerated migration and after those of the apps whose tables they use;
- an app makemigrations writes nothing for (no models of its own: a plugin whose migrations
  only move data) gets a ``0001_initial.py`` holding its carried operations, so it can still
  be squashed and a fresh ``migrate`` still runs them;
- an old migration name an installed package's migration depends on (a plugin's
  ``dependencies = [("cms", "0022_...")]``): the app's last regenerated migration ``replaces`` it,
  so Django points the package's dependency at that migration (``replaced_names`` reads them back).

Every module is laid out as makemigrations writes one, and written only when it compiles.
"""

from __future__ import annotations

import ast
import datetime
import re
from pathlib import Path

from squashkit.errors import OperationFailed
from squashkit.losses import CARRIED_NAME, LostOperation, LossReport
from squashkit.project import ProjectInfo

INITIAL_NAME = "0001_initial"


def carry_over(report: LossReport, project: ProjectInfo, *, now: datetime.datetime | None = None) -> list[Path]:
    """After makemigrations: write the carried operations into the regenerated migrations.

    Returns the files written, as the apps see them. ``project`` is the introspection from
    before the squash (folders do not move).
    """
    carried = report.with_verdict("carried")
    apps = {app.label: app for app in project.own_apps()}
    regenerated = {label: regenerated_files(app.migrations_folder) for label, app in apps.items() if app.migrations_folder}
    written = _replace_referenced(project, regenerated)
    now = now or datetime.datetime.now()
    # Not "__latest__": Django may resolve it to a squashed migration whose replaced files stay.
    latest = {app.label: max(app.migrations) for app in project.apps if not app.own and app.migrations}
    for label in dict.fromkeys(op.app for op in carried):
        files = regenerated.get(label) or []
        first = [op for op in carried if op.app == label and op.carry.where == "first_migration"]
        after = [op for op in carried if op.app == label and op.carry.where == "carried_migration"]
        if not files:
            folder = apps[label].migrations_folder if label in apps else None
            if folder is None or not folder.is_dir():
                raise OperationFailed(f"{label} has no migrations folder to carry {len(first) + len(after)} operation(s) into")
            # No model of its own, so makemigrations wrote nothing: an initial migration holds them.
            path = folder / f"{INITIAL_NAME}.py"
            ops = first + after
            write_python(path, _carried_module(ops, _dependencies(label, ops, regenerated, own=False, latest=latest), now,
                                               initial=True, atomic=all(op.migration_atomic for op in ops)))
            regenerated[label] = [path]
            written.append(path)
            continue
        if first:
            written.append(_insert_before_models(files[0], first))
        # Operations from a migration that was not atomic go into one that is not either, in their order.
        for group in _by_atomicity(after):
            path = next_migration(regenerated[label], CARRIED_NAME)
            write_python(path, _carried_module(group, _dependencies(label, group, regenerated, latest=latest), now,
                                               atomic=group[0].migration_atomic))
            regenerated[label] = [*regenerated[label], path]
            written.append(path)
    return written


def _by_atomicity(ops: list[LostOperation]) -> list[list[LostOperation]]:
    """``ops`` cut into runs of the same ``migration_atomic``, in order."""
    groups: list[list[LostOperation]] = []
    for op in ops:
        if groups and groups[-1][0].migration_atomic == op.migration_atomic:
            groups[-1].append(op)
        else:
            groups.append([op])
    return groups


def referenced_elsewhere(project: ProjectInfo) -> dict[str, list[tuple[str, str]]]:
    """The project apps' migrations that other apps' migrations depend on by name: installed packages,
    which a squash does not regenerate, so their dependencies still name the old files."""
    own = {app.label for app in project.own_apps()}
    found: dict[str, set[tuple[str, str]]] = {}
    for app in project.apps:
        if app.own:
            continue
        for dependencies in app.depends_on.values():
            for parent_app, name in dependencies:
                if parent_app in own and not name.startswith("__"):  # __first__/__latest__ resolve to the new files
                    found.setdefault(parent_app, set()).add((parent_app, name))
    return {label: sorted(pairs) for label, pairs in found.items()}


def dependents(project: ProjectInfo) -> list[str]:
    """Installed packages whose migrations depend on a project app's migration by name: makemigrations
    runs without loading them while those names are gone (``ManagePy.without_migrations``)."""
    own = {app.label for app in project.own_apps()}
    return [app.label for app in project.apps if not app.own
            and any(parent_app in own for found in app.depends_on.values() for parent_app, _name in found)]


def _replace_referenced(project: ProjectInfo, regenerated: dict[str, list[Path]]) -> list[Path]:
    """After makemigrations: the app's last regenerated migration ``replaces`` each old name another app
    depends on that the new files do not have. Without it every command that loads the migration
    graph fails (NodeNotFoundError); with it, Django points the dependency at that migration and
    records the replaced name beside it when it applies it."""
    written = []
    for label, pairs in referenced_elsewhere(project).items():
        files = regenerated.get(label) or []
        gone = [pair for pair in pairs if pair[1] not in {path.stem for path in files}]
        if not files or not gone:
            continue
        text = files[-1].read_text()
        marker = "\n    dependencies = ["
        if marker not in text:
            raise OperationFailed(f"{files[-1]} is not laid out as makemigrations writes it: add replaces = {gone!r} by hand")
        listed = "".join(f"        ({app!r}, {name!r}),\n" for app, name in gone)
        text = text.replace(marker, f"\n    # Other apps' migrations depend on these names.\n    replaces = [\n{listed}    ]\n{marker}", 1)
        write_python(files[-1], text)
        written.append(files[-1])
    return written


def replaced_names(folder: Path | None) -> list[tuple[str, str]]:
    """Every (app, name) the regenerated migrations in ``folder`` replace (``_replace_referenced``): Django
    counts such a migration applied only while those rows are recorded too."""
    found = []
    for path in regenerated_files(folder) if folder else []:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "replaces" for t in node.targets):
                found += [tuple(pair) for pair in ast.literal_eval(node.value)]
    return found


def regenerated_files(folder: Path) -> list[Path]:
    """The migration files makemigrations wrote, in order."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if re.fullmatch(r"\d{4}_\w+\.py", path.name))


def next_migration(files: list[Path], name: str) -> Path:
    """``NNNN_name.py`` after the last of ``files``."""
    return files[-1].with_name(f"{int(files[-1].name[:4]) + 1:04d}_{name}.py")


def _dependencies(
    label: str, ops: list[LostOperation], regenerated: dict[str, list[Path]], *, own: bool = True,
    latest: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The app's last migration (``own``), and the last of every app whose tables or models the operations use."""
    others = sorted({app for op in ops for app in op.carry.depends_on} - {label})
    latest = latest or {}
    dependencies = [(label, regenerated[label][-1].stem)] if own else []
    for app in others:
        files = regenerated.get(app)
        # A third-party app keeps its migrations: its latest one by name (datamigration._last_migration).
        dependencies.append((app, files[-1].stem if files else latest.get(app, "__latest__")))
    return dependencies


def _insert_before_models(path: Path, ops: list[LostOperation]) -> Path:
    """Put the operations at the head of a generated migration's operations list, imports merged."""
    text = path.read_text()
    marker = "\n    operations = [\n"
    if marker not in text:
        raise OperationFailed(f"{path} is not laid out as makemigrations writes it: add {ops[0].summary} to it by hand")
    items = "".join(f"        # Carried by squashkit from {op.file}.\n{_indented(op.carry.python, 8)},\n" for op in ops)
    text = text.replace(marker, marker + items, 1)
    text = _merge_imports(text, [line for op in ops for line in op.carry.imports])
    write_python(path, text)
    return path


def _carried_module(
    ops: list[LostOperation], dependencies: list[tuple[str, str]], now: datetime.datetime, *, initial: bool = False,
    atomic: bool = True,
) -> str:
    """A migration module laid out as makemigrations writes one, with the carried code above the class."""
    sources = [f"  {op.file} #{op.index + 1}: {op.summary}" for op in ops]
    return migration_module(
        header=(
            "What the migrations deleted by a squash did that no model says, so makemigrations could\n"
            "not write it again; carried as it was written, in its original order, from:\n" + "\n".join(sources)
        ),
        imports=[line for op in ops for line in op.carry.imports],
        definitions=[d.source for op in ops for d in op.carry.definitions],
        dependencies=dependencies,
        operations=[(op.file, op.carry.python) for op in ops],
        now=now,
        initial=initial,
        atomic=atomic,
    )


def migration_module(
    *, header: str, imports: list[str], definitions: list[str], dependencies: list[tuple[str, str]],
    operations: list[tuple[str, str]], now: datetime.datetime, initial: bool = False, atomic: bool = True,
) -> str:
    """A migration module: ``header`` as a comment, the imports and module-level ``definitions``,
    then the Migration class; ``operations`` are (comment, Python of one list item)."""
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    imports = _sorted_imports(["from django.db import migrations", *imports])
    body = _joined(list(dict.fromkeys(definitions)))
    deps = "".join(f"        ({app!r}, {name!r}),\n" for app, name in dependencies)
    items = "".join(f"        # {note}\n{_indented(python, 8)},\n" for note, python in operations)
    return (
        f"# Generated by squashkit on {now:%Y-%m-%d %H:%M}\n#\n{comment}\n" + "\n".join(imports) + "\n\n"
        + (f"{body}\n\n\n" if body else "\n")
        + "class Migration(migrations.Migration):\n\n"
        + ("    initial = True\n\n" if initial else "")
        + ("" if atomic else "    atomic = False\n\n")
        + f"    dependencies = [\n{deps}    ]\n\n"
        + f"    operations = [\n{items}    ]\n"
    )


def _joined(definitions: list[str]) -> str:
    """Top-level statements spaced as black spaces them: two blank lines around a def or class, one between constants."""
    text = definitions[0] if definitions else ""
    for before, after in zip(definitions, definitions[1:]):
        blocks = any(part.lstrip().startswith(("def ", "class ", "async def ", "@")) for part in (before, after))
        text += ("\n\n\n" if blocks else "\n\n") + after
    return text


def _indented(python: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in python.splitlines())


def _sorted_imports(lines: list[str]) -> list[str]:
    """Imports as makemigrations writes them: ``import`` lines first, by module, names of one module merged."""
    plain, names = set(), {}
    for line in lines:
        if match := re.fullmatch(r"from (\S+) import (.+)", line.strip()):
            names.setdefault(match[1], set()).update(n.strip() for n in match[2].split(","))
        else:
            plain.add(line.strip())
    merged = [f"from {module} import {', '.join(sorted(found))}" for module, found in names.items()]
    return sorted(plain | set(merged), key=lambda line: (line.split()[0] == "from", line.split()[1]))


def _merge_imports(text: str, new: list[str]) -> str:
    """Add ``new`` to a generated migration's import block (the lines starting with import or from)."""
    lines = text.split("\n")
    block = [i for i, line in enumerate(lines) if line.startswith(("import ", "from "))]
    if not block:
        return "\n".join(_sorted_imports(new)) + "\n" + text
    first, last = block[0], block[-1]
    merged = _sorted_imports([*lines[first:last + 1], *new])
    return "\n".join(lines[:first] + merged + lines[last + 1:])


def write_python(path: Path, text: str) -> None:
    """Write a module only when it compiles: a broken migration would fail the next migrate, far from here."""
    try:
        compile(text, str(path), "exec")
    except SyntaxError as exc:
        raise OperationFailed(f"the carried migration {path} would not compile ({exc.msg}, line {exc.lineno}): nothing written") from None
    path.write_text(text)


