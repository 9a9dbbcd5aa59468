"""The Django project: introspection and ``manage.py`` runs, each in a subprocess.

dev and prod settings cannot share one Python process (Django configures itself once), so
every question to the project runs ``manage.py`` with the environment's settings and extra
variables, through ``sh`` with an argument list.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import sh
from pydantic import BaseModel, Field

from squashkit import bundlefiles, inproject
from squashkit.config import Config, Environment
from squashkit.errors import NO_SPACE, BadInput, DiskFull, OperationFailed
from squashkit.postgres import ConnectionParams

PROBE = inproject.runner("probe")
COMMAND_RUNNER = inproject.runner("command")
CHECKS_RUNNER = inproject.runner("checks")
UNSCOPED_VARIABLE = "SQUASHKIT_UNSCOPED"  # read by inproject/scopes.py
POSTGRES_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")

# The procedure's excludes: rows that `migrate` recreates (permissions, content types) or
# that are worthless after a restore (admin log, sessions).
STANDARD_EXCLUDES = ("auth.permission", "contenttypes", "admin.logentry", "sessions")


class FieldPlan(BaseModel):
    """One column of a model as its fixture objects carry it (``inproject/probe.py`` explains the kinds)."""

    name: str = Field(description="The field's name: its key in the object's \"fields\".")
    column: str | None = Field(description="The database column.")
    kind: str = Field(
        description="How the column's value is written and read back: plain, bool, float, decimal, datetime, date, time, "
        "duration, binary, json, array, hstore, range, geometry, file, fk."
    )
    null: bool = Field(True, description="The field allows NULL.")
    generated: bool = Field(False, description="A GeneratedField: written to the fixture, never inserted.")
    target_kind: str | None = Field(None, description="fk: the kind of the column it references.")
    natural: str | None = Field(
        None, description="fk: 'contenttype' or 'permission' when it references one by pk (written by natural key)."
    )
    base_kind: str | None = Field(None, description="array: its elements' kind; range: its bounds' kind.")


class M2MPlan(BaseModel):
    """An implicit many-to-many table, written as a list of target pks on its owner."""

    name: str
    through_table: str = Field(description="db_table of the auto-created through model.")
    source_column: str = Field(description="Its column pointing at the owner.")
    target_column: str = Field(description="Its column pointing at the target.")
    target_kind: str = Field(description="The kind of the target's pk.")
    natural: str | None = Field(None, description="'permission' or 'contenttype' when the targets are written by natural key.")


class ModelInfo(BaseModel):
    label: str = Field(description="app_label.modelname, lower case, as dumpdata writes it.")
    db_table: str
    auto_created: bool = Field(description="An implicit many-to-many table (dumped with its owner).")
    managed: bool = Field(True, description="False for Meta.managed = False (a view, a table Django does not create).")
    proxy: bool = Field(False, description="A proxy: no table of its own, never dumped.")
    dumped_on: list[str] = Field(description="Aliases whose plain dumpdata includes this model (proxies never).")
    m2m_tables: list[str] = Field(
        default_factory=list, description="db_table of the implicit many-to-many tables dumped as lists on this model."
    )
    natural_key_fields: dict[str, str] = Field(
        description="Field name -> 'contenttype' or 'permission' for references squashkit writes by natural key."
    )
    pk: FieldPlan | None = Field(None, description="The primary key (a parent pointer for a multi-table child).")
    fields: list[FieldPlan] = Field(
        default_factory=list, description="What dumpdata writes in \"fields\": the concrete model's serialized local fields."
    )
    m2m: list[M2MPlan] = Field(default_factory=list, description="The many-to-many lists written on each object.")
    slow_reason: str | None = Field(
        None, description="Why this model's objects must be written and read by Django itself (None: by SQL)."
    )


class AppInfo(BaseModel):
    label: str
    name: str
    path: Path
    own: bool = Field(description="Lives in the project directory (not site-packages).")
    migrations_module: str | None
    migrations_folder: Path | None = Field(description="The migrations folder as the app sees it.")
    migrations_folder_resolved: Path | None = Field(description="The same folder with symlinks resolved.")
    migrations: list[str] = Field(description="Migration names on disk, as migrate plans them (a squashed one instead of those it replaces).")
    replaces: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict,
        description="Squashed migration name -> the (app, name) it replaces: rows Django records without a file for them.",
    )
    parents: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Migration name -> the (app, name) it depends on, as migrate's graph has them.")
    depends_on: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Migration file name -> its dependencies as the file writes them (before Django "
        "points a replaced name at the migration that replaces it).")
    aliases: list[str] = Field(description="Aliases this app migrates to (the routers' allow_migrate).")
    models: list[ModelInfo]

    def replaced(self) -> set[tuple[str, str]]:
        """Every (app, name) a squashed migration of this app replaces."""
        return {tuple(key) for keys in self.replaces.values() for key in keys}


class Tenancy(BaseModel):
    """A schema-per-tenant layout (django-tenants), as the project's settings describe it."""

    alias: str = Field(description="The alias the tenants live on (TENANT_DB_ALIAS, 'default').")
    public_schema: str = Field(description="Where the shared apps live (PUBLIC_SCHEMA_NAME, 'public').")
    tenant_model: str = Field(description="TENANT_MODEL, e.g. 'customers.Client'.")
    tenant_table: str = Field(description="Its db_table, in the public schema: one row per tenant.")
    schema_column: str = Field(description="Its column naming each tenant's schema.")
    shared_apps: list[str] = Field(description="Labels of SHARED_APPS: migrated into public.")
    tenant_apps: list[str] = Field(description="Labels of TENANT_APPS: migrated into every tenant schema.")
    base_schemas: list[str] = Field(default_factory=list, description="TENANT_BASE_SCHEMA (and per type): the templates new tenants are cloned from.")
    creation_fakes_migrations: bool = Field(False, description="TENANT_CREATION_FAKES_MIGRATIONS: new tenants are clones whose migrations are faked.")
    extra_search_paths: list[str] = Field(default_factory=list, description="PG_EXTRA_SEARCH_PATHS: on every tenant's search_path.")
    multi_type: bool = Field(False, description="HAS_MULTI_TYPE_TENANTS: tenant apps differ by type (not proved per type).")


class ProjectInfo(BaseModel):
    django_version: str
    python: str
    databases: dict[str, dict] = Field(description="settings.DATABASES (passwords included: never log this).")
    apps: list[AppInfo]
    tenancy: Tenancy | None = Field(None, description="The django-tenants layout, when the project has one.")
    naive_time_zones: dict[str, str] = Field(
        default_factory=dict, description="alias -> time zone of its naive datetimes, when USE_TZ is False."
    )
    vendors: dict[str, str] = Field(
        default_factory=dict, description="alias -> connection.vendor: 'postgresql' for every PostgreSQL backend "
        "(PostGIS, django-tenants, psqlextra), whatever its ENGINE is called.",
    )

    def postgres_aliases(self) -> list[str]:
        """The PostgreSQL aliases squashkit works on, in settings order: all of them but those
        ``left_alone`` names (a test mirror, a read replica)."""
        return [alias for alias in self._postgres() if alias not in self.left_alone()]

    def _postgres(self) -> list[str]:
        if self.vendors:
            return [alias for alias, vendor in self.vendors.items() if vendor == "postgresql"]
        return [alias for alias, conf in self.databases.items() if conf.get("ENGINE") in POSTGRES_ENGINES]

    def left_alone(self) -> dict[str, str]:
        """PostgreSQL aliases that are never dumped, rebuilt or swapped, and why: a ``TEST["MIRROR"]``
        of another alias (a replica Django's test runner does not create either), and one no app
        migrates to (a read replica: the routers' ``allow_migrate`` refuse every app there).
        ``default`` always counts: Django keeps django_migrations there whatever the routers say."""
        migrated = {alias for app in self.apps for alias in app.aliases}
        why = {}
        for alias in self._postgres():
            mirror = (self.databases[alias].get("TEST") or {}).get("MIRROR")
            if mirror:
                why[alias] = f"a test mirror of {mirror}"
            elif alias != "default" and alias not in migrated:
                why[alias] = "no app migrates to it (a read replica)"
        return why

    def connection(self, alias: str) -> ConnectionParams:
        return ConnectionParams.from_django(self.databases[alias])

    def own_apps(self) -> list[AppInfo]:
        return [app for app in self.apps if app.own]

    def installed_excludes(self, extra: list[str]) -> list[str]:
        """Standard plus configured excludes, minus those naming apps or models not installed
        (dumpdata refuses an exclude it does not know)."""
        models = {model.label for app in self.apps for model in app.models}
        labels = {app.label for app in self.apps}
        wanted = dict.fromkeys([*STANDARD_EXCLUDES, *(label.lower() if "." in label else label for label in extra)])
        return [label for label in wanted if label in labels or label in models]

    def unmanaged_models(self, alias: str) -> list[str]:
        """Labels of the unmanaged models plain dumpdata would write for ``alias``.

        ``migrate`` does not create their tables: over a view they cannot be loaded at all,
        and a table created outside the migrations does not exist after one. They are
        excluded from the json (pg_dump still holds whatever table is behind them).
        """
        return [model.label for app in self.apps for model in app.models if not model.managed and alias in model.dumped_on]

    def dumped_models(self, alias: str, excludes: list[str]) -> list[ModelInfo]:
        """The models whose rows ``dumpdata --database alias`` writes, given the excludes."""
        return [
            model
            for app in self.apps
            if app.label not in excludes
            for model in app.models
            if alias in model.dumped_on and model.label not in excludes
        ]


class DjangoRun(BaseModel):
    """One Django process squashkit started, for the account a run gives of them."""

    what: str
    seconds: float


# Every Django process this squashkit process started, in order: each costs a Django start-up
# (0.5 to 2 s on real projects), so a run reports them (``account``) and starts only those it needs.
STARTED: list[DjangoRun] = []


def _django(python: str, argv: list[str], *, cwd: Path, env: dict[str, str], what: str):
    """Run the project's interpreter with ``argv``, counted in ``STARTED``; raises ``sh.ErrorReturnCode``."""
    clock = time.monotonic()
    try:
        return sh.Command(python)(*argv, _cwd=str(cwd), _env=env, _in=None)
    finally:
        STARTED.append(DjangoRun(what=what, seconds=round(time.monotonic() - clock, 2)))


def account() -> str | None:
    """``N Django processes (X s): what 0.6 s, ...`` for what this process started, or None."""
    if not STARTED:
        return None
    total = sum(run.seconds for run in STARTED)
    each = ", ".join(f"{run.what} {run.seconds:.1f} s" for run in STARTED)
    return f"{len(STARTED)} Django process{'es' if len(STARTED) > 1 else ''} ({total:.1f} s): {each}"


class ManagePy(BaseModel):
    """How to run this environment's ``manage.py``: interpreter, script, directory, environment."""

    python: str
    script: Path
    cwd: Path
    env: dict[str, str]
    databases: dict[str, str] = Field(
        default_factory=dict, description="alias -> database name to use instead of the settings' NAME."
    )
    unmigrated: list[str] = Field(
        default_factory=list, description="App labels whose migrations the command does not load (MIGRATION_MODULES None).")

    def on(self, databases: dict[str, str]) -> ManagePy:
        """The same manage.py, its commands run against other databases (a side or scratch copy)."""
        return self.model_copy(update={"databases": {**self.databases, **databases}})

    def without_migrations(self, labels: list[str]) -> ManagePy:
        """The same manage.py, its commands run as if ``labels`` had no migrations: makemigrations while an
        installed package's migration still depends on a project migration a squash deleted."""
        return self.model_copy(update={"unmigrated": [*self.unmigrated, *labels]})

    def argv(self, *args: str) -> list[str]:
        """The arguments after the interpreter: ``manage.py ARGS`` run through ``inproject/command.py``,
        which points aliases at other databases and switches scoped managers off, as the project's
        own commands do (a data migration or a loaddata reading through django-scopes' managers).
        A ``shell`` on the settings' databases runs as it is: squashkit's runners enter that context themselves."""
        if args[:1] == ("shell",) and not self.databases and not self.unmigrated:
            return [str(self.script), *args]
        arguments = {"databases": self.databases, "argv": list(args), "unmigrated": self.unmigrated}
        code = (
            f"import runpy; runpy.run_path({str(COMMAND_RUNNER)!r}, "
            f"init_globals={{'SQUASHKIT_COMMAND': {arguments!r}}}, run_name='__squashkit_command__')"
        )
        return [str(self.script), "shell", "-v", "0", "-c", code]  # -v 0: no "objects imported automatically" line (Django 5.2)

    def run(self, *args: str, what: str) -> str:
        """Run ``manage.py ARGS``; a failure raises with the last line of its stderr."""
        try:
            result = _django(self.python, self.argv(*args), cwd=self.cwd, env=self.env, what=what)
        except sh.ErrorReturnCode as exc:
            if NO_SPACE in exc.stderr.decode(errors="replace"):
                raise DiskFull(f"{what} failed: no space left on device") from None
            raise OperationFailed(f"{what} failed: {last_error_line(exc.stderr)}") from None
        return str(result)

    def checks(self, *commands: tuple[str, ...], what: str) -> list[tuple[bool, str | None]]:
        """Run ``--check`` style commands in ONE Django process (``inproject/checks.py``): for each,
        (passed, the error line if it crashed rather than said no)."""
        with tempfile.TemporaryDirectory(prefix="squashkit-checks-") as private:
            out = Path(private) / "checks.json"
            arguments = {"databases": self.databases, "checks": [list(c) for c in commands], "output": str(out)}
            code = (
                f"import runpy; runpy.run_path({str(CHECKS_RUNNER)!r}, "
                f"init_globals={{'SQUASHKIT_CHECKS': {arguments!r}}}, run_name='__squashkit_checks__')"
            )
            try:
                _django(self.python, [str(self.script), "shell", "-v", "0", "-c", code], cwd=self.cwd, env=self.env, what=what)
            except sh.ErrorReturnCode as exc:  # the project did not even start
                line = last_error_line(exc.stderr)
                return [(False, line) for _command in commands]
            results = json.loads(out.read_text())
        return [(result["passed"], result["error"]) for result in results]


def manage_py(config: Config, env_name: str, environment: Environment) -> ManagePy:
    """The environment's manage.py, checked to exist."""
    if not config.manage_py.is_file():
        raise BadInput(f"no manage.py at {config.manage_py} (set manage_py in {config.source})")
    if not (Path(config.python).is_file() or shutil.which(config.python)):
        raise BadInput(f"python interpreter {config.python!r} not found (set python in {config.source})")
    env = {**os.environ, **environment.expanded_env()}
    env["DJANGO_SETTINGS_MODULE"] = environment.settings
    env["SQUASHKIT_ENV_NAME"] = env_name
    env["PYTHONUNBUFFERED"] = "1"
    if config.unscoped is not None:
        env[UNSCOPED_VARIABLE] = json.dumps(config.unscoped)
    return ManagePy(python=config.python, script=config.manage_py, cwd=config.manage_py.parent, env=env)


def last_error_line(stderr: bytes) -> str:
    """The line of a Python traceback or CommandError that says what went wrong."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)|CommandError)\b", line):
            return line
    return lines[-1] if lines else "(no error output)"


def declare_own(project: ProjectInfo, labels: list[str]) -> ProjectInfo:
    """``project`` with the apps the config names (``project_apps``) counted as its own, wherever they
    are installed; a label no installed app has is refused."""
    installed = {app.label for app in project.apps}
    unknown = sorted(set(labels) - installed)
    if unknown:
        raise BadInput(f"project_apps names {', '.join(unknown)}, which no installed app is: check INSTALLED_APPS "
                       "(nothing was changed)")
    return project.model_copy(update={"apps": [app.model_copy(update={"own": True}) if app.label in labels else app
                                              for app in project.apps]})


def introspect(manage: ManagePy) -> ProjectInfo:
    """Ask the project, under its environment's settings, what it is made of."""
    with tempfile.TemporaryDirectory(prefix="squashkit-probe-") as private:
        out = Path(private) / "probe.json"
        env = {**manage.env, "SQUASHKIT_PROBE_OUTPUT": str(out), "SQUASHKIT_PROJECT_ROOT": str(manage.cwd)}
        code = f"import runpy; runpy.run_path({str(PROBE)!r}, run_name='__squashkit_probe__')"
        try:
            _django(manage.python, [str(manage.script), "shell", "-v", "0", "-c", code], cwd=manage.cwd, env=env, what="introspect")
        except sh.ErrorReturnCode as exc:
            raise BadInput(
                f"the project does not start with settings {manage.env['DJANGO_SETTINGS_MODULE']}: "
                f"{last_error_line(exc.stderr)}"
            ) from None
        if not out.exists():
            raise BadInput("manage.py shell ran but the project probe did not (is this a Django manage.py?)")
        result = json.loads(out.read_text())
    if "error" in result:
        raise BadInput(
            f"the project does not start with settings {manage.env['DJANGO_SETTINGS_MODULE']}: {result['error']}"
        )
    return ProjectInfo.model_validate(result["ok"])


def dumpdata(manage: ManagePy, alias: str, output: Path, exclude: list[str]) -> None:
    """``dumpdata --all --format jsonl`` of ``alias`` into ``output``, datetimes and times to the microsecond.

    Runs ``inproject/dumpdata.py`` in the project's ``manage.py shell`` (see its docstring for why).
    """
    arguments = {"alias": alias, "output": str(output), "exclude": list(exclude)}
    run_runner(manage, "dumpdata", arguments, what=f"dumpdata of {alias!r}")


def run_runner(manage: ManagePy, name: str, arguments: dict, *, what: str) -> str:
    """Run the in-project runner ``inproject/<name>.py`` in the project's ``manage.py shell``.

    Its arguments (plain Python data) arrive as the global ``SQUASHKIT_<NAME>``, and the
    runner acts when ``__name__`` is ``__squashkit_<name>__``.
    """
    code = (
        f"import runpy; runpy.run_path({str(inproject.runner(name))!r}, "
        f"init_globals={{'SQUASHKIT_{name.upper()}': {arguments!r}}}, run_name='__squashkit_{name}__')"
    )
    return manage.run("shell", "-v", "0", "-c", code, what=what)


def migration_files(app: AppInfo) -> list[Path]:
    """Every file of an app's migrations folder (symlinked folder followed), except caches.

    A folder or file squashkit cannot read is refused (``BadInput``), never skipped: Django
    lists an unreadable folder as empty, so the bundle would silently lack those files and a
    squash could not be undone. Symlinks inside the folder are not descended into (a link back
    to the folder would loop), and links that loop or dangle are not files.
    """
    if app.migrations_folder_resolved is None:
        return []
    folder = app.migrations_folder_resolved

    def unreadable(error: OSError) -> None:
        raise BadInput(
            f"cannot read {error.filename} ({error.strerror}): the migration files of {app.label} "
            "must be readable to back them up; nothing was changed"
        )

    files = []
    for directory, subdirectories, names in os.walk(folder, onerror=unreadable):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                if not os.access(path, os.R_OK):
                    unreadable(PermissionError(13, "Permission denied", str(path)))
                files.append(path)
    return sorted(files)


def migration_names(app: AppInfo) -> list[str]:
    """The migrations an app's folder holds now, named as Django's loader names them (modules whose
    names do not start with ``_`` or ``~``), read from the disk without starting Django."""
    names = []
    for path in migration_files(app):
        if path.parent == app.migrations_folder_resolved and path.suffix == ".py" and not path.stem.startswith(("_", "~")):
            names.append(path.stem)
    return sorted(names)


def _archive_names(project: ProjectInfo, root: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file on disk) of every migration file of the project's own apps.

    Names are the path as the app sees it, relative to the project root
    (``community/migrations/0001_initial.py`` even when ``migrations`` is a symlink), so
    putting them back follows the same symlinks the app uses.
    """
    entries = []
    for app in project.own_apps():
        if app.migrations_folder is None:
            continue
        try:
            seen_as = app.migrations_folder.relative_to(root)
        except ValueError:
            seen_as = Path(app.label) / "migrations"
        for path in migration_files(app):
            entries.append((str(seen_as / path.relative_to(app.migrations_folder_resolved)), path))
    return entries


def archive_migrations(project: ProjectInfo, root: Path, destination: Path, recipients: list | None = None) -> list[str]:
    """Write every migration file of the project's own apps to a tar.gz (age-encrypted to
    ``recipients``, if any); return their names."""
    entries = _archive_names(project, root)
    with bundlefiles.open_write(destination, recipients) as out, tarfile.open(fileobj=out, mode="w|gz") as archive:
        for name, path in entries:
            archive.add(path, arcname=name, recursive=False)
    return [name for name, _path in entries]


def verify_archive_matches_disk(project: ProjectInfo, root: Path, tarball: Path) -> None:
    """Raise unless every migration file on disk is in ``tarball`` byte for byte.

    Runs right before the files are deleted: the tarball is the only way back for a file that
    is not committed anywhere, so a file created or edited after the backup (or an archive the
    disk damaged) must stop the squash while nothing is lost yet.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(bundlefiles.read_bytes(tarball)), mode="r:gz") as archive:
            members = {member.name: member for member in archive.getmembers()}
            problems = []
            for name, path in _archive_names(project, root):
                member = members.get(name)
                if member is None or not member.isfile():
                    problems.append(f"{name} (not in the archive)")
                elif archive.extractfile(member).read() != path.read_bytes():
                    problems.append(f"{name} (differs from the archived copy)")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise OperationFailed(f"cannot read {tarball}: {exc}; no migration file was deleted") from None
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise OperationFailed(
            f"{tarball.name} does not hold the migration files as they are on disk: {problems[0]}{more}; "
            "no migration file was deleted (back up again, then retry)"
        )


def uncommitted_migration_changes(project: ProjectInfo, root: Path) -> list[str]:
    """Migration files git could not give back: untracked, modified, staged but not committed,
    deleted or ignored, one line each (``path: untracked``), paths relative to ``root`` when inside it.

    Folders are resolved through symlinks and asked of the repository that holds them. Returns
    [] when git is not installed or no folder is in a git work tree: nothing to compare with.
    """
    try:
        git = sh.Command("git")
    except sh.CommandNotFound:
        return []
    by_repository: dict[Path, list[Path]] = {}
    for app in project.own_apps():
        folder = app.migrations_folder_resolved
        if folder is None or not folder.is_dir():
            continue
        folder = folder.resolve()
        try:
            top = str(git("-C", str(folder), "rev-parse", "--show-toplevel", _in=None, _err_to_out=False)).strip()
        except sh.ErrorReturnCode:
            continue  # not in a work tree (or one git refuses to read)
        by_repository.setdefault(Path(top).resolve(), []).append(folder)
    lines = []
    for top, folders in sorted(by_repository.items()):
        pathspecs = [str(folder.relative_to(top)) for folder in folders]
        try:
            output = git(
                "-C", str(top), "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
                "--", *pathspecs, _in=None, _err_to_out=False, _return_cmd=True,
            ).stdout
        except sh.ErrorReturnCode as exc:
            raise OperationFailed(f"git status in {top} failed: {last_error_line(exc.stderr)}") from None
        fields = output.decode(errors="surrogateescape").split("\0")
        index = 0
        while index < len(fields):
            entry = fields[index]
            index += 1
            if len(entry) < 4:
                continue
            code, relative = entry[:2], entry[3:]
            if code[0] in "RC":
                index += 1  # the rename's source path follows
            path = top / relative
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            shown = str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else str(path)
            lines.append(f"{shown}: {_git_state(code)}")
    return lines


def _git_state(code: str) -> str:
    if code == "??":
        return "untracked"
    if code == "!!":
        return "ignored by git"
    index, worktree = code[0], code[1]
    if "D" in code:
        return "deleted, not committed"
    if index in "RC":
        return "renamed, not committed"
    if worktree == "M" or index == "M":
        return "modified, not committed"
    if index == "A":
        return "added, not committed"
    return f"git status {code.strip()}"


def squashed_apps(project: ProjectInfo) -> list[str]:
    """The labels a squash regenerates: the project's own apps. A project with none is refused:
    there is nothing to squash, and ``makemigrations`` without labels would write migrations for
    every installed app, into site-packages too."""
    labels = [app.label for app in project.own_apps()]
    if not labels:
        raise BadInput("the project has no apps of its own to squash (every installed app lives outside the project "
                       "directory, e.g. in site-packages): name them in the config, project_apps = [\"label\", ...]; "
                       "nothing was changed")
    return labels


def archive_members(tarball: Path) -> list[str]:
    """The file names a migrations tarball holds, relative to the project."""
    with tarfile.open(fileobj=io.BytesIO(bundlefiles.read_bytes(tarball)), mode="r:gz") as archive:
        return [member.name for member in archive.getmembers() if member.isfile()]


def extract_migrations(tarball: Path, root: Path) -> None:
    """Write every file of a migrations tarball under ``root``, refusing entries that would leave it."""
    # Decrypted in memory when it is a bundle's encrypted one: a few kB of source files.
    with tarfile.open(fileobj=io.BytesIO(bundlefiles.read_bytes(tarball)), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not member.isfile():
                raise OperationFailed(f"{tarball.name} holds an unsafe entry {member.name!r}")
            destination = root / name  # through the app's own symlink, as when it was archived
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())
