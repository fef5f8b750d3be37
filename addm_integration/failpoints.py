"""Named instants at which a test can kill this very process with SIGKILL, to prove a crash there is survivable.

``ADDM_FAILPOINT=<name>`` arms one point; nothing else reads it. The kill is real (no exception, no cleanup, no
flush), so what the next run finds is exactly what a power cut or an OOM kill would leave. Besides the named
points, every ledger append of a process is a point, counted from 1: ``append-<n>-before`` and
``append-<n>-after``, so a test can kill a run at each of its appends without knowing their names.
"""

from __future__ import annotations

import os
import signal

_appends = 0


def hit(name: str) -> None:
    if os.environ.get("ADDM_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def next_append() -> int:
    """The number of the append about to happen in this process."""
    global _appends
    _appends += 1
    return _appends
