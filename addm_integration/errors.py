"""The failures a user sees, each with its exit code (README.md, "Exit codes"). Raised deep, one line at the edge."""

from __future__ import annotations

from ledger import failures


class AddmError(Exception):
    exit_code = 1


class BadInput(AddmError):
    """A file, flag, id or setting the user must fix: nothing was written, nothing was sent."""

    exit_code = 2


class Refused(AddmError):
    """The account refused (a wrong key, no permission, no credit): asking again cannot help until the user acts.

    ``reason`` is the short form the ledger keeps (status and code), so status can say the job is blocked on it.
    """

    exit_code = 2

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Transient(AddmError):
    """Network, timeout, 429 or 5xx: the next cron run (or the same command) retries."""

    exit_code = 75


class Corrupt(AddmError):
    """The ledger is damaged beyond its own repair."""

    exit_code = 1


class DamagedFile(AddmError):
    """A file the tool wrote and relies on (a batch's stored input, output or error file, a job's snapshot of its
    inputs) is missing, changed since it was recorded, or malformed: nothing was applied from it.

    Not ``Corrupt``: the ledger itself is sound, and the line names the file to restore, not the ledger.
    """

    exit_code = 1


def translate(exc: BaseException) -> failures.Translation | None:
    """(exit code, line) of every failure we know, ours first, then the ledger's and the system's."""
    if isinstance(exc, AddmError):
        return exc.exit_code, str(exc)
    return failures.translate(exc)
