"""Tickets, on ``default`` (schema ``public``), beside Django's own apps."""

from django.db import models


class Ticket(models.Model):
    title = models.CharField(max_length=100)
    opened_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="tickets")
    closed = models.BooleanField(default=False)
