"""Settings for the squashkit sample project.

Everything that differs between machines comes from the environment:

- ``DATABASE_URL``: the default database, ``postgres://user:password@host:port/dbname``
  (``postgres:///dbname`` takes host, port, user and password from libpq's PG* variables);
- ``ANALYTICS_DATABASE_URL``: optional second database for the analytics app;
- ``DJANGO_SECRET_KEY`` and ``DJANGO_DEBUG``.
"""

import os
import sys
from pathlib import Path

from sample_project.database_url import parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

# The default key only suits a local demo; anything reachable sets its own.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "django-insecure-squashkit-sample-project-only-for-local-use",
)

DEBUG = os.environ.get("DJANGO_DEBUG", "1").lower() in {"1", "true", "yes", "on"}

ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "catalog",
    "orders",
    "community",
    "analytics",
    "squashkit.contrib.django",  # python manage.py squashkit ...
]
# One model per field type, for squashkit's fast-fixture tests only (tests/test_fastjson.py).
if os.environ.get("SAMPLE_FIELDTYPES") == "1":
    INSTALLED_APPS.append("fieldtypes")
# What a large application brings (squashkit's tests/test_largeapp.py): django-scopes managers,
# a history squashed with squashmigrations, an index only its history declares, a plugin app
# with no models and a data migration.
if os.environ.get("SAMPLE_LARGEAPP") == "1":
    sys.path.append(str(BASE_DIR / "vendor" / "site-packages"))
    INSTALLED_APPS += ["events", "boxoffice", "ticketplug"]  # ticketplug: a plugin depending on an events migration
# Rows data migrations leave in every fresh database (squashkit's tests/test_freshdata.py).
if os.environ.get("SAMPLE_FRESHDATA") == "1":
    INSTALLED_APPS.append("seeds")
# A page tree as a wagtail site has one (squashkit's tests/test_freshdata.py): a vendored third-party
# app, ``pagetree``, whose ``Page`` two project apps inherit from, each making a page in a data migration.
if os.environ.get("SAMPLE_PAGETREE") == "1":
    sys.path.append(str(BASE_DIR / "vendor" / "site-packages"))
    INSTALLED_APPS += ["pagetree", "home", "library"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sample_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "sample_project.wsgi.application"


DATABASES = {
    "default": parse_database_url(os.environ.get("DATABASE_URL", "postgres:///squashkit_sample")),
}
if os.environ.get("ANALYTICS_DATABASE_URL"):
    DATABASES["analytics"] = parse_database_url(os.environ["ANALYTICS_DATABASE_URL"])

DATABASE_ROUTERS = ["sample_project.routers.AnalyticsRouter"]


AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
