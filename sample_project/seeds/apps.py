from django.apps import AppConfig


class SeedsConfig(AppConfig):
    """Rows every fresh database needs, made by data migrations (SAMPLE_FRESHDATA=1)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "seeds"
