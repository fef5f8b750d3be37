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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from addm_integration.engine.pipeline import Pipeline, WorkItem, apply_outcomes, create_job, finalize, job_key
from addm_integration.engine.progress import progress
from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.provider import openai_api
from addm_integration.provider.outcomes import Outcome, from_body, from_exception, reached
from addm_integration.store import credentials
from addm_integration.store.context import Context
from addm_integration.store.credentials import Credentials
from ledger.events import RunEnded, RunStarted, ServiceReached
from ledger.reducer import JobState

if TYPE_CHECKING:
    from openai import AsyncOpenAI

MODE = "ondemand"
CHUNK = 500
CHUNK_SECONDS = 5.0


async def _call(api: AsyncOpenAI, item: WorkItem, secret: str | None) -> Outcome | Refused:
    started = time.perf_counter()
    try:
        # The raw body, read as a batch line's body is: the same parser for both modes, and no model building.
        raw = await api.chat.completions.with_raw_response.create(**item.body)
        body = orjson.loads(raw.content)
    except Exception as exc:
        return openai_api.refusal(exc, "requests", secret) or from_exception(item.custom_id, exc, secret)
    latency = (time.perf_counter() - started) * 1000
    return from_body(item.custom_id, body, latency_ms=round(latency, 1))


async def _run(
    creds: Credentials,
    items: Iterator[WorkItem],
    concurrency: int,
    flush: Callable[[list[Outcome]], None],
    advance: Callable[..., None],
) -> None:
    """Call, and apply what came back in a thread, one apply at a time, while the calls go on.

    An apply rewrites the cache (a million judgments: a second or more of disk): in the event loop it would stall
    every request in flight. Outcomes that arrive during an apply wait for the next one, which takes them all.
    """
    api = openai_api.async_client(creds)
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
            outcome = await _call(api, item, creds.api_key)
            advance(failed=not isinstance(outcome, Outcome) or not outcome.ok)
            if isinstance(outcome, Refused):
                refused.append(outcome)
                continue
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
        await api.close()
    if refused:
        raise refused[0]


def run(
    creds: Credentials,
    items: Iterable[WorkItem],
    total: int,
    concurrency: int,
    flush: Callable[[list[Outcome]], None],
    already: int = 0,
) -> None:
    with progress(total, "requests", already=already, counts=True) as advance:
        asyncio.run(_run(creds, iter(items), concurrency, flush, advance))


def execute(ctx: Context, pipeline: Pipeline, concurrency: int) -> str:
    """Run the open ondemand job of this identity (or a new one) to its end: call, apply in chunks, finalize.

    A run that got nothing through finalizes nothing: the cache and results files stay as they were and the job
    stays open, so the same command continues it.
    """
    key = job_key(ctx, pipeline)
    lock = ctx.job_lock(key, timeout=0)
    if not ctx.try_acquire(lock):
        raise BadInput(f"another run of this {pipeline.name} job is in progress in {ctx.ws.root}")
    try:
        job = ctx.open_job(key, MODE)
        if job is None:
            creds = credentials.resolve(ctx.ws.root)
            openai_api.require_key(creds)
            job_id, created = create_job(ctx, pipeline, key, MODE, {})
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
        try:
            run(creds, items, len(items), concurrency, flush, already=max(job.n_items - len(items), 0))
        except Refused:  # what came back before it is applied; the job waits for the key or the account
            ended = "refused"
            raise
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
        said += f"\n{reasons.total()} requests failed ({top}); {pipeline.retry_hint()}"
    return said
