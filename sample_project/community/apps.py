from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


def look_up_a_model(sender, apps=global_apps, **kwargs):
    """A post_migrate handler that reads a model of another app through the historical ``apps`` it is
    given, as large applications' handlers do: it fails on a state that lacks the project's models
    (``migrate --fake`` into an emptied django_migrations sends the empty state from before the fake).
    ``flush`` sends no state: the installed apps are the state then, as Django's own handlers take it."""
    apps.get_model("catalog", "Product")


class CommunityConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "community"

    def ready(self):
        post_migrate.connect(look_up_a_model, sender=self)
