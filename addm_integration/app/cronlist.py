"""``addm-ledger cron``: this workspace's cron entries as the tables hold them, and those of workspaces that are gone.

What a user runs before deleting a workspace (``--remove-all``), or to stop one batch's polling (``--remove``):
the removal is recorded, so no later run of the job puts the entry back; the submit command does, and the batch
can still be fetched by hand with ``--batch-id``. Entries of other workspaces that exist are not shown or touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from addm_integration.app.doctor import ledger_command
from addm_integration.errors import BadInput
from addm_integration.schedule.cron import CronTable, Entry, cron_supported
from addm_integration.schedule.entries import cron_tables
from addm_integration.store.context import Context
from ledger.events import CronRemoved
from ledger.help import fill
from ledger.reducer import State


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "This workspace's cron entries (batch, job, what the ledger knows of the batch) and entries of "
        "workspaces that no longer exist. --remove/--remove-all take this workspace's entries out, as you "
        "would before deleting it; the batch can still be fetched with --batch-id, and running its submit "
        "command again installs its entry again."
    )
    p.add_argument("--crontab-file", help="look in this tab file (env ADDM_CRONTAB; default: your crontab)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--remove", metavar="BATCH_ID", help="remove the entry of this batch")
    which.add_argument("--remove-all", action="store_true", help="remove every entry of this workspace")
    p.add_argument("--json", action="store_true", help="one JSON object per entry")


@dataclass(frozen=True)
class Row:
    table: str | None  # None: the user's crontab
    entry: Entry
    owner: str  # ours, moved (ours, at the old place) or gone
    job_id: str | None
    known: str  # what the ledger knows of the batch

    def to_json(self) -> dict[str, Any]:
        root = self.entry.root
        return {
            "batch_id": self.entry.batch_id,
            "table": self.table,
            "owner": self.owner,
            "root": None if root is None else str(root),
            "job_id": self.job_id,
            "ledger": self.known,
            "line": self.entry.line,
        }


def _known(state: State, batch_id: str) -> tuple[str | None, str]:
    batch = state.batches.get(batch_id)
    if batch is None:
        return None, "unknown to this workspace's ledger"
    job = state.jobs[batch.job_id]
    if job.abandoned:
        return job.job_id, "job abandoned: polls for nothing"
    if not batch.settled:
        counts = batch.counts
        done = f", {counts.get('completed', 0)}/{counts['total']} done" if counts.get("total") else ""
        return job.job_id, f"running ({batch.status}{done})"
    if job.finalized:
        return job.job_id, f"{batch.status}, applied; job finished: polls for nothing"
    return job.job_id, f"{batch.status}, applied; job still running"


def rows(ctx: Context, state: State, tabfile: str | None) -> Iterator[Row]:
    """Every entry of this workspace (also at a place it was moved from) and of workspaces that are gone."""
    if not cron_supported():
        return
    for table_file, table in cron_tables(state, tabfile).items():
        for entry in table.entries():
            owner = entry.owner(ctx.ws.root)
            if owner == "other":
                continue
            if owner == "gone" and entry.batch_id in state.batches:
                owner = "moved" if entry.root is not None else "ours"
            job_id, known = _known(state, entry.batch_id)
            yield Row(table_file, entry, owner, job_id, known)


def _wrap(text: str, indent: str) -> str:
    """At most 80 columns where words allow; an id or a path is never cut."""
    return fill(text, indent, indent + "  ")


def _print(ctx: Context, found: list[Row]) -> None:
    mine = [r for r in found if r.owner != "gone"]
    gone = [r for r in found if r.owner == "gone"]
    print(_wrap(f"cron entries of {ctx.ws.root}: {len(mine) or 'none'}", ""))
    for i, r in enumerate(mine):
        if i == 0 or r.table != mine[i - 1].table:
            print(_wrap(f"in {'your crontab' if r.table is None else r.table}:", " "))
        print(_wrap(r.entry.batch_id, "  "))
        print(_wrap(f"job {r.job_id or '?'}: {r.known}", "    "))
        if r.owner == "moved":
            moved = f"runs in {r.entry.root}, where this workspace was; addm-ledger doctor --fix rewrites it"
            print(_wrap(moved, "    "))
    if gone:
        print("entries of workspaces that no longer exist:")
    for r in gone:
        print(_wrap(r.entry.batch_id, "  "))
        print(_wrap(f"was in {r.entry.root or '(no --root)'}; remove it with:", "    "))
        print("    " + ledger_command(ctx, "cron", "--remove", r.entry.batch_id, *_tab_flags(r.table)))  # one line


def _tab_flags(tabfile: str | None) -> list[str]:
    return ["--crontab-file", tabfile] if tabfile else []


def remove(ctx: Context, found: list[Row], batch_id: str | None) -> list[str]:
    """Take out this workspace's entries (all, or those of one batch) and record it; gone workspaces' too by id."""
    if batch_id is None:
        chosen = [r for r in found if r.owner != "gone"]
    else:
        chosen = [r for r in found if r.entry.batch_id == batch_id]
        if not chosen:
            raise BadInput(f"no cron entry of batch {batch_id} belongs to {ctx.ws.root} (see addm-ledger cron)")
    state = ctx.state()
    removed: list[str] = []
    for r in chosen:
        if CronTable(Path(r.table) if r.table else None).remove(r.entry.batch_id, ctx.ws.root):
            removed.append(r.entry.batch_id)
    ctx.record(*(CronRemoved(b, by_user=True) for b in dict.fromkeys(removed) if b in state.batches))
    return removed


def run(args: Any, ctx: Context) -> int:
    state = ctx.state()
    found = list(rows(ctx, state, args.crontab_file))
    if args.remove or args.remove_all:
        removed = remove(ctx, found, args.remove)
        for batch_id in removed:
            print(_wrap(f"removed the cron entry of {batch_id}; fetch it by hand with --batch-id {batch_id}", ""))
        if not removed:
            print(f"no cron entry of {ctx.ws.root} to remove")
        return 0
    if args.json:
        sys.stdout.write(orjson.dumps([r.to_json() for r in found], option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    _print(ctx, found)
    return 0
