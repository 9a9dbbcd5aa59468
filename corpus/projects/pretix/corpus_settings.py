"""pretix's own settings (pretix.settings, configured through PRETIX_* variables as its docs allow
in place of pretix.cfg), with the database named by $CORPUS_DB (host, port, user from the libpq
environment of the corpus cluster)."""
import os

os.environ["PRETIX_DATABASE_BACKEND"] = "postgresql"
os.environ["PRETIX_DATABASE_NAME"] = os.environ.get("CORPUS_DB", "corpus_pretix_dev")
os.environ.setdefault("PRETIX_PRETIX_DATADIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
os.makedirs(os.environ["PRETIX_PRETIX_DATADIR"], exist_ok=True)

from pretix.settings import *  # noqa: E402,F403
