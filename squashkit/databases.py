"""The project's PostgreSQL aliases grouped by the physical database they reach.

Several ``DATABASES`` aliases can reach one database (the same host, port and name): a ``data``
alias whose search_path puts another schema first, an alias per group of apps. A database must
be locked, dumped, rebuilt and swapped once, however many aliases reach it: twice would dump the
same rows twice, and the second lock or rename would find the first one's. Everything that
speaks Django (``migrate --fake``, the fixtures, ``migrate --check``) still runs per alias, since
each alias has its own search_path and so its own ``django_migrations``.

A ``Database`` is reached for the database-wide work (locks, dumps, renames) through its first
alias: ``default`` when it is one of them, else the first in settings order.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, Field

from squashkit.errors import BadInput
from squashkit.postgres import ConnectionParams
from squashkit.project import ProjectInfo


class Database(BaseModel):
    """One physical database and the aliases that reach it."""

    name: str = Field(description="The database's name (Django's NAME).")
    server: str = Field(description="host:port, as libpq resolves an empty HOST or PORT (PGHOST, PGPORT, the socket).")
    aliases: list[str] = Field(description="Every alias squashkit works on that reaches it; the first connects for the database.")

    @property
    def alias(self) -> str:
        """The alias the database-wide work connects through."""
        return self.aliases[0]


def server_of(params: ConnectionParams) -> str:
    """``host:port`` of a connection, an empty HOST or PORT resolved as libpq resolves it."""
    host = params.host or os.environ.get("PGHOST") or "/var/run/postgresql"
    port = params.port or int(os.environ.get("PGPORT") or 5432)
    return f"{host}:{port}"


def physical(project: ProjectInfo, aliases: list[str] | None = None) -> list[Database]:
    """The databases ``aliases`` (default: every alias squashkit works on) reach, in the order of
    their first alias, ``default``'s database first."""
    wanted = project.postgres_aliases() if aliases is None else [a for a in project.postgres_aliases() if a in aliases]
    if "default" in wanted:
        wanted = ["default", *(alias for alias in wanted if alias != "default")]
    found: dict[tuple[str, str], Database] = {}
    for alias in wanted:
        params = project.connection(alias)
        key = (server_of(params), params.dbname)
        if key in found:
            found[key].aliases.append(alias)
        else:
            found[key] = Database(name=params.dbname, server=key[0], aliases=[alias])
    return list(found.values())


def primary_aliases(project: ProjectInfo, aliases: list[str] | None = None) -> list[str]:
    """The alias each physical database is reached through, one per database."""
    return [database.alias for database in physical(project, aliases)]


def once_per_database(project: ProjectInfo, names: dict[str, str]) -> dict[str, str]:
    """``alias -> database name`` (a journal's record of a phase) with each database (server and
    name) kept once, under its first alias: what renames or drops a database must not do it twice."""
    first: dict[tuple[str, str], str] = {}
    for alias, name in names.items():
        server = server_of(project.connection(alias)) if alias in project.databases else ""
        first.setdefault((server, name), alias)
    return {alias: key[1] for key, alias in first.items()}


def sharing(project: ProjectInfo, alias: str) -> Database:
    """The physical database ``alias`` reaches, with every other alias that reaches it."""
    for database in physical(project):
        if alias in database.aliases:
            return database
    raise KeyError(alias)


def migrate_order(project: ProjectInfo) -> list[str]:
    """The aliases in the order Django's test runner creates their databases: ``TEST["DEPENDENCIES"]``
    first (every alias depends on ``default`` unless it says otherwise), then settings order.

    Migrating in this order reproduces where the first alias put what later ones find through
    their search_path (``django_migrations``, the PostGIS extension, content types)."""
    aliases = project.postgres_aliases()
    depends = {
        alias: [d for d in (project.databases[alias].get("TEST") or {}).get("DEPENDENCIES", ["default"]) if d in aliases and d != alias]
        for alias in aliases
    }
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(alias: str) -> None:
        if alias in ordered:
            return
        if alias in visiting:
            raise BadInput(f"the TEST['DEPENDENCIES'] of DATABASES[{alias!r}] go round in a circle: fix the settings")
        visiting.add(alias)
        for dependency in depends[alias]:
            visit(dependency)
        visiting.discard(alias)
        ordered.append(alias)

    for alias in aliases:
        visit(alias)
    return ordered


_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search_path=((?:\\.|\S)+)")


def search_path(params: ConnectionParams) -> list[str]:
    """The schemas an alias's ``OPTIONS: {"options": "-csearch_path=s,public"}`` puts on its path
    (libpq's ``options``: ``-c name=value``, ``-cname=value`` or ``--name=value``, spaces escaped
    with a backslash); empty when it sets none ("$user" is left out: it names no schema)."""
    match = _SEARCH_PATH.search(params.options.get("options", ""))
    if not match:
        return []
    value = re.sub(r"\\(.)", r"\1", match.group(1))
    schemas = [part.strip().strip('"') for part in value.split(",")]
    return [schema for schema in schemas if schema and schema != "$user"]


def paths_of(project: ProjectInfo, database: Database) -> list[str]:
    """Every schema the aliases of ``database`` put on their search_paths, in order, once each."""
    return list(dict.fromkeys(schema for alias in database.aliases for schema in search_path(project.connection(alias))))
