"""``recreate`` where the database may not be dropped: the project's schemas rebuilt inside it.

The seed's CI job drops and recreates its schemas (``DROP SCHEMA ... CASCADE``) because its user
may not drop the database. Dropping first would leave nothing to go back to; so each of the
project's schemas is renamed away (``<schema>__squashkit_prev``) and an empty one takes its
name, in one transaction. migrate and the fixtures fill the new ones; only once they are verified
are the old ones dropped. A failure drops the new ones and renames the old ones back. The rest
of the database (``public``, other schemas, the extensions) is not touched.

The project's schemas are those its aliases create their tables in: the first schema of each
alias's search_path, and every schema a ``db_table`` names (``'data"."places_site'``).
"""

from __future__ import annotations

from psycopg import sql

from squashkit import postgres
from squashkit.databases import Database, search_path
from squashkit.errors import BadInput
from squashkit.postgres import ConnectionParams
from squashkit.project import ProjectInfo

PREVIOUS = "__squashkit_prev"


def project_schemas(project: ProjectInfo, database: Database) -> list[str]:
    """The schemas the aliases of ``database`` create their tables in (public aside), in order."""
    found = []
    for alias in database.aliases:
        path = search_path(project.connection(alias))
        if path and path[0] != "public":
            found.append(path[0])
        for app in project.apps:
            for model in app.models:
                if alias in model.dumped_on and '"."' in model.db_table:
                    found.append(model.db_table.split('"."', 1)[0])
    return list(dict.fromkeys(found))


def require_replaceable(project: ProjectInfo, database: Database, params: ConnectionParams) -> list[str]:
    """The schemas ``replace`` will rebuild; refused before anything changes when an alias keeps its
    tables in public (rebuilding public would take the extensions and everything else with it), an
    extension lives in one of them, or a renamed copy of one is left over."""
    for alias in database.aliases:
        path = search_path(project.connection(alias))
        if not path or path[0] == "public":
            raise BadInput(
                f"recreate = \"schemas\" rebuilds the project's schemas, but {alias} creates its tables in public: give it a "
                f"schema of its own (OPTIONS options -csearch_path=<schema>,public) or let recreate replace the database "
                "(nothing was changed)")
    schemas = project_schemas(project, database)
    with postgres.connect(params) as conn:
        extensions = conn.execute(
            "SELECT e.extname, n.nspname, e.extrelocatable FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace").fetchall()
        existing = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
    inside = [(name, schema, relocatable) for name, schema, relocatable in extensions if schema in schemas]
    if inside:
        name, schema, relocatable = inside[0]
        # PostGIS cannot be moved: GeoDjango creates it in the first schema of the search_path when
        # that schema exists before the first migrate.
        way = (f"move it (ALTER EXTENSION {name} SET SCHEMA public)" if relocatable else
               f"{name} cannot be moved (no SET SCHEMA): create it in public before the first migrate")
        raise BadInput(f"the extension {name} (in {schema}) lives in a schema recreate rebuilds: {way}, or let recreate "
                       "replace the database (recreate = \"database\"; nothing was changed)")
    left = [name + PREVIOUS for name in schemas if name + PREVIOUS in existing]
    if left:
        raise BadInput(f"schema {left[0]} is left over from an earlier recreate: run squashkit resume, or drop it "
                       "(nothing was changed)")
    return schemas


def replace(params: ConnectionParams, schemas: list[str]) -> None:
    """In one transaction, each schema becomes ``<schema>__squashkit_prev`` and an empty one takes its name."""
    with postgres.connect(params) as conn, conn.transaction():
        existing = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        for name in schemas:
            if name in existing:
                conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(name + PREVIOUS)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


def empty(params: ConnectionParams, schemas: list[str]) -> None:
    """The new schemas emptied again (what a first migrate left in them), in one transaction."""
    with postgres.connect(params) as conn, conn.transaction():
        for name in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


def drop_previous(params: ConnectionParams, schemas: list[str]) -> None:
    """The last step, once the new schemas are verified: the renamed old ones go, in one transaction."""
    with postgres.connect(params) as conn, conn.transaction():
        for name in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name + PREVIOUS)))


def put_back(params: ConnectionParams, schemas: list[str]) -> list[str]:
    """The undo of ``replace``, wherever it stopped, in one transaction: the new schemas dropped, the
    renamed ones given their names back. Returns the schemas put back."""
    back = []
    with postgres.connect(params) as conn, conn.transaction():
        existing = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        for name in schemas:
            if name + PREVIOUS not in existing:
                continue  # never renamed (or already back)
            if name in existing:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(name + PREVIOUS), sql.Identifier(name)))
            back.append(name)
    return back

