"""The `wagtail start` project's dev settings, on PostgreSQL: the database from $CORPUS_DB (host,
port, user from the libpq environment of the corpus cluster)."""
import os

from corpussite.settings.dev import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ.get("CORPUS_DB", "corpus_wagtail_dev")}}
