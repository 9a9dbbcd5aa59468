#!/usr/bin/env python
"""depot: sample_project's sibling laid out as the seed's multi-database project, built data first."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "depot.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
