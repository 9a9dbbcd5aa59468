"""The layout's two rules, checked: squashkit's own process never needs Django, and the code
that runs inside the project's process never imports squashkit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_NO_DJANGO = """
import importlib, sys
class NoDjango:
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ImportError("Django is not installed here")
sys.meta_path.insert(0, NoDjango())
for name in ["squashkit.cli", *("squashkit.commands." + c for c in sys.argv[1:])]:
    importlib.import_module(name)
print("imported")
"""


def test_every_command_imports_without_django():
    commands = sorted(p.stem for p in (REPO / "squashkit" / "commands").glob("*.py") if p.stem != "__init__")
    result = subprocess.run([sys.executable, "-c", _NO_DJANGO, *commands], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_in_project_runners_import_neither_squashkit_nor_each_other():
    runners = sorted((REPO / "squashkit" / "inproject").glob("*.py"))
    names = {p.stem for p in runners}
    assert {"probe", "command", "losses"} <= names
    for path in runners:
        if path.stem == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            for module in modules:
                assert not module.startswith("squashkit"), f"{path.name} imports {module}"
                assert module.split(".")[0] not in names, f"{path.name} imports its sibling {module}"
