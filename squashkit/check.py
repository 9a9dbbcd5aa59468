"""``squashkit check``: can squashkit work on this environment? One line per check: ok / warn / fail.

Each check answers a question a later command would otherwise answer by failing halfway:
can we connect, are the client tools new enough, may the user create databases and the
extensions the project needs, is there connection headroom, are the migrations applied.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from pydantic import BaseModel, Field

from squashkit import postgres
from squashkit.config import Config
from squashkit.errors import SquashkitError
from squashkit.project import ProjectInfo, introspect, manage_py

Status = Literal["ok", "warn", "fail"]


class CheckResult(BaseModel):
    """One finding of ``squashkit check``."""

    name: str = Field(description="What was checked, e.g. 'connection (default)'.")
    status: Status
    detail: str = Field(description="What was found, and what to do when it is not ok.")


def check(config: Config, *, env: str | None = None) -> list[CheckResult]:
    """Run every check on the environment; never raises for a failed check, only reports it."""
    results: list[CheckResult] = []
    add = lambda name, status, detail: results.append(CheckResult(name=name, status=status, detail=detail))  # noqa: E731

    env_name, environment = config.environment(env)
    add("environment", "ok", f"{env_name} ({environment.settings}) from {config.source}")
    try:
        project = introspect(manage_py(config, env_name, environment))
    except SquashkitError as exc:
        add("project", "fail", str(exc))
        return results
    own = project.own_apps()
    add("project", "ok", f"Django {project.django_version}, {len(own)} project apps: {', '.join(a.label for a in own)}")
    if not project.postgres_aliases():
        add("databases", "fail", "no PostgreSQL database in DATABASES")
    for alias in project.postgres_aliases():
        _check_alias(config, environment.admin is not None, project, alias, add)
    return results


def _check_alias(config: Config, has_admin: bool, project: ProjectInfo, alias: str, add) -> None:
    params = project.connection(alias)
    try:
        with postgres.connect(params) as conn:
            add(f"connection ({alias})", "ok", params.describe())
            server_num = conn.info.server_version
            add(f"server ({alias})", "ok", f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}")
            _check_clients(config, server_num, alias, add)
            _check_privileges(conn, config, has_admin, alias, add)
            _check_connections(conn, alias, add)
            _check_migrations(conn, project, alias, add)
    except SquashkitError as exc:
        add(f"connection ({alias})", "fail", str(exc))
    except psycopg.Error as exc:
        add(f"database ({alias})", "fail", str(exc).strip().splitlines()[0])


def _check_clients(config: Config, server_num: int, alias: str, add) -> None:
    for name in ("pg_dump", "pg_restore"):
        try:
            program = postgres.client_program(name, config.pg_bin)
            version = postgres.require_client_for_server(program, server_num)
            add(f"{name} ({alias})", "ok", f"version {version} at {program}")
        except SquashkitError as exc:
            add(f"{name} ({alias})", "fail", str(exc))


def _check_privileges(conn: psycopg.Connection, config: Config, has_admin: bool, alias: str, add) -> None:
    superuser, createdb, user = conn.execute(
        "SELECT rolsuper, rolcreatedb, current_user FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if superuser or createdb:
        add(f"privileges ({alias})", "ok", f"{user} may create databases{' (superuser)' if superuser else ''}")
    elif has_admin:
        add(f"privileges ({alias})", "ok", f"{user} lacks CREATEDB: the admin connection will create databases")
    else:
        add(f"privileges ({alias})", "warn", f"{user} lacks CREATEDB: restore and squash will need ALTER ROLE {user} CREATEDB")
    installed = [row[0] for row in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")]
    needed = sorted(set(installed) | set(config.extensions))
    for name in needed:
        row = conn.execute(
            """SELECT v.trusted, v.superuser FROM pg_available_extensions a
               JOIN pg_available_extension_versions v ON v.name = a.name AND v.version = a.default_version
               WHERE a.name = %s""",
            [name],
        ).fetchone()
        if row is None:
            add(f"extension {name} ({alias})", "fail", f"{name} is not available on the server: install its package there")
        elif superuser or row[0] or not row[1]:
            add(f"extension {name} ({alias})", "ok", "can be created by " + user)
        elif has_admin:
            add(f"extension {name} ({alias})", "ok", "needs a superuser: the admin connection will create it")
        else:
            add(
                f"extension {name} ({alias})",
                "warn",
                f"needs a superuser and {user} is not one: configure an admin connection for this environment",
            )


def _check_connections(conn: psycopg.Connection, alias: str, add) -> None:
    limit, reserved, in_use = conn.execute(
        """SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"""
    ).fetchone()
    free = limit - reserved - in_use
    status = "ok" if free >= 5 else "warn"
    add(f"connections ({alias})", status, f"{in_use} in use of max_connections {limit} ({reserved} reserved), {free} free")


def _check_migrations(conn: psycopg.Connection, project: ProjectInfo, alias: str, add) -> None:
    facts_applied = set()
    if conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
        facts_applied = {(app, name) for app, name in conn.execute("SELECT app, name FROM django_migrations")}
    for app in project.own_apps():
        if alias not in app.aliases:
            continue
        on_disk = app.migrations
        unapplied = [name for name in on_disk if (app.label, name) not in facts_applied]
        without_file = sorted(name for label, name in facts_applied if label == app.label and name not in on_disk)
        folder = app.migrations_folder
        where = f"{folder}" + (f" -> {app.migrations_folder_resolved}" if folder and folder != app.migrations_folder_resolved else "")
        if unapplied:
            add(f"migrations {app.label} ({alias})", "warn", f"{len(unapplied)} of {len(on_disk)} unapplied: {', '.join(unapplied[:5])}")
        elif without_file:
            add(
                f"migrations {app.label} ({alias})",
                "warn",
                f"{len(without_file)} applied migrations have no file: {', '.join(without_file[:5])}",
            )
        else:
            add(f"migrations {app.label} ({alias})", "ok", f"{len(on_disk)} applied, in {where}")
