"""The one pure fold from records to the state of every job and batch.

Every decision a run takes (is this batch applied? does the job still need a finalize? is its cron entry still
there?) is read from this state and nothing else, which is what makes a run idempotent and a crashed run
resumable: the log says how far the last one got.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ledger.events import (
    AccessRefused,
    BatchCreated,
    BatchPolled,
    BatchSettled,
    CronInstalled,
    CronRemoved,
    FilesStored,
    FileUploaded,
    ItemsApplied,
    ItemsFailed,
    JobAbandoned,
    JobCreated,
    JobFinalized,
    PartPlanned,
    Phase,
    RunEnded,
    RunStarted,
    SendStarted,
    ServiceReached,
)
from ledger.log import Ledger, LedgerCorrupt, Record


@dataclass(frozen=True)
class PartState:
    idem_key: str
    n_items: int
    n_bytes: int
    attempt: int
    input_path: str
    model: str
    file_id: str | None = None
    batch_id: str | None = None
    tried: bool = False
    ids_digest: str | None = None
    source_batch: str | None = None  # the batch whose items this part sends again


@dataclass(frozen=True)
class BatchState:
    batch_id: str
    job_id: str
    idem_key: str
    n_items: int
    attempt: int
    created_at: datetime
    status: str = ""  # the service's word, for display
    phase: str = Phase.SUBMITTED  # what every decision reads (docs/ledger.md, "Batch phases")
    counts: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()
    polled_at: datetime | None = None
    progress_from: tuple[datetime, int] | None = None  # first poll that saw progress: the base of the ETA
    files: Mapping[str, Mapping[str, Any]] | None = None
    applied: int = 0
    failed: int = 0
    retryable: tuple[str, ...] = ()
    settled_at: datetime | None = None
    settle_reason: str = ""
    cron: bool = False
    cron_by_user: bool = False  # the entry was taken out on purpose: only the submit command installs it again
    adopted: bool = False
    requeued: bool = False
    usage: Mapping[str, int] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    def eta(self) -> datetime | None:
        """When the batch should be done, at the pace seen so far.

        The pace is measured between the first and the last poll that saw progress; when only one poll has seen
        any (the service often reports the first counts already well along), from the batch's creation instead,
        which counts its wait in the queue as time spent and so errs late rather than early. Once every request
        has run (its results being written), there is no pace to extrapolate.
        """
        if self.polled_at is None or self.phase != Phase.RUNNING:
            return None
        done, total = int(self.counts.get("completed", 0)), int(self.counts.get("total", 0))
        if total <= done + int(self.counts.get("failed", 0)) or done <= 0:
            return None
        start, done_then = self.progress_from or (self.created_at, 0)
        if done <= done_then or self.polled_at <= start:
            start, done_then = self.created_at, 0
        if self.polled_at <= start:
            return None
        return self.polled_at + (total - done) * (self.polled_at - start) / (done - done_then)


@dataclass(frozen=True)
class JobState:
    job_id: str
    pipeline: str
    mode: str
    key: str
    params: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    n_items: int = 0
    parts: Mapping[str, PartState] = field(default_factory=dict)
    batches: tuple[str, ...] = ()
    applied: int = 0
    failures: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    finalized_at: datetime | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, int] = field(default_factory=dict)
    run_open: bool = False  # a foreground run started and has not recorded its end
    last_run: str | None = None  # how the last foreground run ended
    abandoned_at: datetime | None = None
    refused: str | None = None  # why the service last refused the account, until something gets through again

    @property
    def finalized(self) -> bool:
        return self.finalized_at is not None

    @property
    def abandoned(self) -> bool:
        return self.abandoned_at is not None

    @property
    def open(self) -> bool:
        """A repeated command continues this job: neither finalized nor given up."""
        return not self.finalized and not self.abandoned

    @property
    def submitted(self) -> int:
        return sum(p.n_items for p in self.parts.values())


@dataclass(frozen=True)
class State:
    jobs: Mapping[str, JobState] = field(default_factory=dict)
    batches: Mapping[str, BatchState] = field(default_factory=dict)
    last_seq: int = 0

    def job_of(self, batch_id: str) -> JobState | None:
        batch = self.batches.get(batch_id)
        return self.jobs.get(batch.job_id) if batch else None

    def batches_of(self, job_id: str) -> list[BatchState]:
        job = self.jobs.get(job_id)
        return [self.batches[b] for b in job.batches] if job else []


def _with_job(state: State, job: JobState) -> State:
    return replace(state, jobs={**state.jobs, job.job_id: job})


def _with_batch(state: State, batch: BatchState) -> State:
    return replace(state, batches={**state.batches, batch.batch_id: batch})


def _add(total: Mapping[str, int], more: Mapping[str, int]) -> Mapping[str, int]:
    if not more:
        return total
    return {**total, **{k: total.get(k, 0) + v for k, v in more.items()}}


def apply(state: State, record: Record) -> State:
    """Fold one record into the state. Pure: the same state and record always give the same result."""
    ts = record.ts
    state = replace(state, last_seq=record.seq)
    match record.event:
        case JobCreated(job_id=job_id, pipeline=pipeline, mode=mode, key=key, params=params, n_items=n):
            return _with_job(state, JobState(job_id, pipeline, mode, key, dict(params), ts, ts, n_items=n))
        case PartPlanned(job_id=job_id, idem_key=idem, n_items=n, n_bytes=size, attempt=attempt, model=model) as ev:
            job = state.jobs[job_id]
            part = PartState(
                idem, n, size, attempt, ev.input_path, model, ids_digest=ev.ids_digest, source_batch=ev.source_batch
            )
            state = _with_job(state, replace(job, parts={**job.parts, idem: part}, updated_at=ts))
            if ev.source_batch is not None:
                state = _with_batch(state, replace(state.batches[ev.source_batch], requeued=True))
            return state
        case SendStarted(job_id=job_id, idem_key=idem):
            job = state.jobs[job_id]
            part = replace(job.parts[idem], tried=True)
            return _with_job(state, replace(job, parts={**job.parts, idem: part}, updated_at=ts))
        case FileUploaded(job_id=job_id, idem_key=idem, file_id=file_id):
            job = state.jobs[job_id]
            part = replace(job.parts[idem], file_id=file_id)
            return _with_job(state, replace(job, parts={**job.parts, idem: part}, refused=None, updated_at=ts))
        case BatchCreated(job_id=job_id, idem_key=idem, batch_id=batch_id, adopted=adopted, status=status) as ev:
            job = state.jobs[job_id]
            part = replace(job.parts[idem], batch_id=batch_id)
            job = replace(
                job, parts={**job.parts, idem: part}, batches=(*job.batches, batch_id), refused=None, updated_at=ts
            )
            batch = BatchState(
                batch_id, job_id, idem, part.n_items, part.attempt, ts, status=status, phase=ev.phase, adopted=adopted
            )
            return _with_batch(_with_job(state, job), batch)
        case CronInstalled(batch_id=batch_id):
            return _with_batch(state, replace(state.batches[batch_id], cron=True, cron_by_user=False))
        case CronRemoved(batch_id=batch_id, by_user=by_user):
            batch = state.batches[batch_id]
            return _with_batch(state, replace(batch, cron=False, cron_by_user=by_user or batch.cron_by_user))
        case BatchPolled(batch_id=batch_id, status=status, counts=counts, errors=errors, phase=phase):
            batch = state.batches[batch_id]
            phase = batch.phase if phase is None else phase
            base = batch.progress_from
            if base is None and phase == Phase.RUNNING:
                base = (ts, int(counts.get("completed", 0)))
            batch = replace(
                batch, status=status, phase=phase, counts=dict(counts), errors=errors, polled_at=ts, progress_from=base
            )
            state = _with_batch(state, batch)
            job = state.jobs[batch.job_id]
            return _with_job(state, replace(job, refused=None)) if job.refused is not None else state
        case FilesStored(batch_id=batch_id, files=files):
            batch = state.batches[batch_id]
            return _with_batch(state, replace(batch, files={**(batch.files or {}), **files}))
        case ItemsApplied(job_id=job_id, batch_id=batch_id, custom_ids=ids, kind=kind, usage=usage):
            if kind != "apply":
                return state
            job = state.jobs[job_id]
            failures = job.failures
            if failures and any(cid in failures for cid in ids):
                done = set(ids)
                failures = {k: v for k, v in failures.items() if k not in done}
            job = replace(
                job,
                applied=job.applied + len(ids),
                failures=failures,
                usage=_add(job.usage, usage),
                refused=None,
                updated_at=ts,
            )
            state = _with_job(state, job)
            if batch_id is not None:
                batch = state.batches[batch_id]
                batch = replace(batch, applied=batch.applied + len(ids), usage=_add(batch.usage, usage))
                state = _with_batch(state, batch)
            return state
        case ItemsFailed(job_id=job_id, batch_id=batch_id, failures=failed, usage=usage):
            job = state.jobs[job_id]
            merged = {**job.failures, **{cid: (reason, retryable) for cid, reason, retryable in failed}}
            state = _with_job(state, replace(job, failures=merged, usage=_add(job.usage, usage), updated_at=ts))
            if batch_id is not None:
                batch = state.batches[batch_id]
                retry = tuple(cid for cid, _, retryable in failed if retryable)
                batch = replace(
                    batch,
                    failed=batch.failed + len(failed),
                    retryable=batch.retryable + retry,
                    usage=_add(batch.usage, usage),
                )
                state = _with_batch(state, batch)
            return state
        case BatchSettled(batch_id=batch_id, status=status, reason=reason):
            batch = replace(state.batches[batch_id], status=status, settled_at=ts, settle_reason=reason)
            return _with_batch(state, batch)
        case AccessRefused(job_id=job_id, reason=reason):
            return _with_job(state, replace(state.jobs[job_id], refused=reason, updated_at=ts))
        case JobFinalized(job_id=job_id, outputs=outputs):
            job = replace(state.jobs[job_id], finalized_at=ts, outputs=dict(outputs), updated_at=ts)
            return _with_job(state, job)
        case ServiceReached(job_id=job_id, base_url=url):
            job = state.jobs[job_id]
            if job.params.get("base_url"):  # the first URL that answered stays the job's
                return state
            return _with_job(state, replace(job, params={**job.params, "base_url": url}, updated_at=ts))
        case RunStarted(job_id=job_id):
            return _with_job(state, replace(state.jobs[job_id], run_open=True, last_run=None, updated_at=ts))
        case RunEnded(job_id=job_id, outcome=outcome):
            return _with_job(state, replace(state.jobs[job_id], run_open=False, last_run=outcome, updated_at=ts))
        case JobAbandoned(job_id=job_id):
            return _with_job(state, replace(state.jobs[job_id], abandoned_at=ts, updated_at=ts))
    raise TypeError(f"unknown event {type(record.event).__name__}")


def job_eta(state: State, job: JobState) -> datetime | None:
    """When the whole job should be done, at the pace its parts have ended so far.

    The pace is the time from its first batch's creation to the latest end of one, per part ended; the parts
    still to go (running, or waiting for room in the queue) follow at that pace from that latest end. It counts
    batches run side by side as the queue allows, as they were. A batch that failed as a whole ran nothing and
    says nothing of the pace. None while no part has ended yet, once none is left to go, and for a job that is over.
    """
    if not job.open:
        return None
    batches = state.batches_of(job.job_id)
    ran = [b.settled_at for b in batches if b.settled_at is not None and b.phase != Phase.FAILED]
    left = sum(p.batch_id is None or state.batches[p.batch_id].settled_at is None for p in job.parts.values())
    if not ran or not left:
        return None
    start, last = min(b.created_at for b in batches), max(ran)
    return last + left * (last - start) / len(ran)


def job_condition(state: State, job: JobState, *, alive: bool = False) -> str:
    """The one word a user reads for a job, derived from the records alone (``alive``: a run holds its lock now).

    Checked in order, so each case can assume the ones above it are false.
    """
    if job.abandoned:
        return "abandoned"
    if job.finalized:
        return "finalized"
    if alive:
        return "running"
    if job.refused is not None:
        return "blocked on the key"  # a batch job's upload or poll was refused (ondemand: RunEnded "refused")
    if job.run_open:
        return "interrupted"  # a foreground run started and is no longer there
    if job.last_run is not None:
        return _RUN_ENDS.get(job.last_run, "interrupted")
    unsent = [p for p in job.parts.values() if p.batch_id is None]
    if any(p.tried for p in unsent):
        return "waiting for the service"  # an upload was tried and did not go through: the next run tries again
    batches = state.batches_of(job.job_id)
    if unsent or any(not b.settled for b in batches):
        return "running"
    if batches and job.applied == 0:
        return "nothing got through"  # every batch ended without a single result (failed validation, all failed)
    return "running" if batches else "interrupted"  # a foreground job that no run is working on


# How a foreground run that left its job open said it ended (RunEnded.outcome), as the user reads it.
_RUN_ENDS = {
    "unreachable": "waiting for the service",
    "nothing": "nothing got through",
    "refused": "blocked on the key",
    "interrupted": "interrupted",
}


class Inconsistent(Exception):
    """A record with a sound checksum that does not fit the state before it (it names a job or batch no earlier
    record created, say): the log is damaged in a way no checksum sees."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(why)
        self.seq, self.why = seq, why


def fold(records: Iterable[Record], state: State | None = None) -> State:
    state = state if state is not None else State()
    for record in records:
        try:
            state = apply(state, record)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            name = type(record.event).__name__
            why = f"names {exc.args[0]!r}, which no earlier record created" if isinstance(exc, KeyError) else str(exc)
            raise Inconsistent(record.seq, f"{name} does not fit the records before it: {why}") from None
    return state


def fold_ledger(ledger: Ledger, records: Iterable[Record], state: State | None = None) -> State:
    """``fold``, with a record that does not fit reported as what it is: corruption at a file, line and seq."""
    try:
        return fold(records, state)
    except Inconsistent as exc:
        raise LedgerCorrupt(ledger.path, ledger.line_of(exc.seq), exc.seq, exc.why) from None
