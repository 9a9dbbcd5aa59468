from django.apps import AppConfig


class LibraryConfig(AppConfig):
    """An index page under the home page, made by a data migration (SAMPLE_PAGETREE=1)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "library"
