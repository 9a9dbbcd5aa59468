"""Runs INSIDE the Django project's process, loaded by path by the other runners; never imported by squashkit.

Scoped managers (django-scopes, and libraries like it) refuse or filter queries made outside an
active scope: a ``dumpdata``, a ``loaddata`` that sets a many-to-many, a data migration or a
``post_migrate`` handler reading through the default manager then fails, or silently sees part
of the rows. The project's own management commands switch scoping off for their whole run; so
does everything squashkit runs in the project, by entering ``unscoped()`` around it.

Which contexts to enter arrives as $SQUASHKIT_UNSCOPED, a JSON list of dotted paths (squashkit's
``unscoped`` configuration key): each names a context manager, or a callable that returns one
(``django_scopes.scopes_disabled``). Unset, the default is django-scopes' ``scopes_disabled``
when the project can import django-scopes, else nothing. It must not import squashkit.
"""

import contextlib
import importlib
import importlib.util
import json
import os

DJANGO_SCOPES = "django_scopes.scopes_disabled"
VARIABLE = "SQUASHKIT_UNSCOPED"


def configured():
    """The dotted paths to enter: the configured ones, else django-scopes' when it is installed."""
    names = json.loads(os.environ.get(VARIABLE) or "null")
    if names is None:
        names = [DJANGO_SCOPES] if importlib.util.find_spec("django_scopes") else []
    return list(names)


def _context(name):
    module, _, attribute = name.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeError(f"unscoped: cannot import {name!r} ({exc}); fix the unscoped key of squashkit's configuration") from None
    # scopes_disabled is a function returning a context manager; an instance is entered as it is.
    return target if hasattr(target, "__enter__") else target()


def unscoped():
    """One context manager entering every configured one, in order."""
    stack = contextlib.ExitStack()
    try:
        for name in configured():
            stack.enter_context(_context(name))
    except BaseException:
        stack.close()
        raise
    return stack
