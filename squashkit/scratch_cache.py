"""The schema a set of migration files builds, kept so that it is built once, not at every ``check``.

Proving what the migration files build takes a real ``migrate`` into a scratch database: seconds
on a small project, a minute and more for hundreds of migrations. Its result depends only on
what goes into that migrate, so it is kept under a hash of exactly that (``key``):

- every migration file of every installed app, by path and content (third-party apps too: a
  Django upgrade changes theirs), and the installed apps themselves;
- the settings module, the Django version, the aliases that reach the database and where each
  finds its ``django_migrations`` (``databases.live_layout``: it decides their migrate order);
- the server's version, the database's encoding and locale, and the extensions the scratch
  database gets (the live database's and the configured ones).

``check`` looks the schema up before building it, and keeps what it built; a squash keeps the
build of its new files (5b), so the ``check`` after it builds nothing, and looks up the old
history's build (``check``'s, before the squash) when it must know what the old files made
(``drift``). Not in the key: Python code a migration imports from the project (a helper
changed in place); ``squashkit check --no-cache`` builds afresh.

Entries are JSON files in ``<backup_dir>/cache/`` (0600: schema definitions, no data and no
secret), the newest ``KEEP`` kept.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg
from pydantic import BaseModel, Field, ValidationError

from squashkit import __version__, postgres, schema, scratch
from squashkit.databases import Database, live_layout
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy, ProjectInfo, migration_files

FORMAT = 2  # bump when Schema or the key change meaning: old entries are then never matched
KEEP = 12
FOLDER = "cache"

Log = Callable[[str], None]


class CachedSchema(BaseModel):
    """What one scratch build of a set of migration files gave."""

    key: str = Field(description="sha256 of everything that went into the build (see the module docstring).")
    alias: str = Field(description="The aliases that reach the database built, comma-separated.")
    made_by: str = Field(description="'check' or 'squash' (then it is the build of the squash's new files).")
    built_at: datetime.datetime
    seconds: float = Field(description="What the scratch build took.")
    files: int = Field(description="How many migration files went into it.")
    schema_: schema.Schema = Field(alias="schema")

    def describe(self) -> str:
        return f"the scratch build {self.made_by} made at {self.built_at:%Y-%m-%d %H:%M:%S} UTC ({self.seconds:.1f} s, {self.files} migration files)"


def key(manage: ManagePy, project: ProjectInfo, database: Database, params: ConnectionParams,
        extensions: Iterable[str] = ()) -> tuple[str, int]:
    """(the hash of everything a scratch ``migrate`` of ``database``'s aliases depends on, how many migration files) as they are now."""
    digest = hashlib.sha256()

    def feed(*parts: object) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            digest.update(len(data).to_bytes(8, "big") + data)

    feed(FORMAT, __version__, manage.env.get("DJANGO_SETTINGS_MODULE", ""), project.django_version, *database.aliases)
    files = 0
    for app in sorted(project.apps, key=lambda a: a.label):
        feed("app", app.label, app.name, app.migrations_module or "")
        folder = app.migrations_folder_resolved
        for path in migration_files(app):
            if path.suffix != ".py":
                continue
            feed(str(path.relative_to(folder)), path.read_bytes())
            files += 1
    with postgres.connect(params) as conn:
        feed("server", conn.info.server_version, *(postgres.database_locale(conn, params.dbname) or ()))
        feed("extensions", *sorted((set(postgres.installed_extensions(conn)) | set(extensions)) - {"plpgsql"}))
    if len(database.aliases) > 1:
        for alias, found in live_layout(project, database).items():
            feed("layout", alias, found.home, *found.path)
    return digest.hexdigest(), files


def _path(backup_dir: Path, digest: str) -> Path:
    return backup_dir / FOLDER / f"schema-{digest[:40]}.json"


def load(backup_dir: Path, digest: str) -> CachedSchema | None:
    """The build kept under ``digest``, or None (none, unreadable, or another format)."""
    path = _path(backup_dir, digest)
    try:
        cached = CachedSchema.model_validate_json(path.read_text())
    except (OSError, ValueError, ValidationError):
        return None
    return cached if cached.key == digest else None


def save(backup_dir: Path, digest: str, built: schema.Schema, *, alias: str, made_by: str, seconds: float, files: int,
         log: Log | None = None) -> None:
    """Keep ``built`` under ``digest``; a cache that cannot be written is only a slower next check."""
    entry = CachedSchema(key=digest, alias=alias, made_by=made_by, built_at=datetime.datetime.now(datetime.timezone.utc),
                         seconds=round(seconds, 2), files=files, schema=built)
    path = _path(backup_dir, digest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(entry.model_dump_json(by_alias=True))
        partial.chmod(0o600)
        partial.replace(path)  # a reader sees the whole entry or none
        _prune(path.parent)
    except OSError as exc:
        if log:
            log(f"the scratch build could not be kept in {path.parent} ({exc.strerror}): the next check builds it again")


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("schema-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)


def migrations_schema(
    backup_dir: Path, manage: ManagePy, project: ProjectInfo, database: Database, params: ConnectionParams, *,
    admin: ConnectionParams | None = None, extensions: Iterable[str] = (), made_by: str = "check", use_cache: bool = True,
    log: Log | None = None,
) -> tuple[schema.Schema, CachedSchema | None, float]:
    """What the migration files on disk build for ``database``: (the schema, the cached build it came from
    or None when built now, the seconds spent building). Built builds are kept."""
    digest, files = key(manage, project, database, params, extensions)
    if use_cache and (cached := load(backup_dir, digest)) is not None:
        return cached.schema_, cached, 0.0
    started = datetime.datetime.now()
    built = scratch.build(manage, project, database, params, admin=admin, extensions=extensions)
    seconds = (datetime.datetime.now() - started).total_seconds()
    save(backup_dir, digest, built, alias=", ".join(database.aliases), made_by=made_by, seconds=seconds, files=files, log=log)
    return built, None, seconds


def keep_build(backup_dir: Path, manage: ManagePy, project: ProjectInfo, database: Database, params: ConnectionParams,
               built: schema.Schema, *, extensions: Iterable[str] = (), made_by: str, seconds: float, log: Log | None = None) -> None:
    """Keep a build made elsewhere (a squash's proof of its new files) under the key of the files now on disk."""
    try:
        digest, files = key(manage, project, database, params, extensions)
    except (OSError, psycopg.Error) as exc:
        if log:
            log(f"the scratch build was not kept for the next check: {exc}")
        return
    save(backup_dir, digest, built, alias=", ".join(database.aliases), made_by=made_by, seconds=seconds, files=files, log=log)
