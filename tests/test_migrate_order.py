"""The order aliases are migrated in, worked out from settings and layouts alone (no PostgreSQL).

An alias whose search_path reaches another alias's django_migrations must be migrated first:
after the other, it would take the other's history for its own and build nothing.
"""

from __future__ import annotations

from pathlib import Path

from squashkit.databases import AliasLayout, build_order, declared_layout, migrate_order, sightings
from squashkit.project import AppInfo, ProjectInfo


def _alias(name: str = "app", options: str | None = None, **test) -> dict:
    entry = {"ENGINE": "django.db.backends.postgresql", "NAME": name, "HOST": "db", "PORT": 5432}
    if options:
        entry["OPTIONS"] = {"options": options}
    if test:
        entry["TEST"] = test
    return entry


def _project(**databases: dict) -> ProjectInfo:
    apps = [AppInfo(label=f"app_{alias}", name=f"app_{alias}", path=Path("/p"), own=True, migrations_module=None,
                    migrations_folder=None, migrations_folder_resolved=None, migrations=[], aliases=[alias], models=[])
            for alias in databases]
    return ProjectInfo(django_version="5.2", python="python", databases=databases, apps=apps,
                       vendors={alias: "postgresql" for alias in databases})


def test_an_alias_reaching_defaults_history_migrates_before_default():
    project = _project(default=_alias(), data=_alias(options="-csearch_path=data,public"))
    assert declared_layout(project)["data"] == AliasLayout(path=["data", "public"], home="data")
    assert migrate_order(project) == ["data", "default"]


def test_aliases_in_schemas_of_their_own_keep_the_test_runners_order():
    project = _project(default=_alias(options="-csearch_path=auth,public"),
                       data=_alias(options="-csearch_path=data,public"))
    assert migrate_order(project) == ["default", "data"]


def test_an_alias_on_another_database_is_not_held_back():
    project = _project(default=_alias(), data=_alias("other", options="-csearch_path=data,public"))
    assert migrate_order(project) == ["default", "data"]


def test_explicit_dependencies_still_follow():
    project = _project(default=_alias(), data=_alias(options="-csearch_path=data,public"),
                       reports=_alias(options="-csearch_path=reports,public", DEPENDENCIES=["data"]))
    # data and reports both see default's history in public; reports still waits for data.
    assert migrate_order(project) == ["data", "reports", "default"]


def test_the_live_layout_decides_over_the_settings():
    project = _project(default=_alias(), data=_alias(options="-csearch_path=data,public"))
    shared = {"default": AliasLayout(path=["public"], home="public"),
              "data": AliasLayout(path=["data", "public"], home="public")}
    # Built default first, the live database has one django_migrations for both: the scratch build reproduces it.
    assert migrate_order(project, shared) == ["default", "data"]


def test_sightings_name_reader_and_owner():
    layout = {"default": AliasLayout(path=["public"], home="public"),
              "data": AliasLayout(path=["data", "public"], home="data"),
              "auth": AliasLayout(path=["auth", "public"], home="auth")}
    assert sightings(layout, [["default", "data", "auth"]]) == [("data", "default"), ("auth", "default")]
    assert sightings(layout, [["default"], ["data", "auth"]]) == []


def test_a_circle_keeps_the_preferred_order_and_names_what_it_breaks():
    layout = {"a": AliasLayout(path=["a", "b"], home="a"), "b": AliasLayout(path=["b", "a"], home="b")}
    order, impossible = build_order(["a", "b"], layout, [["a", "b"]])
    assert order == ["a", "b"] and impossible == [("b", "a")]
