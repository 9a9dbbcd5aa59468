"""``--dry-run``: the steps a command will take, with the programs and SQL each runs and what undoes it.

The SQL is rendered by psycopg exactly as the steps send it, for the target's real user and
the source's real encoding, locale and extensions; no password ever appears.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

from pydantic import BaseModel, Field

from squashkit import history, postgres, schema, steps
from squashkit.config import Config
from squashkit.databases import primary_aliases
from squashkit.target import Target

# One snapshot: pg_dump in the background, db.json and the content hashes read beside it.
BACKUP_COMMANDS = [
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()",
    "pg_dump -Fc --exclude-table-data=<each alias's django_migrations> --snapshot=<id>",
    "COPY (SELECT json_build_object(...) FROM <table> ORDER BY <pk>) TO STDOUT  -- per model, in the snapshot: db.json",
    "SELECT count(*), sum(hashtextextended(ROW(...)::text, 0)), ... FROM <table>  -- per table: content hashes",
]


class PlannedStep(BaseModel):
    """One step of a plan, as ``--dry-run`` prints it."""

    name: str
    does: str = Field(description="What the step does, in a sentence.")
    commands: list[str] = Field(default_factory=list, description="Programs and SQL it runs (no passwords).")
    undo: str = Field(description="What undoes it.")


class Shape(BaseModel):
    """What step 3 recreates a database like: the source's encoding, locale and extensions."""

    encoding: str
    collate: str
    ctype: str
    extensions: list[str]


def live_shape(params: postgres.ConnectionParams) -> Shape:
    with postgres.connect(params) as conn:
        encoding, collate, ctype = postgres.database_locale(conn, params.dbname)
        return Shape(encoding=encoding, collate=collate, ctype=ctype, extensions=postgres.installed_extensions(conn))


def build(
    config: Config, *, squash: bool, target: Target, source_label: str, manifest_hint: str, shapes: dict[str, Shape],
    mode: steps.Mode = "side",
) -> list[PlannedStep]:
    """The steps a restore-like command will take on ``target``, with the SQL and programs they run.

    The SQL is rendered by psycopg exactly as step 3 sends it, for the target's real user and
    the source's real encoding, locale and extensions.
    """
    aliases = [alias for alias in target.project.postgres_aliases() if alias in shapes]
    once = [alias for alias in primary_aliases(target.project) if alias in shapes]  # a database two aliases reach: once
    swaps: list[PlannedStep] = []
    planned = [
        PlannedStep(
            name="preflight",
            does=f"refuse unless {source_label} has no unapplied migrations and no model changes without one",
            commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"],
            undo="nothing to undo",
        ),
        PlannedStep(
            name="backup",
            does=f"safety bundle of {target.name} before anything is dropped",
            commands=BACKUP_COMMANDS,
            undo="nothing to undo",
        ),
    ]
    if squash:
        planned.insert(1, PlannedStep(
            name="loss report",
            does="load the migrations and list what regenerated ones would forget; refuse what cannot be carried over "
                 "(--accept-loss drops it knowingly)",
            commands=["manage.py shell -c <squashkit/inproject/losses.py>"],
            undo="nothing to undo",
        ))
        planned.append(PlannedStep(
            name="delete migrations",
            does="delete the migration files of " + ", ".join(a.label for a in target.project.own_apps()),
            commands=[f"rm {a.migrations_folder_resolved}/[!_]*.py" for a in target.project.own_apps() if a.migrations_folder_resolved],
            undo="the files are put back from the bundle's migrations.tar.gz",
        ))
    for alias in once:
        params, shape = target.params(alias), shapes[alias]
        live = params.dbname
        name = steps.side_name(live, steps.SIDE) if mode == "side" else live
        with postgres.connect(params.with_dbname("postgres")) as conn:
            owner = conn.execute("SELECT current_user").fetchone()[0]
            statements = [
                *([] if mode == "side" else [postgres.drop_database_statement(live)]),
                postgres.create_database_statement(name, owner, shape.encoding, shape.collate, shape.ctype),
                *(postgres.create_extension_statement(ext) for ext in sorted(set(shape.extensions) | set(config.extensions)) if ext != "plpgsql"),
            ]
            rendered = [statement.as_string(conn) for statement in statements]
            swap = [
                postgres.rename_database_statement(live, steps.side_name(live, steps.KEPT)).as_string(conn),
                postgres.rename_database_statement(name, live).as_string(conn),
            ]
        undo = "drop the side database (the live one is untouched)" if mode == "side" else "restore from the safety bundle"
        planned.append(PlannedStep(
            name=f"create {alias}",
            does=(f"create the side database {name} beside {live}" if mode == "side"
                  else f"end other sessions, drop and recreate {name} ({params.describe()})"),
            commands=rendered,
            undo=undo,
        ))
        planned.append(PlannedStep(
            name=f"pg_restore {alias}",
            does=f"restore {manifest_hint} without the extensions' own entries, stopping at the first error",
            commands=[f"pg_restore -w --no-owner --no-privileges --exit-on-error -L <filtered toc> -d {name}"],
            undo=undo,
        ))
        if mode == "side":
            swaps.append(PlannedStep(
                name=f"swap {alias}",
                does=f"drop the database an earlier run kept, if any; end other sessions on {live}; in one transaction {live} becomes {steps.side_name(live, steps.KEPT)} and {name} becomes {live}",
                commands=swap,
                undo="rename back: squashkit resume, or squashkit rollback with the safety bundle",
            ))
    if squash:
        labels = " ".join(a.label for a in target.project.own_apps())
        planned.append(PlannedStep(
            name="makemigrations", does="fresh initial migrations for every project app, plus what the loss report carries over",
            commands=[f"manage.py makemigrations {labels}"], undo="the old files are put back from the tarball",
        ))
        planned.append(PlannedStep(
            name="schema equivalence",
            does="build a scratch database from the new migrations alone and compare its catalogs with the restored one; "
                 "stop on any real difference (--allow-drift goes on)",
            commands=["CREATE DATABASE <name>__squashkit_scratch ...", "manage.py migrate (into the scratch database)",
                      "DROP DATABASE <name>__squashkit_scratch"],
            undo="the scratch database is always dropped",
        ))
    labels = " ".join(a.label for a in target.project.own_apps())
    planned.append(PlannedStep(
        name="migrate --fake",
        does="each alias's django_migrations filled with the bundle's rows, ids and times kept"
             + ("; the regenerated apps' migrations (" + labels + ") marked applied" if squash else
                "; migrate runs what the code has beyond them (nothing when the bundle is of this code)"),
        commands=["INSERT INTO django_migrations (id, app, name, applied) ... (the bundle's rows)",
                  *(f"manage.py migrate {'--fake ' if squash else ''}--database {alias}" for alias in aliases)],
        undo="drop the side database (the live one is untouched)" if mode == "side" else "restore from the safety bundle",
    ))
    planned.append(PlannedStep(
        name="verify", does="every table holds the bundle's content (its content hashes); migrate --check and "
                            "makemigrations --check clean",
        commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"], undo="nothing to undo",
    ))
    return planned + swaps


def build_squash(config: Config, *, target: Target, shapes: dict[str, Shape], source_label: str | None = None) -> list[PlannedStep]:
    """The steps of a squash that moves no data (``online.squash``), with the SQL they send: nothing is
    created beside the live database but a scratch one, nothing is dropped but that, no session ends."""
    aliases = [alias for alias in target.project.postgres_aliases() if alias in shapes]
    apps = [a.label for a in target.project.own_apps()]
    labels = " ".join(apps)
    name = source_label or target.name
    planned = [
        PlannedStep(
            name="preflight",
            does=f"refuse unless {name} has no unapplied migrations and no model changes without one, its user may create "
                 "the scratch database and rewrite django_migrations; sessions are not ended, writes go on",
            commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"],
            undo="nothing to undo",
        ),
        PlannedStep(
            name="loss report",
            does="load the migrations and list what regenerated ones would forget; refuse what cannot be carried over "
                 "(--accept-loss drops it knowingly)",
            commands=["manage.py shell -c <squashkit/inproject/losses.py>"],
            undo="nothing to undo",
        ),
        PlannedStep(
            name="backup",
            does=f"a bundle of {name}: its migrations.tar.gz undoes the files; the rows django_migrations loses are "
                 f"saved beside it ({history.FILE}) before they are deleted",
            commands=BACKUP_COMMANDS,
            undo="nothing to undo",
        ),
        PlannedStep(
            name="delete migrations",
            does="delete the migration files of " + ", ".join(apps),
            commands=[f"rm {a.migrations_folder_resolved}/[!_]*.py" for a in target.project.own_apps() if a.migrations_folder_resolved],
            undo="the files are put back from the bundle's migrations.tar.gz",
        ),
    ]
    scratch_sql, rewrite_sql = [], []
    once = primary_aliases(target.project)
    for alias in aliases:
        params, shape = target.params(alias), shapes[alias]
        scratch = schema.scratch_name(params.dbname)
        with postgres.connect(params.with_dbname("postgres")) as conn:
            owner = conn.execute("SELECT current_user").fetchone()[0]
            statements = [
                postgres.create_database_statement(scratch, owner, shape.encoding, shape.collate, shape.ctype),
                *(postgres.create_extension_statement(ext) for ext in sorted(set(shape.extensions) | set(config.extensions)) if ext != "plpgsql"),
            ] if alias in once else []
            scratch_sql += [statement.as_string(conn) for statement in statements]
            rewrite = [history.timeout_statement(), history.lock_statement(), history.select_statement(apps),
                       history.delete_statement(apps)]
            rewrite_sql.append((alias, params.dbname, [statement.as_string(conn) for statement in rewrite]))
    planned.append(PlannedStep(
        name="makemigrations",
        does="fresh initial migrations for every project app, plus what the loss report carries over, pointed at an empty "
             "scratch database (the live django_migrations still names the old files)",
        commands=[*scratch_sql, f"manage.py makemigrations {labels}  (NAME -> the scratch database)"],
        undo="the old files are put back from the tarball; the scratch database is always dropped",
    ))
    planned.append(PlannedStep(
        name="schema equivalence",
        does=f"a real migrate of the new files into the scratch database, compared by catalog definitions with the live "
             f"{', '.join(dbname for _a, dbname, _s in rewrite_sql)}; stop on any real difference (--allow-drift goes on)",
        commands=["manage.py migrate  (NAME -> the scratch database)", "DROP DATABASE <the scratch database>"],
        undo="the old files are put back from the tarball; the scratch database is always dropped",
    ))
    for alias, dbname, statements in rewrite_sql:
        planned.append(PlannedStep(
            name=f"rewrite history {alias}",
            does=f"one transaction on the live {dbname}: the project apps' rows of django_migrations saved (journal and "
                 f"bundle), deleted, and the new files recorded as applied; third-party apps' rows stay; no data moves",
            commands=["BEGIN", *statements,
                      f"INSERT INTO \"{history.TABLE}\" (app, name, applied) <the new migrations, as the scratch migrate "
                      "recorded them>, now()", "COMMIT"],
            undo="before COMMIT: the files from the tarball; after: the saved rows put back in one transaction and the "
                 "files (squashkit rollback BUNDLE --migrations-only does it later, keeping every write)",
        ))
    planned.append(PlannedStep(
        name="verify", does="migrate --check and makemigrations --check clean on the live database",
        commands=["manage.py migrate --check", "manage.py makemigrations --check --dry-run"], undo="nothing to undo",
    ))
    return planned


_json: list[bool] = []  # set by ``as_json`` for one command (--dry-run --json)


@contextlib.contextmanager
def as_json() -> Iterator[None]:
    """``print_plan`` prints the plan as JSON (``reports.PlanReport``) for the block."""
    _json.append(True)
    try:
        yield
    finally:
        _json.pop()


def print_plan(planned: list[PlannedStep], out=None) -> None:
    out = out or sys.stdout
    if _json:
        print(json.dumps({"steps": [step.model_dump() for step in planned]}, indent=2), file=out)
        return
    for number, step in enumerate(planned):
        print(f"{number}. {step.name}: {step.does}", file=out)
        for command in step.commands:
            print(f"     $ {command}", file=out)
        print(f"     undo: {step.undo}", file=out)
