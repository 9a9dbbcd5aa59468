"""What the SQL of a RunSQL does: the objects it creates and drops, and whether it touches data.

No full SQL parser: migrations hold DDL whose first words say what it is (``CREATE [OR
REPLACE] VIEW name``, ``CREATE TRIGGER name ... ON table``). Anything else is reported as
``unknown``, so a caller can refuse to guess rather than carry or drop it silently.
"""

from __future__ import annotations

import re
from typing import Literal

import psycopg
from pydantic import BaseModel, Field

IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
QNAME = rf"{IDENT}(?:\s*\.\s*{IDENT})?"
_IF_NOT_EXISTS = r"(?:IF\s+NOT\s+EXISTS\s+)?"

ObjectKind = Literal["relation", "function", "trigger", "type", "schema", "extension", "constraint"]

# (pattern at the start of a statement, kind of object, what the SQL calls it); group "name",
# optionally "table" (a trigger's, an index's) and "materialized".
_CREATES: list[tuple[re.Pattern, ObjectKind, str]] = [
    (rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY)\s+)?(?:RECURSIVE\s+)?(?P<materialized>MATERIALIZED\s+)?VIEW\s+{_IF_NOT_EXISTS}(?P<name>{QNAME})", "relation", "view"),
    (rf"CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+{_IF_NOT_EXISTS}(?P<name>{QNAME})", "relation", "table"),
    (rf"CREATE\s+(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?SEQUENCE\s+{_IF_NOT_EXISTS}(?P<name>{QNAME})", "relation", "sequence"),
    (rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?{_IF_NOT_EXISTS}(?P<name>{IDENT})\s+ON\s+(?:ONLY\s+)?(?P<table>{QNAME})", "relation", "index"),
    (rf"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?P<name>{QNAME})\s*\(", "function", "function"),
    (rf"CREATE\s+(?:OR\s+REPLACE\s+)?PROCEDURE\s+(?P<name>{QNAME})\s*\(", "function", "procedure"),
    (rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+(?P<name>{IDENT})\s.*?\bON\s+(?P<table>{QNAME})", "trigger", "trigger"),
    (rf"CREATE\s+TYPE\s+(?P<name>{QNAME})", "type", "type"),
    (rf"CREATE\s+SCHEMA\s+{_IF_NOT_EXISTS}(?P<name>{IDENT})", "schema", "schema"),
    (rf"CREATE\s+EXTENSION\s+{_IF_NOT_EXISTS}(?P<name>{IDENT})", "extension", "extension"),
    (rf"ALTER\s+TABLE\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?(?P<table>{QNAME})\s+ADD\s+CONSTRAINT\s+(?P<name>{IDENT})", "constraint", "constraint"),
]
_CREATES = [(re.compile(pattern, re.IGNORECASE | re.DOTALL), kind, noun) for pattern, kind, noun in _CREATES]

_DROP = re.compile(
    r"DROP\s+(?P<what>MATERIALIZED\s+VIEW|VIEW|TABLE|SEQUENCE|INDEX|FUNCTION|PROCEDURE|TRIGGER|TYPE|SCHEMA|EXTENSION)\s+"
    rf"(?:CONCURRENTLY\s+)?(?P<if_exists>IF\s+EXISTS\s+)?(?P<name>{QNAME})(?:\s*\([^)]*\))?(?:\s+ON\s+(?P<table>{QNAME}))?",
    re.IGNORECASE,
)
_DROP_KINDS: dict[str, ObjectKind] = {
    "MATERIALIZED VIEW": "relation", "VIEW": "relation", "TABLE": "relation", "SEQUENCE": "relation", "INDEX": "relation",
    "FUNCTION": "function", "PROCEDURE": "function", "TRIGGER": "trigger", "TYPE": "type", "SCHEMA": "schema",
    "EXTENSION": "extension",
}
# Statements that change rows: a database built from migrations has none of the rows they changed.
_DATA = re.compile(r"(?:WITH\b.*?\b)?(INSERT|UPDATE|DELETE|TRUNCATE|COPY|MERGE)\b", re.IGNORECASE | re.DOTALL)
# The table a plain INSERT, UPDATE or DELETE changes (not behind a WITH: its target is not the first name).
_DATA_TABLE = re.compile(rf"(?:INSERT\s+INTO|UPDATE(?:\s+ONLY)?|DELETE\s+FROM(?:\s+ONLY)?)\s+(?P<table>{QNAME})", re.IGNORECASE)


class SqlObject(BaseModel):
    """A database object a statement names."""

    kind: ObjectKind = Field(description="Which catalog holds it (relation: pg_class).")
    noun: str = Field(description="What the SQL calls it: view, materialized view, index, function, trigger, ...")
    name: str = Field(description="As written in the SQL, quotes and schema included.")
    table: str | None = Field(None, description="The table a trigger, index or constraint belongs to.")

    def describe(self) -> str:
        """``view catalog_productstats``, ``trigger t on catalog_tag``: the same words for its CREATE and its DROP."""
        return f"{self.noun} {self.name}" + (f" on {self.table}" if self.table and self.kind in ("trigger", "constraint") else "")


class Statement(BaseModel):
    """One SQL statement and what it does."""

    text: str
    action: Literal["create", "drop", "data", "unknown"]
    object: SqlObject | None = None
    if_exists: bool = Field(False, description="A DROP ... IF EXISTS, harmless when the object is missing.")
    table: str | None = Field(None, description="The table a plain INSERT, UPDATE or DELETE changes, as written.")

    def head(self) -> str:
        """The statement's first words, for messages."""
        words = " ".join(_without_comments(self.text).split())
        return words if len(words) <= 60 else words[:57] + "..."


def split(text: str) -> list[str]:
    """The statements of ``text``: semicolons inside quotes, dollar quotes and comments do not split."""
    statements, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif text[i] in "'\"":
            i = _end_of_quoted(text, i)
            continue
        elif text[i] == "$" and (tag := re.match(r"\$(?:[A-Za-z_]\w*)?\$", text[i:])):
            end = text.find(tag.group(0), i + len(tag.group(0)))
            i = n if end < 0 else end + len(tag.group(0))
            continue
        elif text[i] == ";":
            statements.append(text[start:i])
            start = i + 1
        i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _without_comments(s).strip()]


def _end_of_quoted(text: str, i: int) -> int:
    quote, j = text[i], i + 1
    while j < len(text):
        if text[j] == quote:
            if text[j + 1:j + 2] == quote:  # a doubled quote stays inside
                j += 2
                continue
            return j + 1
        j += 1
    return j


def _without_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", " ", text).strip()


def classify(text: str) -> Statement:
    """What one statement does, judged by its first words."""
    head = _without_comments(text)
    for pattern, kind, noun in _CREATES:
        if match := pattern.match(head):
            groups = match.groupdict()
            noun = "materialized view" if groups.get("materialized") else noun
            obj = SqlObject(kind=kind, noun=noun, name=match["name"], table=groups.get("table"))
            return Statement(text=text, action="create", object=obj)
    if match := _DROP.match(head):
        what = " ".join(match["what"].upper().split())
        obj = SqlObject(kind=_DROP_KINDS[what], noun=what.lower(), name=match["name"], table=match["table"])
        return Statement(text=text, action="drop", object=obj, if_exists=bool(match["if_exists"]))
    if _DATA.match(head):
        target = _DATA_TABLE.match(head)
        return Statement(text=text, action="data", table=target["table"] if target else None)
    return Statement(text=text, action="unknown")


def statements(sql: str | list | None) -> list[Statement]:
    """Every statement of a RunSQL's ``sql`` (a string, or a list of strings or [sql, params] pairs)."""
    if not sql:
        return []
    parts = [sql] if isinstance(sql, str) else [item if isinstance(item, str) else item[0] for item in sql]
    return [classify(text) for part in parts for text in split(part)]


def extension_config_table(conn: psycopg.Connection, table: str | None) -> str | None:
    """``table`` (as written, found through ``conn``'s search_path) as ``schema.name`` when it is an
    extension's configuration table (PostGIS's spatial_ref_sys): its rows are the database's own,
    pg_dump keeps them, and a database built from migrations needs them; else None."""
    if table is None:
        return None
    schema, name = _schema_and_name(table)
    row = conn.execute(
        """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = to_regclass(%s) AND c.oid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extconfig IS NOT NULL)""",
        [".".join(_quoted(part) for part in (schema, name) if part)],
    ).fetchone()
    return row[0] if row else None


# --- does it exist --------------------------------------------------------------------------------


def _unquote(ident: str) -> str:
    """An identifier as the catalogs store it: unquoted ones fold to lower case."""
    ident = ident.strip()
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


def _quoted(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _schema_and_name(qname: str) -> tuple[str | None, str]:
    parts = re.findall(IDENT, qname)
    return (_unquote(parts[0]), _unquote(parts[1])) if len(parts) == 2 else (None, _unquote(parts[0]))


def exists(conn: psycopg.Connection, obj: SqlObject) -> bool:
    """Whether ``obj`` is in the database ``conn`` is connected to (unqualified names through its search_path)."""
    schema, name = _schema_and_name(obj.name)
    if obj.kind == "relation":
        if obj.table and schema is None:  # an index lives in its table's schema
            table_schema, _ = _schema_and_name(obj.table)
            schema = table_schema
        query, params = "SELECT to_regclass(%s) IS NOT NULL", [".".join(_quoted(part) for part in (schema, name) if part)]
    elif obj.kind == "function":
        query = """SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE p.proname = %s AND CASE WHEN %s::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = %s END)"""
        params = [name, schema, schema]
    elif obj.kind == "trigger":
        query = "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s) AND NOT tgisinternal)"
        params = [name, obj.table]
    elif obj.kind == "constraint":
        query, params = "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s))", [name, obj.table]
    elif obj.kind == "type":
        query, params = "SELECT to_regtype(%s) IS NOT NULL", [obj.name]
    elif obj.kind == "schema":
        query, params = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", [name]
    else:
        query, params = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)", [name]
    return bool(conn.execute(query, params).fetchone()[0])
