from django.apps import AppConfig


class SquashkitConfig(AppConfig):
    """No models, no migrations: only the ``squashkit`` management command."""

    name = "squashkit.contrib.django"
    label = "squashkit"
    verbose_name = "squashkit"
