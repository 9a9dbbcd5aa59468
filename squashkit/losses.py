"""What a squash would forget, and whether it can be carried over into the regenerated migrations (issue 5).

``makemigrations`` writes migrations from the models, so regenerating them forgets everything
no model says: the views, functions and triggers of RunSQL, extensions, data migrations. A
fresh database built from the regenerated files (a new developer's, the test runner's) would
then lack them, silently. So, before any file is deleted:

    report = losses.scan(manage, project)              # what each such operation is and needs
    losses.require_nothing_lost(report, accept_loss)   # refuse, naming the files, unless accepted
    ... delete the migration files, makemigrations ...
    carry.carry_over(report, project)                  # write what can be carried into the new files

Each operation is **carried** (with how: ``carry`` writes it), **not needed** (a no-op, or what
it made was dropped since) or **lost** (it cannot move as it is), with the reason.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import tempfile
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
from pydantic import BaseModel, Field

from squashkit import inproject, postgres, sql_objects
from squashkit.errors import BadInput, OperationFailed
from squashkit.project import ManagePy, ProjectInfo

LOSSES_RUNNER = inproject.runner("losses")
CARRIED_NAME = "squashkit_carried"

Verdict = Literal["carried", "data", "not_needed", "lost"]  # data: settled by comparing fresh builds (freshproof)
Kind = Literal["run_sql", "run_python", "extension", "collation", "separate_database_and_state", "custom"]
KIND_NAMES = {
    "run_sql": "RunSQL", "run_python": "RunPython", "extension": "CreateExtension", "collation": "CreateCollation",
    "separate_database_and_state": "SeparateDatabaseAndState", "custom": "custom operation",
}


class Definition(BaseModel):
    """A module-level statement a carried operation needs: an import, a constant, a function."""

    name: str
    kind: Literal["import", "assign", "def"]
    source: str = Field(description="The statement as written in the migration file.")


class Carry(BaseModel):
    """How one carried operation is written into the regenerated migrations."""

    where: Literal["first_migration", "carried_migration"] = Field(
        description="first_migration: before the models of the app's first regenerated migration; "
        "carried_migration: in NNNN_squashkit_carried.py after the app's last one."
    )
    python: str = Field(description="The operation as Python, as an item of an operations list.")
    imports: list[str] = Field(default_factory=list, description="Import statements the code needs.")
    definitions: list[Definition] = Field(default_factory=list, description="Module-level statements the code needs, in order.")
    depends_on: list[str] = Field(
        default_factory=list, description="Other apps whose last migration must run first (their tables or models are used)."
    )


class LostOperation(BaseModel):
    """One operation of the old migrations that makemigrations will not write again, and its fate."""

    app: str
    migration: str = Field(description="The migration's name, e.g. 0008_productstats_view.")
    index: int = Field(description="Position in the migration's operations list, from 0.")
    migration_atomic: bool = Field(
        True, description="False: its migration said atomic = False (CREATE INDEX CONCURRENTLY refuses a transaction), "
        "and so does the migration it is carried into.")
    kind: Kind
    file: str = Field(description="The migration file as the app sees it, relative to the project directory.")
    summary: str = Field(description="What it is, in a few words: 'RunSQL: view catalog_productstats, ...'.")
    verdict: Verdict
    reason: str = Field(description="Why this verdict: how it is carried, why it is not needed, why it is lost.")
    carry: Carry | None = Field(None, description="What carry_over writes; set for carried operations only.")
    note: str | None = Field(None, description="What else a fresh database needs (an extension only a superuser may create).")
    creates: list[str] = Field(default_factory=list, description="What a RunSQL creates, e.g. 'view catalog_productstats'.")

    def label(self) -> str:
        return f"{self.file} #{self.index + 1} {KIND_NAMES[self.kind]}"


class LossReport(BaseModel):
    """Every operation a squash would forget, in the order migrate applied them."""

    operations: list[LostOperation] = Field(default_factory=list)
    apps_read: int = Field(0, description="The project's own apps whose migrations were read.")
    migrations_read: int = Field(0, description="Their migrations on disk, as migrate plans them.")

    def with_verdict(self, verdict: Verdict) -> list[LostOperation]:
        return [op for op in self.operations if op.verdict == verdict]


# --- scan -----------------------------------------------------------------------------------------


def scan(manage: ManagePy, project: ProjectInfo) -> LossReport:
    """Load the project's own migrations as migrate does and judge each operation it will lose.

    The database of each app (the settings' alias, or the one ``manage.on`` names) is asked
    whether what a RunSQL created still exists and what an extension needs.
    """
    found = _run_in_project(manage, [app.label for app in project.own_apps()])
    tables = _tables_by_app(project)
    operations: list[LostOperation] = []
    with _connections(manage, project) as connection_for:
        for entry in found:
            file = _file_of(entry, project, manage.cwd)
            judged = _judge(entry, file, connection_for(entry["app"]), tables, operations)
            operations.append(_refuse_clash(judged, operations))
    own = project.own_apps()
    return LossReport(operations=[_into_initial(op, project) for op in operations], apps_read=len(own),
                      migrations_read=sum(len(app.migrations) for app in own))


def _into_initial(op: LostOperation, project: ProjectInfo) -> LostOperation:
    """An app with no models gets no migration from makemigrations: what it carries goes into a 0001_initial."""
    app = next((app for app in project.own_apps() if app.label == op.app), None)
    if op.verdict != "carried" or app is None or app.models:
        return op
    said = f"{op.app}'s {CARRIED_NAME} migration"
    into = f"{op.app}'s 0001_initial (it has no models, so makemigrations writes none: squashkit writes this one)"
    return op.model_copy(update={"reason": op.reason.replace(said, into)})


def _run_in_project(manage: ManagePy, apps: list[str]) -> list[dict]:
    """Run inproject/losses.py in the project's ``manage.py shell``; its JSON goes to a private file."""
    with tempfile.TemporaryDirectory(prefix="squashkit-losses-") as private:
        out = Path(private) / "losses.json"
        arguments = {"apps": apps, "output": str(out)}
        code = (
            f"import runpy; runpy.run_path({str(LOSSES_RUNNER)!r}, "
            f"init_globals={{'SQUASHKIT_LOSSES': {arguments!r}}}, run_name='__squashkit_losses__')"
        )
        # Plain manage.py: loading migrations needs no database, so no renaming runner either.
        manage.model_copy(update={"databases": {}}).run("shell", "-v", "0", "-c", code, what="loading the migrations")
        if not out.exists():
            raise OperationFailed("manage.py shell ran but the migration scan did not (is this a Django manage.py?)")
        result = json.loads(out.read_text())
    if "error" in result:
        raise BadInput(f"the project's migrations do not load: {result['error']}")
    return result["ok"]["operations"]


@contextlib.contextmanager
def _connections(manage: ManagePy, project: ProjectInfo) -> Iterator[Callable[[str], psycopg.Connection]]:
    """app label -> a connection to the database it migrates to, each opened once, when first asked for."""
    opened: dict[str, psycopg.Connection] = {}
    with contextlib.ExitStack() as stack:

        def connection_for(app_label: str) -> psycopg.Connection:
            app = next(app for app in project.apps if app.label == app_label)
            alias = app.aliases[0] if app.aliases else "default"
            if alias not in opened:
                params = project.connection(alias)
                if alias in manage.databases:
                    params = params.with_dbname(manage.databases[alias])
                opened[alias] = stack.enter_context(postgres.connect(params))
            return opened[alias]

        yield connection_for


def _tables_by_app(project: ProjectInfo) -> dict[str, str]:
    """db_table -> app label, for every model's table (to know which apps a RunSQL reads)."""
    return {model.db_table.lower(): app.label for app in project.apps for model in app.models if model.managed}


def _file_of(entry: dict, project: ProjectInfo, root: Path) -> str:
    """The migration file as the app sees it (``community/migrations/...`` even through a symlink)."""
    app = next(app for app in project.apps if app.label == entry["app"])
    path = Path(app.migrations_folder or Path(entry["file"]).parent) / f"{entry['migration']}.py"
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _refuse_clash(op: LostOperation, earlier: list[LostOperation]) -> LostOperation:
    """Carried operations of one app share a file: a helper whose name another one already uses
    differently (every data migration has its ``forwards``) is renamed after its migration."""
    if op.carry is None or op.carry.where != "carried_migration":
        return op
    taken = {
        d.name: d.source
        for other in earlier
        if other.app == op.app and other.carry and other.carry.where == "carried_migration"
        for d in [*other.carry.definitions, *_import_definitions(other.carry.imports)]
    }
    clashing = [d.name for d in op.carry.definitions if taken.get(d.name, d.source) != d.source]
    clashing_imports = [d.name for d in _import_definitions(op.carry.imports) if taken.get(d.name, d.source) != d.source]
    if clashing_imports:
        reason = f"it imports {clashing_imports[0]} as another carried operation of {op.app} does not: carry it by hand"
        return op.model_copy(update={"verdict": "lost", "reason": reason, "carry": None})
    if not clashing:
        return op
    renames = {name: f"{name}_{op.migration.split('_')[0]}" for name in clashing}
    carry = op.carry.model_copy(update={
        "python": _renamed(op.carry.python, renames),
        "definitions": [
            d.model_copy(update={"name": renames.get(d.name, d.name), "source": _renamed(d.source, renames)})
            for d in op.carry.definitions
        ],
    })
    return op.model_copy(update={"carry": carry})


def _import_definitions(imports: list[str]) -> list[Definition]:
    """The names import lines bind, so two carried operations cannot bind one name to two things."""
    found = []
    for line in imports:
        for alias in ast.parse(line).body[0].names:
            name = alias.asname or alias.name.split(".")[0]
            found.append(Definition(name=name, kind="import", source=f"{alias.name} as {name}"))
    return found


def _renamed(source: str, renames: dict[str, str]) -> str:
    """``source`` with the names in ``renames`` replaced where Python reads them as names (not attributes, not in strings)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    out = []
    for i, token in enumerate(tokens):
        after_dot = i > 0 and tokens[i - 1].string == "."
        if token.type == tokenize.NAME and token.string in renames and not after_dot:
            token = token._replace(string=renames[token.string])
        out.append(token)
    return tokenize.untokenize(out)


def _judge(
    entry: dict, file: str, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]
) -> LostOperation:
    base = {"app": entry["app"], "migration": entry["migration"], "index": entry["index"], "kind": entry["kind"], "file": file,
            "migration_atomic": entry.get("migration_atomic", True)}
    judge = {
        "run_sql": _judge_run_sql,
        "run_python": _judge_run_python,
        "extension": _judge_extension,
        "collation": _judge_extension,
        "separate_database_and_state": _judge_separate,
        "custom": _judge_custom,
    }[entry["kind"]]
    return LostOperation(**base, **judge(entry, conn, tables, earlier))


# --- RunSQL ---------------------------------------------------------------------------------------


def _judge_run_sql(entry: dict, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]) -> dict:
    """Carried while what it creates exists; not needed once all of it was dropped; lost if it changes data."""
    statements = sql_objects.statements(entry["run_sql"]["sql"])
    created = [s.object for s in statements if s.action == "create"]
    heads = "; ".join(s.head() for s in statements[:2])
    summary = "RunSQL: " + (", ".join(obj.describe() for obj in created) or heads or "no SQL")
    verdict, reason = _run_sql_verdict(entry, statements, conn, earlier)
    judged = {"summary": summary, "verdict": verdict, "reason": reason, "creates": [obj.describe() for obj in created]}
    if verdict == "carried":
        first = (created and {obj.kind for obj in created} <= {"extension", "schema"}) or (
            not created and any(s.action == "data" for s in statements))  # extension configuration rows
        where = "first_migration" if first else "carried_migration"
        place = "first regenerated migration, before the models" if where == "first_migration" else f"{CARRIED_NAME} migration"
        judged["reason"] = f"{reason}; carried with its reverse SQL into {entry['app']}'s {place}"
        judged["carry"] = _carry_run_sql(entry, where, _apps_named(entry["run_sql"]["sql"], tables, entry["app"]))
    return judged


def _run_sql_verdict(
    entry: dict, statements: list[sql_objects.Statement], conn: psycopg.Connection, earlier: list[LostOperation]
) -> tuple[Verdict, str]:
    run_sql = entry["run_sql"]
    created = [s.object for s in statements if s.action == "create"]
    data = [s for s in statements if s.action == "data"]
    unknown = [s for s in statements if s.action == "unknown"]
    if run_sql["elidable"]:
        return "not_needed", "marked elidable: its author says a squash may drop it"
    if not statements:
        return "not_needed", "it runs no SQL"
    config = {sql_objects.extension_config_table(conn, s.table) for s in data}
    if data and None not in config and not unknown and not created:
        # PostGIS's custom spatial_ref_sys rows: a column typed geometry(Point, 990001) needs its
        # SRID before the models, in every database built from the regenerated migrations too.
        return "carried", f"it changes rows of {', '.join(sorted(config))}, an extension's configuration table a database built from migrations needs before its tables"
    if data:
        return "lost", f"it changes rows ({data[0].head()}), which a database built from migrations never had"
    if unknown:
        return "lost", f"squashkit cannot tell what {unknown[0].head()!r} leaves in the database: carry it by hand"
    if not created:
        # A drop of what an earlier carried operation creates must be carried too, else the
        # regenerated migrations create it twice (drop, change a column under it, create it again).
        carried = {name for op in earlier if op.verdict == "carried" for name in op.creates}
        undone = [s.object.describe() for s in statements if s.action == "drop" and s.object.describe() in carried]
        if not undone:
            return "not_needed", "it only drops objects, which a database built from the regenerated migrations never has"
        if missing := _drop_of_unknown(statements, earlier):
            return "lost", f"it drops {missing}, which a database built from the regenerated migrations may not have"
        return "carried", f"it drops {', '.join(undone)}, which an earlier carried operation creates and a later one creates again"
    gone = [obj.describe() for obj in created if not sql_objects.exists(conn, obj)]
    if len(gone) == len(created):
        return "not_needed", f"everything it creates was dropped since ({', '.join(gone)})"
    if gone:
        return "lost", f"part of what it creates was dropped since ({', '.join(gone)}): carry the rest by hand"
    if missing := _drop_of_unknown(statements, earlier):
        return "lost", f"it drops {missing}, which a database built from the regenerated migrations may not have"
    reason = "what it creates is still in the database"
    if run_sql["has_state_operations"]:
        reason += " (its state_operations are already in the regenerated models)"
    return "carried", reason


def _carry_run_sql(entry: dict, where: str, depends_on: list[str]) -> Carry:
    """``migrations.RunSQL(SQL_0008, reverse_sql=REVERSE_SQL_0008)``, its SQL as module constants
    named after the migration it came from (inline before the models, where no constants go)."""
    run_sql = entry["run_sql"]
    suffix = entry["migration"].split("_")[0] + (f"_{entry['index'] + 1}" if entry["index"] else "")
    values = {"SQL": run_sql["sql"], "REVERSE_SQL": run_sql["reverse_sql"]}
    definitions, arguments = [], {}
    for role, value in values.items():
        if value is None:
            continue
        if value == "":
            arguments[role] = "migrations.RunSQL.noop"
        elif where == "first_migration":
            arguments[role] = repr(value)
        else:
            name = f"{role}_{suffix}"
            definitions.append(Definition(name=name, kind="assign", source=f"{name} = {_literal(value)}"))
            arguments[role] = name
    call = [arguments["SQL"]]
    call += [f"reverse_sql={arguments['REVERSE_SQL']}"] if "REVERSE_SQL" in arguments else []
    call += [f"hints={run_sql['hints']!r}"] if run_sql["hints"] else []
    python = f"migrations.RunSQL({', '.join(call)})"
    return Carry(where=where, python=python, imports=["from django.db import migrations"], definitions=definitions, depends_on=depends_on)


def _literal(value: str | list) -> str:
    """A Python literal for SQL: multi-line text as a triple-quoted string when that keeps it exact."""
    if isinstance(value, str) and "\n" in value and not any(c in value for c in ('"""', "\\", "\r")) and not value.endswith('"'):
        return '"""' + value + '"""'
    return repr(value)


def _drop_of_unknown(statements: list[sql_objects.Statement], earlier: list[LostOperation]) -> str | None:
    """A plain DROP (no IF EXISTS) of what no earlier carried RunSQL creates would fail on a fresh database."""
    created = {name for op in earlier if op.verdict == "carried" for name in op.creates}
    for statement in statements:
        if statement.action == "create":
            created.add(statement.object.describe())
        elif statement.action == "drop" and not statement.if_exists and statement.object.describe() not in created:
            return statement.object.describe()
    return None


def _apps_named(sql, tables: dict[str, str], own_app: str) -> list[str]:
    """Apps whose model tables the SQL mentions: their migrations must have created them first."""
    text = json.dumps(sql).lower()
    words = set(re.findall(r"[a-z_][a-z0-9_$]*", text))
    return sorted({app for table, app in tables.items() if table in words and app != own_app})


def _verdict(summary: str, verdict: Verdict, reason: str) -> dict:
    return {"summary": summary, "verdict": verdict, "reason": reason}


# --- RunPython ------------------------------------------------------------------------------------


def _judge_run_python(entry: dict, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]) -> dict:
    """Carried when its functions move as they are and every model it asks for is the final one."""
    run_python = entry["run_python"]
    code, reverse = run_python["code"], run_python["reverse_code"]
    summary = f"RunPython {code['name']}" + (f" (reverse {reverse['name']})" if reverse else " (irreversible)")
    if run_python["elidable"]:
        return _verdict(summary, "not_needed", "marked elidable: its author says a squash may drop it")
    if code["noop"]:
        return _verdict(summary, "not_needed", "its code is RunPython.noop")
    if not code["module_level"]:
        return _verdict(summary, "lost", f"{code['problem']}: squashkit only moves the migration file's own functions")
    if run_python["dynamic_get_model"]:
        return _verdict(summary, "lost", "it calls get_model() with names squashkit cannot read, so whether its models changed is unknown")
    changed = [m for m in run_python["models"] if m["differences"]]
    if changed:
        what = "; ".join(f"{m['model']}: {', '.join(m['differences'])}" for m in changed)
        return _verdict(
            summary, "lost",
            f"it was written against older models ({what}); on the final models it would not do what it did",
        )
    models = [m["model"] for m in run_python["models"]]
    reason = f"its functions move as they are into {entry['app']}'s {CARRIED_NAME} migration"
    reason += f"; it uses {', '.join(models)}, unchanged since" if models else "; it asks for no historical model"
    if reverse and not reverse["module_level"]:
        reason += f"; its reverse cannot move ({reverse['problem']}), so the carried operation is irreversible"
    depends = sorted({m.split(".")[0] for m in models} - {entry["app"]})
    return {"summary": summary, "verdict": "carried", "reason": reason, "carry": _carry_run_python(run_python, depends)}


def _carry_run_python(run_python: dict, depends_on: list[str]) -> Carry:
    """``migrations.RunPython(code, reverse)`` with the functions, helpers and imports they use."""
    code, reverse = run_python["code"], run_python["reverse_code"]
    call = [code["name"]]
    if reverse and reverse["noop"]:
        call.append("migrations.RunPython.noop")
    elif reverse and reverse["module_level"]:
        call.append(reverse["name"])
    call += [f"atomic={run_python['atomic']!r}"] if run_python["atomic"] is not None else []
    call += [f"hints={run_python['hints']!r}"] if run_python["hints"] else []
    definitions = [Definition(**d) for d in run_python["definitions"]]
    imports = ["from django.db import migrations", *(d.source for d in definitions if d.kind == "import")]
    return Carry(
        where="carried_migration",
        python=f"migrations.RunPython({', '.join(call)})",
        imports=imports,
        definitions=[d for d in definitions if d.kind != "import"],
        depends_on=depends_on,
    )


# --- extensions, and what is lost -----------------------------------------------------------------


def _judge_extension(entry: dict, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]) -> dict:
    """Carried before the models, unless the extension was dropped since; notes when only a superuser may create it."""
    name = entry["extension"]
    kind = "CreateCollation" if entry["kind"] == "collation" else "CreateExtension"
    summary = f"{kind} {name}"
    python, imports = _one_line(entry["serialized"]["python"]), entry["serialized"]["imports"]
    carry = Carry(where="first_migration", python=python, imports=imports)
    reason = f"carried first in {entry['app']}'s first regenerated migration, before the models that need it"
    if entry["kind"] == "collation":
        return {"summary": summary, "verdict": "carried", "reason": reason, "carry": carry}
    if not sql_objects.exists(conn, sql_objects.SqlObject(kind="extension", noun="extension", name=name)):
        return _verdict(summary, "not_needed", f"the database no longer has the extension {name}")
    return {"summary": summary, "verdict": "carried", "reason": reason, "carry": carry, "note": _extension_note(conn, name)}


def _extension_note(conn: psycopg.Connection, name: str) -> str | None:
    """Whether a fresh database's owner can create the extension, and what to do when not."""
    row = conn.execute(
        """SELECT v.superuser, v.trusted FROM pg_available_extension_versions v
           JOIN pg_extension e ON e.extname = v.name AND e.extversion = v.version WHERE v.name = %s""",
        [name],
    ).fetchone()
    if row is None or not row[0]:
        return None
    if row[1]:
        return f"{name} is trusted: a database owner without superuser rights may create it"
    return (
        f"{name} needs a superuser: on a fresh database an admin runs CREATE EXTENSION {name} before migrate "
        f"(the migration then finds it and does nothing); Django's test database gets it from a template "
        f"database that has it (DATABASES[...]['TEST']['TEMPLATE']) or from a superuser test role"
    )


def _judge_separate(entry: dict, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]) -> dict:
    database = entry["database_operations"]
    summary = "SeparateDatabaseAndState" + (f": {'; '.join(database)}" if database else " (state only)")
    if not database:
        return _verdict(summary, "not_needed", "it only changes the state, which the regenerated models already hold")
    return _verdict(summary, "lost", "its database operations differ from its state on purpose: redo them by hand")


def _judge_custom(entry: dict, conn: psycopg.Connection, tables: dict[str, str], earlier: list[LostOperation]) -> dict:
    summary = f"{entry['operation_class']}: {entry['description']}"
    return _verdict(summary, "lost", "a custom operation: squashkit cannot tell what it does to the database")


def _one_line(python: str) -> str:
    """``TrigramExtension(\\n)`` as ``TrigramExtension()``: Django writes an empty call on two lines."""
    return re.sub(r"\(\s*\)$", "()", python.strip())


# --- require_nothing_lost and render --------------------------------------------------------------


def require_nothing_lost(report: LossReport, accept_loss: bool, *, full_report: Path | None = None) -> None:
    """Refuse, before any file is deleted, when regenerated migrations would lose an operation.

    One line, however many: the first few named, the rest counted per app; ``full_report`` (the
    file with every reason) is named when there is one."""
    lost = report.with_verdict("lost")
    if not lost or accept_loss:
        return
    # A few: each with its reason; many: the first named, every reason in the report and its file.
    listed = "; ".join(f"{op.label()}: {op.summary}" + (f" ({op.reason})" if len(lost) <= 3 else "") for op in lost[:3])
    if len(lost) > 3:
        per_app = _counts(lost, key=lambda op: op.app)
        listed += f"; and {len(lost) - 3} more ({', '.join(f'{app} {n}' for app, n in per_app.items())} in all)"
    where = f"; every one with its reason: {full_report}" if full_report else ""
    raise BadInput(
        f"refusing to squash: {len(lost)} operation(s) of the migrations cannot be carried into the regenerated "
        f"ones and would be lost: {listed}{where}. Move them into the models or a new migration, or pass --accept-loss "
        "to drop them knowingly (nothing was changed)"
    )


def write_full(report: LossReport, path: Path, log: Callable[[str], None]) -> Path | None:
    """The report with every reason whole, in ``path``; None when there is nothing to report or it cannot be written."""
    if not report.operations:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(report, full=True) + "\n")
    except OSError as exc:
        log(f"the full loss report could not be written to {path}: {exc.strerror}")
        return None
    return path


VERDICT_ORDER: tuple[Verdict, ...] = ("lost", "data", "carried", "not_needed")
LINE_WIDTH = 160


def render(report: LossReport, *, full: bool = False) -> str:
    """The report for a terminal: counts first, then app by app and verdict by verdict, one line per
    operation. Reasons are cut to fit a line unless ``full`` (the report file, ``--json`` has them too)."""
    read = f"read {report.apps_read} project app(s), {report.migrations_read} migration(s): " if report.apps_read else ""
    if not report.operations and not report.apps_read:
        return ("read no project app: the project has no apps of its own, so nothing would be squashed "
                "(project_apps in the config names apps installed as packages)")
    if not report.operations:
        return f"{read}nothing to carry, every operation of the migrations is written again from the models"
    total = _counts(report.operations, key=lambda op: op.verdict)
    lines = [
        f"{read}{len(report.operations)} operation(s) makemigrations will not write again: "
        + ", ".join(f"{total.get(verdict, 0)} {verdict.replace('_', ' ')}" for verdict in ("carried", "lost", "not_needed"))
        + (f", {total['data']} compared as rows" if total.get("data") else "")
    ]
    by_app: dict[str, list[LostOperation]] = {}
    for op in report.operations:
        by_app.setdefault(op.app, []).append(op)
    for app, ops in by_app.items():
        counts = _counts(ops, key=lambda op: op.verdict)
        lines.append(f"{app}: " + ", ".join(f"{counts[v]} {v.replace('_', ' ')}" for v in VERDICT_ORDER if v in counts))
        for verdict in VERDICT_ORDER:
            for op in (op for op in ops if op.verdict == verdict):
                reason = op.reason + (f" (note: {op.note})" if op.note and full else "")
                line = f"  {verdict.replace('_', ' '):<10} {op.file} #{op.index + 1} {op.summary}: {reason}"
                lines.append(line if full or len(line) <= LINE_WIDTH else line[:LINE_WIDTH - 1] + "…")
    return "\n".join(lines)


def _counts(ops: list[LostOperation], *, key: Callable[[LostOperation], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        counts[key(op)] = counts.get(key(op), 0) + 1
    return counts
