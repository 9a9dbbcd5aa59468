"""A new tenant, as a user adds one: cloned from the template (django-tenants' default here), or
``--migrate``: its schema created empty and every migration run in it."""

from customers.models import Clinic, Domain
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Add a tenant."

    def add_arguments(self, parser):
        parser.add_argument("schema")
        parser.add_argument("--migrate", action="store_true", help="run the migrations instead of cloning the template")

    def handle(self, *args, **options):
        name = options["schema"]
        tenant = Clinic(schema_name=name, name=f"Clinic {name}")
        if options["migrate"]:
            tenant.auto_create_schema = False
            tenant.save()
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA "{name}"')
            call_command("migrate_schemas", tenant=True, schema_name=name, interactive=False, verbosity=0)
        else:
            tenant.save(verbosity=0)
        Domain.objects.create(domain=f"{name}.localhost", tenant=tenant, is_primary=True)
