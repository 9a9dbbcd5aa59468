from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Clinic(TenantMixin):
    """A tenant: its rows live in the schema ``schema_name``."""

    name = models.CharField(max_length=100)
    created_on = models.DateField(auto_now_add=True)
    auto_create_schema = True


class Domain(DomainMixin):
    pass
