"""What a pipeline gives the shared machinery, and the one apply and one finalize both modes go through.

A pipeline knows its requests, how to read an answer and where results live. Everything about modes, batches,
cron and the ledger is outside it, so ``extract`` and ``run_baseline`` behave the same in both modes by
construction: the same ``apply`` takes live answers and batch lines alike, and ``finalize`` runs once per job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from addm_integration.outcomes import Outcome
from ledger.events import Event, ItemsApplied, ItemsFailed, JobFinalized
from ledger.reducer import JobState

if TYPE_CHECKING:
    from addm_integration.context import Context


@dataclass(frozen=True)
class WorkItem:
    custom_id: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Applied:
    """What a pipeline made of a set of outcomes: stored ids, and the failures with reason and retryability."""

    applied: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, bool], ...] = ()


class Pipeline(Protocol):
    name: ClassVar[str]
    module: ClassVar[str]
    model: str

    @classmethod
    def from_params(cls, ctx: Context, params: Mapping[str, Any]) -> Pipeline:
        """The pipeline a job was created with, rebuilt from what ``params`` recorded."""
        ...

    def key(self) -> str:
        """The job's identity: a repeated command with the same key continues the open job instead of paying twice."""
        ...

    def params(self) -> dict[str, Any]:
        """Everything needed to rebuild this pipeline from the ledger (a cron run, a replay)."""
        ...

    def work(self, job_id: str) -> Iterator[WorkItem]:
        """The items whose results are not stored yet, in a stable order."""
        ...

    def apply(self, job: JobState, outcomes: Sequence[Outcome]) -> Applied:
        """Store what the outcomes say, durably, before returning."""
        ...

    def finalize(self, job: JobState) -> dict[str, Any]:
        """The job's set-level step, once its last item is in; returns what it wrote, for the ledger."""
        ...

    def summary(self, job: JobState) -> str:
        """One line for the user once the job is finalized."""
        ...


def sum_usage(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Tokens billed: every answer that came back counts, also one the pipeline could not use."""
    total: dict[str, int] = {}
    for outcome in outcomes:
        for k, v in (outcome.usage or {}).items():
            total[k] = total.get(k, 0) + v
    return total


def apply_outcomes(
    pipeline: Pipeline,
    job: JobState,
    outcomes: Sequence[Outcome],
    *,
    batch_id: str | None,
    attempt: int,
    kind: str = "apply",
) -> tuple[Applied, list[Event]]:
    """Store results, then return the events that record them (the caller appends them, after the write).

    A crash between the two re-applies the same results on the next run: never lost, recorded once.
    """
    result = pipeline.apply(job, outcomes)
    applied = set(result.applied)
    events: list[Event] = []
    if result.applied:
        usage = sum_usage(o for o in outcomes if o.custom_id in applied)
        events.append(ItemsApplied(job.job_id, batch_id, result.applied, attempt, kind, usage))
    if result.failures and kind == "apply":
        usage = sum_usage(o for o in outcomes if o.custom_id not in applied)
        events.append(ItemsFailed(job.job_id, batch_id, result.failures, attempt, usage))
    return result, events


def finalize(pipeline: Pipeline, job: JobState) -> JobFinalized:
    return JobFinalized(job.job_id, pipeline.finalize(job))
