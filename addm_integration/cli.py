"""The flags both pipelines share (CONTRACT §1) and the one driver that turns them into a run and an exit code.

Every failure a user can cause or meet ends here as one line on stderr with its exit code (CONTRACT §6);
a traceback means a bug of ours, never bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from addm_integration import fetch, ondemand, pacing, prices, submit
from addm_integration.context import Context
from addm_integration.errors import AddmError, BadInput, Transient
from addm_integration.pipeline import Pipeline
from ledger.cli import RootMissing, find_root
from ledger.log import LedgerBusy

_MODES = """\
ondemand (default): live calls, --concurrency at once; results applied as they come, so the same command after
  an interruption asks only for what is missing.
24hrbatch: the same requests through the OpenAI Batch API at half the price. Submitting uploads them, creates the
  batch(es), installs one cron entry per batch (every 5 minutes, marked # ADDM_BATCH_<id>) that runs this same
  command with --batch-id, and exits. Each cron run is silent until the batch is done; then it applies the results,
  requeues what is retryable, finalizes the job and removes its entry. Logs: data/logs/<batch_id>.log.
  The key comes from the environment or <root>/.env (chmod 600), never from the cron line."""

# Flags that only mean something for --llm-mode 24hrbatch: given to an ondemand run they are refused, not ignored.
# The split limits also shape a dry run's batch count, so they are accepted there.
_BATCH_ONLY = ("--batch-id", "--crontab-file", "--no-cron", "--wait", "--poll-interval", "--replay", "--max-attempts")
_SPLIT_LIMITS = ("--max-batch-requests", "--max-batch-bytes")
_NOT_FOR_CRON = {"--wait": 0, "--dry-run": 0, "--replay": 0, "--root": 1, "--crontab-file": 1, "--batch-id": 1}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def llm_mode(text: str) -> str:
    """Upstream ADDM says ``--mode batch`` for what is ``--llm-mode 24hrbatch`` here."""
    return "24hrbatch" if text == "batch" else text


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"{description}\n\n{_MODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # the cron line repeats these flags; an abbreviation must not change meaning later
        epilog="Exit codes: 0 done (or nothing to do, or batch still running), 2 bad input (nothing written or "
        "sent),\n75 transient failure (the next run retries), 1 ledger corrupt. Guide: README.md.",
    )
    p.add_argument(
        "--llm-mode",
        "--mode",
        dest="llm_mode",
        type=llm_mode,
        choices=("ondemand", "24hrbatch"),
        metavar="{ondemand,24hrbatch}",
        help="default: ondemand (24hrbatch with --batch-id); --mode is the same flag and batch the same as "
        "24hrbatch (upstream's names)",
    )
    p.add_argument("--batch-id", help="fetch-only: check this batch; when done apply, finalize, remove its cron entry")
    p.add_argument("--root", help="workspace root (env ADDM_ROOT, default: the current directory)")
    p.add_argument("--domain", default="yelp", help="default: yelp")
    p.add_argument("--k", type=int, choices=(25, 50, 100, 200), default=25, help="reviews per restaurant (25)")
    p.add_argument("--model", default="gpt-5-nano", help="default: gpt-5-nano")
    p.add_argument("--crontab-file", help="use this tab file instead of your crontab (env ADDM_CRONTAB)")
    p.add_argument("--no-cron", action="store_true", help="install no cron entry; poll yourself with --batch-id")
    p.add_argument("--wait", action="store_true", help="poll in the foreground until applied and finalized")
    p.add_argument("--poll-interval", type=float, default=60.0, help="seconds between polls with --wait (60)")
    p.add_argument("--replay", action="store_true", help="with --batch-id: apply its stored files again, offline")
    p.add_argument("--max-attempts", type=positive_int, default=3, help="submissions of a retryable item (3)")
    p.add_argument("--dry-run", action="store_true", help="print requests, sizes, batches and cost; send nothing")
    p.add_argument("--max-batch-requests", type=positive_int, default=submit.MAX_REQUESTS, help="default 50,000")
    p.add_argument("--max-batch-bytes", type=positive_int, default=submit.MAX_BYTES, help="default 200,000,000")
    p.add_argument(
        "--max-enqueued-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"24hrbatch, per model: send parts only while the estimated input tokens of this workspace's "
        f"unfinished batches stay under N; later runs send the rest (default {pacing.DEFAULT_MAX_ENQUEUED_TOKENS:,})",
    )
    return p


def cron_args(argv: Sequence[str], root: Path) -> list[str]:
    """The submit's own arguments for its cron line: same flags, an absolute root, nothing interactive."""
    out: list[str] = []
    skip = 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        name = token.split("=", 1)[0]
        if name in _NOT_FOR_CRON:
            skip = _NOT_FOR_CRON[name] if "=" not in token else 0
            continue
        out.append(token)
    return ["--root", str(root), *out]


def run(
    p: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    cls: type[Pipeline],
    build: Callable[[Context, Any], Pipeline],
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.replay and not args.batch_id:
        p.error("--replay needs --batch-id")
    try:
        args.llm_mode = args.llm_mode or ("24hrbatch" if args.batch_id else "ondemand")
        if args.llm_mode == "ondemand":
            _refuse_batch_flags(argv, args.dry_run)
        message = _dispatch(Context.open(find_root(args.root)), args, argv, cls, build)
    except RootMissing as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return BadInput.exit_code
    except AddmError as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except LedgerBusy as exc:
        print(f"{p.prog}: {exc}; the next run retries", file=sys.stderr)
        return Transient.exit_code
    except KeyboardInterrupt:
        print(f"{p.prog}: interrupted; what was applied is kept, run the same command to continue", file=sys.stderr)
        return 130
    if message:
        print(message)
    return 0


def _refuse_batch_flags(argv: Sequence[str], dry_run: bool) -> None:
    flags = _BATCH_ONLY if dry_run else _BATCH_ONLY + _SPLIT_LIMITS
    given = [f for f in flags if any(token == f or token.startswith(f + "=") for token in argv)]
    if given:
        raise BadInput(f"{', '.join(given)}: only for --llm-mode 24hrbatch; an ondemand run would ignore it")


def _dispatch(ctx: Context, args: Any, argv: list[str], cls: type[Pipeline], build: Callable[..., Pipeline]) -> str:
    if args.batch_id:
        message = fetch.fetch(ctx, cls, args.batch_id, replay=args.replay)
        if args.wait and not args.replay:
            return _wait(ctx, cls, ctx.index.job_of(args.batch_id) or "", args.poll_interval, message)
        return message or ""
    pipeline = build(ctx, args)
    limits = submit.Limits(args.max_batch_requests, args.max_batch_bytes)
    if args.dry_run:
        return prices.dry_run(pipeline, limits)
    if args.llm_mode == "ondemand":
        if args.max_enqueued_tokens is not None:
            raise BadInput("--max-enqueued-tokens is for --llm-mode 24hrbatch (ondemand sends no batches)")
        return ondemand.execute(ctx, pipeline, args.concurrency)
    tabfile = args.crontab_file or os.environ.get("ADDM_CRONTAB")
    tab = str(Path(tabfile).resolve()) if tabfile else None
    again = cron_args(argv, ctx.ws.root)
    spec = None if args.no_cron else submit.CronSpec(tab, sys.executable, cls.module, tuple(again))
    params = {
        "submit": [sys.executable, "-m", cls.module, *again, *(["--crontab-file", tab] if tab else [])],
        "max_attempts": args.max_attempts,
        "limits": {"max_requests": limits.max_requests, "max_bytes": limits.max_bytes},
        "cron": spec.to_params() if spec else None,
        "max_enqueued_tokens": args.max_enqueued_tokens or pacing.DEFAULT_MAX_ENQUEUED_TOKENS,
    }
    job_id, message = submit.submit(ctx, pipeline, params, limits)
    if args.wait and job_id:
        return _wait(ctx, cls, job_id, args.poll_interval, message)
    return message


def _wait(ctx: Context, cls: type[Pipeline], job_id: str, interval: float, first: str | None) -> str:
    """Poll every batch of the job in the foreground until it is finalized, printing what each step did."""
    if first:
        print(first, flush=True)
    while True:
        state = ctx.job_state(job_id)
        for batch in state.batches_of(job_id):
            if not batch.settled or batch.cron or not state.jobs[job_id].finalized:
                said = fetch.fetch(ctx, cls, batch.batch_id)
                if said:
                    print(said, flush=True)
        state = ctx.job_state(job_id)
        job = state.jobs[job_id]
        if job.finalized:
            return ""
        if fetch.job_complete(state, job) or job.abandoned:  # nothing more can come: the message said what to do
            raise Transient(f"job {job_id} ended without a result; run the same command to continue it")
        time.sleep(interval)
