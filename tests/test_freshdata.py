"""A squash loses nothing a fresh database needs (issue 14): what the old history's data migrations
leave in an empty database is carried as data, and a fresh ``migrate`` of the new files gives the
same rows as a fresh ``migrate`` of the old ones, row for row, content types by natural key.

sample_project with SAMPLE_FRESHDATA=1 installs ``seeds`` (see its models' docstring): a tree of
rows, a generic relation, a field renamed and a value changed after the seed, rows deleted by
RunSQL; and ``orders/0003_populate_order_reference``, a backfill, leaves nothing in a fresh one.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import create_database, drop_database, manage, table_fingerprints
from tests.test_pipeline import PROD_OWNER, PROD_PASSWORD, Project, make_prod, prod_role, project_copy  # noqa: F401 (fixture)
from tests.test_squash_moves_no_data import assert_clean

FRESHDATA = {"SAMPLE_FRESHDATA": "1"}
ROWS = 200
SKIP = ("django_migrations",)


@pytest.fixture(scope="module")
def freshdata_template(pg) -> str:
    name = f"freshdata_template_{ROWS}"
    create_database(pg, name)
    manage(pg, name, "migrate", "-v", "0")
    manage(pg, name, "seed_data", "--rows", str(ROWS))
    manage(pg, name, "migrate", "-v", "0", **FRESHDATA)
    with psycopg.connect(**pg.conninfo(name), autocommit=True) as conn:
        # The live database went its own way since: its rows must stay exactly as they are.
        conn.execute("UPDATE seeds_setting SET data = 'dark' WHERE key = 'theme'")
        conn.execute("INSERT INTO seeds_flag (name) VALUES ('live-only')")
    return name


@pytest.fixture
def fresh_project(pg, freshdata_template, prod_role, tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("SAMPLE_FRESHDATA", "1")  # every manage.py and squashkit run below inherits it
    yield from project_copy(pg, tmp_path, freshdata_template, prefix="fresh_")


def fresh_rows(project: Project, name: str) -> dict:
    """What a fresh migrate of the files on disk leaves: every table's rows, by natural key where ids are post_migrate's."""
    dbname = create_database(project.pg, f"{project.dev}_{name}")
    try:
        project.manage(dbname, "migrate", "-v", "0")
        with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
            return table_fingerprints(conn, natural=True, skip=SKIP)
    finally:
        drop_database(project.pg, dbname)


def data_migrations(project: Project) -> dict[str, str]:
    return {str(path.relative_to(project.root)): path.read_text()
            for path in sorted(project.root.glob("*/migrations/*_squashkit_data.py"))}


def seeds_files(project: Project) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((project.root / "seeds" / "migrations").glob("*.py"))}


def test_a_fresh_build_of_the_squashed_files_holds_every_row_of_the_old_history_and_a_second_squash_carries_nothing(fresh_project):
    project = fresh_project
    old = fresh_rows(project, "old")
    assert old["public.seeds_category"][0] == 4 and old["public.seeds_setting"][0] == 2 and old["public.seeds_flag"][0] == 2
    live = project.fingerprint(project.dev)

    result = project.run("squash", "--yes")  # no --accept-loss: what the data migrations did is carried as data
    assert result.code == 0, result.stderr
    assert project.fingerprint(project.dev) == live  # the live rows are the live database's own
    assert_clean(project, project.dev)
    carried = data_migrations(project)
    assert list(carried) == ["seeds/migrations/0003_squashkit_data.py"], result.stderr
    text = carried["seeds/migrations/0003_squashkit_data.py"]
    assert "import seeds" not in text and "from seeds" not in text  # historical models only
    assert "ContentTypeKey('seeds', 'category')" in text  # the label's content type, by natural key
    assert "'seeds.flag'" in text and "'beta'" in text  # carried as a delete: 0006's code moved, 0007's RunSQL did not
    assert "not needed" in result.stderr and "0003_populate_order_reference" in result.stderr
    assert fresh_rows(project, "new") == old

    checked = project.run("check", "--json")
    finding = next(item for item in json.loads(checked.stdout) if item["name"] == "fresh data (default)")
    assert finding["status"] == "ok", finding

    second = project.run("squash", "--yes")
    assert second.code == 0, second.stderr
    assert "carried as data" not in second.stderr, second.stderr
    assert not data_migrations(project), list(project.migration_files())  # squashkit's own data migration moved as it is
    assert fresh_rows(project, "second") == old
    assert project.fingerprint(project.dev) == live
    assert_clean(project, project.dev)


def test_a_data_migration_whose_rows_differ_on_every_build_is_refused_and_nothing_changes(fresh_project):
    project = fresh_project
    (project.root / "seeds" / "migrations" / "0008_token.py").write_text(
        "import secrets\n\nfrom django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [('seeds', '0007_retire_beta')]\n\n"
        "    operations = [\n"
        "        migrations.RunPython(lambda apps, schema_editor: apps.get_model('seeds', 'Setting').objects.using(\n"
        "            schema_editor.connection.alias).create(key='token', data=secrets.token_hex(8))),\n"
        "    ]\n"
    )
    project.manage(project.dev, "migrate", "-v", "0")
    before, files, seeds = project.fingerprint(project.dev), project.migration_files(), seeds_files(project)
    result = project.run("squash", "--yes", "--force")
    assert result.code != 0, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "0008_token.py" in error and "seeds_setting.data" in error and "differ" in error, error
    assert "Traceback" not in result.stderr
    assert project.fingerprint(project.dev) == before and project.migration_files() == files and seeds_files(project) == seeds


@pytest.mark.parametrize("command", [["squash", "--rebuild"], ["promote", "dev-to-prod", "--squash"], ["restore", "--squash"]],
                         ids=["squash-rebuild", "promote-squash", "restore-squash"])
def test_a_squash_that_rebuilds_the_database_carries_the_old_historys_rows_and_keeps_every_live_row(fresh_project, command):
    """The rebuild path (squash --rebuild) and the squashes that follow a copy (promote --squash,
    restore --squash) prove the rows of a fresh build too: the data migration is written and proved
    before migrate --fake marks it applied, and the rows copied are the source's own."""
    project = fresh_project
    old = fresh_rows(project, "old")
    source = project.fingerprint(project.dev)
    if command[0] != "squash":
        make_prod(project)  # a prod of its own, with the seeds app (SAMPLE_FRESHDATA=1) and a row of its own
    if command[0] == "restore":
        made = project.run("backup", "--env", "dev")
        assert made.code == 0, made.stderr
        command = ["restore", made.stdout.strip().splitlines()[-1], "--env", "prod", "--squash"]

    result = project.run(*command, "--yes")  # no --accept-loss: what the data migrations did is carried as data
    assert result.code == 0, result.stderr
    assert list(data_migrations(project)) == ["seeds/migrations/0003_squashkit_data.py"], result.stderr
    assert fresh_rows(project, "new") == old  # a fresh migrate of the new files, row for row
    squashed = project.dev if command[0] == "squash" else project.prod
    assert project.fingerprint(squashed) == source  # the data migration was faked, not run: the source's rows
    assert ("seeds", "0003_squashkit_data") in project.applied(squashed)
    owner = {} if squashed == project.dev else {"owner": PROD_OWNER, "password": PROD_PASSWORD}
    project.manage(squashed, "migrate", "--check", **owner)  # every file applied
    project.manage(squashed, "makemigrations", "--check", "--dry-run", **owner)


def test_the_loss_report_alone_says_a_squash_compares_data_migrations_as_rows(fresh_project):
    """``squashkit losses`` shows what a squash's step 0b shows: data migrations compared as rows, not lost."""
    result = fresh_project.run("losses", "--json")
    assert result.code == 0, result.stderr
    operations = json.loads(result.stdout)["operations"]
    backfill = next(op for op in operations if op["migration"] == "0003_populate_order_reference")
    assert backfill["verdict"] == "data" and "compared row for row" in backfill["reason"], backfill
    assert any(op["app"] == "seeds" and op["verdict"] == "data" for op in operations), operations
    text = fresh_project.run("losses")
    assert text.code == 0 and "compared as rows" in text.stdout, text.stdout


def test_with_accept_loss_a_row_left_out_takes_the_rows_pointing_at_it_along(fresh_project):
    """A row whose values differ on every build is left out with --accept-loss; a carried row that
    points at it would break its foreign key in every fresh build (pretix's first admin user and
    its notification setting): it is left out too, and the squash goes on."""
    project = fresh_project
    (project.root / "seeds" / "migrations" / "0008_random_root.py").write_text(
        "import secrets\n\nfrom django.db import migrations\n\n\n"
        "def seed(apps, schema_editor):\n"
        "    Category = apps.get_model('seeds', 'Category')\n"
        "    alias = schema_editor.connection.alias\n"
        "    root = Category.objects.using(alias).create(name='root-' + secrets.token_hex(8))\n"
        "    Category.objects.using(alias).create(name='leaf-of-random-root', parent=root)\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [('seeds', '0007_retire_beta')]\n\n"
        "    operations = [migrations.RunPython(seed)]\n"
    )
    project.manage(project.dev, "migrate", "-v", "0")
    old = fresh_rows(project, "old")
    live = project.fingerprint(project.dev)

    refused = project.run("squash", "--yes", "--force")
    assert refused.code != 0 and "seeds_category.name" in refused.stderr.strip().splitlines()[-1], refused.stderr

    result = project.run("squash", "--yes", "--force", "--accept-loss")
    assert result.code == 0, result.stderr
    assert "2 row(s) of seeds_category are not carried" in result.stderr, result.stderr
    assert project.fingerprint(project.dev) == live
    new = fresh_rows(project, "new")
    assert new["public.seeds_category"][0] == old["public.seeds_category"][0] - 2  # the random root and its leaf
    assert {t: v for t, v in new.items() if t != "public.seeds_category"} == {t: v for t, v in old.items() if t != "public.seeds_category"}


# --- a page tree: multi-table rows of a third-party parent, made by two apps (SAMPLE_PAGETREE=1) ---

PAGETREE = {"SAMPLE_PAGETREE": "1"}


@pytest.fixture(scope="module")
def pagetree_template(pg) -> str:
    name = "pagetree_template"
    create_database(pg, name)
    manage(pg, name, "migrate", "-v", "0", **PAGETREE)
    return name


@pytest.fixture
def pagetree_project(pg, pagetree_template, prod_role, tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("SAMPLE_PAGETREE", "1")
    yield from project_copy(pg, tmp_path, pagetree_template, prefix="pages_")


@pytest.mark.parametrize("command", [["squash"], ["squash", "--rebuild"], ["promote", "dev-to-prod", "--squash"]],
                         ids=["squash", "squash-rebuild", "promote-squash"])
def test_multi_table_rows_of_a_third_party_parent_made_by_two_apps_are_carried_parents_first(pagetree_project, command):
    """home's data migration replaces the third-party welcome page with a HomePage (a delete, an
    insert of a child row and its parent row, an update of the root); library's, carried as code,
    makes an index page under it. One data migration writes them all, once library's code ran,
    and a fresh build of the new files holds the old history's rows, row for row."""
    project = pagetree_project
    old = fresh_rows(project, "old")
    assert old["public.home_homepage"][0] == 1 and old["public.library_indexpage"][0] == 1
    live = project.fingerprint(project.dev)
    if command[0] == "promote":
        make_prod(project)

    result = project.run(*command, "--yes")
    assert result.code == 0, result.stderr
    carried = data_migrations(project)
    assert len(carried) == 1, result.stderr  # one migration: the child rows commit with their parent rows
    text = next(iter(carried.values()))
    assert "'pagetree.page'" in text and "'home.homepage'" in text and "'library.indexpage'" in text
    assert "('library', '0002_squashkit_carried')" in text  # after the code that made the row it updates
    assert (project.root / "library" / "migrations" / "0002_squashkit_carried.py").exists()
    assert fresh_rows(project, "new") == old
    squashed = project.prod if command[0] == "promote" else project.dev
    assert project.fingerprint(squashed) == live  # the data migration was recorded as applied, not run
    if command == ["squash"]:
        assert_clean(project, project.dev)
    else:
        owner = {"owner": PROD_OWNER, "password": PROD_PASSWORD} if squashed == project.prod else {}
        project.manage(squashed, "migrate", "--check", **owner)


def test_a_carried_row_a_fresh_build_cannot_write_is_named_and_left_out_with_accept_loss(fresh_project):
    """A check constraint added NOT VALID after the seed (old rows grandfathered) is carried as RunSQL
    and runs before the data migration in a fresh build: the row it forbids cannot be written there.
    The squash names it and the flag; with --accept-loss it is left out and the loss report names it."""
    project = fresh_project
    (project.root / "seeds" / "migrations" / "0008_no_new_jazz.py").write_text(
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [('seeds', '0007_retire_beta')]\n\n"
        "    operations = [\n"
        "        migrations.RunSQL(\n"
        "            \"ALTER TABLE seeds_category ADD CONSTRAINT seeds_category_no_jazz CHECK (name <> 'jazz') NOT VALID\",\n"
        "            'ALTER TABLE seeds_category DROP CONSTRAINT seeds_category_no_jazz'),\n"
        "    ]\n"
    )
    project.manage(project.dev, "migrate", "-v", "0")
    old = fresh_rows(project, "old")
    before, files, seeds = project.fingerprint(project.dev), project.migration_files(), seeds_files(project)

    refused = project.run("squash", "--yes", "--force")
    assert refused.code != 0
    error = refused.stderr.strip().splitlines()[-1]
    assert "seeds_category id=4" in error and "seeds_category_no_jazz" in error and "--accept-loss" in error, error
    assert "Traceback" not in refused.stderr
    assert project.fingerprint(project.dev) == before and project.migration_files() == files and seeds_files(project) == seeds

    result = project.run("squash", "--yes", "--force", "--accept-loss")
    assert result.code == 0, result.stderr
    assert "--accept-loss: 1 row(s) of seeds_category are not carried: seeds_category id=4" in result.stderr, result.stderr
    lost = [line for line in result.stderr.splitlines() if line.strip().startswith("lost ")]
    assert len(lost) == 1 and "0002_seed_rows.py" in lost[0], result.stderr  # the loss report names what made it
    assert project.fingerprint(project.dev) == before
    new = fresh_rows(project, "new")
    assert new["public.seeds_category"][0] == old["public.seeds_category"][0] - 1  # jazz
    assert {t: v for t, v in new.items() if t != "public.seeds_category"} == {t: v for t, v in old.items() if t != "public.seeds_category"}
