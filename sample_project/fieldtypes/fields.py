"""Two custom fields that store a list of strings as ``a,b,c`` in a text column.

``CommaSeparatedListField`` changes only how Python sees the value (from_db_value, to_python,
get_prep_value), so it does not survive dumpdata + loaddata: its value_to_string is Field's,
``str(list)``, so ``[]`` is written ``"[]"`` and read back as ``["[]"]``, ``["a", "b"]`` as
``["['a'", " 'b']"]``. A fixture of the column's text (``"a,b"``) reads back right.

``JsonListField`` writes the list as JSON in its own value_to_string and reads that back: it
round-trips through Django, and its model must be serialized by Django.
"""

import json

from django.db import models


class CommaSeparatedListField(models.TextField):
    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if value is None or isinstance(value, list):
            return value
        return value.split(",") if value else []

    def get_prep_value(self, value):
        if isinstance(value, list):
            return ",".join(value)
        return value


class JsonListField(CommaSeparatedListField):
    def to_python(self, value):
        if isinstance(value, str) and value.startswith("["):
            return json.loads(value)
        return super().to_python(value)

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return None if value is None else json.dumps(value)
