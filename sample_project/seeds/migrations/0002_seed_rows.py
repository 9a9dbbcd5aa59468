from django.db import migrations

TREE = {"all": None, "books": "all", "music": "all", "jazz": "music"}
SETTINGS = {"theme": "light", "currency": "eur", "obsolete": "x"}


def seed(apps, schema_editor):
    alias = schema_editor.connection.alias
    Category = apps.get_model("seeds", "Category")
    Label = apps.get_model("seeds", "Label")
    Setting = apps.get_model("seeds", "Setting")
    ContentType = apps.get_model("contenttypes", "ContentType")
    made = {}
    for name, parent in TREE.items():
        made[name] = Category.objects.using(alias).create(name=name, parent=made.get(parent))
    category_type, _ = ContentType.objects.using(alias).get_or_create(app_label="seeds", model="category")
    Label.objects.using(alias).create(text="featured", content_type=category_type, object_id=made["music"].pk)
    for key, value in SETTINGS.items():
        Setting.objects.using(alias).create(key=key, value=value)


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
