"""``addm-ledger abandon JOB_ID [--cancel]``: give a job up cleanly, so that its command can start afresh.

A job can be left with no way forward by causes outside the tool (a service gone for good, a batch nobody wants to
wait for). Abandoning it removes its cron entries, cancels its running batches when asked, and records the
decision; what it applied stays where it is. The same submit command then starts a new job, which asks only for
what is still missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from addm_integration.engine.pipeline import connect
from addm_integration.errors import BadInput, Transient
from addm_integration.provider.base import STOPPED
from addm_integration.schedule.entries import job_cron_table
from addm_integration.store.context import Context
from ledger.events import BatchPolled, CronRemoved, JobAbandoned
from ledger.reducer import JobState


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Give a job up: remove its cron entries, cancel its batches still running on the server with --cancel, "
        "keep what it applied. The same submit command then starts a new job that asks only for what is missing."
    )
    p.add_argument("job_id", metavar="JOB_ID", help="the job to give up (addm-ledger status lists them)")
    p.add_argument(
        "--cancel",
        action="store_true",
        help="also cancel its running batches (without it they run on and are billed, their results unused)",
    )


def run(args: Any, ctx: Context) -> int:
    job = ctx.job_state(args.job_id).jobs.get(args.job_id)
    if job is None:
        raise BadInput(f"unknown job id {args.job_id!r}: no such job in {ctx.ledger.path}")
    if job.finalized:
        raise BadInput(f"job {job.job_id} is finalized: there is nothing to give up")
    if job.abandoned and not args.cancel:
        print(f"job {job.job_id} was already abandoned")
        return 0
    lock = ctx.job_lock(job.key, timeout=0)
    if not ctx.try_acquire(lock):
        raise Transient(f"a run is working on job {job.job_id} now; abandon it once that run ends")
    try:
        for line in _abandon(ctx, ctx.job_state(job.job_id).jobs[job.job_id], cancel=args.cancel):
            print(line)
    finally:
        lock.release()
    return 0


def _abandon(ctx: Context, job: JobState, *, cancel: bool) -> list[str]:
    """Cancel (when asked), then remove the entries, then record: a run stopped halfway is finished by the next."""
    state = ctx.job_state(job.job_id)
    running = [b for b in state.batches_of(job.job_id) if b.phase not in STOPPED]
    cancelled: list[str] = []
    if cancel and running:
        provider = connect(ctx, job.params.get("base_url"))
        for batch in running:
            remote = provider.retrieve(batch.batch_id)
            if remote.phase not in STOPPED:  # one that ended meanwhile cannot be cancelled (409)
                remote = provider.cancel(batch.batch_id)
                cancelled.append(batch.batch_id)
            counts, errors = dict(batch.counts), tuple(batch.errors)
            ctx.record(BatchPolled(batch.batch_id, remote.status, counts, errors, remote.phase))
    table = job_cron_table(job)
    removed = 0
    for batch in state.batches_of(job.job_id):
        gone = table is not None and table.remove(batch.batch_id, ctx.ws.root)
        if gone or batch.cron:
            ctx.record(CronRemoved(batch.batch_id))
            removed += 1
    for part in job.parts.values():
        if part.batch_id is None:  # staged and never sent: nobody will send it now
            Path(part.input_path).unlink(missing_ok=True)
    said = []
    if not job.abandoned:
        ctx.record(JobAbandoned(job.job_id, tuple(cancelled)))
        said.append(f"job {job.job_id} abandoned; what it applied is kept")
    said.append(f"{removed} cron entr{'y' if removed == 1 else 'ies'} removed, {len(cancelled)} batch(es) cancelled")
    left = [b.batch_id for b in running if b.batch_id not in cancelled]
    if left and not cancel:
        print(
            f"warning: {len(left)} batch(es) still run on the server and are billed: {', '.join(left)}; "
            f"abandon {job.job_id} --cancel cancels them",
            file=sys.stderr,
        )
    if not job.abandoned:
        said.append("the same submit command now starts a new job for what is missing")
    return said
