from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('seeds', '0002_seed_rows'),
    ]

    operations = [
        migrations.RenameField(model_name='setting', old_name='value', new_name='data'),
    ]
