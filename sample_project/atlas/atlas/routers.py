"""Which alias each app lives on, as the seed's project routes them.

Django's own apps stay on ``default``; ``places`` goes to ``data``; ``metrics`` to ``analytics``
when that alias exists, else to ``data``. Nothing migrates on ``replica``, a read alias.
"""

from django.conf import settings

READ_ONLY = "replica"


def alias_of(app_label: str) -> str:
    if app_label == "places":
        return "data"
    if app_label == "metrics":
        return "analytics" if "analytics" in settings.DATABASES else "data"
    return "default"


class AtlasRouter:
    def db_for_read(self, model, **hints):
        return alias_of(model._meta.app_label)

    def db_for_write(self, model, **hints):
        return alias_of(model._meta.app_label)

    def allow_relation(self, obj1, obj2, **hints):
        return alias_of(obj1._meta.app_label) == alias_of(obj2._meta.app_label)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db == READ_ONLY:
            return False
        return db == alias_of(app_label)
