from django.db import migrations


def upper(apps, schema_editor):
    Setting = apps.get_model("seeds", "Setting")
    Setting.objects.using(schema_editor.connection.alias).filter(key="currency").update(data="EUR")


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0003_rename_setting_value'),
    ]

    operations = [
        migrations.RunPython(upper, migrations.RunPython.noop),
    ]
