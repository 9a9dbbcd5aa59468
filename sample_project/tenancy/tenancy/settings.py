"""Settings of tenancy, a schema-per-tenant project on django-tenants.

- ``public`` holds the shared apps: Django's auth, admin, sessions, and ``customers`` (the
  tenant model ``Clinic`` and its ``Domain``);
- every tenant has a schema of its own holding the tenant apps: ``clinic`` (patients, visits,
  a lookup table its RunPython migration fills), with a foreign key into public's ``auth_user``,
  and contenttypes (in both, as django-tenants' docs lay it out);
- new tenants are cloned from the template schema ``tenant_template`` (``TENANT_BASE_SCHEMA``)
  and their migrations faked, as django-tenants does with ``TENANT_CREATION_FAKES_MIGRATIONS``.
"""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The URL parser is sample_project's own (tenancy lives inside sample_project's directory).
sys.path.append(str(BASE_DIR.parent))
from sample_project.database_url import parse_database_url

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-squashkit-tenancy-sample-only-for-local-use")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", ".localhost"]

SHARED_APPS = [
    "django_tenants",
    "customers",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "clinic",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = "customers.Clinic"
TENANT_DOMAIN_MODEL = "customers.Domain"
TENANT_CREATION_FAKES_MIGRATIONS = True
TENANT_BASE_SCHEMA = "tenant_template"

MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tenancy.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages",
                                       "django.template.context_processors.request"]},
}]

_database = parse_database_url(os.environ.get("DATABASE_URL", "postgres:///tenancy"))
_database["ENGINE"] = "django_tenants.postgresql_backend"
DATABASES = {"default": _database}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
