"""Drift between the live database and what the migration files build, and the ways forward.

The schema proof (step 5b) stops a squash when the new files do not build the live schema,
and ``check`` says when the files on disk do not. Stopping is right, but a difference must
say where it can go, and none of it is ever applied to the live database by squashkit:

- **carried**: an object the live database has, that a fresh build of the OLD history makes
  too, but that the new files do not (an index a squashed migration left behind, one
  ``index_together`` made that no model can declare any more): it is what every database of
  the project has, so it is written into the new files as a ``RunSQL`` with its exact
  definition and its reverse (``NNNN_squashkit_schema.py``), and the new files build what the
  old history built (``strays``, ``carry_strays``);
- **DDL**: anything else gets the statement that would bring the live database to what the
  files build (``CREATE INDEX CONCURRENTLY`` for a missing index, ``DROP INDEX CONCURRENTLY``
  for one no model and no history declares, ...), printed for the user to review and run
  (``ddl_for``); what has no safe statement (a column whose type changed) is left to them.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from squashkit import carry
from squashkit.project import ProjectInfo, archive_migrations
from squashkit.schema import Difference, Schema, SchemaDiff

SCHEMA_NAME = "squashkit_schema"
CARRIED_KINDS = ("index", "unique", "check")  # objects of one table: carried into that table's app
Log = Callable[[str], None]


class StrayObject(BaseModel):
    """An object the live database and the old history's build have and the new files do not build."""

    kind: str
    name: str
    table: str
    app: str = Field(description="The project app whose model owns the table: its new migrations carry it.")
    create: str = Field(description="The exact statement that makes it (pg_get_indexdef / pg_get_constraintdef).")
    drop: str = Field(description="Its reverse.")

    def describe(self) -> str:
        return f"{self.kind} {self.name} on {self.table}"


# --- SQL text for one object -----------------------------------------------------------------------


def quoted(name: str) -> str:
    """An identifier as PostgreSQL reads it back exactly (always quoted: this text is printed, never run by squashkit)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str) -> str:
    """``schema.table`` as the catalogs give it (``public`` left out) -> a quoted reference."""
    return ".".join(quoted(part) for part in table.split(".", 1))


def _schema_of(table: str | None) -> str | None:
    return table.split(".", 1)[0] if table and "." in table else None


def create_index(name: str, definition: str, *, concurrently: bool = False) -> str:
    """``CREATE [UNIQUE] INDEX ON ...`` (the definition compared, without its name) with ``name`` back in."""
    return re.sub(r"^CREATE (UNIQUE )?INDEX ON ",
                  lambda m: f"CREATE {m[1] or ''}INDEX {'CONCURRENTLY ' if concurrently else ''}{quoted(name)} ON ",
                  definition, count=1)


def drop_index(name: str, table: str | None, *, concurrently: bool = False) -> str:
    owner = _schema_of(table)
    return f"DROP INDEX {'CONCURRENTLY ' if concurrently else ''}" + (f"{quoted(owner)}." if owner else "") + quoted(name)


def add_constraint(name: str, table: str, definition: str) -> str:
    return f"ALTER TABLE {qualified(table)} ADD CONSTRAINT {quoted(name)} {definition}"


def drop_constraint(name: str, table: str) -> str:
    return f"ALTER TABLE {qualified(table)} DROP CONSTRAINT {quoted(name)}"


# --- DDL: what would bring the database to what the files build --------------------------------------


def ddl_for(diff: SchemaDiff) -> list[str]:
    """One statement per line, each ending with ';', for the real differences that have one."""
    return [f"{statement};" for difference in diff.real for statement in _ddl(difference)]


def _ddl(d: Difference) -> list[str]:
    """From the database (``actual``) to what the migrations build (``expected``)."""
    if d.kind == "index":
        statements = [drop_index(d.name, d.table, concurrently=True)] if d.actual is not None else []
        return statements + ([create_index(d.name, d.expected, concurrently=True)] if d.expected is not None else [])
    if d.kind in ("primary key", "unique", "foreign key", "check", "exclusion") and d.table:
        statements = [drop_constraint(d.name, d.table)] if d.actual is not None else []
        return statements + ([add_constraint(d.name, d.table, d.expected)] if d.expected is not None else [])
    if d.kind == "column" and d.table and (d.expected is None) != (d.actual is None):
        table, column = qualified(d.table), quoted(d.name.rsplit(".", 1)[1])
        if d.expected is None:
            return [f"ALTER TABLE {table} DROP COLUMN {column}"]  # its data goes with it: review first
        if "<owned sequence>" not in d.expected:
            return [f"ALTER TABLE {table} ADD COLUMN {column} {d.expected}"]
    if d.kind == "trigger" and d.table and d.expected is None:
        return [f"DROP TRIGGER {quoted(d.name)} ON {qualified(d.table)}"]
    return []


def refusal_hint(diff: SchemaDiff) -> str:
    """The ways forward for a refusal's one line: the DDL, and what is left to the user."""
    statements = ddl_for(diff)
    without = [d.summary() for d in diff.real if not _ddl(d)]
    parts = []
    if statements:
        parts.append("to bring the database to what the models declare, review and run (squashkit applies none of it): "
                     + " ".join(statements))
    if without:
        parts.append(f"no statement is suggested for {'; '.join(without[:3])}{'; ...' if len(without) > 3 else ''}: "
                     "mend the models or the database by hand")
    return "; ".join(parts)


# --- carried: what the old history built and the new files do not ------------------------------------


def candidates(diff: SchemaDiff) -> list[Difference]:
    """Differences that may be strays of the old history: objects only the live database has."""
    return [d for d in diff.real if d.expected is None and d.actual is not None and d.kind in CARRIED_KINDS and d.table]


def strays(diff: SchemaDiff, old: Schema, owners: dict[str, str]) -> list[StrayObject]:
    """The candidates the old history's build has under the same name with the same definition
    (or the one PostgreSQL prints after parsing it again, as a restore would), on a table of a project app."""
    again = {value: key for key, value in old.round_trips.items()}
    held = {("index", i.table, i.name, i.definition) for i in old.indexes}
    held |= {(c.type, c.table, c.name, c.definition) for c in old.constraints}
    found = []
    for d in candidates(diff):
        app = owners.get(d.table)
        if app is None or not ({(d.kind, d.table, d.name, d.actual), (d.kind, d.table, d.name, again.get(d.actual))} & held):
            continue
        if d.kind == "index":
            create, drop = create_index(d.name, d.actual), drop_index(d.name, d.table)
        else:
            create, drop = add_constraint(d.name, d.table, d.actual), drop_constraint(d.name, d.table)
        found.append(StrayObject(kind=d.kind, name=d.name, table=d.table, app=app, create=create, drop=drop))
    return found


def owners(project: ProjectInfo) -> dict[str, str]:
    """db_table -> label of the project app whose model (or implicit many-to-many) owns it."""
    return {model.db_table: app.label for app in project.own_apps() for model in app.models if model.managed and not model.proxy}


def carry_strays(found: list[StrayObject], project: ProjectInfo, *, now: datetime.datetime | None = None) -> list[Path]:
    """Write each app's stray objects into ``NNNN_squashkit_schema.py`` after its last new migration."""
    apps = {app.label: app for app in project.own_apps()}
    written = []
    for label in dict.fromkeys(stray.app for stray in found):
        files = carry.regenerated_files(apps[label].migrations_folder)
        if not files:
            continue  # an app owning a table has a regenerated 0001; nothing to follow otherwise
        mine = [stray for stray in found if stray.app == label]
        path = carry.next_migration(files, SCHEMA_NAME)
        carry.write_python(path, carry.migration_module(
            header=("Objects the migrations deleted by a squash built that no model declares, and the live database has:\n"
                    "kept with their exact definitions, so a fresh database built from these files is the live one's twin."),
            imports=[], definitions=[], dependencies=[(label, files[-1].stem)],
            operations=[(s.describe(), f"migrations.RunSQL(\n    sql={s.create!r},\n    reverse_sql={s.drop!r},\n)") for s in mine],
            now=now or datetime.datetime.now(),
        ))
        written.append(path)
    return written


@contextlib.contextmanager
def old_files_on_disk(project: ProjectInfo, root: Path, put_back_old: Callable[[], None], put_back_new: Callable[[Path], None]
                      ) -> Iterator[None]:
    """The old migration files on disk for a while (to build the old history), the new ones after.

    The new files are archived first; whatever happens inside, they are back afterwards. A kill
    in between leaves the old files or a mix, and the run's undo puts the old ones back anyway."""
    with tempfile.TemporaryDirectory(prefix="squashkit-new-migrations-") as private:
        saved = Path(private) / "new.tar.gz"
        archive_migrations(project, root, saved)
        put_back_old()
        try:
            yield
        finally:
            put_back_new(saved)
