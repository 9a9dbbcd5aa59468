"""``squashkit losses``: the loss report a squash would start with, alone; changes nothing.

What the regenerated migrations would forget (RunSQL, RunPython, extensions, ...), and for each
whether it is carried over, not needed or lost, and why. A squash prints the same report cut to
one line per operation; here ``full`` keeps every reason whole and ``--json`` gives every field.
"""

from __future__ import annotations

from squashkit import losses as losses_module
from squashkit.config import Config
from squashkit.losses import LossReport
from squashkit.target import resolve


def losses(config: Config, *, env: str | None = None) -> LossReport:
    """Scan the environment's project migrations as step 0b of a squash does."""
    target = resolve(config, env)
    return losses_module.scan(target.manage, target.project)
