from django.db import migrations


def add_default_items(apps, schema_editor):
    """The items every depot starts with (written before Move had a note)."""
    Item = apps.get_model("inventory", "Item")
    alias = schema_editor.connection.alias
    for sku, name in (("BOX", "cardboard box"), ("TAPE", "packing tape"), ("PALLET", "pallet")):
        Item.objects.using(alias).get_or_create(sku=sku, defaults={"name": name})


class Migration(migrations.Migration):

    dependencies = [("inventory", "0002_move")]

    operations = [migrations.RunPython(add_default_items, migrations.RunPython.noop)]
