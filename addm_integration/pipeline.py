"""What a pipeline gives the shared machinery, and the one apply and one finalize both modes go through.

A pipeline knows its requests, how to read an answer and where results live. Everything about modes, batches,
cron and the ledger is outside it, so ``extract`` and ``run_baseline`` behave the same in both modes by
construction: the same ``apply`` takes live answers and batch lines alike, and ``finalize`` runs once per job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from addm_integration.outcomes import Outcome
from ledger.events import Event, ItemsApplied, ItemsFailed, JobFinalized
from ledger.reducer import JobState


@dataclass(frozen=True)
class WorkItem:
    custom_id: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Applied:
    """What a pipeline made of a set of outcomes: stored ids, and the failures with reason and retryability."""

    applied: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, bool], ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)


class Pipeline(Protocol):
    name: str
    module: str
    key: str
    model: str
    params: Mapping[str, Any]

    def work(self) -> Iterator[WorkItem]:
        """The items whose results are not stored yet, in a stable order."""
        ...

    def apply(self, outcomes: Sequence[Outcome], *, batch_mode: bool) -> Applied:
        """Store what the outcomes say, durably, before returning."""
        ...

    def finalize(self, job: JobState) -> dict[str, Any]:
        """The job's set-level step, once its last item is in; returns what it wrote, for the ledger."""
        ...


def apply_outcomes(
    pipeline: Pipeline,
    job: JobState,
    outcomes: Sequence[Outcome],
    *,
    batch_id: str | None,
    attempt: int,
    kind: str = "apply",
    extra: Sequence[tuple[str, str, bool]] = (),
) -> tuple[Applied, list[Event]]:
    """Store results, then return the events that record them (the caller appends them, after the write).

    A crash between the two re-applies the same results on the next run: never lost, recorded once.
    """
    result = pipeline.apply(outcomes, batch_mode=batch_id is not None)
    failures = (*result.failures, *extra)
    events: list[Event] = []
    if result.applied:
        events.append(ItemsApplied(job.job_id, batch_id, result.applied, attempt, kind))
    if failures and kind == "apply":
        events.append(ItemsFailed(job.job_id, batch_id, failures, attempt))
    return Applied(result.applied, failures, result.usage), events


def finalize(pipeline: Pipeline, job: JobState) -> JobFinalized:
    return JobFinalized(job.job_id, pipeline.finalize(job))
