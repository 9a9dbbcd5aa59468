"""The project's squashkit configuration: ``[tool.squashkit]`` in pyproject.toml, or squashkit.toml.

Example (pyproject.toml)::

    [tool.squashkit]
    backup_dir = "backups"            # relative to this file
    default_env = "dev"
    exclude = ["audit.Snapshot"]      # dumpdata excludes on top of the standard ones
    extensions = ["pg_trgm"]          # created on every recreated database
    unscoped = ["tenants.context.all_tenants"]  # entered around squashkit's ORM use (default: django-scopes')
    project_apps = ["dcim", "extras"]  # apps installed as packages that are the project's own

    [tool.squashkit.environments.dev]
    settings = "mysite.settings"
    env = { DATABASE_URL = "postgres:///mysite_dev" }

    [tool.squashkit.environments.prod]
    settings = "mysite.settings"
    env = { DATABASE_URL = "postgres://app@db.internal/mysite" }
    admin = { user = "postgres", host = "db.internal", password_env = "PROD_ADMIN_PASSWORD" }

In squashkit.toml the same keys sit at the top level instead of under ``[tool.squashkit]``.
Read lazily, each time a command runs: nothing is frozen at import.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from squashkit.errors import BadInput
from squashkit.postgres import ConnectionParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILES = ("squashkit.toml", "pyproject.toml")
ENV_VARIABLE = "SQUASHKIT_ENV"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_APP_OR_MODEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class AdminConnection(BaseModel):
    """A superuser connection, for what the environment's own user may not do (some extensions).

    The password is never written here: name the environment variable that holds it, or rely
    on a libpq service file or passfile.
    """

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, description="Server host; defaults to the environment's host.")
    port: int | None = Field(None, description="Server port; defaults to the environment's port.")
    user: str = Field("postgres", description="Superuser role.")
    dbname: str = Field("postgres", description="Maintenance database to connect to.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    service: str | None = Field(None, description="libpq service name (pg_service.conf).")

    def password(self) -> str | None:
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise BadInput(f"the admin connection's password variable {self.password_env} is not set")
        return value

    def params(self, base: ConnectionParams) -> ConnectionParams:
        """This connection as ConnectionParams; host and port default to the environment's (``base``)."""
        options = {"service": self.service} if self.service else {}
        return ConnectionParams(
            dbname=self.dbname, user=self.user, password=self.password(),
            host=self.host or base.host, port=self.port or base.port, options=options,
        )


def is_url(text: str | Path | None) -> bool:
    """Whether a place for bundles is an fsspec URL (``s3://bucket/prefix``), not a local path."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+)://", str(text or ""))
    return bool(match) and match.group(1).lower() != "file"


class Storage(BaseModel):
    """How to reach a ``backup_dir`` that is a URL (``[tool.squashkit.storage]``). Credentials
    are never written here: the AWS environment variables, profiles and instance roles work as
    usual, or name the variables that hold them."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(None, description="S3-compatible server (MinIO, Ceph, ...); else $AWS_ENDPOINT_URL or AWS.")
    profile: str | None = Field(None, description="AWS profile (~/.aws/credentials); else $AWS_PROFILE.")
    region: str | None = Field(None, description="S3 region; else $AWS_DEFAULT_REGION or the profile's.")
    access_key_id_env: str | None = Field(None, description="Environment variable holding the access key id.")
    secret_access_key_env: str | None = Field(None, description="Environment variable holding the secret access key.")
    session_token_env: str | None = Field(None, description="Environment variable holding a session token.")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Other fsspec storage options of the URL's filesystem (never secrets).")

    def secret(self, key: str) -> str | None:
        name = getattr(self, key)
        if name is None:
            return None
        if name not in os.environ:
            raise BadInput(f"storage.{key} names {name}, which is not set")
        return os.environ[name]


class Environment(BaseModel):
    """One named environment (dev, prod, ...): how to run the project against its database."""

    model_config = ConfigDict(extra="forbid")

    settings: str = Field(description="DJANGO_SETTINGS_MODULE for this environment.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the project (e.g. DATABASE_URL).",
    )
    admin: AdminConnection | None = Field(None, description="Optional superuser connection.")
    protected: bool = Field(False, description="Destructive commands ask for the database name; recreate refuses it.")
    recreate: Literal["database", "schemas"] = Field(
        "database", description="What squashkit recreate replaces: the whole database (built beside it and swapped in), "
        "or only the project's schemas inside it, when the user may not drop or create the database.",
    )

    def expanded_env(self) -> dict[str, str]:
        """``env`` with ``${NAME}`` replaced from squashkit's own environment, so secrets stay out of the file."""

        def expand(key: str, value: str) -> str:
            def lookup(match: re.Match) -> str:
                name = match.group(1)
                if name not in os.environ:
                    raise BadInput(f"env.{key} uses ${{{name}}} but {name} is not set")
                return os.environ[name]

            return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lookup, value)

        return {key: expand(key, value) for key, value in self.env.items()}

    @field_validator("settings")
    @classmethod
    def _dotted_module(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError(f"{value!r} is not a dotted Python module path")
        return value


class Config(BaseModel):
    """The whole ``[tool.squashkit]`` table, with paths resolved against the file's directory."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(description="Directory of the config file: the Django project's root.")
    source: Path = Field(description="The file this configuration was read from.")
    manage_py: Path = Field(Path("manage.py"), description="The project's manage.py.")
    python: str = Field(sys.executable, description="Python interpreter that runs the project.")
    pg_bin: Path | None = Field(None, description="Directory of pg_dump/pg_restore; PATH when unset.")
    backup_dir: Path = Field(Path("backups"), description="Where bundles are written; when the configured "
                             "backup_dir is a URL, the local state directory instead (state_dir).")
    backup_url: str | None = Field(None, description="The configured backup_dir when it is a URL (s3://bucket/prefix).")
    state_dir: Path | None = Field(None, description="Local directory for journals, run files, safety bundles and "
                                   "downloads when backup_dir is a URL (default .squashkit next to the config file).")
    storage: Storage = Field(default_factory=Storage, description="How to reach a backup_dir URL.")
    default_env: str | None = Field(None, description="Environment used when none is given.")
    exclude: list[str] = Field(default_factory=list, description="Extra dumpdata excludes.")
    extensions: list[str] = Field(default_factory=list, description="Extra extensions to create.")
    unscoped: list[str] | None = Field(
        None,
        description="Dotted paths of context managers (or callables returning one) entered around everything squashkit "
        "runs in the project, so scoped default managers see every row; unset: django_scopes.scopes_disabled when the "
        "project has django-scopes; [] enters nothing.",
    )
    project_apps: list[str] = Field(
        default_factory=list,
        description="Labels of apps installed as packages (site-packages, plugins) that are the project's own: squashed, "
        "archived and held to a bundle like the apps under the project's root, which count without being listed.",
    )
    environments: dict[str, Environment] = Field(description="Named environments.")

    @field_validator("environments")
    @classmethod
    def _named(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        if not value:
            raise ValueError("define at least one environment, e.g. [tool.squashkit.environments.dev]")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"environment name {name!r} may only hold letters, digits, '_', '.', '-'")
        return value

    @field_validator("exclude", "project_apps")
    @classmethod
    def _labels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        models = info.field_name == "exclude"  # app labels or models; project_apps: app labels alone
        for label in value:
            if not _APP_OR_MODEL.match(label) or (not models and "." in label):
                raise ValueError(f"{label!r} is not an app label" + (" or app_label.ModelName" if models else ""))
        return value

    @field_validator("unscoped")
    @classmethod
    def _dotted_paths(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", name):
                raise ValueError(f"{name!r} is not a dotted path to a context manager (module.name)")
        return value

    @field_validator("extensions")
    @classmethod
    def _extension_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"{name!r} is not an extension name")
        return value

    def _by_settings(self) -> str | None:
        """Under ``manage.py squashkit``: the environment whose settings the process runs with, if one alone has them."""
        running = os.environ.get("SQUASHKIT_DJANGO_SETTINGS")
        matching = [name for name, environment in self.environments.items() if running and environment.settings == running]
        return matching[0] if len(matching) == 1 else None

    def environment(self, name: str | None) -> tuple[str, Environment]:
        """The environment to use: ``--env``, else $SQUASHKIT_ENV, else (under ``manage.py squashkit``) the one
        with the running settings module, else default_env, else the only one."""
        chosen = name or os.environ.get(ENV_VARIABLE) or self._by_settings() or self.default_env
        if chosen is None:
            if len(self.environments) == 1:
                chosen = next(iter(self.environments))
            else:
                raise BadInput(
                    f"which environment? pass --env or set {ENV_VARIABLE} "
                    f"(one of: {', '.join(sorted(self.environments))})"
                )
        if chosen not in self.environments:
            raise BadInput(
                f"unknown environment {chosen!r} in {self.source} (known: {', '.join(sorted(self.environments))})"
            )
        return chosen, self.environments[chosen]


def find_config_file(start: Path) -> Path | None:
    """The nearest squashkit.toml, or pyproject.toml with a [tool.squashkit] table, from start upward."""
    start = start.resolve()
    for directory in (start, *start.parents):
        for name in CONFIG_FILES:
            candidate = directory / name
            if candidate.is_file() and (name == "squashkit.toml" or "[tool.squashkit" in candidate.read_text(errors="replace")):
                return candidate
    return None


def load(path: Path | None = None, *, start: Path | None = None) -> Config:
    """Read and validate the configuration; every problem becomes one clear ``BadInput`` line."""
    if path is None:
        path = find_config_file(start or Path.cwd())
        if path is None:
            raise BadInput(
                "no squashkit configuration found: add [tool.squashkit] to the project's pyproject.toml "
                "or a squashkit.toml next to manage.py (or pass --config)"
            )
    path = Path(path)
    if path.is_dir():
        found = find_config_file(path)
        if found is None or found.parent != path.resolve():
            raise BadInput(f"no squashkit.toml or pyproject.toml with [tool.squashkit] in {path}")
        path = found
    if not path.is_file():
        raise BadInput(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from exc
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("squashkit")
        if data is None:
            raise BadInput(f"{path} has no [tool.squashkit] table")
    root = path.resolve().parent
    if is_url(data.get("backup_dir")):
        # Bundles go to the URL; journals, locks and the rest of a run's state stay on this
        # machine (they are written before each step acts and must survive a lost connection).
        data = {**data, "backup_url": str(data["backup_dir"]).rstrip("/"), "backup_dir": data.get("state_dir", ".squashkit")}
    try:
        config = Config.model_validate({**data, "root": root, "source": path.resolve()})
    except ValidationError as exc:
        raise BadInput(f"invalid configuration in {path}: {_first_error(exc)}") from exc
    return config.model_copy(
        update={
            "manage_py": (root / config.manage_py).resolve(),
            "backup_dir": (root / config.backup_dir).resolve(),
            "pg_bin": (root / config.pg_bin).resolve() if config.pg_bin else None,
            "state_dir": (root / config.backup_dir).resolve() if config.backup_url else None,
        }
    )


def _first_error(exc: ValidationError) -> str:
    """One line per problem, naming the key as it is written in the file."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
