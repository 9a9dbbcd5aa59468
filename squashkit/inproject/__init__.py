"""Code that runs INSIDE the user's Django project (``manage.py shell -c``), never in squashkit's process.

Apart because it obeys other rules: the project's interpreter may not have squashkit installed,
so these files are run by path (``runpy.run_path``) and may import only the standard library,
Django, the project and its database driver; never squashkit, and nothing of each other (one may
load a sibling file by path, as serialize.py loads dumpdata.py's encoder).
"""

from pathlib import Path

FOLDER = Path(__file__).parent


def runner(name: str) -> Path:
    """The file of one in-project runner (``probe``, ``dumpdata``, ``losses``, ``command``, ``serialize``, ``deserialize``)."""
    return FOLDER / f"{name}.py"
