from django.apps import AppConfig


class BoxofficeConfig(AppConfig):
    """A plugin: no models of its own, only a data migration that sets up what it needs elsewhere."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "boxoffice"
