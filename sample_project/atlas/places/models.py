"""Places, on the ``data`` alias (schema ``data``), with GeoDjango geometries and spatial indexes.

``Region``'s table is found through the alias's search_path (``data,public``); ``Site``'s
names its schema itself (``db_table = 'data"."places_site'``, the hack Django quotes as
``"data"."places_site"``). ``Site.survey`` is in a custom SRID (990001) whose row a DBA put in
``spatial_ref_sys``: PostGIS refuses the column's type until that row exists.
"""

from django.contrib.gis.db import models


class Region(models.Model):
    name = models.CharField(max_length=100, unique=True)
    area = models.MultiPolygonField(srid=4326)  # a GiST index, as GeoDjango makes one

    def __str__(self):
        return self.name


class Site(models.Model):
    name = models.CharField(max_length=100)
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="sites")
    location = models.PointField(srid=4326)
    survey = models.PointField(srid=990001, null=True, blank=True)
    elevation = models.FloatField(null=True)

    class Meta:
        db_table = 'data"."places_site'

    def __str__(self):
        return self.name
