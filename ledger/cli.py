"""Reading the ledger: ``status``, ``show``, ``audit``, ``verify``. Generic: it knows jobs, batches and items.

An application adds what only it knows (cron entries, prices) through ``Hooks``; everything here is derived from
the records alone, so the same questions get the same answers on any copy of the log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ledger import failures
from ledger.events import ItemsApplied, to_payload
from ledger.help import Formatter, add_version
from ledger.ids import UnknownId, resolve, shortest_unique
from ledger.index import Index
from ledger.log import Ledger, Record, format_ts, parse_ts, utcnow
from ledger.reducer import BatchState, JobState, State, fold_ledger, job_condition, job_eta

LEDGER_SUBDIR = Path("data") / "ledger"


Option = tuple[str, Mapping[str, Any]]  # a flag and its ``add_argument`` keywords, ``default`` included


@dataclass
class Hooks:
    """What an application adds to the generic reading: its names, extra status fields and extra subcommands."""

    root_env: str | None = None  # the environment variable that names the workspace root, after --root
    target: Callable[[JobState], str | None] = lambda job: None  # what a job works on, in a word or two
    names: Mapping[str, str] = field(default_factory=dict)  # shorter names of pipelines, for the narrow table
    item_ids: str = "one request"  # what an item's id is made of, for audit's help
    item_example: str = "ITEM_ID"
    options: Sequence[Option] = ()  # options of the application's subcommands, accepted before the subcommand too
    exit_codes: Mapping[int, str] = field(default_factory=dict)  # what the application's subcommands add
    status_fields: Callable[[State, JobState, dict[str, Any]], dict[str, Any]] = lambda state, job, row: row
    alive: Callable[[Ledger, JobState], bool] = lambda ledger, job: False  # is a run working on the job now?
    helps: Mapping[str, str] = field(default_factory=dict)  # one line per extra subcommand, for --help
    commands: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any, Ledger], int]]] = field(
        default_factory=dict
    )
    translate: Callable[[BaseException], failures.Translation | None] = failures.translate


class RootMissing(Exception):
    """The workspace root given does not exist: a typo must neither read as an empty workspace nor be created."""


def find_root(given: str | None, env_name: str | None = None) -> Path:
    """The workspace root: ``--root``, else the variable ``env_name`` names, else the current directory; it must
    exist."""
    env = os.environ.get(env_name) if env_name else None
    named = f"--root {given}" if given else f"{env_name}={env}" if env else "the current directory"
    root = Path(given or env or ".").resolve()
    if not root.is_dir():
        raise RootMissing(f"{named}: no such directory (nothing was read or created)")
    return root


def _age(since: datetime, now: datetime) -> str:
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def batch_row(batch: BatchState, short: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One batch as ``status --json`` and ``--wait`` give it (fields: docs/json.md)."""
    return {
        "batch_id": batch.batch_id,
        "short_id": (short or {}).get(batch.batch_id, batch.batch_id),
        "status": batch.status,
        "phase": batch.phase,
        "attempt": batch.attempt,
        "items": batch.n_items,
        "applied": batch.applied,
        "failed": batch.failed,
        "settled": batch.settled,
        "cron": batch.cron,
        "counts": dict(batch.counts),
        "eta": format_ts(eta) if (eta := batch.eta()) else None,
    }


def status_rows(
    state: State,
    now: datetime,
    alive: Callable[[JobState], bool] = lambda job: False,
    target: Callable[[JobState], str | None] = lambda job: None,
) -> list[dict[str, Any]]:
    short = shortest_unique([*state.jobs, *state.batches])
    rows = []
    for job in state.jobs.values():
        batches = [batch_row(b, short) for b in state.batches_of(job.job_id)]
        failed = len(job.failures)
        sent = sum(p.batch_id is not None for p in job.parts.values())
        parts = {"sent": sent, "waiting": len(job.parts) - sent, "done": sum(b["settled"] for b in batches)}
        rows.append(
            {
                "job_id": job.job_id,
                "short_id": short[job.job_id],
                "pipeline": job.pipeline,
                "mode": job.mode,
                "target": target(job),
                "state": job_condition(state, job, alive=job.run_open and job.open and alive(job)),
                "items": job.n_items,
                "submitted": job.submitted,
                "applied": job.applied,
                "failed": failed,
                "pending": max(job.n_items - job.applied - failed, 0) if not job.finalized else 0,
                "batches": batches,
                "parts": parts,  # sent, waiting for room in the queue, done (their batch settled)
                "eta": format_ts(eta) if (eta := job_eta(state, job)) else None,
                "cron": any(b.cron for b in state.batches_of(job.job_id)),
                "created_at": format_ts(job.created_at),
                "age": _age(job.created_at, now),
                "usage": dict(job.usage),
            }
        )
    return rows


def next_step(row: Mapping[str, Any]) -> str:
    """What happens next to a job, in two or three words: who acts (cron, the user, nobody)."""
    unsettled = [b for b in row["batches"] if not b["settled"]]
    if row["state"] == "abandoned":
        return "nothing: abandoned"
    if row["state"] == "finalized":
        return f"rerun: {row['failed']} failed" if row["failed"] else "done"
    if row["state"] == "running" and row["mode"] == "ondemand":
        return "its run goes on"
    if row["mode"] != "ondemand" and unsettled:
        return "cron fetches" if row["cron"] else "fetch: --batch-id"
    return "rerun to go on"


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _width(wide: bool) -> int | None:
    """The width to fit: the terminal's, 80 in a pipe, none with --wide."""
    if wide:
        return None
    return shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


@dataclass
class Column:
    header: str
    values: list[str]
    floor: int | None = None  # None: never cut (ids); else cut with "…" down to this width, when the line is too wide
    right: bool = False
    cut_order: int = 0  # which cuttable column is cut first: the lowest


def render(columns: Sequence[Column], width: int | None, gap: str = "  ") -> list[str]:
    """Header and rows, each column as wide as its content; when a line is too wide, the cuttable columns are cut,
    the last one first, down to their floor, then to three characters."""
    widths = [max([len(c.header), *(len(v) for v in c.values)]) for c in columns]
    cuttable = sorted((i for i, c in enumerate(columns) if c.floor is not None), key=lambda i: columns[i].cut_order)
    if width is not None:
        excess = sum(widths) + len(gap) * (len(columns) - 1) - width
        for floors in ({i: columns[i].floor or 0 for i in cuttable}, dict.fromkeys(cuttable, 3)):
            for i in cuttable:
                take = max(min(excess, widths[i] - floors[i]), 0)
                widths[i] -= take
                excess -= take
    lines = []
    for r in range(-1, len(columns[0].values) if columns else 0):
        cells = []
        for c, w in zip(columns, widths, strict=True):
            text = c.header if r < 0 else c.values[r]
            text = _cut(text, w) if c.floor is not None else text
            cells.append(text.rjust(w) if c.right else text.ljust(w))
        lines.append(gap.join(cells).rstrip())
    return lines


def _money(value: Any) -> str:
    if value is None:
        return "?"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _when(ts: str, now: datetime) -> str:
    """An ETA as a person reads it: the UTC time, and how long from now."""
    at = parse_ts(ts)
    left = "overdue" if at <= now else f"in {_age(now, at)}"
    return f"{at:%H:%M} UTC ({left})" if at - now < timedelta(hours=20) else f"{at:%Y-%m-%d %H:%M} UTC ({left})"


def batch_summary(batch: Mapping[str, Any], now: datetime) -> str:
    """A batch in words after its id: status, counts, ETA, attempt, cron entry."""
    parts = [batch["status"] or batch["phase"]]  # the service's word, when the records say it
    total = batch["counts"].get("total")
    if batch["settled"]:
        parts.append(f"{batch['applied']} applied, {batch['failed']} failed")
    elif total:
        done = batch["counts"].get("completed", 0)
        failed = batch["counts"].get("failed", 0)
        parts.append(f"{done}/{total} done" + (f", {failed} failed" if failed else ""))
    else:
        parts.append(f"{batch['items']} requests")
    if batch["eta"]:
        parts.append("eta " + _when(batch["eta"], now))
    if batch["attempt"] > 1:
        parts.append(f"attempt {batch['attempt']}")
    if batch["cron"]:
        parts.append("cron entry")
    return ", ".join(parts[:2]) + "".join(f"; {p}" for p in parts[2:])


def cmd_status(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    state = fold_ledger(ledger, ledger.records())
    now = utcnow()
    rows = status_rows(state, now, lambda job: hooks.alive(ledger, job), hooks.target)
    rows = [hooks.status_fields(state, state.jobs[r["job_id"]], r) for r in rows]
    for row in rows:
        row.setdefault("next", next_step(row))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no jobs in {ledger.path}")
        return 0
    width = _width(args.wide)
    ident = "job_id" if args.wide else "short_id"
    columns = [Column("JOB", [r[ident] for r in rows])]
    if args.wide:
        columns += [
            Column("PIPELINE", [r["pipeline"] for r in rows]),
            Column("TARGET", [str(r["target"]) for r in rows]),
            Column("MODE", [r["mode"] for r in rows]),
            Column("MODEL", [str(r.get("model", "")) for r in rows]),
            Column("STATE", [r["state"] for r in rows]),
            Column("ITEMS", [str(r["items"]) for r in rows], right=True),
            Column("SUBMITTED", [str(r["submitted"]) for r in rows], right=True),
            Column("APPLIED", [str(r["applied"]) for r in rows], right=True),
            Column("FAILED", [str(r["failed"]) for r in rows], right=True),
            Column("PENDING", [str(r["pending"]) for r in rows], right=True),
            Column("CRON", ["yes" if r["cron"] else "no" for r in rows]),
            Column("CREATED", [r["created_at"] for r in rows]),
            Column("AGE", [r["age"] for r in rows]),
        ]
        columns += [
            Column(k.removesuffix("_usd").upper(), [_money(r[k]) for r in rows])
            for k in ("cost_usd", "saved_usd")
            if k in rows[0]
        ]
    else:
        columns += [
            Column(
                "WHAT",
                [f"{hooks.names.get(r['pipeline'], r['pipeline'])} {r['target']}" for r in rows],
                floor=14,
                cut_order=2,
            ),
            Column("STATE", [r["state"] for r in rows], floor=9, cut_order=3),
            Column("DONE", [f"{r['applied']}/{r['items']}" for r in rows], right=True),
        ]
        if any(r["failed"] for r in rows):  # a column of zeros says nothing and costs six columns
            columns.append(Column("FAIL", [str(r["failed"]) for r in rows], right=True))
        if "cost_usd" in rows[0]:
            columns.append(Column("COST", [_money(r["cost_usd"]) for r in rows], right=True))
    columns.append(Column("NEXT", [r["next"] for r in rows], floor=10, cut_order=1))
    header, *lines = render(columns, width)
    print(header)
    for row, line in zip(rows, lines, strict=True):
        print(line)
        for batch in row["batches"]:
            label = f"  {batch['batch_id'] if args.wide else batch['short_id']}  "
            text = batch_summary(batch, now)
            print(label + (text if width is None else _cut(text, width - len(label))))
        if row["state"] not in ("finalized", "abandoned") and row["parts"]["sent"] + row["parts"]["waiting"] > 1:
            print(parts_summary(row, now, width))
    return 0


def parts_summary(row: Mapping[str, Any], now: datetime, width: int | None) -> str:
    """The whole job of several parts in words: sent (of which done), waiting for room, and when all should be done;
    the ETA on a line of its own when the two do not fit the width together."""
    parts = row["parts"]
    head = f"  parts: {parts['sent']} sent ({parts['done']} done), {parts['waiting']} waiting for room"
    eta = "job eta " + (_when(row["eta"], now) if row["eta"] else "unknown")
    line = f"{head}; {eta}"
    return line if width is None or len(line) <= width else f"{head};\n    {eta}"


def _event_dict(record: Record) -> dict[str, Any]:
    type_name, version, data = to_payload(record.event)
    return {"seq": record.seq, "ts": format_ts(record.ts), "type": type_name, "v": version, "data": data}


def resolve_id(ledger: Ledger, prefix: str, kind: str = "job or batch") -> str:
    """The full id of a job or batch (``kind`` "job", "batch" or either) from any unique prefix of it."""
    jobs, batches = Index(ledger).ids(prefix)
    pool = {"job": jobs, "batch": batches}.get(kind, [*jobs, *batches])
    return resolve(prefix, pool, kind, ledger.path)


def _wrap(head: str, text: str, width: int | None) -> str:
    """``head`` then ``text``: on one line when it fits, else wrapped on lines of their own, indented under the
    head. Words (ids, paths) are never broken, so a path longer than the width stays whole on its own line."""
    line = f"{head}{text}".rstrip()
    if width is None or len(line) <= width:
        return line
    body = textwrap.wrap(text, width - 4, break_long_words=False, break_on_hyphens=False)
    return "\n".join([head.rstrip(), *("    " + part for part in body)])


def _compact(value: Any) -> str:
    """JSON with a space after each separator: places where a long value can wrap."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def cmd_show(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    ident = resolve_id(ledger, args.id)
    events = [_event_dict(r) for r in Index(ledger).records_of(ident)]
    if args.json:
        _print_json(events)
        return 0
    width = _width(args.wide)
    print(f"events of {ident}:")
    for e in events:
        data = {k: v for k, v in e["data"].items() if k not in ("job_id", "batch_id") or v != ident}
        if "custom_ids" in data:
            data["custom_ids"] = f"<{len(data['custom_ids'])} ids>"
        if "failures" in data:
            data["failures"] = f"<{len(data['failures'])} failures>"
        detail = " ".join(f"{k}={_compact(v)}" for k, v in data.items() if v not in (None, {}, [], ""))
        print(_wrap(f"{e['ts'][:19].replace('T', ' ')}  #{e['seq']:<5} {e['type']:<13} ", detail, width))
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
    batch = resolve_id(ledger, args.batch, "batch") if args.batch is not None else None
    records = index.records_of(batch) if batch is not None else index.applications(args.custom_id)
    entries = audit_entries(records, custom_id=args.custom_id, batch_id=batch)
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print(f"{args.custom_id or batch}: never applied")
        return 0
    when = Column("APPLIED AT", [e["applied_at"][:19].replace("T", " ") for e in entries])
    kind = Column("KIND", [e["kind"] for e in entries])
    attempt = Column("ATTEMPT", [str(e["attempt"]) for e in entries], right=True)
    if batch is not None:
        print(f"items applied by batch {batch}:")
        columns = [when, kind, attempt, Column("CUSTOM_ID", [e["custom_id"] for e in entries])]
    else:
        jobs, batches = index.ids()
        short = {} if args.wide else shortest_unique([*jobs, *batches])
        print(f"applications of {args.custom_id}:")
        columns = [
            when,
            kind,
            attempt,
            Column("BATCH", [short.get(e["batch_id"], e["batch_id"] or "ondemand") for e in entries]),
            Column("JOB", [short.get(e["job_id"], e["job_id"]) for e in entries]),
        ]
    for line in render(columns, None):
        print(line)
    return 0


def cmd_verify(args: Any, ledger: Ledger, hooks: Hooks) -> int:
    torn: list[str] = []
    count = 0

    def counted() -> Iterable[Record]:
        nonlocal count
        for record in ledger.records(on_torn=torn.append):
            count += 1
            yield record

    fold_ledger(ledger, counted())  # a record with a sound checksum that does not fold is corruption too
    if args.json:
        _print_json({"path": str(ledger.path), "records": count, "sound": True, "torn_tail": torn[0] if torn else None})
        return 0
    if torn:
        print(f"warning: {torn[0]}", file=sys.stderr)
    print(f"{ledger.path}: {count} records, sound")
    return 0


def root_help(env_name: str | None) -> str:
    env = f"env {env_name}; " if env_name else ""
    return f"workspace root ({env}default: the current directory)"


EXIT_CODES = {
    0: "done",
    1: "ledger corrupt (one line naming the file, line and record)",
    2: "bad input (an unknown or ambiguous id, a bad flag)",
    70: "unexpected error (traceback saved under data/logs/)",
}


def exit_codes(more: Mapping[int, str]) -> str:
    """The exit codes of every command, with those of the application's subcommands, in order."""
    codes = {**EXIT_CODES, **more}
    return "Exit codes: " + "; ".join(f"{code} {codes[code]}" for code in sorted(codes)) + "."


def common_options(hooks: Hooks, *, subcommand: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the subcommand name.

    On a subcommand they default to SUPPRESS, so a value given before the subcommand is not overwritten.
    """
    p = argparse.ArgumentParser(add_help=False)
    unset = {"default": argparse.SUPPRESS} if subcommand else {}
    p.add_argument("--root", metavar="DIR", help=root_help(hooks.root_env), **({"default": None} | unset))
    p.add_argument(
        "--json", action="store_true", help="print JSON (fields: docs/json.md)", **({"default": False} | unset)
    )
    p.add_argument(
        "--wide",
        action="store_true",
        help="every column and whole ids, however wide the lines",
        **({"default": False} | unset),
    )
    for flag, keywords in hooks.options:
        p.add_argument(flag, **({"default": None, **keywords} | unset))
    return p


def _subcommand(
    sub: Any, hooks: Hooks, name: str, prog: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        parents=[common_options(hooks, subcommand=True)],
        formatter_class=Formatter,
        conflict_handler="resolve",  # a subcommand may define a common option its own way
    )
    add_version(p, prog)
    return p


def build_parser(prog: str, hooks: Hooks) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Read the event ledger of a workspace: what each job and batch did, is doing and will do "
        "next. Ids (jobs, batches) may be shortened to any prefix that names only one, as printed by status.",
        epilog=f"Examples:\n  $ {prog} status\n  $ {prog} show job_2026\n  $ {prog} --root ~/ws status --json\n\n"
        f"{exit_codes(hooks.exit_codes)}\n\nGuide: README.md; JSON fields: docs/json.md.",
        parents=[common_options(hooks, subcommand=False)],
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    add_version(p, prog)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = _subcommand(
        sub,
        hooks,
        "status",
        prog,
        "one line per job, its batches below",
        "One line per job: its short id, what it runs, its state, items applied of all, failures, cost so far "
        "and what happens next; below it, one line per batch: status, counts, ETA, cron entry; and for a job of "
        "several parts, its parts sent, done and waiting for room, and when the whole job should be done. Fits "
        "the terminal (80 columns in a pipe); --wide gives every column and whole ids, --json every field.",
        f"Examples:\n  $ {prog} status\n  $ {prog} status --wide\n  $ {prog} status --json",
    )
    s = _subcommand(
        sub,
        hooks,
        "show",
        prog,
        "the timeline of events of a job or a batch",
        "Every event the ledger recorded for a job (its batches' included) or for one batch, oldest first.",
        f"Examples:\n  $ {prog} show job_20261201\n  $ {prog} show batch_5f2e --json",
    )
    s.add_argument("id", metavar="ID", help="a job or batch id, or any prefix of it that names only one")
    s = _subcommand(
        sub,
        hooks,
        "audit",
        prog,
        "every application of an item, or every item a batch applied",
        f"Every time a custom_id ({hooks.item_ids}) was applied, by which batch and job, at which attempt; or, "
        "with --batch, every custom_id that batch applied. An item applied once shows once.",
        f"Examples:\n  $ {prog} audit {hooks.item_example}\n  $ {prog} audit --batch batch_5f2e",
    )
    s.add_argument("custom_id", nargs="?", metavar="CUSTOM_ID", help="the id of one request, as in the batch files")
    s.add_argument("--batch", metavar="BATCH_ID", help="a batch id (or a unique prefix of it) instead")
    _subcommand(
        sub,
        hooks,
        "verify",
        prog,
        "check every record of the ledger",
        "Check every record's checksum and sequence number. Exit 0 when sound (a torn last record, what a "
        "crash mid-write leaves, is a warning: the next write sets it aside); 1 with the first bad record's "
        "line otherwise.",
        f"Example:\n  $ {prog} verify",
    )
    for name, (configure, _) in hooks.commands.items():
        s = _subcommand(sub, hooks, name, prog, "", "", "")
        configure(s)
        summary = re.split(r"[.:;](?:\s|$)", s.description or "", maxsplit=1)[0]
        summary = hooks.helps.get(name) or summary[:1].lower() + summary[1:]
        sub._choices_actions[-1].help = summary  # its line in the list of commands
    return p


COMMANDS = {"status": cmd_status, "show": cmd_show, "audit": cmd_audit, "verify": cmd_verify}


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m ledger", hooks: Hooks | None = None) -> int:
    hooks = hooks or Hooks()
    args = build_parser(prog, hooks).parse_args(argv)
    try:
        root = find_root(args.root, hooks.root_env)
    except RootMissing as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    ledger = Ledger(root / LEDGER_SUBDIR)
    try:
        if args.command in hooks.commands:
            return hooks.commands[args.command][1](args, ledger)
        return COMMANDS[args.command](args, ledger, hooks)
    except UnknownId as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return failures.report(prog, exc, root / "data" / "logs", translate=hooks.translate)
