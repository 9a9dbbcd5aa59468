"""Public and three tenants of different sizes, each with rows of its own; and the template schema.

``--tenants a:N,b:N`` names the tenants and how many patients each gets (default ``north:40,
south:12,east:3``). Idempotent only on an empty database.
"""

import datetime
import random
from decimal import Decimal

from customers.models import Clinic, Domain
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from clinic.models import Patient, Species, Visit


class Command(BaseCommand):
    help = "Seed public, the template schema and tenants with rows of their own."

    def add_arguments(self, parser):
        parser.add_argument("--tenants", default="north:40,south:12,east:3")

    def handle(self, *args, **options):
        rng = random.Random(16)
        # The template new tenants are cloned from (TENANT_BASE_SCHEMA), migrated like a tenant.
        with connection.cursor() as cursor:
            cursor.execute('CREATE SCHEMA IF NOT EXISTS "tenant_template"')
        call_command("migrate_schemas", tenant=True, schema_name="tenant_template", interactive=False, verbosity=0)
        public = Clinic(schema_name="public", name="Head office")
        public.save()
        Domain.objects.create(domain="localhost", tenant=public, is_primary=True)
        User = get_user_model()
        vets = [User.objects.create_user(f"vet{i}", f"vet{i}@example.com", "x") for i in range(5)]
        for spec in options["tenants"].split(","):
            name, size = spec.split(":")
            tenant = Clinic(schema_name=name, name=f"Clinic {name}")
            tenant.save(verbosity=0)
            Domain.objects.create(domain=f"{name}.localhost", tenant=tenant, is_primary=True)
            with schema_context(name):
                species = list(Species.objects.order_by("code"))
                Species.objects.create(code=f"{name[:6]}-x", label=f"Only in {name}")
                for i in range(int(size)):
                    patient = Patient.objects.create(
                        full_name=f"{name} patient {i} ‘é’", species=rng.choice(species), vet=rng.choice(vets + [None]),
                        born=datetime.date(2015, 1, 1) + datetime.timedelta(days=rng.randrange(3000)),
                        weight=Decimal(rng.randrange(100, 9000)) / 100,
                    )
                    for j in range(rng.randrange(0, 4)):
                        Visit.objects.create(patient=patient, at=timezone.now() - datetime.timedelta(days=j, microseconds=rng.randrange(10**6)),
                                             notes=f"visit {j}\nline two")
        self.stdout.write(f"seeded {Clinic.objects.count() - 1} tenants")
