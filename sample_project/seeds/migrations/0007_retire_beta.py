from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0006_flag'),
    ]

    operations = [
        migrations.RunSQL("DELETE FROM seeds_flag WHERE name = 'beta'", migrations.RunSQL.noop),
    ]
