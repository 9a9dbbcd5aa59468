"""squashkit: back up, squash, restore and promote the PostgreSQL database of a Django project."""

__version__ = "0.1.0"
