"""Ticketing laid out as a large application lays it out (SAMPLE_LARGEAPP=1).

Every default manager is django-scopes' ``ScopedManager``: outside ``scope(organizer=...)`` or
``scopes_disabled()`` a query through it raises. Its history was squashed once with Django's
``squashmigrations`` (``0001_squashed_0003_ticket_extra`` replaces 0001-0003, whose files stay,
as projects keep them), and ``0004`` made an index with ``index_together``, which no model can
declare any more: every database built from this history has an index the models do not know.
"""

from django.db import models
from django_scopes import ScopedManager


class CodeField(models.CharField):
    """Serialized as CharField is, but by its own ``value_to_string``: its model's rows go through
    Django's serializer and deserializer (squashkit's slow path), not SQL alone."""

    def value_to_string(self, obj):
        return super().value_to_string(obj)


class DelimitedListField(models.TextField):
    """A list kept in a text column as ``|a|b|`` (``""`` when empty), as pretix's MultiStringField keeps
    one: only how Python sees the column changes. It has no ``value_to_string`` of its own, so Django's
    serializer would write the list's repr (``"['a', 'b']"``), which no load turns back into the column."""

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if isinstance(value, list):
            return value
        return [part for part in (value or "").split("|") if part]

    def get_prep_value(self, value):
        value = self.to_python(value)
        return "|" + "|".join(value) + "|" if value else ""


class Organizer(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(unique=True)


class Event(models.Model):
    organizer = models.ForeignKey(Organizer, on_delete=models.CASCADE, related_name="events")
    slug = models.SlugField()
    name = models.CharField(max_length=200)
    starts_at = models.DateTimeField()

    objects = ScopedManager(organizer="organizer")


class Extra(models.Model):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="extras")
    name = models.CharField(max_length=100)

    objects = ScopedManager(organizer="event__organizer")


class Ticket(models.Model):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="tickets")
    code = CodeField(max_length=32, unique=True)
    holder = models.CharField(max_length=100)
    seats = DelimitedListField(default=list, blank=True)
    # loaddata sets these through Extra's default manager: outside a scope it raises.
    extras = models.ManyToManyField(Extra, blank=True, related_name="tickets")

    objects = ScopedManager(organizer="event__organizer")
