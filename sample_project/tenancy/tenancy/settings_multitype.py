"""tenancy with HAS_MULTI_TYPE_TENANTS: the same apps, declared per tenant type (django-tenants'
TENANT_TYPES). Only read by the tests that show what squashkit does not prove yet."""

from tenancy.settings import *

HAS_MULTI_TYPE_TENANTS = True
MULTI_TYPE_DATABASE_FIELD = "type"
TENANT_TYPES = {
    "public": {"APPS": SHARED_APPS, "URLCONF": "tenancy.urls"},
    "clinic": {"APPS": TENANT_APPS, "URLCONF": "tenancy.urls", "BASE_SCHEMA": "tenant_template"},
}
