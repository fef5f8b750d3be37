"""The one translation of a failure into what the user sees: an exit code and one line, never a traceback.

Each layer knows its own failures: this module the ledger's and the system's (locks, disk, files), and an
application adds its own in front (``report(..., translate=...)``). What nobody knows is a bug: the user gets one
line naming the file where its traceback was saved, and exit 70.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from filelock import Timeout

from ledger.log import LedgerBusy, LedgerCorrupt, LedgerWriteFailed

TRANSIENT = 75
UNEXPECTED = 70
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

Translation = tuple[int, str]


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, Timeout | LedgerBusy) or (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc))


def _retry(what: str) -> str:
    return f"{what}; run the same command again (cron retries on its own)"


def translate(exc: BaseException) -> Translation | None:
    """(exit code, line) of a failure of the ledger or of the system under it; None when it is not one."""
    if isinstance(exc, LedgerCorrupt):
        return 1, f"ledger corrupt: {exc}"
    if isinstance(exc, LedgerBusy):
        return TRANSIENT, _retry(str(exc))
    if isinstance(exc, Timeout):
        return TRANSIENT, _retry(f"{exc.lock_file}: another run holds this lock")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return TRANSIENT, _retry("the ledger index is locked by another run")
    if isinstance(exc, LedgerWriteFailed) and exc.errno in _FULL:
        return TRANSIENT, _retry(f"{exc}: free some space")
    if isinstance(exc, OSError) and exc.errno in _FULL:
        where = f" writing {exc.filename}" if exc.filename else ""
        return TRANSIENT, _retry(f"no space left on the device{where}: free some space")
    if isinstance(exc, OSError) and exc.errno == errno.EXDEV:
        return 1, f"{exc.filename} and {exc.filename2} are on different file systems; put them on one"
    return None


def save_traceback(logs_dir: Path, exc: BaseException, scrub: Callable[[str], str]) -> Path | None:
    """Write the traceback under ``logs_dir`` (scrubbed of secrets); None when even that is impossible."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = logs_dir / f"error-{stamp}-{os.getpid()}.txt"
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(scrub("".join(traceback.format_exception(exc))))
    except OSError:
        return None
    return path


def report(
    prog: str,
    exc: BaseException,
    logs_dir: Path,
    *,
    translate: Callable[[BaseException], Translation | None] = translate,
    scrub: Callable[[str], str] = lambda text: text,
) -> int:
    """Print the one line of ``exc`` on stderr and return its exit code."""
    known = translate(exc)
    if known is not None:
        code, line = known
    else:
        saved = save_traceback(logs_dir, exc, scrub)
        where = f"details saved in {saved}" if saved else f"and {logs_dir} cannot be written"
        code, line = UNEXPECTED, f"unexpected error ({type(exc).__name__}); {where}"
    print(f"{prog}: {scrub(' '.join(line.split()))}", file=sys.stderr)
    return code
