"""Reading the ledger: ``status``, ``show``, ``audit``, ``verify``. Generic: it knows jobs, batches and items.

An application adds what only it knows (cron entries, prices) through ``Hooks``; everything here is derived from
the records alone, so the same questions get the same answers on any copy of the log.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ledger.events import ItemsApplied, to_payload
from ledger.index import Index
from ledger.log import Ledger, LedgerCorrupt, Record, format_ts, utcnow
from ledger.reducer import JobState, State, fold, job_condition

LEDGER_SUBDIR = Path("data") / "ledger"


@dataclass
class Hooks:
    """What an application adds to the generic reading: extra status fields and extra subcommands."""

    status_fields: Callable[[State, JobState, dict[str, Any]], dict[str, Any]] = lambda state, job, row: row
    alive: Callable[[Ledger, JobState], bool] = lambda ledger, job: False  # is a run working on the job now?
    helps: Mapping[str, str] = field(default_factory=dict)  # one line per extra subcommand, for --help
    commands: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any, Ledger], int]]] = field(
        default_factory=dict
    )


class RootMissing(Exception):
    """The workspace root given does not exist: a typo must neither read as an empty workspace nor be created."""


def find_root(given: str | None) -> Path:
    """The workspace root: ``--root``, else ``ADDM_ROOT``, else the current directory; it must exist."""
    env = os.environ.get("ADDM_ROOT")
    named = f"--root {given}" if given else f"ADDM_ROOT={env}" if env else "the current directory"
    root = Path(given or env or ".").resolve()
    if not root.is_dir():
        raise RootMissing(f"{named}: no such directory (nothing was read or created)")
    return root


def _age(since: datetime, now: datetime) -> str:
    seconds = int((now - since).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def status_rows(
    state: State, now: datetime, alive: Callable[[JobState], bool] = lambda job: False
) -> list[dict[str, Any]]:
    rows = []
    for job in state.jobs.values():
        batches = [
            {
                "batch_id": b.batch_id,
                "status": b.status,
                "attempt": b.attempt,
                "items": b.n_items,
                "applied": b.applied,
                "failed": b.failed,
                "settled": b.settled,
                "cron": b.cron,
                "counts": dict(b.counts),
                "eta": format_ts(eta) if (eta := b.eta()) else None,
            }
            for b in state.batches_of(job.job_id)
        ]
        failed = len(job.failures)
        sent = sum(p.batch_id is not None for p in job.parts.values())
        parts = {"sent": sent, "waiting": len(job.parts) - sent, "done": sum(b["settled"] for b in batches)}
        params = job.params.get("pipeline", {})
        rows.append(
            {
                "job_id": job.job_id,
                "pipeline": job.pipeline,
                "mode": job.mode,
                "target": params.get("task") or params.get("policy") or ",".join(params.get("topics", ())) or None,
                "state": job_condition(state, job, alive=job.run_open and job.open and alive(job)),
                "items": job.n_items,
                "submitted": job.submitted,
                "applied": job.applied,
                "failed": failed,
                "pending": max(job.n_items - job.applied - failed, 0) if not job.finalized else 0,
                "batches": batches,
                "parts": parts,  # sent, waiting for room in the queue, done (their batch settled)
                "cron": any(b.cron for b in state.batches_of(job.job_id)),
                "created_at": format_ts(job.created_at),
                "age": _age(job.created_at, now),
                "usage": dict(job.usage),
            }
        )
    return rows


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[("" if v is None else str(v)) for v in r] for r in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*r)
        Console().print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _batch_cell(batch: Mapping[str, Any]) -> str:
    cell = f"{batch['batch_id']} {batch['status']}"
    total = batch["counts"].get("total")
    if total and not batch["settled"]:
        cell += f" {batch['counts'].get('completed', 0)}/{total}"
    if batch["eta"]:
        cell += f" eta {batch['eta'][:16].replace('T', ' ')}Z"
    return cell


def cmd_status(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    state = fold(ledger.records())
    rows = status_rows(state, utcnow(), lambda job: hooks.alive(ledger, job))
    rows = [hooks.status_fields(state, state.jobs[r["job_id"]], r) for r in rows]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no jobs in {ledger.path}")
        return 0
    columns = ["job", "pipeline", "target", "mode", "state", "batches", "applied", "failed", "pending", "cron", "age"]
    extra = [k for k in ("cost_usd", "saved_usd") if k in rows[0]]
    table = []
    for r in rows:
        batches = ", ".join(_batch_cell(b) for b in r["batches"]) or "-"
        if r["parts"]["waiting"]:
            batches += f"; parts {r['parts']['sent']} sent, {r['parts']['waiting']} waiting for room"
        line = [r["job_id"], r["pipeline"], r["target"], r["mode"], r["state"], batches]
        line += [f"{r['applied']}/{r['items']}", r["failed"], r["pending"], "yes" if r["cron"] else "no", r["age"]]
        line += [("?" if r[k] is None else f"${r[k]:.4f}") for k in extra]
        table.append(line)
    _table("jobs", columns + [k.replace("_usd", "") for k in extra], table)
    return 0


def _event_dict(record: Record) -> dict[str, Any]:
    type_name, version, data = to_payload(record.event)
    return {"seq": record.seq, "ts": format_ts(record.ts), "type": type_name, "v": version, "data": data}


def cmd_show(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    events = [_event_dict(r) for r in Index(ledger).records_of(args.id)]
    if not events:
        print(f"error: no job or batch {args.id!r} in {ledger.path}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(events)
        return 0
    for e in events:
        data = {k: v for k, v in e["data"].items() if k not in ("job_id", "batch_id") or v != args.id}
        if "custom_ids" in data:
            data["custom_ids"] = f"<{len(data['custom_ids'])} ids>"
        if "failures" in data:
            data["failures"] = f"<{len(data['failures'])} failures>"
        detail = " ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in data.items() if v not in (None, {}, [], ""))
        print(f"{e['ts']}  #{e['seq']:<6} {e['type']:<13} {detail}")
    return 0


def audit_entries(records: Iterable[Record], *, custom_id: str | None, batch_id: str | None) -> list[dict[str, Any]]:
    """Every application of a custom_id, or every custom_id a batch applied, oldest first."""
    out = []
    for record in records:
        event = record.event
        if not isinstance(event, ItemsApplied):
            continue
        if batch_id is not None and event.batch_id != batch_id:
            continue
        for cid in event.custom_ids:
            if custom_id is None or cid == custom_id:
                out.append(
                    {
                        "custom_id": cid,
                        "batch_id": event.batch_id,
                        "job_id": event.job_id,
                        "applied_at": format_ts(record.ts),
                        "attempt": event.attempt,
                        "kind": event.kind,
                        "seq": record.seq,
                    }
                )
    return out


def cmd_audit(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    if (args.custom_id is None) == (args.batch is None):
        print("error: give a CUSTOM_ID or --batch BATCH_ID (one of them)", file=sys.stderr)
        return 2
    index = Index(ledger)
    if args.batch is not None:
        records = index.records_of(args.batch)
        if not records:
            print(f"error: no batch {args.batch!r} in {ledger.path}", file=sys.stderr)
            return 2
    else:
        records = index.applications(args.custom_id)
    entries = audit_entries(records, custom_id=args.custom_id, batch_id=args.batch)
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print(f"{args.custom_id or args.batch}: never applied")
        return 0
    columns = ["applied_at", "kind", "attempt", "batch_id", "job_id", "custom_id"]
    _table("applications", columns, [[e[c] for c in columns] for e in entries])
    return 0


def cmd_verify(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    count, torn = ledger.verify()
    if torn:
        print(f"warning: {torn}", file=sys.stderr)
    print(f"{ledger.path}: {count} records, sound")
    return 0


def build_parser(prog: str, hooks: Hooks) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Read the event ledger of a workspace.")
    p.add_argument("--root", help="workspace root (env ADDM_ROOT, default: the current directory)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="one row per job: batches, items applied/failed/pending, cron, age")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("show", help="the timeline of events of a job or batch")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("audit", help="every application of a custom_id, or every custom_id a batch applied")
    s.add_argument("custom_id", nargs="?")
    s.add_argument("--batch", metavar="BATCH_ID")
    s.add_argument("--json", action="store_true")
    sub.add_parser("verify", help="check every record; exit 1 at the first bad one")
    for name, (configure, _) in hooks.commands.items():
        configure(sub.add_parser(name, help=hooks.helps.get(name)))
    return p


COMMANDS = {"status": cmd_status, "show": cmd_show, "audit": cmd_audit, "verify": cmd_verify}


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m ledger", hooks: Hooks | None = None) -> int:
    hooks = hooks or Hooks()
    args = build_parser(prog, hooks).parse_args(argv)
    try:
        root = find_root(args.root)
    except RootMissing as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    ledger = Ledger(root / LEDGER_SUBDIR)
    try:
        if args.command in hooks.commands:
            return hooks.commands[args.command][1](args, ledger)
        return COMMANDS[args.command](args, ledger, hooks)
    except LedgerCorrupt as exc:
        print(f"{prog}: ledger corrupt: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
