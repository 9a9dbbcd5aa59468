import events.models
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("events", "0005_event_calendar_view"),
    ]

    operations = [
        migrations.AddField(
            model_name="ticket",
            name="seats",
            field=events.models.DelimitedListField(blank=True, default=list),
        ),
    ]
