"""24hrbatch fetch: poll a batch, store its files, apply them once, requeue, finalize the job, remove the entry.

Each step is decided from the ledger alone and recorded right after its effect, so a run that stopped anywhere
is finished by the next one and a run with nothing to do does nothing: no write, and once the job is finalized
and the entry gone, not even a status check.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from addm_integration import failpoints
from addm_integration.engine import pacing
from addm_integration.engine.decisions import (
    RESULT_KINDS,
    files_complete,
    job_complete,
    keeps_entry,
    needs_requeue,
    to_resend,
)
from addm_integration.engine.pipeline import Pipeline, apply_outcomes, connect, finalize
from addm_integration.engine.plan import Limits, ids_digest, plan_parts
from addm_integration.engine.progress import progress
from addm_integration.engine.send import send_pending_parts
from addm_integration.errors import BadInput, DamagedFile
from addm_integration.provider.base import ENDED, Outcome, Phase
from addm_integration.schedule.entries import job_cron_table, resume_cron
from addm_integration.store.context import Context
from ledger.events import BatchPolled, BatchSettled, CronRemoved, FilesStored
from ledger.reducer import BatchState, JobState, State

LineReader = Callable[[dict[str, Any]], Outcome]

_LEADING_ID = re.compile(rb'\{"custom_id":("(?:[^"\\]|\\.)*")')


def input_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """(custom_id, request line) of a batch's stored input, the source of requeues and of the submitted set.

    Our lines start with their custom_id, so it is read without parsing the request body.
    """
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                match = _LEADING_ID.match(raw)
                cid = orjson.loads(match.group(1)) if match else orjson.loads(raw)["custom_id"]
                yield cid, raw if raw.endswith(b"\n") else raw + b"\n"


def advance(ctx: Context, pipeline_cls: type[Pipeline], batch_id: str, *, replay: bool = False) -> str | None:
    """Advance one batch as far as it can go; the message to print, or None for a silent run."""
    state = ctx.batch_state(batch_id)
    batch = state.batches.get(batch_id) if state else None
    if state is None or batch is None:
        raise BadInput(f"unknown batch id {batch_id!r}: no such batch in {ctx.ledger.path}")
    job = state.jobs[batch.job_id]
    if job.pipeline != pipeline_cls.name:
        raise BadInput(f"batch {batch_id} belongs to a {job.pipeline} job, not {pipeline_cls.name}")
    if job.abandoned and not replay:
        return _forget(ctx, job, batch)
    if not replay and batch.settled and job.finalized and not batch.cron and not _stray_entry(ctx, job, batch_id):
        return None
    lock = ctx.job_lock(job.key, timeout=0)
    if not ctx.try_acquire(lock):
        return None  # another run is working on this job; it will do what this one would
    try:
        pipeline = pipeline_cls.from_params(ctx, job.params["pipeline"])
        if replay:
            return _replay(ctx, pipeline, batch_id)
        return _advance_locked(ctx, pipeline, batch_id)
    finally:
        lock.release()


def _forget(ctx: Context, job: JobState, batch: BatchState) -> str | None:
    """A batch of an abandoned job: nothing is fetched or applied; an entry left behind is taken out, once."""
    table = job_cron_table(job)
    removed = table is not None and table.remove(batch.batch_id, ctx.ws.root)
    if removed or batch.cron:
        ctx.record(CronRemoved(batch.batch_id))
        return f"batch {batch.batch_id}: job {job.job_id} was abandoned; nothing applied, its cron entry removed"
    return None


def _state(ctx: Context, batch_id: str) -> State:
    state = ctx.batch_state(batch_id)
    assert state is not None  # the batch was found before the job lock was taken, and records are never removed
    return state


def _advance_locked(ctx: Context, pipeline: Pipeline, batch_id: str) -> str | None:
    state = _state(ctx, batch_id)
    batch, job = state.batches[batch_id], state.jobs[state.batches[batch_id].job_id]
    resume_cron(ctx, job.job_id, state=state)  # a sibling's lost entry comes back with any run of its job
    said: list[str] = []
    if not batch.settled:
        if not files_complete(batch) and not _poll_and_store(ctx, job, batch):
            sent = send_pending_parts(ctx, job.job_id) if pacing.waiting(job) else []
            return f"submitted {', '.join(sent)}" if sent else None  # parts that found room in the queue
        state = _state(ctx, batch_id)
        said.append(_settle(ctx, pipeline, state, batch_id))
    said.extend(_after_settle(ctx, pipeline, batch_id))
    return "\n".join(said) or None


def _after_settle(ctx: Context, pipeline: Pipeline, batch_id: str) -> list[str]:
    """Requeue, send what is still unsent, finalize a complete job, then remove the settled batch's entry."""
    said: list[str] = []
    state = _state(ctx, batch_id)
    job = state.job_of(batch_id)
    assert job is not None
    retry = needs_requeue(job, state.batches[batch_id])
    if retry:
        said.append(_requeue(ctx, job, state.batches[batch_id], retry))
        job = _state(ctx, batch_id).jobs[job.job_id]
    elif to_resend(state.batches[batch_id]):
        said.append(_resend(ctx, job, state.batches[batch_id]))
        job = _state(ctx, batch_id).jobs[job.job_id]
    if any(p.batch_id is None for p in job.parts.values()):
        sent = send_pending_parts(ctx, job.job_id)
        if sent:
            said.append(f"submitted {', '.join(sent)}")
    state = _state(ctx, batch_id)
    job = state.jobs[job.job_id]
    if not job.finalized and job_complete(state, job) and job.applied == 0:
        said.append(nothing_got_through(job))
    elif not job.finalized and job_complete(state, job):
        failpoints.hit("before-finalize")
        event = finalize(pipeline, job)
        failpoints.hit("after-finalize-write")
        ctx.record(event)
        job = _state(ctx, batch_id).jobs[job.job_id]
        said.append(pipeline.summary(job))
    resume_cron(ctx, job.job_id, state=state)  # a requeued batch whose entry a crash or a write left out
    if keeps_entry(state, job, batch_id):
        return said  # parts wait for room and no other batch of the job runs: this entry's runs send them
    failpoints.hit("before-cron-remove")
    table = job_cron_table(job)
    removed = table is not None and table.remove(batch_id, ctx.ws.root)
    failpoints.hit("after-cron-remove")
    if removed or state.batches[batch_id].cron:
        ctx.record(CronRemoved(batch_id))
    return said


def nothing_got_through(job: JobState) -> str:
    """A job whose batches all ended without one result keeps every file as it was and stays open for its command."""
    return (
        f"job {job.job_id}: nothing got through, nothing was finalized (cache and results as they were); "
        f"run the same submit command to send what is missing"
    )


def _stray_entry(ctx: Context, job: JobState, batch_id: str) -> bool:
    """An entry the ledger does not know of (a crash between installing it and recording that): a local check."""
    table = job_cron_table(job)
    return table is not None and table.command(batch_id, ctx.ws.root) is not None


def _poll_and_store(ctx: Context, job: JobState, batch: BatchState) -> bool:
    """Check the batch; once terminal, download its files (each only once). True when they are all stored."""
    provider = connect(ctx, job.params.get("base_url"))
    with ctx.refusal_recorded(job.job_id, batch.batch_id):
        remote = provider.retrieve(batch.batch_id)
    counts, errors = dict(remote.counts), tuple(remote.errors)
    news = (remote.status, counts, errors) != (batch.status, dict(batch.counts), tuple(batch.errors))
    if news or job.refused is not None:  # a poll that got through also lifts an earlier refusal
        ctx.record(BatchPolled(batch.batch_id, remote.status, counts, errors, remote.phase))
    if remote.phase not in ENDED:
        return False
    stored = dict(batch.files or {})
    for kind, file_id in (("output", remote.output_file_id), ("error", remote.error_file_id)):
        if kind in stored:
            continue
        dest = ctx.ws.batch_dir(batch.batch_id) / f"{kind}.jsonl"
        with ctx.refusal_recorded(job.job_id, batch.batch_id):
            meta = provider.download(file_id, dest) if file_id else {"file_id": None}
        failpoints.hit(f"after-download-{kind}")
        ctx.record(FilesStored(batch.batch_id, {kind: meta}))
    return True


def _read_results(ctx: Context, job: JobState, batch: BatchState) -> tuple[dict[str, Outcome], int]:
    """Outcomes by custom_id from the stored files (the first line of an id wins), and the count of lines skipped.

    Every file is checked against the size and sha256 recorded when it was downloaded before any of it is read.
    """
    stored = [(kind, meta) for kind in RESULT_KINDS if (meta := (batch.files or {}).get(kind, {})).get("file_id")]
    for kind, meta in stored:
        check_stored(ctx.ws.batch_dir(batch.batch_id) / f"{kind}.jsonl", meta, batch.batch_id)
    outcomes: dict[str, Outcome] = {}
    skipped = 0
    read_line = connect(ctx, job.params.get("base_url")).read_line  # the lines are in the service's format
    with progress(batch.n_items, f"reading {batch.batch_id}") as advance:
        for kind, _ in stored:
            skipped += _read_file(ctx.ws.batch_dir(batch.batch_id) / f"{kind}.jsonl", outcomes, read_line, advance)
    return outcomes, skipped


def check_stored(path: Path, meta: Mapping[str, Any], batch_id: str) -> None:
    """Refuse a stored result file that is no longer what was downloaded (edited, truncated, replaced)."""
    if "sha256" not in meta:
        return
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise DamagedFile(f"{path}: missing; its FilesStored record of batch {batch_id} says it was stored") from None
    if (size, digest.hexdigest()) != (meta.get("bytes"), meta["sha256"]):
        raise DamagedFile(
            f"{path}: no longer matches its FilesStored record of batch {batch_id} (recorded {meta.get('bytes')} "
            f"bytes, sha256 {str(meta['sha256'])[:12]}...; found {size} bytes, sha256 {digest.hexdigest()[:12]}...);"
            " nothing was applied: restore the file"
        )


def _read_file(path: Path, outcomes: dict[str, Outcome], read_line: LineReader, advance: Callable[[], None]) -> int:
    """Add the file's outcomes to ``outcomes``; return how many lines had no custom_id or a repeated one."""
    skipped = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if raw.isspace():
                    continue
                line = None
            if type(line) is not dict:
                raise DamagedFile(f"{path}: line {number}: not a JSON object; replay after fixing it")
            cid = line.get("custom_id")
            if type(cid) is not str or cid in outcomes:
                skipped += 1
                continue
            outcomes[cid] = read_line(line)
            advance()
    return skipped


def _match_submitted(ctx: Context, job: JobState, batch: BatchState, outcomes: dict[str, Outcome]) -> int:
    """Make ``outcomes`` cover exactly the submitted items; return how many result lines matched none.

    When the results name the submitted set (its fingerprint, recorded at submit, says so) there is nothing to
    do; otherwise the input is read to drop foreign lines and to give each missing item its reason.
    """
    part = job.parts[batch.idem_key]
    if part.ids_digest is not None and len(outcomes) == part.n_items and ids_digest(outcomes) == part.ids_digest:
        return 0
    input_path = ctx.ws.batch_dir(batch.batch_id) / "input.jsonl"
    if not input_path.exists():
        raise DamagedFile(f"{input_path}: the batch's input is missing; its results cannot be matched to requests")
    submitted = {cid for cid, _ in input_lines(input_path)}
    foreign = outcomes.keys() - submitted
    for cid in foreign:
        del outcomes[cid]
    reason = _failure_reason(batch)
    for cid in sorted(submitted - outcomes.keys()):
        if batch.phase == Phase.FAILED:
            outcomes[cid] = Outcome(cid, error=f"batch failed: {reason or 'no reason given'}", retryable=False)
        elif batch.phase == Phase.CANCELLED:  # someone cancelled on purpose: what did not run is not sent again
            outcomes[cid] = Outcome(cid, error="batch_cancelled", retryable=False)
        else:
            outcomes[cid] = Outcome(cid, error="missing from both result files", retryable=True)
    return len(foreign)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading a batch keeps a hundred thousand small objects alive, none in a reference cycle: the cyclic
    collector's passes over them cost a fifth of the apply and free nothing. Reference counting still frees."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _failure_reason(batch: BatchState) -> str:
    return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in batch.errors)


def _settle(ctx: Context, pipeline: Pipeline, state: State, batch_id: str, kind: str = "apply") -> str:
    """Apply the stored files; every submitted item ends applied or failed with a reason."""
    batch = state.batches[batch_id]
    job = state.jobs[batch.job_id]
    with _collector_paused():
        outcomes, skipped = _read_results(ctx, job, batch)
        unroutable = skipped + _match_submitted(ctx, job, batch, outcomes)
        result, events = apply_outcomes(
            pipeline, job, list(outcomes.values()), batch_id=batch_id, attempt=batch.attempt, kind=kind
        )
        del outcomes  # freed by reference counting now, not walked by the collector once it is back
    reason = _failure_reason(batch)
    failpoints.hit("after-apply-write")
    if kind == "apply":
        settled = BatchSettled(batch_id, batch.status, len(result.applied), len(result.failures), unroutable, reason)
        ctx.record(*events, settled)
    else:
        ctx.record(*events)
    line = f"batch {batch_id} {batch.status}: {len(result.applied)} applied, {len(result.failures)} failed"
    if unroutable:
        line += f", {unroutable} result lines matched no submitted request"
    if batch.phase == Phase.FAILED:
        codes = {e.get("code") for e in batch.errors}
        if pacing.TOKEN_LIMIT in codes:
            line += f" ({reason}); nothing ran and nothing is billed: sent again by itself once another batch ends"
        else:
            line += f" ({reason}); nothing ran and nothing is billed: run the same command after fixing the cause"
    return line


def _requeue(ctx: Context, job: JobState, batch: BatchState, ids: Sequence[str]) -> str:
    wanted = set(ids)
    _plan_again(ctx, job, batch, wanted, attempt=batch.attempt + 1)
    return f"requeued {len(wanted)} retryable failures of {batch.batch_id} (attempt {batch.attempt + 1})"


def _resend(ctx: Context, job: JobState, batch: BatchState) -> str:
    """Plan every item of a batch refused for tokens again, at the same attempt: nothing of it ran."""
    _plan_again(ctx, job, batch, None, attempt=batch.attempt)
    model = job.parts[batch.idem_key].model
    return f"{batch.batch_id}: its {batch.n_items} requests wait for room in the {model} queue (no attempt counted)"


def _plan_again(ctx: Context, job: JobState, batch: BatchState, wanted: set[str] | None, *, attempt: int) -> None:
    """Plan the batch's stored request lines (those ``wanted``, or all) as new parts of its job, split as any."""
    model = job.parts[batch.idem_key].model
    path = ctx.ws.batch_dir(batch.batch_id) / "input.jsonl"
    lines = ((c, raw, model) for c, raw in input_lines(path) if wanted is None or c in wanted)
    limits = Limits.of(connect(ctx, job.params.get("base_url")), job.params.get("limits"))
    first = len(job.parts)
    parts = plan_parts(
        ctx, job.job_id, job.key, lines, limits, first_index=first, attempt=attempt, source_batch=batch.batch_id
    )
    ctx.record(*parts)


def _replay(ctx: Context, pipeline: Pipeline, batch_id: str) -> str:
    state = _state(ctx, batch_id)
    batch = state.batches[batch_id]
    if not files_complete(batch):
        raise BadInput(f"batch {batch_id} has no stored result files yet; nothing to replay")
    if not batch.settled:
        return _settle(ctx, pipeline, state, batch_id)
    return _settle(ctx, pipeline, state, batch_id, kind="replay").replace(" applied", " re-applied", 1)
