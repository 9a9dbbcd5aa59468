"""What a large application brings, end to end (issue 13): a history already squashed with Django's
``squashmigrations`` (``replaces``), default managers that refuse queries outside a scope
(django-scopes), a plugin app with no models and a data migration, an index only the history
declares, and a ``check`` people run often.

sample_project with SAMPLE_LARGEAPP=1 installs ``events`` and ``boxoffice`` (see their modules);
the database is migrated without them first and seeded, then with them, as a plugin is added to
a running site.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import create_database, drop_database, manage, table_fingerprints
from tests.test_pipeline import PROD_OWNER, PROD_PASSWORD, Project, make_prod, prod_role, project_copy  # noqa: F401 (fixture)
from tests.test_squash_moves_no_data import assert_clean

LARGEAPP = {"SAMPLE_LARGEAPP": "1"}
ROWS = 300
SKIP = ("django_migrations", "django_session", "django_admin_log")
SCRATCH_BUILD = "into the scratch database"  # what the Django process building a scratch schema is called


@pytest.fixture(scope="module")
def largeapp_template(pg) -> str:
    name = f"largeapp_template_{ROWS}"
    create_database(pg, name)
    manage(pg, name, "migrate", "-v", "0")
    manage(pg, name, "seed_data", "--rows", str(ROWS))
    manage(pg, name, "migrate", "-v", "0", **LARGEAPP)
    manage(pg, name, "seed_events", **LARGEAPP)
    return name


@pytest.fixture
def largeapp(pg, largeapp_template, prod_role, tmp_path, monkeypatch) -> Project:
    """A copy of sample_project with the large-app apps installed, a seeded dev and a prod name."""
    monkeypatch.setenv("SAMPLE_LARGEAPP", "1")  # every manage.py and squashkit run below inherits it
    yield from project_copy(pg, tmp_path, largeapp_template, prefix="largeapp_")


def findings(result) -> dict[str, dict]:
    assert result.stdout.strip(), result.stderr
    return {item["name"]: item for item in json.loads(result.stdout)}


def natural_fingerprint(project: Project, dbname: str) -> dict:
    with psycopg.connect(**project.pg.conninfo(dbname)) as conn:
        return table_fingerprints(conn, natural=True, skip=SKIP)  # a json load gives join rows new ids


def test_check_counts_rows_a_squashed_migration_replaces_and_a_second_check_builds_nothing(largeapp):
    first = largeapp.run("check", "--json")
    assert first.code == 0, first.stdout + first.stderr
    found = findings(first)
    events = found["migrations events (default)"]
    # 0001-0003 are recorded because 0001_squashed_0003_ticket_extra replaces them: no file needed.
    assert events["status"] == "ok" and "no file" not in events["detail"], events
    assert "3 recorded rows are migrations a squashed one replaces" in events["detail"]
    assert found["migrations boxoffice (default)"]["status"] == "ok"  # an app without models migrates too
    assert found["schema (default)"]["status"] == "ok" and "scratch migrate" in found["schema (default)"]["detail"]
    assert SCRATCH_BUILD in first.stderr

    second = largeapp.run("check", "--json")
    assert second.code == 0, second.stderr
    assert SCRATCH_BUILD not in second.stderr, second.stderr  # nothing changed: no Django process built a schema
    assert "the scratch build check made" in findings(second)["schema (default)"]["detail"]

    # A migration file changed (even by a comment): the kept build is not for these files any more.
    migration = largeapp.root / "events" / "migrations" / "0004_event_organizer_slug_index.py"
    migration.write_text(migration.read_text() + "# edited\n")
    third = largeapp.run("check", "--json")
    assert third.code == 0 and SCRATCH_BUILD in third.stderr, third.stderr


def test_a_scoped_default_manager_keeps_every_row_through_backup_promote_and_rollback(largeapp):
    """Every default manager of events raises outside a scope: dumpdata, and a loaddata that sets a
    many-to-many, would fail; squashkit switches scoping off where it goes through the ORM."""
    before = natural_fingerprint(largeapp, largeapp.dev)
    made = largeapp.run("backup")
    assert made.code == 0, made.stderr
    assert "events.ticket" in made.stderr  # its CodeField sends it through Django's serializer, unscoped
    bundle = made.stdout.strip().splitlines()[-1]

    create_database(largeapp.pg, largeapp.prod, owner=PROD_OWNER)
    largeapp.manage(largeapp.prod, "migrate", "-v", "0", owner=PROD_OWNER, password=PROD_PASSWORD)
    promoted = largeapp.run("promote", "dev-to-prod", "--yes")
    assert promoted.code == 0, promoted.stderr
    assert largeapp.fingerprint(largeapp.prod) == largeapp.fingerprint(largeapp.dev)

    with psycopg.connect(**largeapp.pg.conninfo(largeapp.dev), autocommit=True) as conn:
        conn.execute("DELETE FROM events_ticket_extras")
        conn.execute("UPDATE events_ticket SET holder = 'changed'")
    # Django's loaddata, through the ORM: it sets each ticket's extras through Extra's scoped manager.
    rolled = largeapp.run("rollback", f"{bundle}/db.json.gz", "--loaddata", "--yes")
    assert rolled.code == 0, rolled.stderr
    assert natural_fingerprint(largeapp, largeapp.dev) == before


def test_squash_of_a_large_history_carries_the_plugin_and_the_stray_index_and_check_reuses_its_build(largeapp):
    checked = largeapp.run("check")  # keeps the old history's build, which the squash then reuses
    assert checked.code == 0, checked.stdout + checked.stderr
    before = largeapp.fingerprint(largeapp.dev)

    result = largeapp.run("squash", "--yes", "--accept-loss")

    assert result.code == 0, result.stderr
    assert largeapp.fingerprint(largeapp.dev) == before
    assert "the old history's schema is the scratch build check made" in result.stderr
    assert_clean(largeapp, largeapp.dev)  # files and django_migrations agree both ways
    events = sorted(p.name for p in (largeapp.root / "events" / "migrations").glob("0*.py"))
    # The replaces chain collapsed with the rest; the calendar view's RunPython, from a migration that is not
    # atomic (CREATE INDEX CONCURRENTLY), carried into one that is not either.
    assert events == ["0001_initial.py", "0002_squashkit_carried.py", "0003_squashkit_schema.py"]
    carried = (largeapp.root / "events" / "migrations" / events[1]).read_text()
    assert "    atomic = False\n" in carried and "CREATE UNIQUE INDEX CONCURRENTLY" in carried
    assert "events_event_organizer_id_slug_40a74a00_idx" in (largeapp.root / "events" / "migrations" / events[2]).read_text()
    boxoffice = sorted(p.name for p in (largeapp.root / "boxoffice" / "migrations").glob("0*.py"))
    assert boxoffice == ["0001_initial.py"]  # no models: squashkit wrote its initial migration for the data migration
    with psycopg.connect(**largeapp.pg.conninfo(largeapp.dev)) as conn:
        rows = conn.execute("SELECT app, name FROM django_migrations WHERE app IN ('events', 'boxoffice') ORDER BY 1, 2").fetchall()
    # ticketplug (installed as a package) depends on events.0002_event_starts_at: the new 0001_initial replaces that
    # name, so the plugin's dependency resolves, and Django counts it applied while that row is recorded too.
    assert rows == [("boxoffice", "0001_initial"), ("events", "0001_initial"), ("events", "0002_event_starts_at"),
                    ("events", "0002_squashkit_carried"), ("events", "0003_squashkit_schema")]
    assert "replaces = [\n        ('events', '0002_event_starts_at'),\n    ]" in (largeapp.root / "events" / "migrations" / events[0]).read_text()

    after = largeapp.run("check")
    assert after.code == 0, after.stdout
    assert SCRATCH_BUILD not in after.stderr and "the scratch build squash made" in after.stdout, after.stderr

    # A fresh database from the new files alone runs the carried data migration and has the stray index.
    fresh = create_database(largeapp.pg, largeapp.dev + "_fresh")
    largeapp.manage(fresh, "migrate", "-v", "0")
    with psycopg.connect(**largeapp.pg.conninfo(fresh)) as conn:
        assert conn.execute("SELECT name FROM auth_group").fetchall() == [("Ticket scanners",)]
        assert conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'events_event_organizer_id_slug_40a74a00_idx'"
                            ).fetchone() == ("CREATE INDEX events_event_organizer_id_slug_40a74a00_idx ON public.events_event "
                                             "USING btree (organizer_id, slug)",)
        assert conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'events_calendar_event'").fetchone() == (
            "CREATE UNIQUE INDEX events_calendar_event ON public.events_calendar USING btree (event_id)",)
    drop_database(largeapp.pg, fresh)


def test_promote_squash_records_the_name_a_plugin_depends_on_beside_the_new_files_on_prod(largeapp):
    """prod is rebuilt from dev's dump with the squashed files: their rows are written from the files on disk,
    and the name the new 0001_initial replaces (a plugin depends on it) beside them, as Django records it."""
    make_prod(largeapp)
    promoted = largeapp.run("promote", "dev-to-prod", "--squash", "--yes", "--accept-loss")
    assert promoted.code == 0, promoted.stderr
    assert largeapp.fingerprint(largeapp.prod) == largeapp.fingerprint(largeapp.dev)
    for check in (["migrate", "--check"], ["makemigrations", "--check", "--dry-run"]):  # files and rows agree
        largeapp.manage(largeapp.prod, *check, owner=PROD_OWNER, password=PROD_PASSWORD)
    assert ("events", "0002_event_starts_at") in largeapp.applied(largeapp.prod)
