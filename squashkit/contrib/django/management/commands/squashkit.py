"""``manage.py squashkit ARGS``: ``squashkit ARGS`` for this project, in a child process.

Every argument goes to squashkit as it is (``manage.py squashkit --help`` is squashkit's help);
its output, its exit code (0, 1, 2, 130) and its one-line errors are squashkit's.
"""

import os
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

SETTINGS_VARIABLE = "SQUASHKIT_DJANGO_SETTINGS"  # read by squashkit.config.Config.environment


class Command(BaseCommand):
    help = "Back up, squash, restore and promote this project's database (squashkit's command line)."

    def run_from_argv(self, argv):
        # Django's own option parsing would take --help, -v and --settings for itself: hand
        # everything after "squashkit" to squashkit untouched.
        env = {**os.environ, SETTINGS_VARIABLE: settings.SETTINGS_MODULE or ""}
        try:
            code = subprocess.call([sys.executable, "-m", "squashkit.cli", *argv[2:]], env=env)
        except KeyboardInterrupt:
            code = 130
        sys.exit(code)

    def handle(self, *args, **options):  # call_command("squashkit", ...): the same, from Python
        env = {**os.environ, SETTINGS_VARIABLE: settings.SETTINGS_MODULE or ""}
        code = subprocess.call([sys.executable, "-m", "squashkit.cli", *args], env=env)
        if code:
            sys.exit(code)

    def add_arguments(self, parser):
        parser.add_argument("args", nargs="*")
