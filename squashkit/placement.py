"""Where each model's table is, held against where its alias puts it (``check``).

``CREATE TABLE`` goes to the first schema of the connection's search_path that exists at that
moment. Run ``migrate --database data`` (``-csearch_path=data,public``) before schema ``data``
exists and its tables land in ``public``; create the schema later and every new table lands in
``data``, while the old ones stay in ``public``, found through the path. The project works, until
an index, a foreign key or a fresh database built from the migrations puts things where the old
tables are not (the seed's "indexes break when using the work around"). A table whose
``db_table`` names its schema (``'data"."places_site'``) is where it says, or nowhere.
"""

from __future__ import annotations

import psycopg

from squashkit.postgres import django_quoted
from squashkit.project import ProjectInfo


def misplaced(project: ProjectInfo, alias: str, conn: psycopg.Connection) -> list[str]:
    """One line per table of a model that migrates on ``alias`` found in another schema than the one
    its alias creates it in now (``conn`` is the alias's own connection, its search_path in force)."""
    path = conn.execute("SELECT current_schemas(false)").fetchone()[0]
    first = path[0] if path else None
    found = []
    for app in project.apps:
        if alias not in app.aliases:
            continue
        for model in app.models:
            if not model.managed or model.proxy or alias not in model.dumped_on:
                continue
            for db_table in (model.db_table, *model.m2m_tables):
                named = db_table.split('"."', 1)[0] if '"."' in db_table else None
                row = conn.execute(
                    """SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.oid = to_regclass(%s)""", [django_quoted(db_table)]).fetchone()
                if row is None:
                    continue  # no table at all: the schema comparison says so
                expected = named or first
                if expected and row[0] != expected:
                    table = db_table.split('"."', 1)[-1]
                    why = f"its db_table names {named}" if named else f"{alias}'s search_path ({', '.join(path)}) creates it in {first}"
                    found.append(f"{table} ({model.label}) is in schema {row[0]}, but {why}")
    return found


def report(project: ProjectInfo, alias: str, conn: psycopg.Connection, add) -> None:
    """``check``'s line for ``alias``: warn with the misplaced tables, silent when the alias has no models."""
    if not any(alias in app.aliases and app.models for app in project.apps):
        return
    wrong = misplaced(project, alias, conn)
    if wrong:
        add(f"schemas ({alias})", "warn", (
            f"{len(wrong)} table(s) not where {alias} creates them: " + "; ".join(wrong[:5]) + ("; ..." if len(wrong) > 5 else "")
            + ". They were made before their schema existed (or moved): a database built from the migrations puts them "
            "elsewhere; move them (ALTER TABLE ... SET SCHEMA) or create the schema before the first migrate"))
    else:
        add(f"schemas ({alias})", "ok", f"every table of the models on {alias} is in the schema its search_path or db_table gives")
