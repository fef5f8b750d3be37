"""The queue that paces itself: which waiting parts of a job may be sent now, under the enqueued-token cap.

The service caps the input tokens of an account's unfinished batches per model, and fails a batch that would go
over at validation (``token_limit_exceeded``: nothing ran, nothing is billed). Sending every part at once makes
most of a large job fail that way; sending only what fits, and the rest as running batches end, gets the whole
job through with no one at the keyboard. Decided from the ledger's state alone, like every other step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ledger.events import ENDED, Phase
from ledger.reducer import BatchState, JobState, PartState, State

TOKEN_LIMIT = "token_limit_exceeded"
DEFAULT_MAX_ENQUEUED_TOKENS = 20_000_000  # per model; usage tier 2's cap. Tier 1 accounts set 2,000,000
BYTES_PER_TOKEN = 4  # a request line is mostly prompt text: about 4 bytes a token, a little over the count


def estimate(part: PartState) -> int:
    """Estimated input tokens of a part, from its size on disk (known without reading it)."""
    return part.n_bytes // BYTES_PER_TOKEN


def refused_for_tokens(batch: BatchState) -> bool:
    """The batch failed at validation for the enqueued-token cap: its items never ran and are sent again."""
    return batch.phase == Phase.FAILED and any(e.get("code") == TOKEN_LIMIT for e in batch.errors)


def _part(state: State, batch: BatchState) -> PartState | None:
    job = state.jobs.get(batch.job_id)
    return job.parts.get(batch.idem_key) if job else None


def enqueued(state: State) -> dict[str, int]:
    """Model -> estimated input tokens of the workspace's batches that are not finished (counted by the service)."""
    out: dict[str, int] = {}
    for batch in state.batches.values():
        part = _part(state, batch)
        if part is not None and not batch.settled and batch.phase not in ENDED:
            out[part.model] = out.get(part.model, 0) + estimate(part)
    return out


def _held(state: State, part: PartState, running: int) -> bool:
    """A part refused for tokens waits until another batch of its model ends (or none of them is left running)."""
    source = state.batches.get(part.source_batch) if part.source_batch else None
    if source is None or not refused_for_tokens(source) or running == 0 or source.settled_at is None:
        return False
    since: datetime = source.settled_at
    for batch in state.batches.values():
        other = _part(state, batch)
        ended = batch.settled_at is not None and batch.settled_at > since
        if ended and batch is not source and other is not None and other.model == part.model:
            return False
    return True


def admit(state: State, job: JobState, cap: int | None) -> list[PartState]:
    """The job's unsent parts that may go now, in order: while each model's enqueued tokens stay under ``cap``.

    A model with nothing running always gets its next part, even one larger than the cap (else it would never go;
    the service says whether it fits). Once a part of a model must wait, its later parts wait too: the job's
    parts go in the order they were planned.
    """
    running = enqueued(state)
    blocked: set[str] = set()
    out: list[PartState] = []
    for part in (p for p in job.parts.values() if p.batch_id is None):
        model, size, now = part.model, estimate(part), running.get(part.model, 0)
        if model in blocked:
            continue
        if _held(state, part, now) or (cap is not None and now > 0 and now + size > cap):
            blocked.add(model)
            continue
        out.append(part)
        running[model] = now + size
    return out


def waiting(job: JobState, sent: Sequence[str] = ()) -> int:
    """How many of the job's parts have no batch yet."""
    return sum(p.batch_id is None and p.idem_key not in sent for p in job.parts.values())
