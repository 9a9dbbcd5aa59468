from django.db import migrations

# A SQL function that calls PostGIS unqualified, and an index on it: pg_restore runs with an
# empty search_path, so creating this index again from a dump fails unless the restore sees
# the extension's schema (the QGEP and pgstac reports).
SQL = """
CREATE FUNCTION data.site_x(g geometry) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS $$ SELECT ST_X(ST_Transform(g, 3857)) $$;
CREATE INDEX places_site_x ON data.places_site (data.site_x(location));
"""
REVERSE_SQL = """
DROP INDEX data.places_site_x;
DROP FUNCTION data.site_x(geometry);
"""


class Migration(migrations.Migration):

    dependencies = [
        ("places", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(SQL, reverse_sql=REVERSE_SQL),
    ]
