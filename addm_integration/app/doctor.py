"""``addm-ledger doctor``: what is wrong in a workspace, each finding with the exact command that fixes it.

It compares three witnesses that should agree: the ledger, the cron tables, and (when a key is at hand) the
batches on the server. What belongs to another workspace that still exists (an entry whose ``--root`` names it,
a batch whose metadata carries its id) is never reported, changed or proposed for cancelling; entries of
workspaces that are gone are, from any workspace. ``--fix`` applies the fixes that cannot lose anything:
removing entries of finished, unknown or gone workspaces' batches, installing the entry of a running batch,
rewriting the entries of a moved workspace, setting a torn ledger tail aside, deleting leftovers of interrupted
downloads and the snapshots of jobs never recorded. Orphan batches on the server are reported, never cancelled
without being asked.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from addm_integration.engine.pipeline import connect
from addm_integration.engine.plan import unsent_inputs
from addm_integration.errors import AddmError, BadInput
from addm_integration.provider.base import ENDED, IDEM_METADATA_KEY, JOB_METADATA_KEY, WORKSPACE_METADATA_KEY
from addm_integration.schedule.cron import cron_supported
from addm_integration.schedule.entries import CronSpec, cron_tables, install_cron
from addm_integration.store import credentials
from addm_integration.store.context import Context
from addm_integration.store.ownership import workspace_id
from ledger.events import CronRemoved
from ledger.help import fill
from ledger.reducer import State

FIXABLE = (
    "stale-cron-entry",
    "orphan-cron-entry",
    "moved-cron-entry",
    "missing-cron-entry",
    "torn-ledger-tail",
    "leftover-file",
)
PROBLEMS = 3  # the exit code of a doctor that found something (1 stays "ledger corrupt")


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    fix: str

    @property
    def safe(self) -> bool:
        return self.kind in FIXABLE


def ledger_command(ctx: Context, *args: str) -> str:
    """This very tool by the absolute path of its Python, so the command works whatever PATH holds."""
    return shlex.join([sys.executable, "-m", "addm_integration.ledger", "--root", str(ctx.ws.root), *args])


def _tab_flags(tabfile: str | None) -> list[str]:
    return ["--crontab-file", tabfile] if tabfile else []


def examine(ctx: Context, tabfile: str | None, *, remote: bool = True) -> Iterator[Finding]:
    fix_all = ledger_command(ctx, "doctor", "--fix", *_tab_flags(tabfile))
    _, torn = ctx.ledger.verify()
    if torn:
        yield Finding("torn-ledger-tail", str(ctx.ledger.path), torn, fix_all)
    state = ctx.state()
    if cron_supported():
        yield from _cron_findings(ctx, state, tabfile, fix_all)
    yield from _leftovers(ctx, state)
    if remote:
        yield from _orphans(ctx, state)


def _cron_findings(ctx: Context, state: State, tabfile: str | None, fix_all: str) -> Iterator[Finding]:
    """Entries that poll for nothing, point at where the workspace was, or are missing; others' are not ours."""
    root = ctx.ws.root
    entries = {table_file: table.entries() for table_file, table in cron_tables(state, tabfile).items()}  # read once
    for table_file, present in entries.items():
        for entry in present:
            owner = entry.owner(root)
            if owner == "other":
                continue
            remove = ledger_command(ctx, "cron", "--remove", entry.batch_id, *_tab_flags(table_file))
            batch = state.batches.get(entry.batch_id)
            job = state.jobs.get(batch.job_id) if batch else None
            if job is None and owner == "gone":
                where = f"its workspace {entry.root} no longer exists" if entry.root else "it names no workspace"
                yield Finding("orphan-cron-entry", entry.batch_id, f"cron entry polls for nothing: {where}", remove)
            elif job is None:
                why = "its batch is unknown to this workspace's ledger"
                yield Finding("stale-cron-entry", entry.batch_id, f"cron entry polls for nothing: {why}", remove)
            elif job.abandoned or (batch is not None and batch.settled and job.finalized):
                why = f"its job {job.job_id} is {'abandoned' if job.abandoned else 'finished'}"
                yield Finding("stale-cron-entry", entry.batch_id, f"cron entry polls for nothing: {why}", remove)
            elif owner == "gone" and entry.root is not None:
                why = f"it runs in {entry.root}, where this workspace was, and fails before the tool starts"
                detail = f"cron entry of job {job.job_id} points at the old place: {why}"
                yield Finding("moved-cron-entry", entry.batch_id, detail, fix_all)

    for batch in state.batches.values():
        job = state.jobs[batch.job_id]
        spec = CronSpec.from_params(job.params.get("cron"))
        if batch.settled or spec is None or batch.cron_by_user or job.abandoned:
            continue
        if any(e.batch_id == batch.batch_id and e.owner(root) != "other" for e in entries[spec.tabfile]):
            continue
        yield Finding(
            "missing-cron-entry",
            batch.batch_id,
            f"batch of running job {job.job_id} has no cron entry: nothing will fetch it",
            fix_all,
        )


def _leftovers(ctx: Context, state: State) -> Iterator[Finding]:
    """Files a crash left behind that nothing will use."""
    for leftover in sorted(ctx.ws.root.glob("data/batches/*/*.part")):
        fix = f"rm {shlex.quote(str(leftover))}"
        yield Finding("leftover-file", str(leftover), "an interrupted download (it is downloaded again)", fix)
    unsent = unsent_inputs(lambda j: state.jobs[j], state.jobs)
    for staged in sorted(ctx.ws.staging_dir.glob("**/*.jsonl")):
        if str(staged) not in unsent:
            why = "staged input of an interrupted submit (the same command stages it again)"
            yield Finding("leftover-file", str(staged), why, f"rm {shlex.quote(str(staged))}")
    for job_id, kept in ctx.ws.run_files():
        if job_id not in state.jobs:
            why = "kept for a job the ledger never recorded (a run stopped before it)"
            yield Finding("leftover-file", str(kept), why, f"rm {shlex.quote(str(kept))}")


def _orphans(ctx: Context, state: State) -> Iterator[Finding]:
    """Batches of this workspace on the server that no ledger record names.

    A batch is this workspace's when its metadata carries this workspace's id, or (sent before batches carried
    one) when it names a job of this ledger; another workspace's batch is none of this doctor's business.
    """
    urls = {job.params.get("base_url") for job in state.jobs.values() if job.params.get("base_url")}
    known = set(state.batches)
    ours = workspace_id(ctx.ws)
    for url in sorted(urls):
        creds = credentials.resolve(ctx.ws.root, base_url=url)
        if not creds.api_key:
            return
        try:
            remote = list(connect(ctx, url).list())
        except AddmError as exc:
            yield Finding("server-unreachable", url, str(exc), "run doctor again later")
            continue
        for batch in remote:
            metadata = batch.metadata
            idem = metadata.get(IDEM_METADATA_KEY)
            if not idem or batch.id in known or batch.phase in ENDED:
                continue
            job_id = metadata.get(JOB_METADATA_KEY)
            owner = metadata.get(WORKSPACE_METADATA_KEY)
            if not (owner == ours if owner else job_id in state.jobs):
                continue
            if job_id in state.jobs and state.jobs[job_id].params.get("submit"):
                fix = shlex.join(state.jobs[job_id].params["submit"])  # the same submit adopts the batch
            else:
                fix = ledger_command(ctx, "doctor", "--cancel", batch.id)
            yield Finding("orphan-batch", batch.id, f"{batch.status} on the server, unknown to the ledger", fix)


def repair(ctx: Context, finding: Finding, tabfile: str | None) -> None:
    state = ctx.state()
    if finding.kind == "torn-ledger-tail":
        ctx.ledger.repair()
    elif finding.kind == "leftover-file":
        Path(finding.subject).unlink(missing_ok=True)
    elif finding.kind in ("stale-cron-entry", "orphan-cron-entry"):
        for table in cron_tables(state, tabfile).values():
            table.remove(finding.subject, ctx.ws.root)
        if state.batches.get(finding.subject) is not None and state.batches[finding.subject].cron:
            ctx.record(CronRemoved(finding.subject))
    elif finding.kind in ("missing-cron-entry", "moved-cron-entry"):
        batch = state.batches[finding.subject]
        ctx.record(
            *install_cron(ctx, CronSpec.from_params(state.jobs[batch.job_id].params.get("cron")), batch.batch_id)
        )


def cancel(ctx: Context, batch_id: str) -> str:
    """Cancel an orphan batch of this workspace; one that carries another workspace's id is refused."""
    state = ctx.state()
    urls = sorted({job.params.get("base_url") for job in state.jobs.values() if job.params.get("base_url")}) or [None]
    provider = connect(ctx, urls[0])
    owner = provider.retrieve(batch_id).metadata.get(WORKSPACE_METADATA_KEY)
    if owner and owner != workspace_id(ctx.ws):
        raise BadInput(f"batch {batch_id} belongs to another workspace ({owner}); cancel it from there")
    batch = provider.cancel(batch_id)
    return f"{batch_id}: {batch.status}"


def run(args: Any, ctx: Context) -> int:
    if args.cancel:
        print(cancel(ctx, args.cancel))
        return 0
    findings = list(examine(ctx, args.crontab_file, remote=not args.offline))
    if args.fix:
        for finding in findings:
            if finding.safe:
                repair(ctx, finding, args.crontab_file)
        fixed = [f for f in findings if f.safe]
        findings = [f for f in findings if not f.safe]
        for f in fixed:
            print(f"fixed {f.kind}: {f.subject}")
    if args.json:
        sys.stdout.write(orjson.dumps([{**asdict(f), "safe": f.safe} for f in findings]).decode() + "\n")
    elif not findings:
        print("no problems found")
    for f in findings if not args.json else []:
        # The finding wrapped at 80 columns; the fix on its own line, whole, so that it can be pasted.
        said = fill(f"{f.kind}: {f.subject}: {f.detail}", subsequent_indent="  ")
        print(f"{said}\n  fix: {f.fix}")
    return PROBLEMS if findings else 0
