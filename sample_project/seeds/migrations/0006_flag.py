from django.db import migrations, models

FLAGS = ["alpha", "beta", "gamma"]


def create_flags(apps, schema_editor):
    Flag = apps.get_model("seeds", "Flag")
    for name in FLAGS:
        Flag.objects.using(schema_editor.connection.alias).create(name=name)


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0005_drop_obsolete_setting'),
    ]

    operations = [
        migrations.CreateModel(
            name='Flag',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=50, unique=True)),
            ],
        ),
        migrations.RunPython(create_flags, migrations.RunPython.noop),
    ]
