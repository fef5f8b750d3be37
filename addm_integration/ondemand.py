"""Ondemand mode: live chat completions with bounded concurrency, applied in chunks as they arrive.

One failed call never stops the others: it becomes a failure outcome and the item stays missing, so the next run
asks only for it. Results are applied every few hundred answers, so an interrupted run keeps what it got.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from addm_integration import credentials, openai_api
from addm_integration.context import Context, create_job
from addm_integration.credentials import Credentials
from addm_integration.errors import BadInput, Transient
from addm_integration.outcomes import Outcome, from_body, from_exception, reached
from addm_integration.pipeline import Pipeline, WorkItem, apply_outcomes, finalize
from addm_integration.progress import progress
from ledger.events import RunEnded, RunStarted, ServiceReached
from ledger.reducer import JobState

if TYPE_CHECKING:
    from openai import AsyncOpenAI

MODE = "ondemand"
CHUNK = 500
CHUNK_SECONDS = 5.0


async def _call(api: AsyncOpenAI, item: WorkItem, secret: str | None) -> Outcome:
    started = time.perf_counter()
    try:
        # The raw body, read as a batch line's body is: the same parser for both modes, and no model building.
        raw = await api.chat.completions.with_raw_response.create(**item.body)
        body = orjson.loads(raw.content)
    except Exception as exc:
        return from_exception(item.custom_id, exc, secret)
    latency = (time.perf_counter() - started) * 1000
    return from_body(item.custom_id, body, latency_ms=round(latency, 1))


async def _run(
    creds: Credentials,
    items: Iterator[WorkItem],
    concurrency: int,
    flush: Callable[[list[Outcome]], None],
    advance: Callable[[], None],
) -> None:
    api = openai_api.async_client(creds)
    buffer: list[Outcome] = []
    last_flush = time.monotonic()

    async def worker() -> None:
        nonlocal last_flush
        for item in items:  # a shared iterator: each item is taken by exactly one worker
            buffer.append(await _call(api, item, creds.api_key))
            advance()
            if len(buffer) >= CHUNK or time.monotonic() - last_flush >= CHUNK_SECONDS:
                chunk = buffer[:]
                buffer.clear()
                last_flush = time.monotonic()
                flush(chunk)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if buffer:
            flush(buffer[:])
            buffer.clear()
        await api.close()


def run(
    creds: Credentials, items: Iterable[WorkItem], total: int, concurrency: int, flush: Callable[[list[Outcome]], None]
) -> None:
    with progress(total, "requests") as advance:
        asyncio.run(_run(creds, iter(items), concurrency, flush, advance))


def execute(ctx: Context, pipeline: Pipeline, concurrency: int) -> str:
    """Run the open ondemand job of this identity (or a new one) to its end: call, apply in chunks, finalize.

    A run that got nothing through finalizes nothing: the cache and results files stay as they were and the job
    stays open, so the same command continues it.
    """
    lock = ctx.job_lock(pipeline.key(), timeout=0)
    if not ctx.try_acquire(lock):
        raise BadInput(f"another run of this {pipeline.name} job is in progress in {ctx.ws.root}")
    try:
        job = ctx.open_job(pipeline.key(), MODE)
        if job is None:
            creds = credentials.resolve(ctx.ws.root)
            openai_api.require_key(creds)
            job_id, created = create_job(ctx, pipeline, MODE, {})
            items = list(pipeline.work(job_id))
            if not items:
                return pipeline.nothing_to_do()
            ctx.record(replace(created, n_items=len(items)), RunStarted(job_id))
            said = f"sent {len(items)} requests (job {job_id})"
        else:
            job_id = job.job_id
            creds = credentials.resolve(ctx.ws.root, base_url=job.params.get("base_url"))
            openai_api.require_key(creds)
            items = list(pipeline.work(job_id))
            ctx.record(RunStarted(job_id))
            said = f"continued job {job_id}: sent the {len(items)} requests it still lacked"
        return _run_job(ctx, pipeline, ctx.job_state(job_id).jobs[job_id], creds, items, concurrency, said)
    finally:
        lock.release()


def _run_job(
    ctx: Context,
    pipeline: Pipeline,
    job: JobState,
    creds: Credentials,
    items: list[WorkItem],
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
            events.append(ServiceReached(job.job_id, creds.base_url))
            pinned = True
        ctx.record(*events)
        reasons.update(reason for _, reason, _ in result.failures)
        transient += sum(retryable for _, _, retryable in result.failures)
        applied += len(result.applied)

    try:
        run(creds, items, len(items), concurrency, flush)
        top = ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common(3))
        if items and not applied:  # nothing got through: keep every file as it was, leave the job open
            if transient == len(items):
                ended = "unreachable"
                raise Transient(
                    f"all {len(items)} requests to {creds.base_url} failed ({top}); nothing was written, "
                    f"the next run retries them"
                )
            ended = "nothing"
            raise BadInput(
                f"all {len(items)} requests failed ({top}); nothing was written: fix the cause, then run the "
                f"same command to continue"
            )
        ctx.record(finalize(pipeline, ctx.job_state(job.job_id).jobs[job.job_id]))
        ended = "finalized"
    finally:
        ctx.record(RunEnded(job.job_id, ended))
    said += "\n" + pipeline.summary(ctx.job_state(job.job_id).jobs[job.job_id])
    if reasons:
        said += f"\n{reasons.total()} requests failed ({top}); run the same command again to retry them"
    return said
