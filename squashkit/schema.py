"""What a database's schema is, read from the catalogs, and how two schemas differ.

A squash fakes new migrations against an existing database: ``migrate --fake`` believes
whatever it is told. Before trusting it, build what the migrations create in a scratch
database and compare it with the real one, object by object:

- ``snapshot(conn)`` reads tables, columns, constraints, indexes, sequences, views,
  triggers, functions and extensions from the catalogs, each by its definition
  (``pg_get_constraintdef``, ``pg_get_indexdef``, ...), not from ``pg_dump --schema-only``
  text, whose column order, object order and comments would differ for no reason;
- ``compare(expected, actual)`` matches objects by definition first, so a primary key or an
  index that still carries a name from before a rename is a *cosmetic* difference, and only
  what changes how the database behaves is a *real* one;
- ``scratch_database`` / ``migrations_schema`` / ``drift`` build the expected side with a
  real ``manage.py migrate`` in a scratch database that is always dropped afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field

from squashkit import foundation, postgres
from squashkit.errors import BadInput, OperationFailed
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy

# django_migrations records history, not schema: a squashed or faked database differs there by design.
DEFAULT_EXCLUDE = ("django_migrations",)
SCRATCH_SUFFIX = "__squashkit_scratch"
OLD_BUILD_SUFFIX = "__squashkit_oldbuild"  # a squash's build of the old history, beside its scratch (drift.py)
FRESH_SUFFIX = "__squashkit_freshbuild"  # the new files with their data migration, built again from nothing (freshproof.py)
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer database names


class Column(BaseModel):
    """One column, by what it holds; its position in the table is not part of it."""

    type: str = Field(description="format_type(), e.g. 'numeric(10,2)', 'character varying(200)'.")
    not_null: bool
    default: str | None = Field(
        None,
        description="pg_get_expr() of the default (of the generation expression for a generated column); "
        "a serial's nextval() of its own sequence is written 'nextval(<owned sequence>)', whatever the sequence is named.",
    )
    identity: Literal["", "always", "by default"] = Field("", description="GENERATED ... AS IDENTITY, if it is one.")
    generated: bool = Field(False, description="GENERATED ALWAYS AS (default) STORED.")
    collation: str | None = Field(None, description="The column's collation when it is not its type's default.")

    def definition(self) -> str:
        parts = [self.type]
        if self.collation:
            parts.append(f"COLLATE {self.collation}")
        if self.not_null:
            parts.append("NOT NULL")
        if self.identity:
            parts.append(f"GENERATED {self.identity.upper()} AS IDENTITY")
        if self.default is not None:
            parts.append(f"GENERATED ALWAYS AS ({self.default}) STORED" if self.generated else f"DEFAULT {self.default}")
        return " ".join(parts)


class Table(BaseModel):
    kind: str = Field("table", description="'table', 'partitioned table' or 'unlogged table'.")
    columns: dict[str, Column] = Field(description="By column name: the order of columns does not matter.")


class Constraint(BaseModel):
    table: str
    name: str
    type: str = Field(description="'primary key', 'unique', 'foreign key', 'check', 'exclusion' or 'trigger'.")
    definition: str = Field(description="pg_get_constraintdef(), e.g. 'PRIMARY KEY (id)'.")


class Index(BaseModel):
    """An index that no constraint owns (those of primary keys and unique constraints are the constraint's)."""

    table: str
    name: str
    definition: str = Field(description="pg_get_indexdef() without the index's own name: 'CREATE INDEX ON public.t USING ...'.")


class Sequence(BaseModel):
    name: str
    definition: str = Field(description="Type, start, increment, bounds, cache and cycle.")
    owned_by: str | None = Field(None, description="table.column of the serial or identity column owning it.")


class View(BaseModel):
    kind: Literal["view", "materialized view"]
    definition: str = Field(description="pg_get_viewdef(oid, true).")


class Trigger(BaseModel):
    table: str
    name: str
    definition: str = Field(description="pg_get_triggerdef() without the trigger's own name.")


class Schema(BaseModel):
    """A database's schema, by definition. Names outside ``public`` are written schema.name."""

    tables: dict[str, Table] = Field(default_factory=dict)
    constraints: list[Constraint] = Field(default_factory=list)
    indexes: list[Index] = Field(default_factory=list)
    sequences: list[Sequence] = Field(default_factory=list)
    views: dict[str, View] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=list)
    functions: dict[str, str] = Field(
        default_factory=dict, description="schema.name(identity arguments) -> pg_get_functiondef()."
    )
    extensions: dict[str, str] = Field(default_factory=dict, description="name -> version (the version is not compared).")
    round_trips: dict[str, str] = Field(
        default_factory=dict,
        description="Index, check and view definition -> the same definition read back after PostgreSQL parsed it again, "
                    "where they differ: what a pg_dump and pg_restore of it shows (an IN list of varchar becomes another "
                    "but equal ARRAY cast).",
    )


# --- reading a schema from the catalogs -----------------------------------------------------------

# Relations in user schemas that are not members of an extension (PostGIS's spatial_ref_sys, ...).
_USER_RELATIONS = """
WITH rel AS (
  SELECT c.oid, c.relname, c.relkind, c.relpersistence, n.nspname,
         CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END AS qualified
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend e
                    WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
)
"""

_TABLES = sql.SQL(_USER_RELATIONS) + sql.SQL("SELECT qualified, relkind, relpersistence FROM rel WHERE relkind IN ('r', 'p')")

_COLUMNS = sql.SQL(_USER_RELATIONS) + sql.SQL("""
SELECT rel.qualified, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
       (SELECT s.oid::regclass::text FROM pg_depend o JOIN pg_class s ON s.oid = o.objid AND s.relkind = 'S'
        WHERE o.classid = 'pg_class'::regclass AND o.refclassid = 'pg_class'::regclass
          AND o.refobjid = a.attrelid AND o.refobjsubid = a.attnum AND o.deptype IN ('a', 'i') LIMIT 1)
FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE rel.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
""")

_CONSTRAINTS = sql.SQL(_USER_RELATIONS) + sql.SQL("""
SELECT rel.qualified, k.conname, k.contype, pg_get_constraintdef(k.oid)
FROM rel JOIN pg_constraint k ON k.conrelid = rel.oid
""")

# The indexes behind primary keys, unique and exclusion constraints are compared as those constraints.
_INDEXES = sql.SQL(_USER_RELATIONS) + sql.SQL("""
SELECT rel.qualified, ic.relname, quote_ident(ic.relname), pg_get_indexdef(i.indexrelid)
FROM rel JOIN pg_index i ON i.indrelid = rel.oid JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k
                  WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
""")

_SEQUENCES = sql.SQL(_USER_RELATIONS) + sql.SQL("""
SELECT rel.qualified, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
       (SELECT CASE WHEN tn.nspname = 'public' THEN t.relname ELSE tn.nspname || '.' || t.relname END || '.' || a.attname
        FROM pg_depend o JOIN pg_class t ON t.oid = o.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = o.refobjid AND a.attnum = o.refobjsubid
        WHERE o.classid = 'pg_class'::regclass AND o.objid = rel.oid AND o.refclassid = 'pg_class'::regclass
          AND o.deptype IN ('a', 'i') LIMIT 1)
FROM rel JOIN pg_sequence s ON s.seqrelid = rel.oid
""")

_VIEWS = sql.SQL(_USER_RELATIONS) + sql.SQL("SELECT qualified, relkind, pg_get_viewdef(oid, true) FROM rel WHERE relkind IN ('v', 'm')")

# Internal triggers implement foreign keys: the constraints already say everything about them.
_TRIGGERS = sql.SQL(_USER_RELATIONS) + sql.SQL("""
SELECT rel.qualified, g.tgname, quote_ident(g.tgname), pg_get_triggerdef(g.oid)
       || CASE g.tgenabled WHEN 'D' THEN ' (disabled)' WHEN 'R' THEN ' (enabled on replicas only)'
                           WHEN 'A' THEN ' (enabled always)' ELSE '' END
FROM rel JOIN pg_trigger g ON g.tgrelid = rel.oid WHERE NOT g.tgisinternal
""")

_FUNCTIONS = """
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_depend e
                  WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
"""

_CONSTRAINT_TYPES = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion", "t": "trigger"}
_TABLE_KINDS = {("r", "p"): "table", ("r", "u"): "unlogged table", ("p", "p"): "partitioned table"}
_IDENTITY = {"": "", "a": "always", "d": "by default"}


def snapshot(conn: psycopg.Connection, *, exclude: Collection[str] = DEFAULT_EXCLUDE) -> Schema:
    """The schema of ``conn``'s database, without the tables in ``exclude`` and what belongs to them."""
    schema = Schema()
    skip = _Excluded(exclude)
    for name, relkind, persistence in conn.execute(_TABLES).fetchall():
        if name not in skip:
            schema.tables[name] = Table(kind=_TABLE_KINDS.get((relkind, persistence), "table"), columns={})
    for table, column, type_, not_null, default, identity, generated, collation, own_sequence in conn.execute(_COLUMNS):
        if table in schema.tables:
            schema.tables[table].columns[column] = Column(
                type=type_, not_null=not_null, default=_own_nextval(default, own_sequence),
                identity=_IDENTITY.get(identity, ""), generated=bool(generated), collation=collation,
            )
    for table, name, contype, definition in conn.execute(_CONSTRAINTS):
        if table not in skip:
            schema.constraints.append(Constraint(table=table, name=name, type=_CONSTRAINT_TYPES.get(contype, contype), definition=definition))
    for table, name, quoted, definition in conn.execute(_INDEXES):
        if table not in skip:
            schema.indexes.append(Index(table=table, name=name, definition=_without_name(definition, "INDEX", quoted)))
    for name, type_, start, increment, minimum, maximum, cache, cycle, owned_by in conn.execute(_SEQUENCES):
        if owned_by is None or owned_by.rsplit(".", 1)[0] not in skip:
            definition = f"{type_} START {start} INCREMENT {increment} MINVALUE {minimum} MAXVALUE {maximum} CACHE {cache}"
            schema.sequences.append(Sequence(name=name, definition=definition + (" CYCLE" if cycle else ""), owned_by=owned_by))
    for name, relkind, definition in conn.execute(_VIEWS):
        if name not in skip:
            schema.views[name] = View(kind="view" if relkind == "v" else "materialized view", definition=definition)
    for table, name, quoted, definition in conn.execute(_TRIGGERS):
        if table not in skip:
            schema.triggers.append(Trigger(table=table, name=name, definition=_without_name(definition, "TRIGGER", quoted)))
    schema.functions = dict(conn.execute(_FUNCTIONS).fetchall())
    schema.extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
    return schema


class _Excluded(set):
    """``exclude`` names tables in public (``django_migrations``) and ``schema.name`` elsewhere; a bare
    name counts in every schema: each alias keeps its django_migrations in its own schema."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and super().__contains__(name.rsplit(".", 1)[-1]))


def _own_nextval(default: str | None, own_sequence: str | None) -> str | None:
    """A serial's default names its sequence, whose name a table rename leaves behind: compare it as 'its own'."""
    if default is None or own_sequence is None:
        return default
    return default.replace(f"nextval('{own_sequence}'::regclass)", "nextval(<owned sequence>)")


def _without_name(definition: str, keyword: str, quoted_name: str) -> str:
    """'CREATE INDEX name ON ...' -> 'CREATE INDEX ON ...': the name is compared apart from the definition."""
    return definition.replace(f"{keyword} {quoted_name} ", f"{keyword} ", 1)


# --- comparing two schemas ------------------------------------------------------------------------


class Difference(BaseModel):
    """One object that differs between the schema the migrations build (expected) and the database (actual)."""

    kind: str = Field(description="'table', 'column', 'primary key', 'index', 'sequence', 'view', ...")
    name: str = Field(description="The object's name where the migrations build it (else in the database).")
    table: str | None = Field(None, description="The table it belongs to, if any.")
    expected: str | None = Field(description="Its definition as the migrations build it; None: not built by them.")
    actual: str | None = Field(description="Its definition in the database; None: missing there.")
    actual_name: str | None = Field(None, description="For a cosmetic difference: the name the database gives it.")

    @property
    def cosmetic(self) -> bool:
        return self.actual_name is not None

    def _label(self) -> str:
        """'catalog_product.price' for a column (it reads like a table definition), else its kind, name and table."""
        if self.kind == "column":
            return self.name
        on = f" on {self.table}" if self.table and self.kind != "table" else ""
        return f"{self.kind} {self.name}{on}:"

    def lines(self) -> list[str]:
        label = self._label()
        if self.cosmetic:
            return [f"  {label[:-1]} is named {self.actual_name} here: {self.expected}"]
        prefix = "column " if self.kind == "column" else ""
        plain = {"table", ""}  # a plain table's or an extension's definition says nothing more
        if self.actual is None:
            return [f"missing {prefix}{label} {'' if self.expected in plain else self.expected}".rstrip(": ")]
        if self.expected is None:
            return [f"extra {prefix}{label} {'' if self.actual in plain else self.actual}".rstrip(": ")]
        return [f"- {label} {self.expected}  (expected)", f"+ {label} {self.actual}  (actual)"]

    def summary(self) -> str:
        """A few words for a one-line report."""
        on = f" on {self.table}" if self.table and self.kind != "column" else ""
        if self.cosmetic:
            return f"{self.actual_name} for {self.name}"
        if self.actual is None:
            return f"missing {self.kind} {self.name}{on}"
        if self.expected is None:
            return f"extra {self.kind} {self.name}{on}"
        return f"{self.kind} {self.name}{on} is '{self.actual}', the migrations make '{self.expected}'"


class SchemaDiff(BaseModel):
    """What differs, real differences apart from the names old renames left behind."""

    real: list[Difference] = Field(default_factory=list, description="Differences in behaviour: these make a fake unsafe.")
    cosmetic: list[Difference] = Field(
        default_factory=list, description="The same definition under another name (a rename's leftover): harmless."
    )

    @property
    def matches(self) -> bool:
        return not self.real

    def render(self) -> str:
        lines: list[str] = []
        if self.real:
            lines.append(f"{len(self.real)} real differences (- what the migrations build, + what the database has):")
            lines += [line for difference in self.real for line in difference.lines()]
        else:
            lines.append("the schemas match")
        if self.cosmetic:
            lines.append(f"cosmetic, the same definition under another name ({len(self.cosmetic)}):")
            lines += [line for difference in self.cosmetic for line in difference.lines()]
        return "\n".join(lines)

    def summary(self, limit: int = 5) -> str:
        """The real differences on one line, at most ``limit`` of them named."""
        named = "; ".join(difference.summary() for difference in self.real[:limit])
        more = f"; and {len(self.real) - limit} more" if len(self.real) > limit else ""
        return f"{len(self.real)} differences: {named}{more}"


class _Item(BaseModel):
    """Any schema object flattened for matching: what it is, where, what it is called, what it does."""

    kind: str
    scope: str = Field(description="Where a same definition means the same object: its table, its owning column.")
    name: str
    definition: str
    table: str | None = None
    renamable: bool = Field(description="Its name is not part of what it does (an index, a constraint, an owned sequence).")


def _items(schema: Schema) -> list[_Item]:
    items = [_Item(kind="table", scope="", name=name, definition=t.kind, renamable=False) for name, t in schema.tables.items()]
    for table_name, table in schema.tables.items():
        for column_name, column in table.columns.items():
            items.append(_Item(kind="column", scope=table_name, name=f"{table_name}.{column_name}",
                               definition=column.definition(), table=table_name, renamable=False))
    for c in schema.constraints:
        items.append(_Item(kind=c.type, scope=c.table, name=c.name, definition=c.definition, table=c.table, renamable=True))
    for i in schema.indexes:
        items.append(_Item(kind="index", scope=i.table, name=i.name, definition=i.definition, table=i.table, renamable=True))
    for s in schema.sequences:
        owner = f" OWNED BY {s.owned_by}" if s.owned_by else ""
        # A free sequence is used by its name (nextval('name')); an owned one only through its column.
        items.append(_Item(kind="sequence", scope=s.owned_by or "", name=s.name, definition=s.definition + owner,
                           table=s.owned_by.rsplit(".", 1)[0] if s.owned_by else None, renamable=s.owned_by is not None))
    for name, view in schema.views.items():
        items.append(_Item(kind=view.kind, scope="", name=name, definition=view.definition, renamable=False))
    for t in schema.triggers:
        items.append(_Item(kind="trigger", scope=t.table, name=t.name, definition=t.definition, table=t.table, renamable=True))
    for signature, definition in schema.functions.items():
        items.append(_Item(kind="function", scope="", name=signature, definition=definition, renamable=False))
    for name in schema.extensions:
        items.append(_Item(kind="extension", scope="", name=name, definition="", renamable=False))
    return items


def _as_restored(left: list[_Item], right: list[_Item], round_trips: dict[str, str]) -> list[_Item]:
    """Expected items whose definition the database holds only in its re-parsed form (the database
    was restored from a dump, the migrations ran directly) take that form: the same object."""
    if not round_trips:
        return left
    held = {(i.kind, i.scope, i.definition) for i in right}
    out = []
    for item in left:
        again = round_trips.get(item.definition)
        if again is not None and (item.kind, item.scope, item.definition) not in held and (item.kind, item.scope, again) in held:
            item = item.model_copy(update={"definition": again})
        out.append(item)
    return out


def compare(expected: Schema, actual: Schema) -> SchemaDiff:
    """How ``actual`` (the database) differs from ``expected`` (what the migrations build).

    Objects are matched by name and definition, then by definition alone where the name
    does not matter (a leftover of a rename: cosmetic), then by name alone (a real
    difference in definition); what is left is missing or extra. Objects of a missing or
    extra table are not listed again.
    """
    right = _items(actual)
    left = _as_restored(_items(expected), right, expected.round_trips)
    diff = SchemaDiff()
    # 1. the same object
    left, right = _pair(left, right, lambda i: (i.kind, i.scope, i.name, i.definition), lambda a, b: None)
    # 2. the same definition under another name
    left, right = _pair(
        [i for i in left if i.renamable], [i for i in right if i.renamable],
        lambda i: (i.kind, i.scope, i.definition),
        lambda a, b: diff.cosmetic.append(Difference(kind=a.kind, name=a.name, table=a.table, expected=a.definition,
                                                     actual=b.definition, actual_name=b.name)),
        keep_left=[i for i in left if not i.renamable], keep_right=[i for i in right if not i.renamable],
    )
    # 3. the same name, another definition
    left, right = _pair(
        left, right, lambda i: (i.kind if i.kind not in ("view", "materialized view") else "view", i.name),
        lambda a, b: diff.real.append(Difference(kind=a.kind, name=a.name, table=a.table, expected=a.definition, actual=b.definition)),
    )
    # 4. only on one side
    gone = {i.name for i in left + right if i.kind == "table"}
    for item in left:
        if item.kind == "table" or item.table not in gone:
            diff.real.append(Difference(kind=item.kind, name=item.name, table=item.table, expected=item.definition, actual=None))
    for item in right:
        if item.kind == "table" or item.table not in gone:
            diff.real.append(Difference(kind=item.kind, name=item.name, table=item.table, expected=None, actual=item.definition))
    diff.real.sort(key=lambda d: (d.table or d.name, d.kind != "table", d.kind, d.name))
    diff.cosmetic.sort(key=lambda d: (d.table or d.name, d.kind, d.name))
    return diff


def _pair(
    left: list[_Item],
    right: list[_Item],
    key: Callable[[_Item], tuple],
    on_pair: Callable[[_Item, _Item], None],
    *,
    keep_left: Iterable[_Item] = (),
    keep_right: Iterable[_Item] = (),
) -> tuple[list[_Item], list[_Item]]:
    """Pair items of both sides with equal keys (each used once); return the unpaired ones plus the kept."""
    waiting: dict = {}
    for item in sorted(right, key=lambda i: i.name):
        waiting.setdefault(key(item), []).append(item)
    unpaired_left = []
    for item in sorted(left, key=lambda i: i.name):
        candidates = waiting.get(key(item))
        if candidates:
            on_pair(item, candidates.pop(0))
        else:
            unpaired_left.append(item)
    unpaired_right = [item for items in waiting.values() for item in items]
    return [*unpaired_left, *keep_left], [*unpaired_right, *keep_right]


# --- the schema the migrations build --------------------------------------------------------------


def scratch_name(dbname: str, suffix: str = SCRATCH_SUFFIX) -> str:
    """``<dbname>__squashkit_scratch``, shortened with a hash of ``dbname`` to fit 63 bytes.

    PostgreSQL would truncate a longer name silently, and two long names could then collide.
    """
    name = dbname + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    tag = "_" + hashlib.sha256(dbname.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(tag)
    head = dbname.encode()[:room].decode(errors="ignore")  # never cut a character in half
    return head + tag + suffix


@contextlib.contextmanager
def scratch_database(
    params: ConnectionParams,
    *,
    admin: ConnectionParams | None = None,
    extensions: Iterable[str] = (),
    copy_extensions: bool = True,
    suffix: str = SCRATCH_SUFFIX,
    migration_folders: Iterable[Path | None] = (),
) -> Iterator[str]:
    """An empty database like ``params``' one (encoding, locale, its foundation: settings, schemas,
    extensions in their schemas and their rows), dropped whatever happens.

    It is owned by ``params``' user, so ``manage.py migrate`` works in it as in the real one;
    created through ``admin`` when that user may not create databases or an extension. A
    database already holding the name is refused, never reused or dropped: it may be a
    leftover of a killed run, or someone's. ``copy_extensions=False`` creates only
    ``extensions``: then a migration that needs an extension it does not create fails, as it
    would on a fresh database.
    """
    name = scratch_name(params.dbname, suffix)
    with postgres.connect(params) as conn:
        locale = postgres.database_locale(conn, params.dbname)
        owner, may_create = conn.execute(
            "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        found = foundation.read(conn)
    if not copy_extensions:
        found = found.model_copy(update={"extensions": [], "config_rows": []})
    # The rows a migration writes itself (INSERT INTO spatial_ref_sys) are its own to write.
    found = found.without_rows_of(foundation.tables_written_by(migration_folders, found))
    if not may_create and admin is None:
        raise BadInput(f"{owner} may not create the scratch database {name}: ALTER ROLE {owner} CREATEDB, or configure an admin connection")
    creator = params if may_create else admin
    refusal = f"database {name} already exists: a leftover of an interrupted squashkit run? Check it is not in use, then DROP DATABASE {name}"
    with postgres.connect(creator) as conn:
        if postgres.database_exists(conn, name):
            raise BadInput(refusal)
        try:
            conn.execute(postgres.create_database_statement(name, owner, *locale))
        except psycopg.errors.DuplicateDatabase:  # created by someone else since we looked
            raise BadInput(refusal) from None
        except psycopg.Error as exc:
            raise OperationFailed(f"creating the scratch database {name} failed: {_first_line(exc)}") from None
    try:
        foundation.lay(params.with_dbname(name), admin, found, extra_extensions=sorted(extensions))
        yield name
    finally:
        with postgres.connect(creator) as conn:
            postgres.drop_database(conn, name)


def migrations_schema(
    manage: ManagePy,
    alias: str,
    params: ConnectionParams,
    *,
    admin: ConnectionParams | None = None,
    extensions: Iterable[str] = (),
    copy_extensions: bool = True,
    exclude: Collection[str] = DEFAULT_EXCLUDE,
    suffix: str = SCRATCH_SUFFIX,
) -> Schema:
    """The schema a real ``manage.py migrate --database alias`` builds from the migration files on disk.

    Built in a scratch database like ``params``' one, as Django's test runner builds its test
    database, then read and dropped.
    """
    with scratch_database(params, admin=admin, extensions=extensions, copy_extensions=copy_extensions, suffix=suffix) as name:
        manage.on({alias: name}).run(
            "migrate", "--database", alias, "--noinput", "-v", "0", what=f"migrate into the scratch database {name}"
        )
        with postgres.connect(params.with_dbname(name)) as conn:
            built = snapshot(conn, exclude=exclude)
            built.round_trips = round_trips(conn, built)
            return built


_ROUND_TRIP = "squashkit_round_trip"


def round_trips(conn: psycopg.Connection, built: Schema) -> dict[str, str]:
    """Each index, check constraint and view of ``built`` created again from its own definition, as
    pg_restore creates it, and read back: PostgreSQL does not always print what it parsed the way it
    prints it after parsing that text again. Each in a transaction rolled back (in the scratch database)."""
    wanted = [("index", i.definition, i.table) for i in built.indexes]
    wanted += [("check", c.definition, c.table) for c in built.constraints if c.type == "check"]
    wanted += [("view", v.definition, name) for name, v in built.views.items() if v.kind == "view"]
    found: dict[str, str] = {}
    for kind, definition, table in wanted:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(_round_trip_create(kind, definition, table))
                row = conn.execute(_round_trip_read(kind)).fetchone()
        except psycopg.Error:
            continue
        if row and row[0] is not None:
            again = _without_name(row[0], "INDEX", _ROUND_TRIP) if kind == "index" else row[0]
            if again != definition:
                found[definition] = again
    return found


def _round_trip_create(kind: str, definition: str, table: str) -> sql.Composed:
    if kind == "index":
        return sql.Composed([sql.SQL(_braces(definition).replace(" INDEX ON ", " INDEX {} ON ", 1)).format(sql.Identifier(_ROUND_TRIP))])
    if kind == "check":
        return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} " + _braces(definition)).format(
            sql.Identifier(*table.split(".", 1)), sql.Identifier(_ROUND_TRIP))
    return sql.SQL("CREATE VIEW {} AS " + _braces(definition.rstrip().rstrip(";"))).format(sql.Identifier(_ROUND_TRIP))


def _round_trip_read(kind: str) -> sql.Composed:
    query = {
        "index": "SELECT pg_get_indexdef(oid) FROM pg_class WHERE relname = {} AND relkind = 'i'",
        "check": "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = {}",
        "view": "SELECT pg_get_viewdef({}::regclass, true)",
    }[kind]
    return sql.SQL(query).format(_ROUND_TRIP)


def _braces(text: str) -> str:
    """SQL text made safe for ``sql.SQL(...).format``: an array literal's braces are not placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


def drift(
    manage: ManagePy,
    alias: str,
    params: ConnectionParams,
    *,
    admin: ConnectionParams | None = None,
    extensions: Iterable[str] = (),
    copy_extensions: bool = True,
    exclude: Collection[str] = DEFAULT_EXCLUDE,
) -> SchemaDiff:
    """How the database ``params`` differs from what its migration files build."""
    expected = migrations_schema(
        manage, alias, params, admin=admin, extensions=extensions, copy_extensions=copy_extensions, exclude=exclude
    )
    with postgres.connect(params) as conn:
        actual = snapshot(conn, exclude=exclude)
    return compare(expected, actual)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
