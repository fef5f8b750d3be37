"""What a pipeline gives the shared machinery, and the one apply and one finalize both modes go through.

A pipeline knows its requests, how to read an answer and where results live. Everything about modes, batches,
cron and the ledger is outside it, so ``extract`` and ``run_baseline`` behave the same in both modes by
construction: the same ``apply`` takes live answers and batch lines alike, and ``finalize`` runs once per job.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from addm_integration.provider.outcomes import Outcome
from ledger.events import Event, ItemsApplied, ItemsFailed, JobCreated, JobFinalized
from ledger.reducer import JobState

if TYPE_CHECKING:
    from addm_integration.store.context import Context


@dataclass(frozen=True)
class WorkItem:
    custom_id: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Applied:
    """What a pipeline made of a set of outcomes: stored ids, and the failures with reason and retryability.

    Every outcome ends in exactly one of the two.
    """

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

    def work(self, job_id: str | None) -> Iterator[WorkItem]:
        """The items whose results are not stored yet, in a stable order; ``None`` for a rehearsal that writes nothing.

        Called once per submit of the job: whatever apply will need besides the answers is kept here.
        """
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

    def nothing_to_do(self) -> str:
        """One line for a command whose every result is already stored: where they are."""
        ...


def sum_usage(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Tokens billed: every answer that came back counts, also one the pipeline could not use."""
    prompt = completion = total = 0
    for outcome in outcomes:
        usage = outcome.usage
        if usage:
            p, c, t = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
            prompt += p if type(p) is int else 0
            completion += c if type(c) is int else 0
            total += t if type(t) is int else 0
    counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return {k: v for k, v in counts.items() if v}


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
    failed = {cid for cid, _, _ in result.failures}
    events: list[Event] = []
    if result.applied:
        usage = sum_usage(o for o in outcomes if o.custom_id not in failed) if failed else sum_usage(outcomes)
        events.append(ItemsApplied(job.job_id, batch_id, result.applied, attempt, kind, usage))
    if result.failures and kind == "apply":
        usage = sum_usage(o for o in outcomes if o.custom_id in failed)
        events.append(ItemsFailed(job.job_id, batch_id, result.failures, attempt, usage))
    return result, events


def finalize(pipeline: Pipeline, job: JobState) -> JobFinalized:
    return JobFinalized(job.job_id, pipeline.finalize(job))


def create_job(ctx: Context, pipeline: Pipeline, mode: str, params: Mapping[str, Any]) -> tuple[str, JobCreated]:
    """A new job id and its creation event; the caller records it once it knows how many items the job has."""
    job_id = f"job_{ctx.clock().strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    return job_id, JobCreated(job_id, pipeline.name, mode, pipeline.key(), {"pipeline": pipeline.params(), **params})
