from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        # The alias's search_path (data,public) puts its tables in schema data.
        migrations.RunSQL("CREATE SCHEMA IF NOT EXISTS data", reverse_sql=migrations.RunSQL.noop),
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sku", models.CharField(max_length=20, unique=True)),
                ("name", models.CharField(max_length=100)),
            ],
            options={"db_table": "inv_item"},
        ),
    ]
