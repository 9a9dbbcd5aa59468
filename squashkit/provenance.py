"""What a bundle belongs to: this project at this code, an older state of it, or another project.

Every command that replaces a database from a bundle (``restore``, ``rollback``, ``promote``
and ``resume`` finishing one of them) asks ``judge`` before anything is created, dropped or
swapped. Faking the code's migrations over another project's tables, or over a schema older
than the code, would print "verified" over a database the models do not describe: every
migration recorded as applied, ``migrate --check`` clean, and the data wrong.

The verdicts:

- ``same``: the bundle's database applied exactly the code's migrations; go on.
- ``newer``: the code has migrations the bundle's database never applied, and each app's applied
  migrations are among the code's (an upgrade of a third-party app since the backup, a migration
  added since). The bundle comes back with its own ``django_migrations`` rows and the missing
  migrations run for real.
- ``older``: the bundle's database applied migrations the code does not have (the code is older,
  or the histories diverge). Refused, naming the app and migration.
- ``foreign``: the bundle is of another project. Refused; ``--force`` does not override it.

Pure logic: the caller gives the bundle's manifest and what the code on disk holds (``Code``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from squashkit.errors import BadInput

Kind = Literal["same", "newer", "older", "foreign"]

# Django's own apps every project shares: having them in common says nothing about being one project.
CONTRIB_PREFIX = "django.contrib."


class CodeApp(BaseModel):
    """One installed app as the code on disk has it."""

    label: str
    project: bool = Field(description="One of the project's own apps (or declared as such in the config).")
    contrib: bool = Field(False, description="A django.contrib app: every project has them.")
    migrations: list[str] = Field(description="Migration names on disk, a squashed one instead of those it replaces.")
    replaces: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Squashed migration name -> the (app, name) it replaces.")
    parents: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="Migration name -> the (app, name) it depends on.")
    aliases: list[str] = Field(description="The aliases its migrations run on (the routers' allow_migrate).")
    tables: list[str] = Field(default_factory=list, description="Its models' tables, as db_table names them.")


class Code(BaseModel):
    """The project as the code on disk has it (after a rollback put the bundle's files back)."""

    apps: list[CodeApp]


class Verdict(BaseModel):
    kind: Kind
    reason: str = Field(description="One line: what differs, and what to do.")
    missing: dict[str, list[tuple[str, str]]] = Field(
        default_factory=dict, description="alias -> (app, name) the code has and the bundle's database never applied.")

    def describe_missing(self) -> str:
        pairs = sorted({pair for pairs in self.missing.values() for pair in pairs})
        shown = ", ".join(f"{app}.{name}" for app, name in pairs[:3])
        return f"{len(pairs)} migration(s) ({shown}{', ...' if len(pairs) > 3 else ''})"


class BundleSide(BaseModel):
    """What a manifest says about the project it was taken from."""

    own_apps: list[str]
    applied: dict[str, list[tuple[str, str]]] = Field(description="alias -> (app, name) rows of its django_migrations.")
    tables: list[str] = Field(description="Every table of its databases, schema.name.")


def _bare(table: str) -> str:
    """A table's name without its schema or the quotes of a ``'schema"."name'`` db_table."""
    return table.replace('"', "").rsplit(".", 1)[-1]


def judge(bundle: BundleSide, code: Code, *, name: str = "the bundle") -> Verdict:
    """The verdict for ``bundle`` against ``code`` (see the module's docstring)."""
    apps = {app.label: app for app in code.apps}
    recorded = sorted({app for rows in bundle.applied.values() for app, _ in rows})
    # 1. Another project: its apps are not installed here, or it holds none of this project's apps.
    absent = sorted((set(bundle.own_apps) | set(recorded)) - set(apps))
    ours = sorted(app.label for app in code.apps if app.project and (app.migrations or app.tables))
    if not ours:  # no project app known: the installed apps that are not Django's own stand for the project
        ours = sorted(app.label for app in code.apps if not app.contrib and app.migrations)
    shared = set(ours) & (set(bundle.own_apps) | set(recorded))
    if absent or (ours and not shared):
        model_tables = {_bare(t) for app in code.apps for t in app.tables}
        strays = sorted(t for t in bundle.tables if _bare(t) not in model_tables and _bare(t) != "django_migrations")
        parts = []
        if absent:
            parts.append(f"its apps {', '.join(absent)} are not installed here")
        if ours and not shared:
            parts.append(f"it holds none of this project's apps ({', '.join(ours[:5])}{', ...' if len(ours) > 5 else ''})")
        if strays:
            parts.append(f"{len(strays)} of its tables belong to no model here (e.g. {strays[0]})")
        return Verdict(kind="foreign", reason=(
            f"{name} comes from another project: {'; '.join(parts)}. Nothing was changed; restore it with the project "
            "it was taken from (if an app was removed from INSTALLED_APPS since, put it back first)"))
    # 2. Older code: the bundle's database applied migrations the code does not have.
    for alias, rows in sorted(bundle.applied.items()):
        known = {(label, migration) for label, app in apps.items() for migration in app.migrations}
        known |= {tuple(pair) for app in code.apps for pairs in app.replaces.values() for pair in pairs}
        newer = [(app, migration) for app, migration in rows if (app, migration) not in known]
        if newer:
            app, migration = newer[0]
            return Verdict(kind="older", reason=(
                f"{name}'s {alias} database applied {len(newer)} migration(s) this code does not have (e.g. {app}.{migration}): "
                "the code is older than the bundle, or their histories diverge. Nothing was changed; check out the code "
                f"the bundle was taken with (its {app} app), or restore it into a database of its own to inspect it"))
    # 3. Newer code: migrations of the code the bundle's database never applied, run for real later.
    missing: dict[str, list[tuple[str, str]]] = {}
    for alias, rows in sorted(bundle.applied.items()):
        applied = {tuple(row) for row in rows}
        for app in code.apps:
            if alias not in app.aliases:
                continue  # the routers keep it off this alias: recorded there or not, nothing runs
            for migration in app.migrations:
                if (app.label, migration) in applied or _squashed_applied(app, migration, applied):
                    continue
                missing.setdefault(alias, []).append((app.label, migration))
    # 4. Newer code must continue the bundle's history: an applied migration whose parent the bundle never
    # applied means the histories diverge (migrate would stop at InconsistentMigrationHistory).
    for alias, pairs in sorted(missing.items()):
        applied = {tuple(row) for row in bundle.applied[alias]}
        lacking = set(pairs)
        for app in code.apps:
            for migration, parents in app.parents.items():
                if (app.label, migration) not in applied:
                    continue
                gap = next((tuple(p) for p in parents if tuple(p) in lacking), None)
                if gap:
                    return Verdict(kind="older", reason=(
                        f"{name}'s {alias} database applied {app.label}.{migration} but never {gap[0]}.{gap[1]}, which it "
                        "depends on in this code: their histories diverge. Nothing was changed; check out the code the "
                        "bundle was taken with, or restore it into a database of its own to inspect it"))
    if missing:
        verdict = Verdict(kind="newer", reason="", missing=missing)
        verdict.reason = (f"the code has {verdict.describe_missing()} that {name}'s database never applied: it comes back "
                          "with its own django_migrations rows, then migrate runs them for real")
        return verdict
    return Verdict(kind="same", reason=f"{name} applied exactly the code's migrations")


def _squashed_applied(app: CodeApp, migration: str, applied: set[tuple[str, str]]) -> bool:
    """A squashed migration counts as applied once everything it replaces is (as Django counts it)."""
    replaced = app.replaces.get(migration)
    return bool(replaced) and all(tuple(pair) in applied for pair in replaced)


def require(verdict: Verdict) -> Verdict:
    """Refuse a foreign or older bundle in one line (exit 2); hand back the others."""
    if verdict.kind in ("foreign", "older"):
        raise BadInput(verdict.reason)
    return verdict


# --- from a manifest and an introspected project --------------------------------------------------


def bundle_side(manifest) -> BundleSide:
    """What ``manifest`` (a ``bundle.Manifest``) says about its project."""
    return BundleSide(
        own_apps=sorted(manifest.own_apps),
        applied={e.alias: [tuple(row) for row in e.facts.applied_migrations]
                 for e in manifest.databases if e.facts.django_migrations_table},
        tables=sorted({t.qualified for e in manifest.databases if not e.dump_of for t in e.facts.tables}),
    )


def code_of(project, *, files_from=None) -> Code:
    """The code on disk (a ``project.ProjectInfo``); ``files_from`` (a manifest): the project's own apps as
    that bundle's migration files have them, which is what a rollback puts back before it restores.

    A django-tenants project records its tenant apps in each tenant's schema, not in public's
    django_migrations: on the tenants' alias only the shared apps are held to public's rows."""
    tenancy = project.tenancy
    apps = []
    for app in project.apps:
        aliases = list(app.aliases)
        if tenancy is not None and app.label not in tenancy.shared_apps:
            aliases = [alias for alias in aliases if alias != tenancy.alias]
        migrations, replaces = list(app.migrations), dict(app.replaces)
        parents = dict(app.parents)
        if files_from is not None and app.label in files_from.own_apps:
            # The bundle's files, with what they replace (bundles before format 6: as far as the code knows).
            kept = files_from.own_apps[app.label]
            migrations = list(kept.migrations)
            replaces = kept.replaces or {name: pairs for name, pairs in app.replaces.items() if name in migrations}
            parents = kept.parents
        tables = [t for m in app.models if not m.proxy and not m.auto_created for t in (m.db_table, *m.m2m_tables)]
        apps.append(CodeApp(label=app.label, project=app.own, contrib=app.name.startswith(CONTRIB_PREFIX),
                            migrations=migrations, replaces=replaces, parents=parents, aliases=aliases, tables=tables))
    return Code(apps=apps)


def check(manifest, project, *, name: str = "the bundle", files_from=None) -> Verdict:
    """``judge`` of a manifest against an introspected project, refusing a foreign or older bundle."""
    from squashkit import journal

    journal.kill_point("check bundle")
    return require(judge(bundle_side(manifest), code_of(project, files_from=files_from), name=name))
