#!/usr/bin/env python
"""atlas: sample_project's sibling laid out as the seed's CI project (schemas, a router, PostGIS)."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
