"""The cron entries that poll running batches: one per batch, found again by its ``# ADDM_BATCH_<id>`` marker.

python-crontab rewrites the whole table on every change, so every read-modify-write happens under one lock:
two jobs installing or removing entries at the same time lose neither. A tab file is replaced atomically, so a
crash mid-edit leaves the old table or the new one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crontab import CronTab
from filelock import FileLock

from addm_integration.errors import BadInput
from addm_integration.workspace import atomic_write

SCHEDULE = "*/5 * * * *"
MARKER_PREFIX = "ADDM_BATCH_"


def marker(batch_id: str) -> str:
    return f"{MARKER_PREFIX}{batch_id}"


def fetch_command(root: Path, python: str, module: str, args: Sequence[str], batch_id: str, log: Path) -> str:
    """The shell line cron runs: from the root, the same pipeline and arguments plus ``--batch-id``, logged.

    python-crontab escapes cron's special ``%`` when it renders the table; here everything is shell-quoted.
    """
    argv = [python, "-m", module, *args, "--batch-id", batch_id]
    return f"cd {shlex.quote(str(root))} && {shlex.join(argv)} >> {shlex.quote(str(log))} 2>&1"


@dataclass(frozen=True)
class CronTable:
    """A tab file (tests, rehearsals, ``--crontab-file``) or, with ``tabfile=None``, the user's crontab."""

    tabfile: Path | None = None

    def available(self) -> bool:
        return self.tabfile is not None or shutil.which("crontab") is not None

    def check_available(self) -> None:
        """Refuse early (before anything is uploaded) when the user's crontab cannot be edited."""
        if not self.available():
            raise BadInput(
                "no crontab command on this system (cron is not installed); use --crontab-file F, "
                "--no-cron (then poll with --batch-id), or --wait"
            )

    def _lock(self) -> FileLock:
        if self.tabfile is not None:
            return FileLock(str(self.tabfile) + ".lock", timeout=60)
        return FileLock(os.path.join(tempfile.gettempdir(), f"addm-crontab-{os.getuid()}.lock"), timeout=60)

    def _read(self) -> CronTab:
        if self.tabfile is None:
            return CronTab(user=True)
        if not self.tabfile.exists():
            return CronTab(tab="")
        return CronTab(tabfile=str(self.tabfile))

    def _write(self, tab: CronTab) -> None:
        if self.tabfile is None:
            tab.write_to_user(user=True)
        else:
            atomic_write(self.tabfile, tab.render().encode())

    def install(self, batch_id: str, command: str) -> None:
        with self._lock():
            tab = self._read()
            tab.remove_all(comment=marker(batch_id))
            job = tab.new(command=command, comment=marker(batch_id))
            job.setall(SCHEDULE)
            self._write(tab)

    def remove(self, batch_id: str) -> bool:
        with self._lock():
            tab = self._read()
            if not list(tab.find_comment(marker(batch_id))):
                return False
            tab.remove_all(comment=marker(batch_id))
            self._write(tab)
            return True

    def command(self, batch_id: str) -> str | None:
        """The command of a batch's entry as cron hands it to ``/bin/sh`` (cron's escaping undone)."""
        for job in self._read().find_comment(marker(batch_id)):
            return job.command
        return None

    def entries(self) -> dict[str, str]:
        """batch id -> the entry's full line, for every ADDM entry in the table."""
        tab = self._read()
        return {job.comment[len(MARKER_PREFIX) :]: str(job) for job in tab if job.comment.startswith(MARKER_PREFIX)}


def cron_supported() -> bool:
    return not sys.platform.startswith("win")
