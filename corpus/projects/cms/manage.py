#!/usr/bin/env python
"""The corpus's manage.py for django CMS (its distribution ships none)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "corpus_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
