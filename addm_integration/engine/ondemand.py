"""Ondemand mode: live chat completions with bounded concurrency, applied in chunks as they arrive.

One failed call never stops the others: it becomes a failure outcome and the item stays missing, so the next run
asks only for it. Results are applied every few hundred answers, off the event loop so the calls go on meanwhile,
and an interrupted run keeps what it got. The one exception is the account refusing (a wrong key, no credit): every
other call would be refused too, so no new call starts after the first refusal; those already in flight end, what
came back is applied, and the run stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson

from addm_integration.engine.pipeline import Pipeline, WorkItem, apply_outcomes, connect, create_job, finalize, job_key
from addm_integration.engine.plan import batch_lines, staging_for
from addm_integration.engine.progress import progress
from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.provider.base import Outcome, Provider, reached
from addm_integration.store.context import Context
from ledger.events import RunEnded, RunStarted, ServiceReached
from ledger.reducer import JobState

MODE = "ondemand"
CHUNK = 500
CHUNK_SECONDS = 5.0


async def _run(
    provider: Provider,
    items: Iterator[WorkItem],
    concurrency: int,
    flush: Callable[[list[Outcome]], None],
    advance: Callable[..., None],
) -> None:
    """Call, and apply what came back in a thread, one apply at a time, while the calls go on.

    An apply rewrites the cache (a million judgments: a second or more of disk): in the event loop it would stall
    every request in flight. Outcomes that arrive during an apply wait for the next one, which takes them all.
    """
    buffer: list[Outcome] = []
    refused: list[Refused] = []
    last_flush = time.monotonic()
    applying: asyncio.Task[None] | None = None

    def start_apply() -> None:
        nonlocal applying, last_flush
        if applying is not None:
            if not applying.done():
                return  # the outcomes keep waiting: the next apply takes them with the ones still to come
            applying.result()  # a failed apply (a full disk) stops the run here, before more is paid for
        chunk = buffer[:]
        buffer.clear()
        last_flush = time.monotonic()
        applying = asyncio.create_task(asyncio.to_thread(flush, chunk))

    async def worker() -> None:
        # A shared iterator: each item is taken by exactly one worker, and none once the account refused.
        while not refused and (item := next(items, None)) is not None:
            try:
                outcome = await provider.chat(item.custom_id, item.body)
            except Refused as exc:
                advance(failed=True)
                refused.append(exc)
                continue
            advance(failed=not outcome.ok)
            buffer.append(outcome)
            if len(buffer) >= CHUNK or time.monotonic() - last_flush >= CHUNK_SECONDS:
                start_apply()

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if applying is not None:
            await applying
        if buffer:
            await asyncio.to_thread(flush, buffer[:])
            buffer.clear()
        await provider.aclose()
    if refused:
        raise refused[0]


def run(
    provider: Provider,
    items: Iterable[WorkItem],
    total: int,
    concurrency: int,
    flush: Callable[[list[Outcome]], None],
    already: int = 0,
) -> None:
    with progress(total, "requests", already=already, counts=True) as advance:
        asyncio.run(_run(provider, iter(items), concurrency, flush, advance))


def execute(ctx: Context, pipeline: Pipeline, concurrency: int) -> str:
    """Run the open ondemand job of this identity (or a new one) to its end: call, apply in chunks, finalize.

    A run that got nothing through finalizes nothing: the cache and results files stay as they were and the job
    stays open, so the same command continues it.
    """
    key = job_key(ctx, pipeline)
    provider = connect(ctx)
    pipeline.check()  # bad input is refused before the job lock or any other file exists
    provider.check()
    lock = ctx.job_lock(key, timeout=0)
    if not ctx.try_acquire(lock):
        raise BadInput(f"another run of this {pipeline.name} job is in progress in {ctx.ws.root}")
    try:
        job = ctx.open_job(key, MODE)
        if job is None:
            job_id, created = create_job(ctx, pipeline, key, MODE, {})
            with _work_list(ctx, pipeline, key, job_id) as (items, n):
                if not n:
                    return pipeline.nothing_to_do()
                ctx.record(replace(created, n_items=n), RunStarted(job_id))
                said = f"sent {n} requests (job {job_id})"
                return _run_job(
                    ctx, pipeline, ctx.job_state(job_id).jobs[job_id], provider, items, n, concurrency, said
                )
        job_id = job.job_id
        provider = connect(ctx, job.params.get("base_url"))
        recorded = type(pipeline).from_params(ctx, job.params["pipeline"])  # what the job was created with
        with _work_list(ctx, pipeline, key, job_id) as (items, n):
            ctx.record(RunStarted(job_id))
            said = f"continued job {job_id}: sent the {n} requests it still lacked"
            # applied and finalized as the job's cron runs would (a --dev run's folder is the job's own)
            return _run_job(ctx, recorded, ctx.job_state(job_id).jobs[job_id], provider, items, n, concurrency, said)
    finally:
        lock.release()


def _staged_line(custom_id: str, body: Mapping[str, Any]) -> bytes:
    """A line of the ondemand work list: ours, read back below, whatever the service's batch lines look like."""
    return orjson.dumps({"custom_id": custom_id, "body": body}) + b"\n"


@contextmanager
def _work_list(ctx: Context, pipeline: Pipeline, key: str, job_id: str) -> Iterator[tuple[Iterator[WorkItem], int]]:
    """The job's work list and its length, written to a staging file as it is built, then read back a line at a
    time: a run of a million requests holds the few in flight, not every prompt, and counts them before the first
    call. The file goes once the run ends; a crash's leftover is overwritten by the job's next run, or swept with
    the identity's other staged inputs."""
    lines = batch_lines(pipeline.work(job_id), _staged_line)
    head = next(lines, None)  # a definition refused, or nothing to do: no file written
    if head is None:
        yield iter(()), 0
        return
    path = staging_for(ctx, key) / f"{job_id}.ondemand.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as f:
            f.write(head[1])
            n = 1
            for _, line, _ in lines:
                f.write(line)
                n += 1
        with open(path, "rb") as f:
            yield (WorkItem(x["custom_id"], x["body"]) for x in map(orjson.loads, f)), n
    finally:
        path.unlink(missing_ok=True)


def _run_job(
    ctx: Context,
    pipeline: Pipeline,
    job: JobState,
    provider: Provider,
    items: Iterator[WorkItem],
    n_items: int,
    concurrency: int,
    said: str,
) -> str:
    """Call, apply in chunks, finalize unless nothing got through; record how the run ended whatever happens."""
    reasons: Counter[str] = Counter()
    transient = applied = 0
    pinned = bool(job.params.get("base_url"))
    ended = "interrupted"

    def flush(chunk: list[Outcome]) -> None:
        nonlocal transient, applied, pinned
        result, events = apply_outcomes(pipeline, job, chunk, batch_id=None, attempt=1)
        if not pinned and any(reached(o) for o in chunk):  # the URL that answered is the job's from now on
            events.append(ServiceReached(job.job_id, provider.url))
            pinned = True
        ctx.record(*events)
        reasons.update(reason for _, reason, _ in result.failures)
        transient += sum(retryable for _, _, retryable in result.failures)
        applied += len(result.applied)

    try:
        try:
            run(provider, items, n_items, concurrency, flush, already=max(job.n_items - n_items, 0))
        except Refused:  # what came back before it is applied; the job waits for the key or the account
            ended = "refused"
            raise
        top = ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common(3))
        if n_items and not applied:  # nothing got through: keep every file as it was, leave the job open
            if transient == n_items:
                ended = "unreachable"
                raise Transient(
                    f"all {n_items} requests to {provider.url} failed ({top}); nothing was written, "
                    f"the next run retries them"
                )
            ended = "nothing"
            raise BadInput(
                f"all {n_items} requests failed ({top}); nothing was written: fix the cause, then run the "
                f"same command to continue"
            )
        ctx.record(finalize(pipeline, ctx.job_state(job.job_id).jobs[job.job_id]))
        ended = "finalized"
    finally:
        ctx.record(RunEnded(job.job_id, ended))
    said += "\n" + pipeline.summary(ctx.job_state(job.job_id).jobs[job.job_id])
    if reasons:
        said += f"\n{reasons.total()} requests failed ({top}); {pipeline.retry_hint()}"
    return said
