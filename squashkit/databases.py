"""The project's PostgreSQL aliases grouped by the physical database they reach.

Several ``DATABASES`` aliases can reach one database (the same host, port and name): a ``data``
alias whose search_path puts another schema first, an alias per group of apps. A database must
be locked, dumped, rebuilt and swapped once, however many aliases reach it: twice would dump the
same rows twice, and the second lock or rename would find the first one's. Everything that
speaks Django (``migrate --fake``, the fixtures, ``migrate --check``) still runs per alias, since
each alias has its own search_path and so its own ``django_migrations``.

Where aliases of one database see each other, the order they are migrated in decides where each
records its history (``migrate_order``): an alias whose search_path reaches another alias's
``django_migrations`` goes first, every scratch build and ``recreate`` alike, so that it creates
its own table before it can find the other's.

A ``Database`` is reached for the database-wide work (locks, dumps, renames) through its first
alias: ``default`` when it is one of them, else the first in settings order.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, Field

from squashkit import postgres
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


class AliasLayout(BaseModel):
    """What one alias's connection finds on its database: where ``migrate`` reads and records its history."""

    path: list[str] = Field(description="The schemas of its search_path in order (on a live database, those that exist).")
    home: str = Field(description="The schema of the django_migrations it reads and records into.")


Layout = dict[str, AliasLayout]


def declared_layout(project: ProjectInfo, aliases: list[str] | None = None) -> Layout:
    """Each alias's layout as its settings declare it, for a database built schemas first: its
    OPTIONS search_path (``public`` when it sets none), its django_migrations in the first schema of it."""
    layout = {}
    for alias in project.postgres_aliases() if aliases is None else aliases:
        path = search_path(project.connection(alias)) or ["public"]
        layout[alias] = AliasLayout(path=path, home=path[0])
    return layout


_HOME = """SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = to_regclass('django_migrations')"""


def live_layout(project: ProjectInfo, database: Database) -> Layout:
    """Each alias of ``database`` as it finds the live database: the schemas of its search_path that
    exist there (OPTIONS, ``ALTER ROLE``/``ALTER DATABASE ... SET`` alike) and the django_migrations
    it finds, or where it would create one. The declared layout when the database does not exist yet.

    A scratch build must record each alias's history where the live one keeps it: the rows a squash
    writes back are read from there, and an alias that finds another's table creates nothing."""
    params = project.connection(database.alias)
    with postgres.connect(params.with_dbname("postgres")) as conn:
        if not postgres.database_exists(conn, params.dbname):
            return declared_layout(project, database.aliases)
    layout = {}
    for alias in database.aliases:
        with postgres.connect(project.connection(alias)) as conn:
            path = list(conn.execute("SELECT current_schemas(false)").fetchone()[0]) or ["public"]
            found = conn.execute(_HOME).fetchone()
        layout[alias] = AliasLayout(path=path, home=found[0] if found else path[0])
    return layout


def sightings(layout: Layout, together: list[list[str]]) -> list[tuple[str, str]]:
    """``(reader, owner)``: aliases of one database (each group of ``together``) whose search_path
    reaches another alias's django_migrations, in the schema the other keeps it in.

    The reader must migrate first: migrated after the owner, it finds the owner's table before
    its own exists, reads the owner's history (every app is recorded there, routed or not) as
    its own, and creates none of its tables."""
    found = []
    for aliases in together:
        for reader in aliases:
            for owner in aliases:
                mine, theirs = layout[reader].home, layout[owner].home
                if reader != owner and mine != theirs and theirs in layout[reader].path:
                    found.append((reader, owner))
    return found


def build_order(
    preferred: list[str], layout: Layout, together: list[list[str]],
) -> tuple[list[str], list[tuple[str, str]]]:
    """(the aliases in an order where no alias reads another's django_migrations, the sightings no order
    can satisfy: two aliases that each see the other's). Otherwise ``preferred`` order is kept.

    Every reader goes before the owner it sees (``sightings``); among the aliases free to go, the
    first in ``preferred`` goes first, so a layout with no sighting keeps ``preferred`` as it is."""
    needs = sightings(layout, together)
    before = {alias: {reader for reader, owner in needs if owner == alias} for alias in preferred}
    ordered: list[str] = []
    impossible: list[tuple[str, str]] = []
    while len(ordered) < len(preferred):
        waiting = [alias for alias in preferred if alias not in ordered]
        ready = [alias for alias in waiting if not before[alias] - set(ordered)]
        if not ready:  # a circle: the first waiting alias goes anyway, and what it breaks is reported
            ready = waiting[:1]
            impossible += [(reader, ready[0]) for reader in sorted(before[ready[0]] - set(ordered))]
        ordered.append(ready[0])
    return ordered, impossible


def migrate_order(project: ProjectInfo, layout: Layout | None = None) -> list[str]:
    """The aliases in the order to migrate them: the order Django's test runner creates their
    databases (``TEST["DEPENDENCIES"]`` first: every alias depends on ``default`` unless it says
    otherwise, then settings order), except that an alias whose search_path reaches another
    alias's django_migrations goes before that one (``build_order``).

    Migrating in this order reproduces where each alias put what later ones find through their
    search_path (``django_migrations``, the PostGIS extension, content types). ``layout`` (a
    database's ``live_layout``) says where each alias finds things; the declared one for the rest."""
    preferred = _test_runner_order(project)
    found = {**declared_layout(project, preferred), **(layout or {})}
    together = [database.aliases for database in physical(project)]
    return build_order(preferred, found, together)[0]


def _test_runner_order(project: ProjectInfo) -> list[str]:
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
