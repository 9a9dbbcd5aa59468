# A materialized view with a unique index built CONCURRENTLY, as e-commerce frameworks ship one for
# their category hierarchy: PostgreSQL refuses CREATE INDEX CONCURRENTLY inside a transaction, so
# the migration is not atomic. A squash that carries this RunPython must keep it out of one too.

from django.db import connection, migrations


def create_calendar(apps, schema_editor):
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE MATERIALIZED VIEW IF NOT EXISTS events_calendar AS
            SELECT e.id AS event_id, o.slug AS organizer, e.starts_at::date AS day
            FROM events_event e JOIN events_organizer o ON o.id = e.organizer_id
        """)
        cursor.execute("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS events_calendar_event ON events_calendar (event_id)")


def drop_calendar(apps, schema_editor):
    with connection.cursor() as cursor:
        cursor.execute("DROP MATERIALIZED VIEW IF EXISTS events_calendar")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("events", "0004_event_organizer_slug_index"),
    ]

    operations = [
        migrations.RunPython(create_calendar, drop_calendar),
    ]
