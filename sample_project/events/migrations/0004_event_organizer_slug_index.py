# Written in 2019, when Meta.index_together was how a model declared a two-column index. Django
# 5.1 removed the option from models; migrations keep running it, and since no model can say it
# any more, makemigrations never writes its removal: the index stays in every database this
# history builds, and no model declares it.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("events", "0001_squashed_0003_ticket_extra"),
    ]

    operations = [
        migrations.AlterIndexTogether(
            name="event",
            index_together={("organizer", "slug")},
        ),
    ]
