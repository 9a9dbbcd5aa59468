#!/usr/bin/env python
"""tenancy: sample_project's sibling, a schema-per-tenant project on django-tenants."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tenancy.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
