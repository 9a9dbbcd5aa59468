from django.db import migrations

SPECIES = [("dog", "Dog"), ("cat", "Cat"), ("rabbit", "Rabbit"), ("parrot", "Parrot")]


def seed(apps, schema_editor):
    Species = apps.get_model("clinic", "Species")
    for code, label in SPECIES:
        Species.objects.get_or_create(code=code, defaults={"label": label})


def unseed(apps, schema_editor):
    apps.get_model("clinic", "Species").objects.filter(code__in=[code for code, _label in SPECIES]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("clinic", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
    ]
