"""``rollback BUNDLE/db.json``: the json path loads by SQL, checked against the bundle's content
hashes, and gives back what a Python round trip would change; ``--loaddata`` keeps Django's way
one flag away, and a load that changes a table fails naming it, leaving the target as it was."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import (
    OWNER,
    OWNER_PASSWORD,
    SAMPLE,
    create_database,
    drop_database,
    manage,
    sequences,
    squashkit,
    table_fingerprints,
    unique_name,
)
from tests.test_pipeline import prod_role, project  # noqa: F401 (fixtures)

FIELDTYPES = {"SAMPLE_FIELDTYPES": "1"}
SKIP = ("django_migrations", "django_session", "django_admin_log")


@pytest.fixture
def fieldtypes_project(pg, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root, symlinks=True, ignore=shutil.ignore_patterns("backups", "__pycache__"))
    (root / "pyproject.toml").unlink()
    dev = create_database(pg, unique_name("fieldtypes_dev"))
    manage(pg, dev, "migrate", "-v", "0", **FIELDTYPES)
    manage(pg, dev, "seed_fieldtypes", **FIELDTYPES)
    with psycopg.connect(**pg.conninfo(dev), autocommit=True) as conn:
        # A JSON null in a NOT NULL column: Django's loaddata cannot load it at all (not even from
        # dumpdata's own file), and this test wants a loaddata that succeeds and changes values.
        conn.execute("DELETE FROM fieldtypes_jsonmodel WHERE jsonb_typeof(required) = 'null'")
    url = pg.url(dev, user=OWNER, password=OWNER_PASSWORD)
    (root / "squashkit.toml").write_text(
        f'python = "{sys.executable}"\nbackup_dir = "backups"\ndefault_env = "dev"\n'
        f'[environments.dev]\nsettings = "sample_project.settings"\n'
        # FIELDTYPES_TENANT: loaddata sets many-to-many lists through a scoped default manager,
        # which the app lets it do only inside a scope (as its own commands would run).
        f'env = {{ DATABASE_URL = "{url}", SAMPLE_FIELDTYPES = "1", FIELDTYPES_TENANT = "*" }}\n'
    )
    yield root, dev
    for suffix in ("", "__squashkit_new", "__squashkit_prev"):
        drop_database(pg, dev + suffix)


def fingerprint(pg, dbname: str) -> dict:
    with psycopg.connect(**pg.conninfo(dbname)) as conn:
        return table_fingerprints(conn, natural=True, skip=SKIP)  # a json load gives join rows new ids


def test_the_json_rollback_gives_back_every_value_and_a_loaddata_that_changes_one_fails(pg, fieldtypes_project):
    root, dev = fieldtypes_project
    run = lambda *args: squashkit("--config", str(root / "squashkit.toml"), *args)  # noqa: E731
    made = run("backup")
    assert made.code == 0, made.stderr
    bundle = Path(made.stdout.strip().splitlines()[-1])
    before = fingerprint(pg, dev)

    # Django's loaddata reads JSON numbers as floats and hands lists to managers that filter:
    # it changes rows without changing their count. The content check names what changed.
    result = run("rollback", str(bundle / "db.json.gz"), "--loaddata", "--yes")
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "public.fieldtypes_" in error and ("differs from the source" in error or "rows" in error), error
    assert "Nothing was lost" in error, error
    assert fingerprint(pg, dev) == before

    # The SQL load gives every row back exactly, ids, the custom field's text and JSON digits included.
    result = run("rollback", str(bundle / "db.json.gz"), "--yes")
    assert result.code == 0, result.stderr
    assert fingerprint(pg, dev) == before
    assert "tables hold the source's content" in result.stderr


def test_on_sample_project_the_sql_load_and_loaddata_give_the_same_rows_and_sequences(pg, project):
    """One bundle's db.json loaded both ways (sample_project's fields all survive a Python round
    trip): the same rows, sequences, content types and permissions, each checked by content."""
    made = project.run("backup")
    assert made.code == 0, made.stderr
    fixture = Path(made.stdout.strip().splitlines()[-1]) / "db.json.gz"
    loaded = {}
    for way in ("sql", "loaddata"):
        result = project.run("rollback", str(fixture), "--yes", *(["--loaddata"] if way == "loaddata" else []))
        assert result.code == 0, result.stderr
        with psycopg.connect(**pg.conninfo(project.dev)) as conn:
            loaded[way] = (table_fingerprints(conn, natural=True, skip=SKIP), sequences(conn))
    assert loaded["sql"] == loaded["loaddata"]
