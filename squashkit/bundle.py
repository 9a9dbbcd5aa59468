"""Backup bundles on disk: the manifest, the layout, and writing them so no half bundle survives.

A bundle is a directory ``<backup_dir>/<env>-<UTC timestamp>/``::

    manifest.json        what was backed up, from where, and the sha256 of every other file
    db.json              dumpdata of alias 'default' (content types and permissions by natural key,
                         datetimes to the microsecond, unmanaged models left out)
    contenttypes.json    the content types and permissions of 'default' with their ids
    db.dump              pg_dump -Fc of 'default' without django_migrations' rows (db.dump/ with -Fd)
    <alias>.json/.dump   the same for every other PostgreSQL alias (<alias>.contenttypes.json too); an
                         alias reaching a database another alias has dumped has its json only
    migrations.tar.gz    every migration file of the project's own apps, as they were
    log.txt              what ran, in order (no passwords, ever)

It is written into ``.<name>.partial/`` and renamed into place only once verified, so a
crash, a full disk or a failed check leaves no directory that looks like a bundle.
Everything is readable by the owner only (directories 0700, files 0600).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from squashkit import content, history
from squashkit.content import TableContent
from squashkit.errors import BadInput, DiskFull
from squashkit.foundation import Foundation
from squashkit.postgres import DatabaseFacts, table_counts

MANIFEST = "manifest.json"
# 2: contenttypes.json, json_tables, sequences in the facts, datetimes to the microsecond.
# 3: content hashes per table (contents), db.json rendered by PostgreSQL in the dump's snapshot.
# 4: a database several aliases reach is dumped once (dump_of); its foundation (schemas, settings,
#    extensions in their schemas, extension rows); django_migrations dumped without its rows.
# 5: db.json.gz (--compress) and age-encrypted files (encrypted, encrypted_to); older readers would
#    not know how to open them.
# 6: the django_migrations rows with their ids and times (migration_rows), put back instead of faked.
FORMAT_VERSION = 6


class AliasBackup(BaseModel):
    """One PostgreSQL alias of the project, as it was backed up."""

    alias: str
    database: str = Field(description="Database name (never a password, never a full URL).")
    host: str | None
    port: int | None
    user: str | None
    dump: str = Field(description="File (custom format) or directory (directory format) of pg_dump.")
    dump_format: str = Field(description="'custom' or 'directory'.")
    json_file: str = Field(description="The dumpdata fixture: db.json, db.json.gz with --compress, NAME.age when encrypted.")
    json_objects: dict[str, int] = Field(description="Objects per model in the fixture (content types and permissions included).")
    excluded_from_json: list[str] = Field(description="dumpdata excludes in force (the unmanaged models included).")
    json_tables: list[str] = Field(
        default_factory=list,
        description="schema.name of every table the fixture fills: the dumped models' tables and their implicit "
        "many-to-many tables. Empty in bundles of format 1.",
    )
    contenttypes_file: str | None = Field(
        None, description="Content types and permissions with their ids; None where contenttypes is not on this alias."
    )
    pg_dump_version: str
    snapshot_consistent: bool = Field(description="pg_dump read the same snapshot the row counts came from.")
    slow_models: dict[str, str] = Field(
        default_factory=dict, description="Models Django's serializer wrote (not PostgreSQL), and why."
    )
    facts: DatabaseFacts
    dump_of: str | None = Field(
        None, description="Another alias reaches the same database: the alias whose entry holds its dump, content "
        "hashes and foundation (this entry's dump is that file, its django_migrations its own). None: this entry's own.",
    )
    foundation: Foundation | None = Field(
        None, description="The database's settings, schemas, extensions (with their schemas) and extension rows, laid "
        "into a new database before pg_restore or migrate. None in bundles before format 4 and on dump_of entries.",
    )
    migration_rows: list[history.Row] = Field(
        default_factory=list,
        description="The rows of the django_migrations this alias finds, with their ids and times (the dump holds the "
        "table without them): put back as they were for every app whose files a run does not change. Empty before "
        "format 6: the rows are then faked.",
    )
    contents: dict[str, TableContent] = Field(
        default_factory=dict,
        description="Per table (schema.name, django_migrations aside): its row count, row hash and column hashes, "
        "read in the dump's snapshot; what every restore and load is checked against. Empty before format 3.",
    )

    @field_validator("dump", "json_file", "contenttypes_file")
    @classmethod
    def _inside_the_bundle(cls, value: str | None) -> str | None:
        return _bundle_relative(value)


class AppMigrations(BaseModel):
    """One of the project's own apps, as a squash and its undo need to know it."""

    migrations: list[str] = Field(description="Migration names on disk, as migrate plans them (a squashed one instead of "
                                  "those it replaces).")
    replaces: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Squashed migration name -> the (app, name) it replaces. Empty before format 6.")
    parents: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Migration name -> the (app, name) it depends on. Empty before format 6.")
    folder: str | None = Field(description="The migrations folder as the app sees it, relative to the project.")
    resolved_folder: str | None = Field(description="The same folder with symlinks resolved (differs when it is a symlink).")
    aliases: list[str] = Field(description="Database aliases the app migrates to (the routers' allow_migrate).")

    @field_validator("folder", "resolved_folder")
    @classmethod
    def _no_parent_steps(cls, value: str | None) -> str | None:
        # Absolute when the folder lives outside the project (a symlink elsewhere); never "..":
        # a rollback empties this folder.
        if value is not None and (".." in Path(value).parts or not value.strip()):
            raise ValueError(f"{value!r} is not a migrations folder squashkit wrote")
        return value


class Manifest(BaseModel):
    """manifest.json: what a bundle holds and where it came from."""

    format_version: int = FORMAT_VERSION
    squashkit_version: str
    django_version: str
    environment: str
    created_at: datetime = Field(description="UTC time the backup started.")
    project_root: str
    settings: str = Field(description="DJANGO_SETTINGS_MODULE used.")
    databases: list[AliasBackup]
    own_apps: dict[str, AppMigrations] = Field(description="The project's own apps by label.")
    migrations_archive: str
    migration_files: list[str] = Field(description="Files in the migrations archive, relative to the project.")
    files: dict[str, str] = Field(description="sha256 of every other file in the bundle, by relative path.")
    encrypted: list[str] = Field(
        default_factory=list, description="The files encrypted with age (NAME.age): every file but the manifest, or none.")
    encrypted_to: list[str] = Field(default_factory=list, description="The age recipients (public keys) they were encrypted to.")

    @field_validator("migrations_archive")
    @classmethod
    def _archive_inside(cls, value: str) -> str:
        return _bundle_relative(value)

    @field_validator("files")
    @classmethod
    def _files_inside(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            _bundle_relative(name)
            if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
                raise ValueError(f"the sha256 of {name!r} is not 64 hex digits")
        return value

    @field_validator("migration_files")
    @classmethod
    def _migration_files_relative(cls, value: list[str]) -> list[str]:
        for name in value:
            _bundle_relative(name)
        return value

    def alias(self, alias: str) -> AliasBackup:
        for entry in self.databases:
            if entry.alias == alias:
                return entry
        raise KeyError(alias)


def _bundle_relative(value: str | None) -> str | None:
    """A name inside the bundle (or the project): relative, no "..", so a hand-edited manifest
    cannot point a restore or a rollback at files elsewhere."""
    if value is None:
        return None
    path = Path(value)
    if not value or path.is_absolute() or ".." in path.parts or "\0" in value:
        raise ValueError(f"{value!r} is not a relative path inside the bundle")
    return value


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def bundle_name(env_name: str, when: datetime) -> str:
    return f"{env_name}-{when.strftime('%Y%m%dT%H%M%SZ')}"


def file_names(alias: str, dump_format: str) -> tuple[str, str]:
    """(json, dump) names: db.json/db.dump for 'default', <alias>.json/<alias>.dump for the others."""
    stem = "db" if alias == "default" else alias
    return f"{stem}.json", f"{stem}.dump"


def contenttypes_file_name(alias: str) -> str:
    """contenttypes.json for 'default', <alias>.contenttypes.json for the others."""
    return "contenttypes.json" if alias == "default" else f"{alias}.contenttypes.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (a directory-format dump's files included)."""
    return {
        str(path.relative_to(directory)): sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_down(directory: Path) -> None:
    """Owner-only permissions on everything, fsynced, before the bundle becomes visible."""
    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        _fsync(path)


def prepare_output_dir(directory: Path) -> Path:
    """Create the backup directory (0700) or say why it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise BadInput(f"cannot create the output directory {directory}: {exc.strerror}") from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise BadInput(f"the output directory {directory} is not writable (pass --output DIR)")
    return directory


@contextlib.contextmanager
def writing(output_dir: Path, name: str) -> Iterator[Path]:
    """Yield a private ``.NAME.partial`` directory; on success rename it to ``NAME``, else delete it.

    The rename is the moment the bundle exists: before it there is only a ``.partial``
    directory that nothing takes for a bundle, after it a verified, complete one.
    """
    final = output_dir / name
    suffix = 1
    while final.exists() or (output_dir / f".{final.name}.partial").exists():
        suffix += 1
        final = output_dir / f"{name}-{suffix}"
    partial = output_dir / f".{final.name}.partial"
    old_umask = os.umask(0o077)  # children (pg_dump, manage.py) write owner-only files too
    try:
        partial.mkdir(mode=0o700)
        yield partial
        _lock_down(partial)
        os.rename(partial, final)
        _fsync(output_dir)
    except (OSError, DiskFull) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        # A full disk is the user's to fix, not a bug: whoever was writing (pg_dump, dumpdata,
        # or squashkit itself), say so in one line and where the space is missing.
        if isinstance(exc, DiskFull) or exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = str(exc) if isinstance(exc, DiskFull) else "no space left on device"
            raise DiskFull(f"{what} in {output_dir}: free space there or pass --output") from None
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        os.umask(old_umask)


def finished_path(partial: Path) -> Path:
    """Where ``writing`` puts a partial directory once it succeeds."""
    return partial.with_name(partial.name.removeprefix(".").removesuffix(".partial"))


def write_manifest(directory: Path, manifest: Manifest) -> None:
    path = directory / MANIFEST
    path.write_text(manifest.model_dump_json(indent=2) + "\n")


def read_manifest(directory: Path) -> Manifest:
    directory = Path(directory)
    if not directory.exists():
        raise BadInput(f"{directory} does not exist (pass the path of a bundle directory)")
    if not directory.is_dir():
        raise BadInput(f"{directory} is not a bundle directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise BadInput(f"{directory} is not a squashkit bundle (no {MANIFEST})")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise BadInput(f"{path} is damaged or was edited by hand: {_first_problem(exc)}; nothing was changed") from None
    except ValueError as exc:
        raise BadInput(f"{path} is damaged or from an incompatible squashkit: {str(exc).splitlines()[0]}") from None


def _first_problem(exc: ValidationError) -> str:
    """The first problem, naming the field as it is written in the file (databases.0.dump)."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error['msg']})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{more}"


def damaged_files(directory: Path, manifest: Manifest) -> list[str]:
    """The files the manifest lists that are missing or no longer match their sha256."""
    return [
        relative
        for relative, expected in manifest.files.items()
        if not (directory / relative).is_file() or sha256(directory / relative) != expected
    ]


def holds_what_was_recorded(conn, entry: AliasBackup, tables: list[str] | None = None) -> list[str]:
    """What ``conn``'s database does not hold of what ``entry`` recorded, one line per table (empty
    when it holds it all): by content when the bundle has content hashes, else by row count.
    ``tables`` narrows the check (a json load fills only the json's tables)."""
    if tables is None:
        tables = [t.qualified for t in entry.facts.tables]
    tables = [t for t in tables if t != entry.facts.django_migrations_table]
    if entry.contents:
        expected = {t: entry.contents[t] for t in tables if t in entry.contents}
        leave_out = {t: recorded.left_out for t, recorded in expected.items()}
        return content.differences(expected, content.read(conn, list(expected), leave_out=leave_out))
    recorded = {t.qualified: t.rows for t in entry.facts.tables}
    actual = table_counts(conn)
    return [
        f"{t} has {actual.get(t, 'no table, so 0')} rows, the source {recorded[t]}"
        for t in tables if t in recorded and actual.get(t) != recorded[t]
    ]


def belongs_to(name: str, dump: str) -> bool:
    """Whether the bundle file ``name`` is the dump ``dump`` or a file of it (directory format)."""
    return name == dump or name.startswith(dump + "/")


def json_intact(directory: Path, manifest: Manifest) -> bool:
    """Whether the bundle's json files, content types and migrations archive are intact (its dump may not be)."""
    damaged = damaged_files(directory, manifest)
    return not [n for n in damaged if n != "log.txt" and not any(belongs_to(n, e.dump) for e in manifest.databases)]


def verify_hashes(directory: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there with the same sha256; else the bundle is bad input."""
    damaged = damaged_files(directory, manifest)
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise BadInput(
            f"bundle {directory} is damaged: {damaged[0]}{more} is missing or does not match its sha256 in the manifest; "
            "nothing was changed (use another bundle)"
        )
