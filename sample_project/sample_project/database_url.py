"""Turn a ``postgres://user:password@host:port/dbname?option=value`` URL into a Django DATABASES entry.

Every part but the scheme is optional, so ``postgres:///sample_dev`` leaves host,
port, user and password empty and libpq falls back to PGHOST, PGPORT, PGUSER and
PGPASSFILE. A host that starts with ``/`` (percent-encoded in the URL, e.g.
``postgres://%2Fvar%2Frun%2Fpostgresql/app``) is a Unix socket directory. Query
parameters become libpq connection options (``?sslmode=require``).
"""

from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SCHEMES = {"postgres", "postgresql"}


def parse_database_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(
            f"Unsupported database URL scheme {parts.scheme!r} in {_redacted(url)!r}: "
            "expected postgres://user:password@host:port/dbname"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(f"Database URL {_redacted(url)!r} names no database")

    # Split the netloc by hand rather than through urlsplit's .hostname, which
    # lowercases (wrong for socket directories) and rejects some valid ports.
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if hostinfo.startswith("["):
        host, _, rest = hostinfo[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = hostinfo.partition(":")
    if port and not port.isdigit():
        raise ImproperlyConfigured(f"Database URL {_redacted(url)!r} has a non-numeric port {port!r}")

    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(user),
        "PASSWORD": unquote(password),
        "HOST": unquote(host),
        "PORT": port,
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def _redacted(url: str) -> str:
    """The URL without its password, fit for an error message."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    return parts._replace(netloc=f"{userinfo}{at}{hostinfo}").geturl()
