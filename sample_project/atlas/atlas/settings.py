"""Settings of atlas, a project laid out as the seed's CI project describes its own.

One PostgreSQL database reached through two aliases, each with its own search_path:

- ``default`` (``-csearch_path=auth,public``): Django's own apps (auth, admin, contenttypes,
  sessions), whose tables live in schema ``auth``;
- ``data`` (``-csearch_path=data,public``): the ``places`` app, in schema ``data``, one of its
  tables named ``'data"."places_site'`` (the db_table hack), with GeoDjango geometries;
- ``analytics``: the ``metrics`` app on a database of its own when ``ANALYTICS_DATABASE_URL``
  is set (else ``metrics`` lives on ``data``);
- ``replica``: a read alias of the same database (``TEST["MIRROR"]``), where nothing migrates.

PostGIS lives in ``public`` and is on every path. The schemas ``auth`` and ``data`` must exist
before the first ``migrate`` (as the seed's CI script creates them, or ``squashkit recreate``):
otherwise Django creates each alias's tables and django_migrations in ``public``.
"""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The URL parser is sample_project's own (atlas lives inside sample_project's directory).
sys.path.append(str(BASE_DIR.parent))
from sample_project.database_url import parse_database_url  # noqa: E402
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-squashkit-atlas-sample-only-for-local-use")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.gis",
    "places",
    "metrics",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "atlas.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages",
                                       "django.template.context_processors.request"]},
}]


def _alias(url: str, search_path: str | None, **test) -> dict:
    entry = parse_database_url(url)
    entry["ENGINE"] = "django.contrib.gis.db.backends.postgis"
    if search_path:
        # As the seed writes it: no space after -c.
        entry["OPTIONS"] = {**entry["OPTIONS"], "options": f"-csearch_path={search_path}"}
    if test:
        entry["TEST"] = test
    return entry


_url = os.environ.get("DATABASE_URL", "postgres:///atlas")
DATABASES = {
    "default": _alias(_url, "auth,public"),
    "data": _alias(_url, "data,public", DEPENDENCIES=["default"]),
    "replica": _alias(_url, "auth,public", MIRROR="default"),
}
if os.environ.get("ANALYTICS_DATABASE_URL"):
    DATABASES["analytics"] = _alias(os.environ["ANALYTICS_DATABASE_URL"], None, DEPENDENCIES=[])
DATABASE_ROUTERS = ["atlas.routers.AtlasRouter"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SILENCED_SYSTEM_CHECKS = ["gis.W001"]  # GDAL 3.6 (Debian 12): a warning about GDAL itself, not the project
