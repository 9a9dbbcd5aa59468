"""Keep the analytics app on its own database when one is configured.

The ``analytics`` alias exists only when ANALYTICS_DATABASE_URL is set; without
it the analytics tables live in ``default`` like everything else. No model has a
foreign key across the two databases (PageView keeps a plain product id), so
relations never need to span aliases.
"""

from django.conf import settings

ANALYTICS_APP = "analytics"
ANALYTICS_ALIAS = "analytics"


def analytics_alias() -> str:
    return ANALYTICS_ALIAS if ANALYTICS_ALIAS in settings.DATABASES else "default"


class AnalyticsRouter:
    def db_for_read(self, model, **hints):
        if model._meta.app_label == ANALYTICS_APP:
            return analytics_alias()
        # No opinion: Django then follows the instance hint, else "default".
        return None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        labels = {obj1._meta.app_label, obj2._meta.app_label}
        if ANALYTICS_APP in labels:
            return labels == {ANALYTICS_APP}
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == ANALYTICS_APP:
            return db == analytics_alias()
        return db == "default"
