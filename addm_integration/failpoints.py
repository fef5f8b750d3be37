"""Named instants at which a test can kill this very process with SIGKILL, to prove a crash there is survivable.

``ADDM_FAILPOINT=<name>`` arms one point; nothing else reads it. The kill is real (no exception, no cleanup, no
flush), so what the next run finds is exactly what a power cut or an OOM kill would leave.
"""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("ADDM_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
