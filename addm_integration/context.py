"""What every command works on: the workspace, its ledger, and the state folded from it."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from addm_integration.errors import Corrupt
from addm_integration.workspace import Workspace
from ledger.events import Event, JobCreated
from ledger.log import Ledger, LedgerCorrupt, utcnow
from ledger.reducer import JobState, State, fold

if TYPE_CHECKING:
    from addm_integration.pipeline import Pipeline


@dataclass
class Context:
    ws: Workspace
    ledger: Ledger
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def open(cls, root: Path, clock: Callable[[], datetime] = utcnow) -> Context:
        ws = Workspace(root)
        return cls(ws, Ledger(ws.ledger_dir, clock=clock), clock)

    def state(self) -> State:
        try:
            return fold(self.ledger.records())
        except LedgerCorrupt as exc:
            raise Corrupt(str(exc)) from None

    def record(self, *events: Event) -> None:
        self.ledger.append(events)

    def job_lock(self, key: str, timeout: float) -> FileLock:
        """One lock per job identity: the submit, the fetches and the finalize of a job never overlap."""
        locks = self.ws.ledger_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"), timeout=timeout)

    @staticmethod
    def try_acquire(lock: FileLock) -> bool:
        try:
            lock.acquire()
        except Timeout:
            return False
        return True


def open_job(state: State, key: str, mode: str) -> JobState | None:
    """The unfinished job of this identity and mode, which a repeated command continues instead of duplicating."""
    for job in reversed(list(state.jobs.values())):
        if job.key == key and job.mode == mode and not job.finalized:
            return job
    return None


def create_job(ctx: Context, pipeline: Pipeline, mode: str, params: Mapping[str, Any]) -> tuple[str, JobCreated]:
    """A new job id and its creation event; the caller records it once it knows how many items the job has."""
    job_id = f"job_{ctx.clock().strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    return job_id, JobCreated(job_id, pipeline.name, mode, pipeline.key(), {"pipeline": pipeline.params(), **params})
