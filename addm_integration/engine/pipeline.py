"""What a pipeline gives the shared machinery, and the one apply and one finalize both modes go through.

A pipeline knows its requests, how to read an answer and where results live. Everything about modes, batches,
cron and the ledger is outside it, so ``extract`` and ``run_baseline`` behave the same in both modes by
construction: the same ``apply`` takes live answers and batch lines alike, and ``finalize`` runs once per job.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import orjson

from addm_integration.errors import DamagedFile
from addm_integration.provider.base import Outcome, Provider
from addm_integration.store.workspace import Workspace, atomic_write
from ledger.events import Event, ItemsApplied, ItemsFailed, JobCreated, JobFinalized
from ledger.reducer import JobState

if TYPE_CHECKING:
    from addm_integration.store.context import Context


@dataclass(frozen=True)
class WorkItem:
    custom_id: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Settled:
    """What a pipeline's apply made of a set of outcomes: each settled as stored (``applied``) or as a failure
    with its reason and retryability, exactly one of the two."""

    applied: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, bool], ...] = ()


class Pipeline(Protocol):
    name: ClassVar[str]
    module: ClassVar[str]
    unkeyed: ClassVar[frozenset[str]]
    """The params that say where a job's results go, not what it asks (a dev run's folder carries its creation
    time): the only ones left out of its key."""
    model: str

    @classmethod
    def from_params(cls, ctx: Context, params: Mapping[str, Any]) -> Pipeline:
        """The pipeline a job was created with, rebuilt from what ``params`` recorded."""
        ...

    @staticmethod
    def key_before(params: Mapping[str, Any]) -> str | None:
        """The key earlier versions recorded for a job of these params, hand-formatted: read only, to find the jobs
        they recorded (``job_key``). Frozen: a param added later has no say in it."""
        ...

    def params(self) -> dict[str, Any]:
        """Everything needed to rebuild this pipeline from the ledger (a cron run, a replay)."""
        ...

    def check(self) -> None:
        """Read and check every input a run of this command needs (definitions, dataset, ground truth), writing
        nothing: bad input is refused here, before the job lock or any other file exists. ``work`` goes on from
        what was read."""
        ...

    def work(self, job_id: str | None) -> Iterator[WorkItem]:
        """The items whose results are not stored yet, in a stable order; ``None`` for a rehearsal that writes nothing.

        Called once per submit of the job: whatever apply will need besides the answers is kept here.
        """
        ...

    def apply(self, job: JobState, outcomes: Sequence[Outcome]) -> Settled:
        """Store what the outcomes say, durably, before returning."""
        ...

    def finalize(self, job: JobState) -> dict[str, Any]:
        """The job's set-level step, once its last item is in; returns what it wrote, for the ledger."""
        ...

    def summary(self, job: JobState) -> str:
        """One line for the user once the job is finalized."""
        ...

    def retry_hint(self) -> str:
        """What running the same command again does about the items that failed, in the pipeline's own terms."""
        ...

    def nothing_to_do(self) -> str:
        """One line for a command whose every result is already stored: where they are."""
        ...


def canonical_key(name: str, params: Mapping[str, Any], unkeyed: frozenset[str] = frozenset()) -> str:
    """The pipeline and every param but ``unkeyed``, canonically encoded: a param added to ``params()`` is part of
    the identity by construction, so two commands that differ in it never share a job."""
    identity = {k: v for k, v in params.items() if k not in unkeyed}
    return f"{name}:{orjson.dumps(identity, option=orjson.OPT_SORT_KEYS).decode()}"


def job_key(ctx: Context, pipeline: Pipeline) -> str:
    """The job identity of a command: a repeated command with the same key continues the open job instead of
    paying twice, and the job lock is taken on it.

    A workspace whose jobs of this identity were recorded by an earlier version, under its hand-formatted key,
    keeps that key: its open job is continued, its last run found, and its cron runs (which lock the key the job
    recorded) exclude the same runs. The old key is trusted only for a job whose recorded params have this very
    identity, so a param the old format did not know can never merge two jobs.
    """
    params = pipeline.params()
    key = canonical_key(pipeline.name, params, pipeline.unkeyed)
    old = pipeline.key_before(params)
    if old is None or old == key or ctx.has_jobs(key):
        return key
    for job in ctx.jobs_of_key(old):
        recorded = job.params.get("pipeline")
        if isinstance(recorded, dict) and canonical_key(job.pipeline, recorded, pipeline.unkeyed) == key:
            return old
    return key


T = TypeVar("T")


def keep_inputs(
    ws: Workspace,
    job_id: str | None,
    inputs: object,
    items: Iterable[WorkItem],
    also: Callable[[str], None] | None = None,
) -> Iterator[WorkItem]:
    """``items``, with ``inputs`` saved as the job's snapshot just before the first one is handed out.

    The one way a pipeline keeps what its applies and its finalize need of its inputs: taken when the items are,
    so that a fetch, a replay or a post mortem uses exactly what was sent, whatever happened to the dataset since.
    Saved with the first item, so that a job with nothing to do leaves no file; ``also`` writes what else the job
    starts from at the same moment; no ``job_id``: a rehearsal, which writes nothing.
    """
    items = iter(items)
    first = next(items, None)
    if first is None:
        return
    if job_id is not None:
        atomic_write(ws.snapshot(job_id), orjson.dumps(inputs))
        if also is not None:
            also(job_id)
    yield first
    yield from items


def kept_inputs(ws: Workspace, job_id: str | None, now: Callable[[], T]) -> T:
    """The job's snapshot of its inputs (``keep_inputs``); for a job from before snapshots, ``now()``: the inputs
    as they are."""
    path = ws.snapshot(job_id) if job_id is not None else None
    return load_kept(path, "snapshot of the job's inputs") if path is not None and path.exists() else now()


def load_kept(path: Path, what: str) -> Any:
    """A file a job keeps beside the ledger, as JSON; one that does not read is named, never taken for input."""
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DamagedFile(f"{path}: the {what} is damaged ({exc}); nothing was applied") from None


def sum_usage(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Tokens billed: every answer that came back counts, also one the pipeline could not use.

    A count the service did not report, or reported as anything other than an integer, counts 0.
    """
    prompt = completion = total = 0
    for outcome in outcomes:
        usage = outcome.usage
        if usage:
            p, c, t = usage
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
) -> tuple[Settled, list[Event]]:
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


def create_job(
    ctx: Context, pipeline: Pipeline, key: str, mode: str, params: Mapping[str, Any]
) -> tuple[str, JobCreated]:
    """A new job id and its creation event; the caller records it once it knows how many items the job has.

    ``key``: the identity ``job_key`` gave the command, whose lock the caller holds.
    """
    job_id = f"job_{ctx.clock().strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    return job_id, JobCreated(job_id, pipeline.name, mode, key, {"pipeline": pipeline.params(), **params})


def connect(ctx: Context, base_url: str | None = None) -> Provider:
    """The service a job's calls go to, as the app chose it (tests: a fake): at the URL the job is pinned to, else
    the configured one. Building one sends nothing; ``Provider.check`` says whether calls can be made."""
    if ctx.connect is None:
        raise RuntimeError("this run was started without a provider to call")
    provider: Provider = ctx.connect(base_url)
    return provider
