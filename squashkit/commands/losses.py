"""``squashkit losses``: the loss report a squash would start with, alone; changes nothing.

What the regenerated migrations would forget (RunSQL, RunPython, extensions, ...), and for each
whether it is carried over, not needed or lost, and why. A squash prints the same report cut to
one line per operation; here ``full`` keeps every reason whole and ``--json`` gives every field.
A data migration squashkit cannot carry as code (a RunPython written against older models, a
RunSQL that changes rows) is ``data``, as at a squash's step 0b: the squash compares what it
leaves in a fresh database row for row and carries that as data (``freshproof``); whether it is
then carried, not needed or lost is known only once the new files are built.
"""

from __future__ import annotations

from squashkit import freshproof
from squashkit import losses as losses_module
from squashkit.config import Config
from squashkit.losses import LossReport
from squashkit.target import resolve


def losses(config: Config, *, env: str | None = None) -> LossReport:
    """Scan the environment's project migrations as step 0b of a squash does, data migrations left to the rows' comparison."""
    target = resolve(config, env)
    return freshproof.defer_to_data(losses_module.scan(target.manage, target.project))
