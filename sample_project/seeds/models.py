"""What data migrations leave in every fresh database (SAMPLE_FRESHDATA=1, squashkit's tests/test_freshdata.py).

- ``Category``: a tree of rows (``parent`` points at the same table), seeded by ``0002``.
- ``Label``: a generic relation to any row, by content type (seeded on a category by ``0002``).
- ``Setting``: seeded by ``0002`` with a field ``0003`` renamed (``value`` -> ``data``) and a value
  ``0004`` changed; ``0005`` deletes one with RunSQL.
- ``Flag``: seeded by ``0006`` (carried as it is by a squash); ``0007`` deletes one with RunSQL.
"""

from django.contrib.contenttypes.fields import GenericForeignKey
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50, unique=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")


class Label(models.Model):
    text = models.CharField(max_length=50)
    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")


class Setting(models.Model):
    key = models.CharField(max_length=50, unique=True)
    data = models.CharField(max_length=100)


class Flag(models.Model):
    name = models.CharField(max_length=50, unique=True)
