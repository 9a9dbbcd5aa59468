"""Settings of depot, the seed's multi-database layout reduced to its shape.

One PostgreSQL database reached through two aliases:

- ``default`` (no search_path of its own: ``public``): Django's own apps and ``desk``;
- ``data`` (``-csearch_path=data,public``): the ``inventory`` app, whose first migration creates
  the schema ``data`` with ``RunSQL``.

``data``'s search_path reaches ``public``, where ``default`` keeps its ``django_migrations``. The
seed's CI job creates the schemas, then migrates the data alias's apps first: ``data`` records its
history in ``data.django_migrations``, ``default`` in ``public.django_migrations``. Migrated the other
way round, ``data`` finds ``public.django_migrations`` (every app recorded there, routed or not),
takes it for its own and creates none of its tables.
"""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The URL parser is sample_project's own (depot lives inside sample_project's directory).
sys.path.append(str(BASE_DIR.parent))
from sample_project.database_url import parse_database_url  # noqa: E402

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-squashkit-depot-sample-only-for-local-use")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "desk",
    "inventory",
]
ROOT_URLCONF = "depot.urls"

_url = os.environ.get("DATABASE_URL", "postgres:///depot")
_data = parse_database_url(_url)
# As the seed writes it: no space after -c.
_data["OPTIONS"] = {**_data["OPTIONS"], "options": "-csearch_path=data,public"}
DATABASES = {"default": parse_database_url(_url), "data": _data}
DATABASE_ROUTERS = ["depot.routers.DepotRouter"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
