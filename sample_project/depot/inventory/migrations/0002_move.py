import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("inventory", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Move",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("delta", models.IntegerField()),
                ("item", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="moves",
                                           to="inventory.item")),
            ],
            options={"db_table": "inv_move"},
        ),
        migrations.AddField(model_name="move", name="note", field=models.CharField(blank=True, max_length=100)),
    ]
