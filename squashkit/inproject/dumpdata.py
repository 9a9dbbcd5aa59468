"""Runs INSIDE the Django project's process (``manage.py shell -c``), never imported by squashkit.

``dumpdata --all --format jsonl`` with one change: datetimes and times keep their
microseconds. Django's ``DjangoJSONEncoder`` cuts them to milliseconds
(``12:00:00.123456`` becomes ``12:00:00.123``), so a fixture silently changes every
timestamp it carries. This registers a serializer that is Django's jsonl serializer with a
full-precision encoder, and runs dumpdata through it. The output is still an ordinary
fixture: ``DateTimeField`` and ``TimeField`` parse six fractional digits, so plain
``manage.py loaddata`` reads it.

It must not import squashkit: the project's interpreter may not have it installed. Its
arguments arrive as the global ``SQUASHKIT_DUMPDATA`` (``runpy.run_path(init_globals=...)``):
``alias``, ``output``, ``exclude``. A failure propagates: ``manage.py shell`` exits non-zero
with the traceback on stderr, which squashkit turns into one line.
"""

import datetime
import runpy
import sys
import types
from pathlib import Path

FORMAT = "squashkit_jsonl"
MODULE = "squashkit_full_precision_jsonl"


def full_precision_encoder():
    """DjangoJSONEncoder without the cut to milliseconds; everything else unchanged.

    Also used by ``serialize.py`` (which loads this file by path: runners import nothing of squashkit).
    """
    from django.core.serializers.json import DjangoJSONEncoder
    from django.utils.timezone import is_aware

    class FullPrecisionEncoder(DjangoJSONEncoder):
        def default(self, o):
            if isinstance(o, datetime.datetime):
                text = o.isoformat()
                return text[:-6] + "Z" if text.endswith("+00:00") else text
            if isinstance(o, datetime.time):
                if is_aware(o):
                    raise ValueError("JSON can't represent timezone-aware times.")
                return o.isoformat()
            return super().default(o)

    return FullPrecisionEncoder


def _register():
    from django.core import serializers
    from django.core.serializers import jsonl

    FullPrecisionEncoder = full_precision_encoder()

    class Serializer(jsonl.Serializer):
        def _init_options(self):
            super()._init_options()
            self.json_kwargs["cls"] = FullPrecisionEncoder

    module = types.ModuleType(MODULE)
    module.Serializer = Serializer
    module.Deserializer = jsonl.Deserializer
    sys.modules[MODULE] = module
    serializers.register_serializer(FORMAT, MODULE)


def main(arguments):
    from django.core.management import call_command

    _register()
    # Many-to-many lists go through the target's default manager: scoped ones are switched off.
    unscoped = runpy.run_path(str(Path(__file__).with_name("scopes.py")), run_name="squashkit_scopes")["unscoped"]
    with unscoped():
        call_command(
            "dumpdata",
            format=FORMAT,
            use_base_manager=True,  # --all: a custom default manager must not hide rows
            database=arguments["alias"],
            exclude=list(arguments["exclude"]),
            output=arguments["output"],
            verbosity=0,
        )


if __name__ == "__squashkit_dumpdata__":
    main(globals()["SQUASHKIT_DUMPDATA"])
