"""Stock, on the ``data`` alias: its tables land in schema ``data`` through the alias's search_path."""

from django.db import models


class Item(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)

    class Meta:
        db_table = "inv_item"


class Move(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="moves")
    delta = models.IntegerField()
    note = models.CharField(max_length=100, blank=True)

    class Meta:
        db_table = "inv_move"
