from django.apps import AppConfig


class HomeConfig(AppConfig):
    """The site's home page, replacing the third-party welcome page in a data migration (SAMPLE_PAGETREE=1)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "home"
