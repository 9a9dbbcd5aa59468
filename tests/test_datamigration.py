"""The order carried rows are written in (``squashkit.datamigration``), without PostgreSQL.

A fresh build of the new files must write a multi-table child with its parent row, whichever app
owns the parent's table (a third-party one: wagtail's ``wagtailcore_page``): one migration, after
the code that made the rows it names, parents inserted first and referencing rows deleted first.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from squashkit import datamigration
from squashkit.freshdata import DataDiff, Snapshot, TableDiff, TableRows
from squashkit.project import AppInfo, ModelInfo, ProjectInfo


def key(*values) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def table(references: list[str], rows: dict[str, dict], identity: str = "id", **foreign: str) -> TableRows:
    return TableRows(identity=[identity], references=references, foreign_keys=foreign,
                     rows={key(row[identity]): row for row in rows.values()} if rows else {})


# The page tree: a third-party parent table, two project apps' children, a welcome page replaced.
OLD = Snapshot(tables={
    "pagetree_page": table([], {"1": {"id": 1, "title": "Site root", "parent_id": None},
                                "3": {"id": 3, "title": "Home", "parent_id": 1},
                                "4": {"id": 4, "title": "Library", "parent_id": 3}}, parent_id="pagetree_page"),
    "home_homepage": table(["pagetree_page"], {"3": {"page_ptr_id": 3}}, identity="page_ptr_id", page_ptr_id="pagetree_page"),
    "library_indexpage": table(["pagetree_page"], {"4": {"page_ptr_id": 4}}, identity="page_ptr_id",
                               page_ptr_id="pagetree_page"),
})
NEW = Snapshot(tables={
    "pagetree_page": table([], {"1": {"id": 1, "title": "Root", "parent_id": None},
                                "2": {"id": 2, "title": "Welcome", "parent_id": 1},
                                "3": {"id": 3, "title": "Library", "parent_id": 2}}),
    "home_homepage": table(["pagetree_page"], {}, identity="page_ptr_id"),
    "library_indexpage": table(["pagetree_page"], {"3": {"page_ptr_id": 3}}, identity="page_ptr_id"),
})
DIFF = DataDiff(tables={
    "pagetree_page": TableDiff(insert=[key(4)], delete=[key(2)], update={key(1): ["title"], key(3): ["title", "parent_id"]}),
    "home_homepage": TableDiff(insert=[key(3)]),
    "library_indexpage": TableDiff(insert=[key(4)], delete=[key(3)]),
})


def model(label: str, db_table: str) -> ModelInfo:
    return ModelInfo(label=label, db_table=db_table, auto_created=False, dumped_on=["default"], m2m_tables=[],
                     natural_key_fields={})


def app(label: str, tmp_path: Path | None, models: list[ModelInfo], files: list[str] = (), migrations: list[str] = ()) -> AppInfo:
    folder = None
    if tmp_path is not None:
        folder = tmp_path / label / "migrations"
        folder.mkdir(parents=True)
        for name in ["__init__", *files]:
            (folder / f"{name}.py").write_text("")
    return AppInfo(label=label, name=label, path=tmp_path or Path("/site-packages") / label, own=tmp_path is not None,
                   migrations_module=f"{label}.migrations", migrations_folder=folder, migrations_folder_resolved=folder,
                   migrations=list(migrations), aliases=["default"], models=models)


def project(tmp_path: Path) -> ProjectInfo:
    return ProjectInfo(django_version="5.2", python="3.11", databases={}, apps=[
        app("admin", None, [model("admin.logentry", "django_admin_log")], migrations=["0001_initial", "0003_logentry"]),
        app("pagetree", None, [model("pagetree.page", "pagetree_page")], migrations=["0001_initial", "0002_initial_data"]),
        app("home", tmp_path, [model("home.homepage", "home_homepage")], files=["0001_initial"]),
        app("library", tmp_path, [model("library.indexpage", "library_indexpage")],
            files=["0001_initial", "0002_squashkit_carried"]),
        app("orders", tmp_path, [model("orders.order", "orders_order")], files=["0001_initial"]),
    ])


def test_a_parent_table_is_inserted_before_its_multi_table_children_and_a_cycle_keeps_its_order():
    order = datamigration.insert_order(OLD, ["library_indexpage", "home_homepage", "pagetree_page"])
    assert order[0] == "pagetree_page" and set(order[1:]) == {"home_homepage", "library_indexpage"}
    cycle = Snapshot(tables={"a": TableRows(identity=["id"], references=["b"]), "b": TableRows(identity=["id"], references=["a"])})
    assert sorted(datamigration.insert_order(cycle, ["b", "a"])) == ["a", "b"]


def test_the_migration_lives_in_the_first_app_whose_data_migration_left_rows():
    groups = {"home": ["home_homepage", "pagetree_page"], "library": ["library_indexpage"]}
    assert datamigration.host(groups, ["orders", "library", "home"]) == "library"  # orders left no row
    assert datamigration.host(groups, []) == "home"


def test_one_migration_after_every_project_app_and_the_third_party_apps_it_writes(tmp_path):
    found = datamigration.dependencies(project(tmp_path), "home", "0001_initial", ["pagetree_page", "home_homepage"], set())
    assert found == [("home", "0001_initial"), ("library", "0002_squashkit_carried"), ("orders", "0001_initial"),
                     ("pagetree", "0002_initial_data")]  # not admin: a dependency moves an app's migrations in the plan


def test_referencing_rows_are_deleted_first_and_parents_inserted_first_in_one_migration(tmp_path):
    info = project(tmp_path)
    groups = {"home": ["home_homepage", "pagetree_page"], "library": ["library_indexpage"]}
    written = datamigration.write(DIFF, OLD, NEW, info, "default", groups, data_apps=["home", "library"])
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["home/migrations/0002_squashkit_data.py"]
    module = runpy.run_path(str(written[0]))
    rows = module["ROWS"]["default"]
    assert list(rows["delete"]) == ["library.indexpage", "pagetree.page"]  # the child's row before its parent's
    assert list(rows["insert"])[0] == "pagetree.page"
    assert rows["update"]["pagetree.page"] == [({"id": 1}, {"title": "Site root"}), ({"id": 3}, {"title": "Home", "parent_id": 1})]
    assert ("library", "0002_squashkit_carried") in module["Migration"].dependencies


def test_the_rows_a_fresh_build_could_not_write_are_read_back_from_migrates_error(tmp_path):
    """The migration names each row it could not write (one line of JSON after NOT_WRITTEN); squashkit
    reads them back as identities of the old build, and a row it cannot name stands for its table."""
    named = [{"table": "home_homepage", "action": "insert", "key": {"page_ptr_id": 3}, "why": "violates foreign key"},
             {"table": "library_indexpage", "action": "check", "key": None, "why": "violates foreign key"}]
    message = ("migrate default into the scratch database x failed: RuntimeError: "
               + datamigration.NOT_WRITTEN + json.dumps(named))
    found = datamigration.not_written(message, OLD, DIFF)
    assert found == {"home_homepage": {key(3): "insert: violates foreign key"},
                     "library_indexpage": {key(4): "check: violates foreign key", key(3): "check: violates foreign key"}}
    assert datamigration.describe(OLD, {"home_homepage": found["home_homepage"]}) == (
        "home_homepage page_ptr_id=3 (insert: violates foreign key)")
    assert datamigration.not_written("migrate failed: IntegrityError: duplicate key", OLD, DIFF) is None
    assert datamigration.unowned(DIFF, project(tmp_path)) == {}


def test_the_migration_names_the_row_a_foreign_key_checked_at_the_end_finds_broken(tmp_path):
    written = datamigration.write(DIFF, OLD, NEW, project(tmp_path), "default", {"home": list(DIFF.tables)}, data_apps=["home"])
    module = runpy.run_path(str(written[0]))

    class Diag:
        table_name = "home_homepage"
        message_detail = 'Key (page_ptr_id)=(3) is not present in table "pagetree_page".'

    class Broken(Exception):
        pass

    error = Broken('insert or update on table "home_homepage" violates foreign key constraint "fk"')
    error.__cause__ = type("Cause", (Exception,), {"diag": Diag()})()
    models = {label: type("Model", (), {"_meta": type("Meta", (), {"db_table": label.replace(".", "_"),
                                                                    "pk": type("Pk", (), {"column": pk})})})
              for label, pk in [("pagetree.page", "id"), ("home.homepage", "page_ptr_id"), ("library.indexpage", "page_ptr_id")]}
    found = module["_broken_reference"](error, models, module["ROWS"]["default"])
    assert found == [{"table": "home_homepage", "action": "insert", "key": {"page_ptr_id": 3},
                      "why": 'insert or update on table "home_homepage" violates foreign key constraint "fk"'}]


def test_the_migration_names_a_deleted_row_still_pointed_at(tmp_path):
    written = datamigration.write(DIFF, OLD, NEW, project(tmp_path), "default", {"home": list(DIFF.tables)}, data_apps=["home"])
    module = runpy.run_path(str(written[0]))
    error = Exception('update or delete on table "pagetree_page" violates foreign key constraint "fk" on table "x_note"')
    diag = type("Diag", (), {"table_name": "x_note", "message_detail": 'Key (id)=(2) is still referenced from table "x_note".'})
    error.__cause__ = type("Cause", (Exception,), {"diag": diag()})()
    models = {"pagetree.page": type("Model", (), {"_meta": type("Meta", (), {"db_table": "pagetree_page",
                                                                              "pk": type("Pk", (), {"column": "id"})})})}
    rows = {"delete": {"pagetree.page": module["ROWS"]["default"]["delete"]["pagetree.page"]}}
    assert module["_broken_reference"](error, models, rows) == [
        {"table": "pagetree_page", "action": "delete", "key": {"id": 2}, "why": str(error)}]
