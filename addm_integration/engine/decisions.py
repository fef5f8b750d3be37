"""What a batch or job needs next, as pure functions of their folded state: no I/O, so each is tested alone."""

from __future__ import annotations

from addm_integration.engine import pacing
from ledger.reducer import BatchState, JobState, State

RESULT_KINDS = ("output", "error")


def files_complete(batch: BatchState) -> bool:
    return batch.files is not None and all(kind in batch.files for kind in RESULT_KINDS)


def needs_requeue(job: JobState, batch: BatchState) -> list[str]:
    """The batch's retryable failures still failing, when another attempt is allowed and not yet planned."""
    if batch.requeued or batch.attempt >= int(job.params.get("max_attempts", 3)):
        return []
    return [c for c in batch.retryable if c in job.failures and job.failures[c][1]]


def job_complete(state: State, job: JobState) -> bool:
    """Nothing more can arrive: every part sent, every batch settled, every allowed retry done."""
    if any(p.batch_id is None for p in job.parts.values()):
        return False
    return all(b.settled and not needs_requeue(job, b) and not to_resend(b) for b in state.batches_of(job.job_id))


def to_resend(batch: BatchState) -> bool:
    """A batch refused for the enqueued-token cap whose items are not planned again yet (nothing of it ran)."""
    return pacing.refused_for_tokens(batch) and not batch.requeued


def keeps_entry(state: State, job: JobState, batch_id: str) -> bool:
    """Whether a settled batch's entry stays: the job's only way to be run again while its parts wait for room."""
    if not pacing.waiting(job):
        return False
    return not any(not b.settled for b in state.batches_of(job.job_id) if b.batch_id != batch_id)
