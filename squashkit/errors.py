"""The one error type the command line turns into a clean message.

Like Django's ``CommandError``: anything the user must act on is raised as a
``SquashkitError`` whose message says what happened and what to do. The CLI
prints it on one line and exits with its code; a traceback is only shown with
``-v``. Anything else that escapes is a bug.
"""

# Exit codes, the same for every command.
OK = 0
FAILED = 1  # the operation was attempted and did not succeed
BAD_INPUT = 2  # bad input or usage: nothing was attempted


class SquashkitError(Exception):
    """An expected failure: the message is for the user, the exit code for scripts."""

    exit_code = FAILED

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(SquashkitError):
    """The user's input, configuration or environment is wrong; nothing was changed."""

    exit_code = BAD_INPUT


class OperationFailed(SquashkitError):
    """The operation ran and failed; what it had started was cleaned up."""

    exit_code = FAILED


class StepFailed(OperationFailed):
    """A journalled step failed (and was undone): ``step`` names it, so a caller can tell a dump that
    would not restore from a verify that failed for a reason another source would not change."""

    def __init__(self, message: str, step: str):
        super().__init__(message)
        self.step = step


class UndoIncomplete(OperationFailed):
    """The operation failed and undoing it failed too (the server went away): its journal stays
    open, so ``squashkit resume`` finishes the undo and other runs refuse until then."""


class DiskFull(OperationFailed):
    """A write ran out of space: ours or a child program's. Whoever owns the output adds where."""


NO_SPACE = "No space left on device"


class Interrupted(SquashkitError):
    """Ctrl-C or SIGTERM after a run changed something: its journal stays open for ``squashkit resume``."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (or its type's name): what a one-line report quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
