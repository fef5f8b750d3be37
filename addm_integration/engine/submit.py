"""24hrbatch submit: stage the work as batch-sized parts, send each part once, install its cron entry.

Each step is recorded right after it happens, and the intent (the staged part with its idempotency key) before
anything is sent. A run that stopped anywhere is continued by running the same command again: parts already
sent are not sent twice, and a part whose batch may have been created unseen is looked up by its key first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from addm_integration import failpoints
from addm_integration.engine import pacing
from addm_integration.engine.decisions import job_complete
from addm_integration.engine.pipeline import Pipeline, connect, create_job, job_key
from addm_integration.engine.plan import Limits, batch_lines, plan_parts
from addm_integration.engine.send import send_pending_parts
from addm_integration.schedule.entries import CronSpec, check_cron_prerequisites, resume_cron
from addm_integration.store.context import Context
from ledger.reducer import JobState

MODE = "24hrbatch"


def submit(ctx: Context, pipeline: Pipeline, params: Mapping[str, Any], limits: Limits) -> tuple[str | None, str]:
    """Create the job and send its parts, or continue the open job of the same identity; never pay twice.

    Returns the job id (None when there was nothing to send) and the line to print.
    """
    key = job_key(ctx, pipeline)
    provider, spec = connect(ctx), CronSpec.from_params(params.get("cron"))
    pipeline.check()  # bad input is refused before the job lock or any other file exists
    provider.check()
    check_cron_prerequisites(ctx, spec)
    with ctx.job_lock(key, timeout=60):
        job = ctx.open_job(key, MODE)
        if job is not None:
            return job.job_id, _continue(ctx, pipeline, job, limits)
        job_id, created = create_job(ctx, pipeline, key, MODE, dict(params))
        lines = batch_lines(pipeline.work(job_id), provider.request_line)
        parts = plan_parts(ctx, job_id, key, lines, limits, first_index=0, attempt=1)
        if not parts:
            return None, pipeline.nothing_to_do()
        n = sum(p.n_items for p in parts)
        failpoints.hit("after-stage")
        ctx.record(replace(created, n_items=n), *parts)
        batches = send_pending_parts(ctx, job_id)
        how = "cron polls every 5 minutes" if spec else f"poll with --batch-id {batches[0]}" if batches else ""
        wait = pacing.waiting(ctx.job_state(job_id).jobs[job_id])
        room = f"; {wait} more part(s) wait for room under --max-enqueued-tokens, sent as batches end" if wait else ""
        return job_id, f"submitted {n} requests as {', '.join(batches)} (job {job_id}); {how}{room}"


def _continue(ctx: Context, pipeline: Pipeline, job: JobState, limits: Limits) -> str:
    """The same submit again: send what is unsent, and once every batch has ended, ask again for what is missing.

    A job whose batches all ended without a result (failed validation, every item failed) was left open for this.
    """
    asked = 0
    if job_complete(ctx.job_state(job.job_id), job):
        lines = batch_lines(pipeline.work(job.job_id), connect(ctx, job.params.get("base_url")).request_line)
        parts = plan_parts(ctx, job.job_id, job.key, lines, limits, first_index=len(job.parts), attempt=1)
        ctx.record(*parts)
        asked = sum(p.n_items for p in parts)
    sent = send_pending_parts(ctx, job.job_id)
    reinstalled = resume_cron(ctx, job.job_id, also_removed_by_user=True)
    state = ctx.job_state(job.job_id)
    running = [b.batch_id for b in state.batches_of(job.job_id) if not b.settled]
    if asked:
        return f"job {job.job_id}: submitted the {asked} requests it still lacked as {', '.join(sent)}"
    note = f"; sent now: {', '.join(sent)}" if sent else ""
    note += f"; cron entry installed again: {', '.join(reinstalled)}" if reinstalled else ""
    return (
        f"job {job.job_id} was already submitted ({len(running)} batch(es) running: "
        f"{', '.join(running) or 'none'}){note}; nothing was sent twice"
    )
