"""What every command works on: the workspace, its ledger, and the state folded from it.

A run reads only the records of the job it works on (through the ledger's index), so its cost does not grow
with the history of the workspace; only the whole-workspace readings (status, show) fold everything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from addm_integration import failpoints
from addm_integration.errors import Corrupt, Refused
from addm_integration.store.workspace import Workspace
from ledger.events import AccessRefused, Event
from ledger.index import Index
from ledger.log import Ledger, LedgerCorrupt, utcnow
from ledger.reducer import JobState, State, fold_ledger

if TYPE_CHECKING:
    pass


@dataclass
class Context:
    ws: Workspace
    ledger: Ledger
    clock: Callable[[], datetime] = utcnow
    # The service the app chose (tests: a fake), as provider/base.py's Connect; the engine calls it through
    # engine.pipeline.connect. Typed loosely here: the store sits below the provider and knows nothing of it.
    connect: Callable[[str | None], Any] | None = None
    _folded: dict[str, State] = field(default_factory=dict, repr=False, compare=False)  # job_id -> its state

    @classmethod
    def open(
        cls, root: Path, clock: Callable[[], datetime] = utcnow, connect: Callable[[str | None], Any] | None = None
    ) -> Context:
        ws = Workspace(root)
        return cls(ws, Ledger(ws.ledger_dir, clock=clock), clock, connect)

    @property
    def index(self) -> Index:
        return Index(self.ledger)

    def state(self) -> State:
        """Every job of the workspace: for readings over all of it, never on a run's path."""
        with _corrupt_is_exit_1():
            return fold_ledger(self.ledger, self.ledger.records())

    def job_state(self, job_id: str) -> State:
        """The state of one job and its batches, folded from their records alone.

        Folded forward: from the state this context read last, with only the records appended since (by this run
        or any other), so a run reads each record once; the 50,000 ids of an apply are not parsed again by every
        step after it.
        """
        known = self._folded.get(job_id)
        with _corrupt_is_exit_1():
            records = self.index.records_of(job_id, after=known.last_seq if known else 0)
            state = self._folded[job_id] = fold_ledger(self.ledger, records, known)
        return state

    def batch_state(self, batch_id: str) -> State | None:
        with _corrupt_is_exit_1():
            job_id = self.index.job_of(batch_id)
        return self.job_state(job_id) if job_id else None

    def jobs_of_key(self, key: str) -> Iterator[JobState]:
        """The jobs recorded under this identity, newest first."""
        with _corrupt_is_exit_1():
            job_ids = list(self.index.job_ids(key))
        for job_id in reversed(job_ids):
            yield self.job_state(job_id).jobs[job_id]

    def has_jobs(self, key: str) -> bool:
        return next(self.jobs_of_key(key), None) is not None

    def open_job(self, key: str, mode: str) -> JobState | None:
        """The unfinished job of this identity and mode, which a repeated command continues instead of paying again."""
        return next((job for job in self.jobs_of_key(key) if job.mode == mode and job.open), None)

    def record(self, *events: Event) -> None:
        """Append, then index what was appended, so that a later run that has nothing to do writes nothing."""
        if events:
            n = failpoints.next_append()
            failpoints.hit(f"append-{n}-before")
            with _corrupt_is_exit_1():
                self.ledger.append(events)
                failpoints.hit(f"append-{n}-after")
                self.index.catch_up()

    @contextmanager
    def refusal_recorded(self, job_id: str, batch_id: str | None = None) -> Iterator[None]:
        """Let a refusal of the account through, recorded first (once per reason): status then says the job
        is blocked on the key, also when the refusal went to a cron log nobody reads."""
        try:
            yield
        except Refused as exc:
            if self.job_state(job_id).jobs[job_id].refused != exc.reason:
                self.record(AccessRefused(job_id, batch_id, exc.reason))
            raise

    def job_lock(self, key: str, timeout: float) -> FileLock:
        """One lock per job identity: the submit, the fetches and the finalize of a job never overlap."""
        path = self._lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), timeout=timeout)

    def _lock_path(self, key: str) -> Path:
        return self.ws.ledger_dir / "locks" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"

    def run_alive(self, key: str) -> bool:
        """Whether a run holds the job's lock right now; a reading that creates no file and takes no lock for long."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): a run without its end is taken as gone
            return False
        try:
            fd = os.open(self._lock_path(key), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing releases a lock this reading took
        return False

    def previous_job(self, key: str) -> JobState | None:
        """The last job of this identity that is over (finalized or abandoned): what a new one starts from."""
        return next((job for job in self.jobs_of_key(key) if not job.open), None)

    @staticmethod
    def try_acquire(lock: FileLock) -> bool:
        try:
            lock.acquire()
        except Timeout:
            return False
        return True


@contextmanager
def _corrupt_is_exit_1() -> Iterator[None]:
    """The ledger's own error, as the one line and exit code a user gets (README.md, "Exit codes")."""
    try:
        yield
    except LedgerCorrupt as exc:
        raise Corrupt(str(exc)) from None
