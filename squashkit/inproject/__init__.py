"""Code that runs INSIDE the user's Django project (``manage.py shell -c``), never in squashkit's process.

Apart because it obeys other rules: the project's interpreter may not have squashkit installed,
so these files are run by path (``runpy.run_path``) and may import only the standard library,
Django and the project; never squashkit, and nothing of each other.
"""

from pathlib import Path

FOLDER = Path(__file__).parent


def runner(name: str) -> Path:
    """The file of one in-project runner (``probe``, ``dumpdata``, ``losses``, ``command``)."""
    return FOLDER / f"{name}.py"
