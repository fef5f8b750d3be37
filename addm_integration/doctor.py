"""``addm-ledger doctor``: what is wrong in a workspace, each finding with the exact command that fixes it.

It compares three witnesses that should agree: the ledger, the cron tables, and (when a key is at hand) the
batches on the server. ``--fix`` applies the fixes that cannot lose anything: removing entries of finished or
unknown batches, reinstalling the entry of a running batch, setting a torn ledger tail aside, deleting leftovers
of interrupted downloads and the snapshots of jobs never recorded. Orphan batches on the server are reported,
never cancelled without being asked.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from addm_integration import credentials, openai_api
from addm_integration.context import Context
from addm_integration.cron import CronTable, cron_supported
from addm_integration.errors import AddmError
from addm_integration.submit import CronSpec, install_cron
from ledger.events import CronRemoved
from ledger.reducer import State

FIXABLE = ("stale-cron-entry", "missing-cron-entry", "torn-ledger-tail", "leftover-file")


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    fix: str

    @property
    def safe(self) -> bool:
        return self.kind in FIXABLE


def _tables(state: State, tabfile: str | None) -> dict[str | None, CronTable]:
    """Every cron table a job of this workspace used, plus the one asked for (the user's crontab by default)."""
    tables: dict[str | None, CronTable] = {}
    for job in state.jobs.values():
        spec = CronSpec.from_params(job.params.get("cron"))
        if spec is not None:
            tables[spec.tabfile] = spec.table()
    if tabfile is not None or CronTable().available():
        tables.setdefault(tabfile, CronTable(Path(tabfile) if tabfile else None))
    return tables


def _doctor_command(ctx: Context, *args: str) -> str:
    """This very tool by the absolute path of its Python, so the command works whatever PATH holds."""
    return shlex.join([sys.executable, "-m", "addm_integration.ledger", "--root", str(ctx.ws.root), "doctor", *args])


def _remove_command(tabfile: str | None, batch_id: str) -> str:
    marker = f"# ADDM_BATCH_{batch_id}"
    if tabfile is None:
        return f"crontab -l | grep -vF {shlex.quote(marker)} | crontab -"
    return f"sed -i {shlex.quote(f'/{marker}$/d')} {shlex.quote(tabfile)}"


def examine(ctx: Context, tabfile: str | None, *, remote: bool = True) -> Iterator[Finding]:
    fix_all = _doctor_command(ctx, "--fix", *(["--crontab-file", tabfile] if tabfile else []))
    _, torn = ctx.ledger.verify()
    if torn:
        yield Finding("torn-ledger-tail", str(ctx.ledger.path), torn, fix_all)
    state = ctx.state()

    if cron_supported():
        entries = {table_file: table.entries() for table_file, table in _tables(state, tabfile).items()}  # read once
        for table_file, present in entries.items():
            for batch_id in present:
                batch = state.batches.get(batch_id)
                job = state.jobs.get(batch.job_id) if batch else None
                if job is None:
                    why = "its batch is unknown to this workspace's ledger"
                elif batch is not None and batch.settled and job.finalized:
                    why = f"its job {job.job_id} is finished"
                else:
                    continue
                fix = _remove_command(table_file, batch_id)
                yield Finding("stale-cron-entry", batch_id, f"cron entry polls for nothing: {why}", fix)

        for batch in state.batches.values():
            job = state.jobs[batch.job_id]
            spec = CronSpec.from_params(job.params.get("cron"))
            if batch.settled or spec is None or batch.batch_id in entries[spec.tabfile]:
                continue
            yield Finding(
                "missing-cron-entry",
                batch.batch_id,
                f"batch of running job {job.job_id} has no cron entry: nothing will fetch it",
                fix_all,
            )

    for leftover in sorted(ctx.ws.root.glob("data/batches/*/*.part")):
        fix = f"rm {shlex.quote(str(leftover))}"
        yield Finding("leftover-file", str(leftover), "an interrupted download (it is downloaded again)", fix)
    for kept in sorted(ctx.ws.ledger_dir.glob("runs/*.json")):
        if kept.name.split(".", 1)[0] not in state.jobs:
            why = "kept for a job the ledger never recorded (a run stopped before it)"
            yield Finding("leftover-file", str(kept), why, f"rm {shlex.quote(str(kept))}")

    if remote:
        yield from _orphans(ctx, state)


def _orphans(ctx: Context, state: State) -> Iterator[Finding]:
    """Batches on the server tagged with our idempotency key that no ledger record names."""
    urls = {job.params.get("base_url") for job in state.jobs.values() if job.params.get("base_url")}
    known = set(state.batches)
    for url in sorted(urls):
        creds = credentials.resolve(ctx.ws.root, base_url=url)
        if not creds.api_key:
            return
        api = openai_api.client(creds)
        try:
            with openai_api.api_call("batch list", creds):
                remote = list(api.batches.list(limit=100))
        except AddmError as exc:
            yield Finding("server-unreachable", url, str(exc), "run doctor again later")
            continue
        for batch in remote:
            idem = (batch.metadata or {}).get(openai_api.IDEM_METADATA_KEY)
            if idem and batch.id not in known and batch.status not in ("completed", "failed", "expired", "cancelled"):
                job_id = (batch.metadata or {}).get(openai_api.JOB_METADATA_KEY)
                if job_id in state.jobs and state.jobs[job_id].params.get("submit"):
                    fix = shlex.join(state.jobs[job_id].params["submit"])  # the same submit adopts the batch
                else:
                    fix = _doctor_command(ctx, "--cancel", batch.id)
                yield Finding("orphan-batch", batch.id, f"{batch.status} on the server, unknown to the ledger", fix)


def repair(ctx: Context, finding: Finding, tabfile: str | None) -> None:
    state = ctx.state()
    if finding.kind == "torn-ledger-tail":
        ctx.ledger.repair()
    elif finding.kind == "leftover-file":
        Path(finding.subject).unlink(missing_ok=True)
    elif finding.kind == "stale-cron-entry":
        for table in _tables(state, tabfile).values():
            table.remove(finding.subject)
        if state.batches.get(finding.subject) is not None and state.batches[finding.subject].cron:
            ctx.record(CronRemoved(finding.subject))
    elif finding.kind == "missing-cron-entry":
        batch = state.batches[finding.subject]
        ctx.record(
            *install_cron(ctx, CronSpec.from_params(state.jobs[batch.job_id].params.get("cron")), batch.batch_id)
        )


def cancel(ctx: Context, batch_id: str) -> str:
    state = ctx.state()
    urls = sorted({job.params.get("base_url") for job in state.jobs.values() if job.params.get("base_url")}) or [None]
    creds = credentials.resolve(ctx.ws.root, base_url=urls[0])
    batch = openai_api.cancel(openai_api.client(creds), creds, batch_id)
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
        print(f"{f.kind}: {f.subject}: {f.detail}\n  fix: {f.fix}")
    return 1 if findings and not args.fix else 0
