"""The flags both pipelines share and the one driver that turns them into a run and an exit code.

Every failure a user can cause or meet ends here as one line on stderr with its exit code (the table in
README.md); a traceback means a bug of ours, never bad input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from addm_integration import errors
from addm_integration.engine import advance, decisions, ondemand, pacing, plan, prices, submit
from addm_integration.engine.pipeline import Pipeline
from addm_integration.errors import BadInput, Transient
from addm_integration.provider import openai_api
from addm_integration.schedule.entries import CronSpec
from addm_integration.store import credentials
from addm_integration.store.context import Context
from addm_integration.store.workspace import ROOT_ENV, Workspace
from ledger import failures
from ledger.cli import RootMissing, batch_row, batch_summary, find_root, resolve_id
from ledger.help import Formatter, add_version, fill
from ledger.ids import UnknownId
from ledger.log import utcnow
from ledger.reducer import State

_MODES = """\
Two modes. ondemand (the default) makes live calls, --concurrency at once, and
stores results as they come: after an interruption the same command asks only
for what is missing.

24hrbatch sends the same requests through the OpenAI Batch API at half the
price. The submit uploads them, creates the batch(es), installs one cron entry
per batch (every 5 minutes, marked # ADDM_BATCH_<id>) that runs this same
command with --batch-id, and exits. Each cron run is silent until its batch is
done; then it applies the results, requeues what is retryable, finalizes the
job and removes its entry. Logs: data/logs/<batch_id>.log. The key comes from
the environment or <root>/.env (chmod 600), never from the cron line."""

EXIT_CODES = """\
Exit codes: 0 done (or nothing to do, or the batch still running); 2 bad input
or the account refused (nothing written, nothing sent); 75 transient failure
(network, timeout, 429, 5xx, a lock held too long, a full disk: the next run
retries); 1 ledger corrupt or a stored result file changed; 130 interrupted
(what was applied is kept); 70 unexpected (traceback saved under data/logs/).
Guide: README.md."""

# Flags that only mean something for --llm-mode 24hrbatch: given to an ondemand run they are refused, not ignored.
# The split limits also shape a dry run's batch count, so they are accepted there.
_BATCH_ONLY = ("--batch-id", "--crontab-file", "--no-cron", "--wait", "--poll-interval", "--replay", "--max-attempts")
_SPLIT_LIMITS = ("--max-batch-requests", "--max-batch-bytes")
_NOT_FOR_CRON = {"--wait": 0, "--dry-run": 0, "--replay": 0, "--root": 1, "--crontab-file": 1, "--batch-id": 1}


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def llm_mode(text: str) -> str:
    """Upstream ADDM says ``--mode batch`` for what is ``--llm-mode 24hrbatch`` here."""
    return "24hrbatch" if text == "batch" else text


def non_negative_int(text: str) -> int:
    """A count where 0 means "all" (or "none" for --skip): the message says so for a negative one."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_limit(p: argparse.ArgumentParser, help: str, dest: str = "limit") -> None:
    """The one selection flag of both pipelines: ``--limit`` and ``-n`` alike, 0 meaning every restaurant."""
    p.add_argument("--limit", "-n", dest=dest, type=non_negative_int, default=0, metavar="N", help=help)


def parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"{description}\n\n{_MODES}",
        formatter_class=Formatter,
        allow_abbrev=False,  # the cron line repeats these flags; an abbreviation must not change meaning later
        epilog="Examples:\n" + "\n".join(f"  $ {prog} {e}" for e in examples) + f"\n\n{EXIT_CODES}",
    )
    add_version(p, prog)
    p.add_argument(
        "--llm-mode",
        "--mode",
        dest="llm_mode",
        type=llm_mode,
        choices=("ondemand", "24hrbatch"),
        metavar="{ondemand,24hrbatch}",
        help="how to call the model: ondemand (the default; 24hrbatch with --batch-id); --mode is the same flag "
        "and batch the same as 24hrbatch (upstream ADDM's names)",
    )
    p.add_argument(
        "--batch-id",
        metavar="ID",
        help="fetch-only: check batch ID (any unique prefix); when it is done apply it, finalize the job and "
        "remove its cron entry. What each cron entry runs.",
    )
    p.add_argument("--root", metavar="DIR", help="workspace root (env ADDM_ROOT; default: the current directory)")
    p.add_argument("--domain", default="yelp", help="data domain, a folder under data/*/ (yelp)")
    p.add_argument(
        "--k", type=int, choices=(25, 50, 100, 200), default=25, help="reviews per restaurant: the dataset_K<k> file"
    )
    p.add_argument("--model", default="gpt-5-nano", help="model to ask (gpt-5-nano)")
    p.add_argument(
        "--crontab-file",
        metavar="FILE",
        help="put cron entries in this tab file instead of your crontab (env ADDM_CRONTAB)",
    )
    p.add_argument("--no-cron", action="store_true", help="install no cron entry; fetch yourself with --batch-id")
    p.add_argument(
        "--wait", action="store_true", help="stay and poll until applied and finalized, showing each batch's progress"
    )
    p.add_argument(
        "--poll-interval", type=float, default=60.0, metavar="S", help="seconds between polls with --wait (60)"
    )
    p.add_argument("--replay", action="store_true", help="with --batch-id: apply its stored files again, offline")
    p.add_argument(
        "--max-attempts", type=positive_int, default=3, metavar="N", help="submissions of a retryable item in all (3)"
    )
    p.add_argument("--dry-run", action="store_true", help="print requests, sizes, batches and cost; send nothing")
    p.add_argument(
        "--max-batch-requests",
        type=positive_int,
        default=openai_api.MAX_REQUESTS,
        metavar="N",
        help=f"requests per batch at most ({openai_api.MAX_REQUESTS:,}, the service's limit)",
    )
    p.add_argument(
        "--max-batch-bytes",
        type=positive_int,
        default=openai_api.MAX_BYTES,
        metavar="B",
        help=f"bytes per batch input file at most ({openai_api.MAX_BYTES:,}, the service's limit)",
    )
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
        root = find_root(args.root, ROOT_ENV)
    except RootMissing as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return BadInput.exit_code
    try:
        args.llm_mode = args.llm_mode or ("24hrbatch" if args.batch_id else "ondemand")
        if args.llm_mode == "ondemand":
            _refuse_batch_flags(argv, args.dry_run)
        message = _dispatch(Context.open(root, connect=openai_api.connector(root)), args, argv, cls, build)
    except KeyboardInterrupt:
        print(f"{p.prog}: interrupted; what was applied is kept, run the same command to continue", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.batch_id and failures.is_lock_timeout(exc):
            return 0  # fetch-only: another run holds what this one needs, and does what this one would
        secret = credentials.known_secret(root)
        return failures.report(
            p.prog,
            exc,
            Workspace(root).logs_dir,
            translate=errors.translate,
            scrub=lambda text: openai_api.redact(text, secret),
        )
    if message:
        print(_on_screen(message) if sys.stdout.isatty() else message)
    return 0


def _on_screen(message: str) -> str:
    """What a run says, filled to an 80-column terminal (ids and paths kept whole); in a pipe or a cron log each
    line stays one line, for grep."""
    return "\n".join(fill(line, subsequent_indent="  ") for line in message.splitlines())


def _refuse_batch_flags(argv: Sequence[str], dry_run: bool) -> None:
    flags = _BATCH_ONLY if dry_run else _BATCH_ONLY + _SPLIT_LIMITS
    given = [f for f in flags if any(token == f or token.startswith(f + "=") for token in argv)]
    if given:
        raise BadInput(f"{', '.join(given)}: only for --llm-mode 24hrbatch; an ondemand run would ignore it")


def _dispatch(ctx: Context, args: Any, argv: list[str], cls: type[Pipeline], build: Callable[..., Pipeline]) -> str:
    if args.batch_id:
        try:
            batch_id = resolve_id(ctx.ledger, args.batch_id, "batch")
        except UnknownId as exc:
            raise BadInput(str(exc)) from None
        message = advance.advance(ctx, cls, batch_id, replay=args.replay)
        if args.wait and not args.replay:
            return _wait(ctx, cls, ctx.index.job_of(batch_id) or "", args.poll_interval, message)
        return message or ""
    if args.model not in prices.table():
        print(
            f"warning: no price for model {args.model!r} in the price table (addm_integration/engine/prices.py, "
            "or a file named by ADDM_PRICES): its cost will show as unknown",
            file=sys.stderr,
        )
    pipeline = build(ctx, args)
    limits = plan.Limits(args.max_batch_requests, args.max_batch_bytes)
    for flag, given, most in (
        ("--max-batch-requests", limits.max_requests, openai_api.MAX_REQUESTS),
        ("--max-batch-bytes", limits.max_bytes, openai_api.MAX_BYTES),
    ):
        if given > most:  # the service would fail such a batch only once it was uploaded
            raise BadInput(f"{flag} {given:,}: above the service's limit of {most:,} per batch")
    if args.dry_run:
        return prices.dry_run(pipeline, limits, openai_api.request_line)  # no credentials read: nothing is sent
    if args.llm_mode == "ondemand":
        if args.max_enqueued_tokens is not None:
            raise BadInput("--max-enqueued-tokens is for --llm-mode 24hrbatch (ondemand sends no batches)")
        return ondemand.execute(ctx, pipeline, args.concurrency)
    tabfile = args.crontab_file or os.environ.get("ADDM_CRONTAB")
    tab = str(Path(tabfile).resolve()) if tabfile else None
    again = cron_args(argv, ctx.ws.root)
    spec = None if args.no_cron else CronSpec(tab, sys.executable, cls.module, tuple(again))
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


class _Watch:
    """Each batch's status, counts and ETA as they change: rewritten in place on a terminal, one line per change
    in a pipe or a log. (Cron runs never wait: their command has no --wait.)"""

    def __init__(self) -> None:
        self.live = sys.stdout.isatty()
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.shown = False

    def show(self, state: State, job_id: str) -> None:
        now = utcnow()
        for batch in state.batches_of(job_id):
            key = (batch.status, tuple(sorted(batch.counts.items())), batch.settled)
            if self.seen.get(batch.batch_id) == key:
                continue
            self.seen[batch.batch_id] = key
            if batch.settled:  # the step that settled it said so already, with its counts
                continue
            line = f"{batch.batch_id}  {batch_summary(batch_row(batch), now)}"
            if self.live:
                width = shutil.get_terminal_size((80, 24)).columns - 1
                sys.stdout.write(f"\r\033[K{line[:width]}")
                self.shown = True
            else:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        """A message of a step (applied, requeued, finalized): on its own line, never over the live one."""
        if self.shown:
            sys.stdout.write("\n")
            self.shown = False
        print(text, flush=True)


def _wait(ctx: Context, cls: type[Pipeline], job_id: str, interval: float, first: str | None) -> str:
    """Poll every batch of the job in the foreground until it is finalized, showing how each one moves."""
    watch = _Watch()
    if first:
        watch.say(first)
    while True:
        state = ctx.job_state(job_id)
        for batch in state.batches_of(job_id):
            if not batch.settled or batch.cron or not state.jobs[job_id].finalized:
                said = advance.advance(ctx, cls, batch.batch_id)
                if said:
                    watch.say(said)
        state = ctx.job_state(job_id)
        watch.show(state, job_id)
        job = state.jobs[job_id]
        if job.finalized:
            if watch.shown:
                sys.stdout.write("\n")
            return ""
        if decisions.job_complete(state, job) or job.abandoned:  # nothing more can come: the message said what to do
            if watch.shown:
                sys.stdout.write("\n")
            raise Transient(f"job {job_id} ended without a result; run the same command to continue it")
        time.sleep(interval)
