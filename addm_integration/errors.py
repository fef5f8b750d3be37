"""The failures a user sees, each with its exit code (README.md, "Exit codes"). Raised deep, one line at the edge."""

from __future__ import annotations


class AddmError(Exception):
    exit_code = 1


class BadInput(AddmError):
    """A file, flag, id or setting the user must fix: nothing was written, nothing was sent."""

    exit_code = 2


class Transient(AddmError):
    """Network, timeout, 429 or 5xx: the next cron run (or the same command) retries."""

    exit_code = 75


class Corrupt(AddmError):
    """The ledger is damaged beyond its own repair."""

    exit_code = 1
