"""``python manage.py squashkit ...``: add ``"squashkit.contrib.django"`` to INSTALLED_APPS.

The management command runs the same command line as ``squashkit`` in a child process, so the
rule that squashkit asks the project through ``manage.py`` subprocesses (dev and prod settings
never share a process) holds: nothing of squashkit's commands is imported into this process.
The environment defaults to the one whose ``settings`` is the settings module this process
runs with (when exactly one environment has it), before ``default_env``.
"""
