"""One model per field type Django and django.contrib.postgres ship, and the relations, managers
and custom fields a fixture written by SQL must get right (squashkit's tests/test_fastjson.py).

Installed only when SAMPLE_FIELDTYPES=1, so sample_project's own tests do not see it. GIS
fields are left out: they need PostGIS and GDAL. ImageField too: it needs Pillow (it is a
FileField to the fixture).
"""

import contextvars
import os

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres import fields as pg
from django.db import models
from django.db.models import F
from django.db.models.functions import Lower

from fieldtypes.fields import CommaSeparatedListField, JsonListField

# --- one model per field type ------------------------------------------------------------------


class AutoPkModel(models.Model):
    id = models.AutoField(primary_key=True)
    value = models.IntegerField(null=True)


class SmallAutoPkModel(models.Model):
    id = models.SmallAutoField(primary_key=True)
    value = models.IntegerField(null=True)


class BigIntegerModel(models.Model):
    value = models.BigIntegerField(null=True)


class BinaryModel(models.Model):
    value = models.BinaryField(null=True)


class BooleanModel(models.Model):
    value = models.BooleanField(null=True)


class CharModel(models.Model):
    value = models.CharField(max_length=300, null=True)


class DateModel(models.Model):
    value = models.DateField(null=True)


class DateTimeModel(models.Model):
    value = models.DateTimeField(null=True)


class DecimalModel(models.Model):
    value = models.DecimalField(max_digits=40, decimal_places=10, null=True)


class DurationModel(models.Model):
    value = models.DurationField(null=True)


class EmailModel(models.Model):
    value = models.EmailField(null=True)


class FileModel(models.Model):
    value = models.FileField(null=True, blank=True)


class FilePathModel(models.Model):
    value = models.FilePathField(path="/tmp", null=True)


class FloatModel(models.Model):
    value = models.FloatField(null=True)


class GenericIPAddressModel(models.Model):
    value = models.GenericIPAddressField(null=True)


class IntegerModel(models.Model):
    value = models.IntegerField(null=True)


class JSONModel(models.Model):
    value = models.JSONField(null=True)
    # NOT NULL: a JSON null here is a value, not SQL NULL.
    required = models.JSONField(default=dict)


class PositiveBigIntegerModel(models.Model):
    value = models.PositiveBigIntegerField(null=True)


class PositiveIntegerModel(models.Model):
    value = models.PositiveIntegerField(null=True)


class PositiveSmallIntegerModel(models.Model):
    value = models.PositiveSmallIntegerField(null=True)


class SlugModel(models.Model):
    value = models.SlugField(null=True)


class SmallIntegerModel(models.Model):
    value = models.SmallIntegerField(null=True)


class TextModel(models.Model):
    value = models.TextField(null=True)


class TimeModel(models.Model):
    value = models.TimeField(null=True)


class URLModel(models.Model):
    value = models.URLField(null=True)


class UUIDModel(models.Model):
    id = models.UUIDField(primary_key=True)
    value = models.UUIDField(null=True)
    other = models.ForeignKey("self", null=True, on_delete=models.SET_NULL)


class GeneratedModel(models.Model):
    a = models.IntegerField()
    b = models.IntegerField()
    name = models.CharField(max_length=50)
    total = models.GeneratedField(expression=F("a") + F("b"), output_field=models.IntegerField(), db_persist=True)
    lowered = models.GeneratedField(expression=Lower("name"), output_field=models.CharField(max_length=50), db_persist=True)


class ArrayModel(models.Model):
    integers = pg.ArrayField(models.IntegerField(null=True), null=True)
    texts = pg.ArrayField(models.TextField(null=True), null=True)
    decimals = pg.ArrayField(models.DecimalField(max_digits=20, decimal_places=10, null=True), null=True)
    moments = pg.ArrayField(models.DateTimeField(null=True), null=True)
    flags = pg.ArrayField(models.BooleanField(null=True), null=True)
    floats = pg.ArrayField(models.FloatField(null=True), null=True)


class NestedArrayModel(models.Model):
    grid = pg.ArrayField(pg.ArrayField(models.IntegerField()), null=True)


class HStoreModel(models.Model):
    value = pg.HStoreField(null=True)


class IntegerRangeModel(models.Model):
    value = pg.IntegerRangeField(null=True)


class BigIntegerRangeModel(models.Model):
    value = pg.BigIntegerRangeField(null=True)


class DecimalRangeModel(models.Model):
    value = pg.DecimalRangeField(null=True)


class DateTimeRangeModel(models.Model):
    value = pg.DateTimeRangeField(null=True)


class DateRangeModel(models.Model):
    value = pg.DateRangeField(null=True)


# --- relations ---------------------------------------------------------------------------------


class Slugged(models.Model):
    slug = models.SlugField(unique=True)


class ToFieldRef(models.Model):
    target = models.ForeignKey(Slugged, to_field="slug", null=True, on_delete=models.CASCADE)


class Node(models.Model):
    """Rows pointing at each other in a cycle: only deferred constraints let them load."""

    name = models.CharField(max_length=20)
    parent = models.ForeignKey("self", null=True, on_delete=models.SET_NULL, related_name="children")


class Place(models.Model):
    name = models.CharField(max_length=50)


class Restaurant(Place):
    serves_pizza = models.BooleanField(default=False)


class ItalianRestaurant(Restaurant):
    serves_gnocchi = models.BooleanField(default=False)


class CustomPk(models.Model):
    code = models.CharField(max_length=40, primary_key=True)
    label = models.CharField(max_length=40)


class DbColumn(models.Model):
    value = models.IntegerField(db_column="Odd Column")
    ref = models.ForeignKey(CustomPk, null=True, on_delete=models.SET_NULL, db_column="custom ref")


class Person(models.Model):
    name = models.CharField(max_length=50)


class Club(models.Model):
    name = models.CharField(max_length=50)
    members = models.ManyToManyField(Person, through="Membership")


class Membership(models.Model):
    person = models.ForeignKey(Person, on_delete=models.CASCADE)
    club = models.ForeignKey(Club, on_delete=models.CASCADE)
    joined = models.DateField()


class VisibleManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(hidden=False)


class Hideable(models.Model):
    name = models.CharField(max_length=50)
    hidden = models.BooleanField(default=False)

    objects = VisibleManager()  # the default manager: dumpdata lists only visible ones in an M2M


class Watcher(models.Model):
    name = models.CharField(max_length=50)
    watches = models.ManyToManyField(Hideable, blank=True, related_name="watchers")


current_tenant = contextvars.ContextVar("fieldtypes_tenant", default=None)


class ScopedManager(models.Manager):
    """Like django-scopes: outside an active scope, querying through it is an error. The app's own
    commands enter a scope ($FIELDTYPES_TENANT; ``*`` for all, as ``scopes_disabled()``)."""

    def get_queryset(self):
        tenant = current_tenant.get() or os.environ.get("FIELDTYPES_TENANT")
        if tenant is None:
            raise RuntimeError("Scoped rows are only visible inside a tenant scope")
        queryset = super().get_queryset()
        return queryset if tenant == "*" else queryset.filter(tenant=tenant)


class Scoped(models.Model):
    tenant = models.CharField(max_length=20)
    note = models.TextField()

    objects = ScopedManager()


class ScopedNote(models.Model):
    scoped = models.ForeignKey(Scoped, on_delete=models.CASCADE)
    text = models.TextField()
    # dumpdata reads a many-to-many list through the target's default manager, even with --all:
    # here that manager raises outside a scope, so dumpdata fails on the whole database.
    also = models.ManyToManyField(Scoped, blank=True, related_name="mentioned_in")


class Grant(models.Model):
    """References squashkit writes by natural key: a content type and permissions."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    permissions = models.ManyToManyField(Permission, blank=True)


# --- custom fields -----------------------------------------------------------------------------


class CommaListModel(models.Model):
    tags = CommaSeparatedListField(default=list, blank=True)


class JsonListModel(models.Model):
    """Written and read by Django (its field has its own value_to_string), with the references
    the slow path must get right too: by natural key, and to rows a default manager hides."""

    tags = JsonListField(default=list, blank=True)
    content_type = models.ForeignKey(ContentType, null=True, on_delete=models.SET_NULL)
    permissions = models.ManyToManyField(Permission, blank=True, related_name="+")
    watches = models.ManyToManyField(Hideable, blank=True, related_name="+")
