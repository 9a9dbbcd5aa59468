from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0004_currency_upper'),
    ]

    operations = [
        migrations.RunSQL("DELETE FROM seeds_setting WHERE key = 'obsolete'", migrations.RunSQL.noop),
    ]
