"""``squashkit backup --schema NAME`` and ``squashkit rollback BUNDLE --schema NAME``: one tenant at a time.

In a django-tenants project each tenant is one schema. A tenant's bundle holds that schema alone
(``pg_dump -n``: its tables, sequences, its own django_migrations, and its foreign keys into
public, whose rows stay where they are); ``rollback --schema`` puts one tenant back from such a
bundle or from a full one, and touches neither public nor any other tenant.

backup --schema (repeatable):
    1. each schema named must be a tenant's or a template (``tenants.schemas``)
    2. one snapshot: pg_dump -n of those schemas and their tables' content hashes
    3. the dump's table of contents lists every table's data, then ``schemas.json``; the bundle
       exists only once renamed from its ``.partial`` directory (as every bundle)

rollback --schema NAME, each step with what undoes it:
    1. the bundle holds NAME; its tenant row is in public (refused otherwise: nothing changed)
    2. psql, ONE transaction: ALTER SCHEMA NAME RENAME TO NAME__squashkit_prev, the bundle's
       NAME restored (pg_restore -n as SQL), its django_migrations given the rows the live tenant
       had (the code now on disk; a full bundle dumps none) -- a failure or a kill rolls it all back
    3. verify: every table of NAME has the content the bundle recorded; undone by dropping the
       restored schema and renaming NAME__squashkit_prev back, in one transaction
    4. drop NAME__squashkit_prev
   The run is journalled like every other: after a kill, ``squashkit resume`` (``resume`` below)
   drops the old copy once step 4 began, re-verifies a committed step 2 (kept, or undone as 3),
   and knows a step 2 that never committed changed nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from squashkit import (
    __version__,
    bundle,
    clients,
    content,
    journal,
    postgres,
    runs,
    tenants,
)
from squashkit.config import Config
from squashkit.errors import BadInput, OperationFailed, first_line
from squashkit.runs import Log, stderr_log
from squashkit.target import Target, resolve

FILE = "schemas.json"
DUMP = "schemas.dump"
PREV_SUFFIX = "__squashkit_prev"
# The journal's mode of a rollback --schema: one tenant's schema replaced, nothing else.
MODE = "tenant"


class SchemaBundle(BaseModel):
    """``schemas.json``: a bundle of some tenants' schemas."""

    format_version: int = 1
    squashkit_version: str
    environment: str
    database: str
    created_at: datetime
    schemas: list[str] = Field(description="The schemas dumped (pg_dump -n each).")
    dump: str = Field(DUMP, description="pg_dump, custom format, of those schemas only.")
    dump_sha256: str
    contents: dict[str, content.TableContent] = Field(description="schema.table -> content hashes, in the dump's snapshot.")


def _tables(conn: psycopg.Connection, names: list[str]) -> list[str]:
    return [f"{s}.{t}" for s, t in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') ORDER BY 1, 2", [names])]


def _require_tenancy(target: Target) -> None:
    if target.project.tenancy is None:
        raise BadInput(f"--schema is for django-tenants projects: {target.name}'s settings have no TENANT_MODEL "
                       "(nothing was changed)")


def backup_schemas(config: Config, *, env: str | None, schemas: list[str], output: Path | None = None, log: Log = stderr_log) -> Path:
    """A verified bundle of just the tenants ``schemas``; returns its path."""
    target = resolve(config, env)
    _require_tenancy(target)
    tenancy = target.project.tenancy
    params = target.params(tenancy.alias)
    # 1. Each schema a tenant's or a template.
    with postgres.connect(params) as conn:
        known = {s.name: s.kind for s in tenants.schemas(conn, tenancy)}
    for name in schemas:
        if known.get(name) not in ("tenant", "template"):
            what = f"is {known[name]}" if name in known else "holds no django_migrations (no tenant's schema)"
            raise BadInput(f"schema {name!r} {what}: --schema names a tenant's schema "
                           f"({', '.join(n for n, k in known.items() if k == 'tenant') or 'none'}); nothing was written")
    pg_dump = clients.client_program("pg_dump", config.pg_bin)
    pg_restore = clients.client_program("pg_restore", config.pg_bin)
    started = bundle.utc_now()
    output_dir = bundle.prepare_output_dir(Path(output) if output else config.backup_dir)
    with bundle.writing(output_dir, bundle.bundle_name(f"{target.name}-schemas", started)) as partial:
        # 2. One snapshot: the dump and the hashes.
        with postgres.connect(params, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            tables = _tables(conn, schemas)
            args = ["-w", "-Fc", "-f", str(partial / DUMP), "--snapshot", snapshot]
            for name in schemas:
                args += ["-n", '"' + name.replace('"', '""') + '"']
            with clients.started(pg_dump, args, params, what=f"pg_dump of {', '.join(schemas)}") as dumped:
                hashes = content.read(conn, tables)
                dumped()
            conn.rollback()
        # 3. Every table's data in the dump, then the manifest.
        listed = clients.dump_table_data(pg_restore, partial / DUMP)
        missing = [t for t in tables if t not in listed]
        if missing:
            raise OperationFailed(f"the dump of {', '.join(schemas)} lacks the data of {missing[0]}: no bundle was written")
        manifest = SchemaBundle(squashkit_version=__version__, environment=target.name, database=params.dbname,
                                created_at=started, schemas=schemas, dump_sha256=bundle.sha256(partial / DUMP), contents=hashes)
        (partial / FILE).write_text(manifest.model_dump_json(indent=2))
        log(f"{', '.join(schemas)}: {len(tables)} tables, {sum(h.rows for h in hashes.values())} rows in {DUMP}")
    return bundle.finished_path(partial)


def _read(path: Path, name: str) -> tuple[Path, dict[str, content.TableContent]]:
    """The dump holding schema ``name`` and what its tables held, from a tenants' or a full bundle."""
    try:
        if (path / FILE).is_file():
            found = SchemaBundle.model_validate_json((path / FILE).read_text())
            if name not in found.schemas:
                raise BadInput(f"{path} holds the schemas {', '.join(found.schemas)}, not {name!r}: nothing was changed")
            if bundle.sha256(path / found.dump) != found.dump_sha256:
                raise BadInput(f"{path / found.dump} is damaged (its sha256 differs from {FILE}'s): nothing was changed")
            return path / found.dump, {t: c for t, c in found.contents.items()
                                       if t.split(".", 1)[0] == name and not t.endswith(".django_migrations")}
        manifest = bundle.read_manifest(path)
    except (ValidationError, OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable bundle ({first_line(exc)}): nothing was changed") from None
    for entry in manifest.databases:
        if entry.dump_of is None and entry.facts and name in entry.facts.schemas:
            contents = {t: c for t, c in entry.contents.items() if t.split(".", 1)[0] == name and not t.endswith(".django_migrations")}
            return path / entry.dump, contents
    raise BadInput(f"{path} holds no schema {name!r}: nothing was changed")


def rollback_schema(config: Config, *, path: Path, schema: str, env: str | None = None, yes: bool = False,
                    typed: str | None = None, log: Log = stderr_log) -> None:
    """Put tenant ``schema`` back from ``path``; public and every other tenant untouched. Journalled:
    after a kill, ``squashkit resume`` finishes it or leaves the tenant as it was (``resume``)."""
    target = resolve(config, env)
    _require_tenancy(target)
    tenancy = target.project.tenancy
    params = target.params(tenancy.alias)
    # 1. The bundle holds the schema; its tenant row is in public.
    dump, expected = _read(Path(path), schema)
    prev = schema + PREV_SUFFIX
    run = journal.new_run_id("rollback-schema", target.name)
    with runs.exclusive(config, run, [target]):  # an interrupted run is resumed first: it may have left prev
        with postgres.connect(params) as conn:
            if schema not in tenants.tenant_names(conn, tenancy):
                raise BadInput(f"{tenancy.tenant_table} has no tenant whose schema is {schema!r}: create its tenant row first "
                               "(without creating its schema), then roll it back; nothing was changed")
            present = _present(conn, schema)
            rows_from = next((s.name for s in tenants.schemas(conn, tenancy) if s.kind == "tenant" and s.name != schema), None)
        if prev in present:
            raise BadInput(f"schema {prev} is left over from an earlier rollback: drop it once you have checked it (nothing was changed)")
        replaced = schema in present
        runs.confirm(f"Put tenant {schema} of {target.name}'s database {params.dbname} back from {Path(path).name}?",
                     yes=yes, protected=target.protected_name(), typed=typed)
        with runs.journalled(config, run, command="rollback", target=target.name, argument=str(path), mode=MODE) as record:
            _rollback(config, params, record, alias=tenancy.alias, dump=dump, expected=expected, schema=schema, replaced=replaced,
                      rows_from=rows_from, log=log)
    log(f"tenant {schema} is back as {Path(path).name} has it: {len(expected)} tables verified by content; "
        "public and the other tenants were not touched")


def _rollback(config: Config, params: postgres.ConnectionParams, record: journal.Journal, *, alias: str, dump: Path,
              expected: dict[str, content.TableContent], schema: str, replaced: bool, rows_from: str | None,
              log: Log) -> None:
    """Steps 2-4 of ``rollback_schema``, each journalled before it acts."""
    env, prev = record.header.target, schema + PREV_SUFFIX
    # "work" is the live name: nothing is built beside it (resume looks for scratch databases by it).
    record.started("phase", env, mode=MODE, schema=schema, replaced=replaced,
                   databases={alias: {"live": params.dbname, "work": params.dbname}})
    # 2. One transaction: the live schema renamed away, the bundle's restored, its django_migrations rows.
    record.started("restore tenant", env, schema=schema, renamed_to=prev if replaced else None)
    _restore(config, params, dump, schema, prev if replaced else None, rows_from, log)
    record.finished("restore tenant", env)
    # 3. Verify; undone by dropping the restored schema and renaming the old one back.
    record.started("verify", env)
    problem = _verify_or_undo(params, schema, expected, replaced)
    if problem:
        raise OperationFailed(f"verify of {schema}: {problem}; tenant {schema} is as it was")
    record.finished("verify", env)
    # 4. The old schema dropped.
    record.started("drop previous", env, schema=prev)
    _drop(params, prev)
    record.finished("drop previous", env)
    record.finished("phase", env)


def resume(config: Config, run: journal.Run, log: Log) -> tuple[journal.Outcome, str]:
    """A killed ``rollback --schema``, from its journal and what the database holds: once step 4
    began, the old copy is dropped (finished); before step 2's transaction committed (the live schema
    not renamed away, or the schema still absent), nothing had changed; in between, the restored
    tenant is verified again: kept and the old copy dropped, or dropped and the old copy renamed back."""
    started = run.phases()[-1]
    target = resolve(config, started.env)
    params = target.params(target.project.tenancy.alias)
    name, replaced = started.changed["schema"], started.changed["replaced"]
    prev = name + PREV_SUFFIX
    if run.started("drop previous"):
        _drop(params, prev)
        return "finished", f"tenant {name} had been restored and verified; its old copy {prev} is dropped"
    with postgres.connect(params) as conn:
        present = _present(conn, name)
    if (prev if replaced else name) not in present:
        return "rolled back", f"tenant {name} was not touched: the restore's transaction never committed"
    log(f"tenant {name} was restored from {run.header.argument}; verifying it again")
    _dump, expected = _read(Path(run.header.argument), name)
    problem = _verify_or_undo(params, name, expected, replaced)
    if problem:
        return "rolled back", f"tenant {name} is as it was: the restored copy differed ({problem})"
    _drop(params, prev)
    return "finished", f"tenant {name} is back from {run.header.argument}, verified; its old copy {prev} is dropped"


def _present(conn: psycopg.Connection, name: str) -> set[str]:
    """Which of ``name`` and its renamed-away copy exist."""
    return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [[name, name + PREV_SUFFIX]])}


def _verify_or_undo(params: postgres.ConnectionParams, name: str, expected: dict[str, content.TableContent],
                    replaced: bool) -> str | None:
    """None when every table of ``name`` holds what the bundle recorded; else the first difference,
    the restored schema dropped and the live one (if there was one) renamed back, in one transaction."""
    with postgres.connect(params) as conn:
        problems = content.differences(expected, content.read(conn, list(expected)))
    if not problems:
        return None
    with postgres.connect(params, autocommit=False) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        if replaced:
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(name + PREV_SUFFIX), sql.Identifier(name)))
        conn.commit()
    return problems[0]


def _drop(params: postgres.ConnectionParams, name: str) -> None:
    with postgres.connect(params) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _restore(config: Config, params: postgres.ConnectionParams, dump: Path, schema: str, prev: str | None,
             rows_from: str | None, log: Callable[[str], None]) -> None:
    pg_restore = clients.client_program("pg_restore", config.pg_bin)
    psql = clients.client_program("psql", config.pg_bin)
    with tempfile.TemporaryDirectory(prefix="squashkit-tenant-") as private:
        script = Path(private) / "tenant.sql"
        clients.run_client(pg_restore, ["--no-owner", "--no-privileges", "-n", schema, "-f", str(script), str(dump)],
                           params, what=f"pg_restore -n {schema}")
        body = script.read_text()
        with postgres.connect(params) as conn:
            quoted = sql.Identifier(schema).as_string(conn)
            before = [sql.SQL("ALTER SCHEMA {} RENAME TO {};").format(sql.Identifier(schema), sql.Identifier(prev)).as_string(conn)] if prev else []
            if f"CREATE SCHEMA {quoted};" not in body:
                before.append(f"CREATE SCHEMA {quoted};")
            source = prev or rows_from
            after = []
            if source:  # the rows of the code on disk: the live tenant's, or another tenant's when it has none
                table = sql.Identifier(schema, "django_migrations")
                after = [sql.SQL("DELETE FROM {table}; INSERT INTO {table} SELECT * FROM {source};"
                                 " SELECT setval(pg_get_serial_sequence({name}, 'id'), coalesce(max(id), 0) + 1, false) FROM {table};").format(
                    table=table, source=sql.Identifier(source, "django_migrations"),
                    name=sql.Literal(table.as_string(conn))).as_string(conn)]
        script.write_text("\n".join([*before, body, "SET search_path = public;", *after]) + "\n")
        clients.run_client(psql, ["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", str(script)],
                           params, what=f"restoring tenant {schema} (one transaction)")
    log(f"tenant {schema} restored from {dump.name} in one transaction" + (f" (the live one renamed {prev} meanwhile)" if prev else ""))
