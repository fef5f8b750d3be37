"""Sending: upload each planned part and create its batch, once, and give the batch its cron entry.

The intent (the staged part with its idempotency key) is recorded before anything is sent, each step right after
it happens: a part whose batch may have been created unseen by a run that stopped is looked up by its key first.
"""

from __future__ import annotations

from pathlib import Path

from addm_integration import failpoints
from addm_integration.engine import pacing
from addm_integration.engine.pipeline import connect
from addm_integration.provider.base import IDEM_METADATA_KEY, JOB_METADATA_KEY, WORKSPACE_METADATA_KEY, Provider
from addm_integration.schedule.entries import CronSpec, install_cron
from addm_integration.store.context import Context
from addm_integration.store.ownership import ensure_workspace_id
from addm_integration.store.workspace import place
from ledger.events import BatchCreated, FileUploaded, SendStarted, ServiceReached
from ledger.reducer import JobState, PartState


def send_part(ctx: Context, provider: Provider, job: JobState, part: PartState) -> str:
    """Upload and create the batch of one staged part (or adopt the one a crashed run created); return its id."""
    file_id = part.file_id
    existing = None
    not_before = job.created_at.timestamp() - 300
    if file_id is None:
        filename = f"addm-{part.idem_key}.jsonl"
        file_id = provider.find_file(filename, part.n_bytes, not_before) if part.tried else None
        if file_id is None:
            ctx.record(SendStarted(job.job_id, part.idem_key))
            failpoints.hit("before-upload")
            file_id = provider.upload(Path(part.input_path), filename)
            failpoints.hit("after-upload")
        # The job follows the URL its first upload reached, not the one it was created under: a first try without
        # network must not pin the job to a URL the user then fixes.
        pin = [] if job.params.get("base_url") else [ServiceReached(job.job_id, provider.url)]
        ctx.record(FileUploaded(job.job_id, part.idem_key, file_id), *pin)
    else:  # a previous run uploaded and may have created the batch before it stopped
        existing = provider.find_batch(part.idem_key, not_before)
    if existing is None:
        metadata = {
            JOB_METADATA_KEY: job.job_id,
            IDEM_METADATA_KEY: part.idem_key,
            WORKSPACE_METADATA_KEY: ensure_workspace_id(ctx.ws),
        }
        batch = provider.create(file_id, metadata)
        failpoints.hit("after-create")
    else:
        batch = existing
    keep_input(ctx, part, batch.id)
    ctx.record(BatchCreated(job.job_id, part.idem_key, batch.id, existing is not None, batch.status, batch.phase))
    Path(part.input_path).unlink(missing_ok=True)
    return batch.id


def keep_input(ctx: Context, part: PartState, batch_id: str) -> None:
    """Keep the batch's input beside its results (replay and requeue read it there), before the batch is recorded.

    A hard link, not a move: the staged file stays valid for a run that crashed before recording the batch. Where
    the two folders are on different file systems (or links are refused), an atomic copy.
    """
    target = ctx.ws.batch_dir(batch_id) / "input.jsonl"
    if not target.exists():
        place(Path(part.input_path), target)


def send_pending_parts(ctx: Context, job_id: str) -> list[str]:
    """Send the job's planned parts that have no batch yet and fit in the queue now; return the new batch ids.

    What does not fit waits: a later run of the job (a cron run of any of its batches) sends it.
    """
    state = ctx.job_state(job_id)
    job = state.jobs[job_id]
    if all(p.batch_id is not None for p in job.parts.values()):
        return []
    pending = pacing.admit(ctx.state(), job, job.params.get("max_enqueued_tokens"))
    if not pending:
        return []
    provider = connect(ctx, job.params.get("base_url"))
    spec = CronSpec.from_params(job.params.get("cron"))
    sent = []
    with ctx.refusal_recorded(job_id):
        for part in pending:
            batch_id = send_part(ctx, provider, ctx.job_state(job_id).jobs[job_id], part)
            failpoints.hit("before-cron")
            ctx.record(*install_cron(ctx, spec, batch_id))
            failpoints.hit("after-cron")
            sent.append(batch_id)
    return sent
