"""Fill atlas's empty databases with deterministic rows: ``manage.py seed_atlas --rows N``.

N sites in N/10 regions, 2N metric hits, a few users and groups. Each model is written through
its router's alias. Geometries are in three SRIDs (4326, and the custom 990001 for surveys,
some NULL), so a backup tool that loses an SRID, a coordinate or a NULL shows it.
"""

import random
from datetime import datetime, timedelta, timezone

from django.contrib.auth.models import Group, Permission, User
from django.contrib.gis.geos import MultiPolygon, Point, Polygon
from django.core.management.base import BaseCommand, CommandError

from metrics.models import Hit
from places.models import Region, Site

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


class Command(BaseCommand):
    help = "Seed atlas with deterministic rows on every alias."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=100, help="Sites; the other tables scale with it.")

    def handle(self, *args, rows, **options):
        if Site.objects.exists() or User.objects.exists():
            raise CommandError("the database already holds rows: seed_atlas fills empty databases only")
        rng = random.Random(20261201)
        regions = []
        for number in range(max(rows // 10, 1)):
            x, y = number % 36 * 10 - 180, number // 36 * 10 - 80
            square = Polygon(((x, y), (x + 9.5, y), (x + 9.5, y + 9.5), (x, y + 9.5), (x, y)), srid=4326)
            regions.append(Region(name=f"Région {number} ✓", area=MultiPolygon(square, srid=4326)))
        Region.objects.bulk_create(regions)
        sites = []
        for number in range(rows):
            region = regions[number % len(regions)]
            x0, y0 = region.area.extent[:2]
            location = Point(x0 + rng.random() * 9, y0 + rng.random() * 9, srid=4326)
            survey = None if number % 7 == 0 else Point(rng.uniform(-2e6, 2e6), rng.uniform(-2e6, 2e6), srid=990001)
            sites.append(Site(name=f"site {number}\ttab", region=region, location=location, survey=survey,
                              elevation=None if number % 5 == 0 else rng.uniform(-400, 8800)))
        Site.objects.bulk_create(sites)
        Hit.objects.bulk_create(
            Hit(site_id=rng.randrange(1, rows + 1), path=f"/sites/{number}/ü", at=EPOCH + timedelta(microseconds=rng.randrange(10**13)),
                weight=rng.random())
            for number in range(rows * 2)
        )
        editors = Group.objects.create(name="Editors")
        editors.permissions.set(Permission.objects.filter(codename__in=["change_user", "view_group"]))
        for number in range(5):
            user = User.objects.create(username=f"user{number}", email=f"u{number}@example.org", password="!")
            user.groups.add(editors)
        self.stdout.write(f"seeded {len(regions)} regions, {rows} sites, {rows * 2} hits, 5 users")
