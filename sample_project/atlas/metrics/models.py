"""Metrics, on the ``analytics`` alias (a database of its own) when it exists, else on ``data``."""

from django.db import models


class Hit(models.Model):
    # A plain integer, not a ForeignKey: the sites may live in another database.
    site_id = models.IntegerField(db_index=True)
    path = models.CharField(max_length=200)
    at = models.DateTimeField()
    weight = models.FloatField()
