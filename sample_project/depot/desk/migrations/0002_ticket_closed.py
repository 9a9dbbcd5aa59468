from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("desk", "0001_initial")]

    operations = [
        migrations.AddField(model_name="ticket", name="closed", field=models.BooleanField(default=False)),
    ]
