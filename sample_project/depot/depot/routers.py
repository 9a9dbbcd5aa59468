"""``inventory`` lives on ``data``; everything else on ``default``."""


def alias_of(app_label: str) -> str:
    return "data" if app_label == "inventory" else "default"


class DepotRouter:
    def db_for_read(self, model, **hints):
        return alias_of(model._meta.app_label)

    def db_for_write(self, model, **hints):
        return alias_of(model._meta.app_label)

    def allow_relation(self, obj1, obj2, **hints):
        return alias_of(obj1._meta.app_label) == alias_of(obj2._meta.app_label)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == alias_of(app_label)
