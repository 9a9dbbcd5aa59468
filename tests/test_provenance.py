"""What a bundle belongs to (squashkit.provenance.judge): pure logic, no database, no Django process."""

from __future__ import annotations

import pytest

from squashkit.errors import BadInput
from squashkit.provenance import BundleSide, Code, CodeApp, judge, require

CONTRIB = [
    CodeApp(label="auth", project=False, contrib=True, migrations=["0001_initial", "0002_alter"], aliases=["default"],
            tables=["auth_user", "auth_group"]),
    CodeApp(label="contenttypes", project=False, contrib=True, migrations=["0001_initial"], aliases=["default"],
            tables=["django_content_type"]),
]
SHOP = CodeApp(label="shop", project=True, migrations=["0001_initial", "0002_price"], aliases=["default"],
               tables=["shop_product"])
TAGS = CodeApp(label="tags", project=False, migrations=["0001_initial", "0002_index"], aliases=["default"],
               tables=["tags_tag"])


def rows(*apps: CodeApp, drop: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    return [(app.label, name) for app in apps for name in app.migrations if (app.label, name) not in drop]


def side(applied: list[tuple[str, str]], own: list[str] = ("shop",), tables: tuple[str, ...] = ()) -> BundleSide:
    return BundleSide(own_apps=list(own), applied={"default": applied}, tables=list(tables))


def test_a_bundle_of_this_code_is_the_same():
    code = Code(apps=[*CONTRIB, SHOP, TAGS])
    verdict = judge(side(rows(*CONTRIB, SHOP, TAGS)), code)
    assert verdict.kind == "same" and not verdict.missing


def test_a_third_party_upgrade_since_the_backup_is_newer_code_with_the_migrations_to_run():
    code = Code(apps=[*CONTRIB, SHOP, TAGS])
    verdict = judge(side(rows(*CONTRIB, SHOP, TAGS, drop=(("tags", "0002_index"),))), code)
    assert verdict.kind == "newer"
    assert verdict.missing == {"default": [("tags", "0002_index")]}
    assert "tags.0002_index" in verdict.reason and "for real" in verdict.reason


def test_a_new_app_since_the_backup_is_newer_code():
    code = Code(apps=[*CONTRIB, SHOP, TAGS])
    verdict = judge(side(rows(*CONTRIB, SHOP)), code)
    assert verdict.kind == "newer" and verdict.missing == {"default": [("tags", "0001_initial"), ("tags", "0002_index")]}


def test_migrations_the_code_does_not_have_mean_an_older_code_named_by_app_and_migration():
    code = Code(apps=[*CONTRIB, SHOP, TAGS])
    verdict = judge(side([*rows(*CONTRIB, SHOP, TAGS), ("shop", "0003_discount")]), code, name="bundle b")
    assert verdict.kind == "older"
    assert "shop.0003_discount" in verdict.reason and "check out the code" in verdict.reason
    with pytest.raises(BadInput, match="bundle b's default database applied 1 migration"):
        require(verdict)


def test_a_bundle_whose_apps_are_not_installed_here_is_foreign():
    code = Code(apps=[*CONTRIB, SHOP])
    verdict = judge(side([*rows(*CONTRIB), ("blog", "0001_initial")], own=["blog"], tables=("public.blog_post",)), code)
    assert verdict.kind == "foreign"
    assert "its apps blog are not installed here" in verdict.reason
    assert "1 of its tables belong to no model here (e.g. public.blog_post)" in verdict.reason
    with pytest.raises(BadInput, match="comes from another project"):
        require(verdict)


def test_a_plain_startproject_bundle_is_foreign_to_a_project_with_apps():
    """Django's own apps in common say nothing: a bundle holding none of the project's apps is another project's."""
    code = Code(apps=[*CONTRIB, SHOP])
    verdict = judge(side(rows(*CONTRIB), own=[], tables=("public.auth_user",)), code)
    assert verdict.kind == "foreign" and "holds none of this project's apps (shop)" in verdict.reason


def test_without_project_apps_the_installed_packages_stand_for_the_project():
    """A project whose apps all live in site-packages: a bundle with none of them is still another project's."""
    packaged = TAGS.model_copy(update={"label": "dcim"})
    code = Code(apps=[*CONTRIB, packaged])
    assert judge(side(rows(*CONTRIB), own=[]), code).kind == "foreign"
    assert judge(side(rows(*CONTRIB, packaged), own=[]), code).kind == "same"


def test_a_squashed_migration_counts_as_applied_once_everything_it_replaces_is():
    squashed = TAGS.model_copy(update={"migrations": ["0001_squashed_0002"],
                                       "replaces": {"0001_squashed_0002": [("tags", "0001_initial"), ("tags", "0002_index")]}})
    code = Code(apps=[*CONTRIB, SHOP, squashed])
    assert judge(side(rows(*CONTRIB, SHOP, TAGS)), code).kind == "same"
    partly = judge(side(rows(*CONTRIB, SHOP, TAGS, drop=(("tags", "0002_index"),))), code)
    assert partly.kind == "newer" and partly.missing == {"default": [("tags", "0001_squashed_0002")]}


def test_an_app_the_routers_keep_off_an_alias_is_not_missing_there():
    analytics = CodeApp(label="stats", project=True, migrations=["0001_initial"], aliases=["analytics"], tables=["stats_hit"])
    code = Code(apps=[*CONTRIB, SHOP, analytics])
    bundle = BundleSide(own_apps=["shop", "stats"], tables=[],
                        applied={"default": rows(*CONTRIB, SHOP), "analytics": rows(*CONTRIB, SHOP, analytics)})
    assert judge(bundle, code).kind == "same"


def test_a_newer_code_must_continue_the_bundles_history_or_it_has_diverged():
    """An applied migration whose parent the bundle never applied: migrate would stop halfway."""
    child = CodeApp(label="orders", project=True, migrations=["0001_initial", "0002_ship"], aliases=["default"],
                    parents={"0002_ship": [("shop", "0002_price")]})
    code = Code(apps=[*CONTRIB, SHOP, child])
    verdict = judge(side(rows(*CONTRIB, SHOP, child, drop=(("shop", "0002_price"),)), own=["shop", "orders"]), code)
    assert verdict.kind == "older" and "applied orders.0002_ship but never shop.0002_price" in verdict.reason


def test_project_apps_counts_packaged_apps_as_the_projects_own_and_refuses_unknown_labels(tmp_path):
    from squashkit.project import AppInfo, ProjectInfo, declare_own

    def app(label: str) -> AppInfo:
        return AppInfo(label=label, name=f"pkg.{label}", path=tmp_path, own=False, migrations_module=None,
                       migrations_folder=None, migrations_folder_resolved=None, migrations=["0001_initial"],
                       aliases=["default"], models=[])

    project = ProjectInfo(django_version="5.2", python="python", databases={}, apps=[app("dcim"), app("extras")])
    assert [a.label for a in declare_own(project, ["dcim"]).own_apps()] == ["dcim"]
    assert declare_own(project, []).own_apps() == []
    with pytest.raises(BadInput, match="project_apps names ipam, which no installed app is"):
        declare_own(project, ["dcim", "ipam"])
