#!/usr/bin/env python3
"""The main job end to end on the embedded default: no key, no network, no real crontab.

It starts the local OpenAI-compatible server on 127.0.0.1, generates a synthetic workspace, submits ``extract`` and
``run_baseline`` in 24hrbatch mode with their cron entries in a tab file, then plays cron: every few seconds it runs
each marked line of the tab file with ``/bin/sh`` under cron's bare environment, exactly as cron would, until the
entries are gone, saying what each run did. It ends with ``addm-ledger status`` and commands to explore what it
left, which work when pasted.

It writes only into its workspace folder, which it marks as its own: a folder that exists, holds anything and
was not made by the demo is refused, never emptied.

Usage: ``python scripts/demo.py [--workspace DIR] [--restaurants N] [--batch-delay S] [--tick S]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
from crontab import CronTab

from ledger.help import fill

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAI  # noqa: E402
from gen_data import POLICY_ID, TASK_ID, generate  # noqa: E402

MARK = ".addm-demo-workspace"  # the demo's signature: a folder holding it is the demo's to empty and refill
BARE_ENV = {"HOME": str(Path.home()), "LOGNAME": "demo", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}


def say(text: str) -> None:
    text = fill(text, "== ", "   ")
    print(f"\n\033[1m{text}\033[0m" if sys.stdout.isatty() else f"\n{text}", flush=True)


COMMANDS = {
    "addm_integration.extract": "addm-extract",
    "addm_integration.run_baseline": "addm-baseline",
    "addm_integration.ledger": "addm-ledger",
}


def run(argv: list[str], root: Path) -> None:
    print("$ " + " ".join([COMMANDS[argv[2]], *argv[3:]]), flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # the key comes from .env
    subprocess.run(argv, cwd=root, env=env, check=True)


def cron_lines(tab: Path) -> list[tuple[str, str]]:
    if not tab.exists():
        return []
    return [(job.comment, job.command) for job in CronTab(tabfile=str(tab)) if job.comment.startswith("ADDM_BATCH_")]


def prepare(root: Path) -> str | None:
    """Make ``root`` an empty demo workspace; the reason to refuse when it holds something the demo did not make."""
    if root.exists() and not root.is_dir():
        return f"{root} exists and is not a folder"
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARK).is_file():
            return f"{root} is not empty and was not made by the demo: give --workspace a new or empty folder"
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARK).write_text("made by scripts/demo.py: running the demo again empties this folder\n")
    return None


def what_it_did(log: Path, offset: int, removed: bool) -> str:
    """One cron run in words, from what it appended to its log and whether its entry went away."""
    said = log.read_bytes()[offset:].decode(errors="replace").split("\n") if log.exists() else []
    lines = [line.strip() for line in said if line.strip()]
    lines = lines or ["batch still running: nothing to do, nothing printed"]
    lines += ["entry removed"] if removed else []
    return "\n".join(fill(line, "    ", "      ") for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=HERE.parent / "demo-workspace", help="new or empty folder")
    parser.add_argument("--restaurants", type=int, default=100, help="synthetic restaurants (100)")
    parser.add_argument("--batch-delay", type=float, default=12.0, help="seconds the server takes per batch (12)")
    parser.add_argument("--tick", type=float, default=4.0, help="seconds between played cron runs (4)")
    args = parser.parse_args(argv)
    root: Path = args.workspace.resolve()
    refused = prepare(root)
    if refused:
        print(f"demo: {refused}", file=sys.stderr)
        return 2
    tab = root / "crontab"
    py = sys.executable

    with FakeOpenAI(batch_delay=args.batch_delay) as server:
        say(f"local OpenAI-compatible server at {server.base_url}; workspace {root}")
        summary = generate(root, n_restaurants=args.restaurants)
        print(f"synthetic data: {summary['restaurants']} restaurants, {summary['reviews']} reviews")
        env_file = root / ".env"
        env_file.write_text(f"OPENAI_API_KEY=sk-demo-local-only\nOPENAI_BASE_URL={server.base_url}\n")
        env_file.chmod(0o600)

        say("submit both pipelines in 24hrbatch mode (cron entries go to a tab file, not your crontab)")
        common = ["--llm-mode", "24hrbatch", "--crontab-file", str(tab)]
        run([py, "-m", "addm_integration.extract", "--task", TASK_ID, *common], root)
        run([py, "-m", "addm_integration.run_baseline", "--policy", POLICY_ID, *common], root)
        say(f"the tab file {tab}")
        print(tab.read_text().strip())

        say(
            f"playing cron: real cron runs each entry every 5 minutes; here every {args.tick:g} s, each marked line "
            "under /bin/sh with cron's bare environment, until none is left"
        )
        started = time.monotonic()
        while lines := cron_lines(tab):
            if time.monotonic() - started > 180:
                print("demo: batches did not finish within 180 s", file=sys.stderr)
                return 1
            time.sleep(args.tick)
            for marker, command in lines:
                log = root / "data" / "logs" / f"{marker.removeprefix('ADDM_BATCH_')}.log"
                offset = log.stat().st_size if log.exists() else 0
                result = subprocess.run(["/bin/sh", "-c", command], env=BARE_ENV, cwd="/")
                removed = marker not in dict(cron_lines(tab))
                print(f"[t+{time.monotonic() - started:3.0f}s] {marker} (exit {result.returncode}):", flush=True)
                print(what_it_did(log, offset, removed), flush=True)
        print("the tab file now holds no ADDM entry")

        say("addm-ledger status")
        run([py, "-m", "addm_integration.ledger", "status"], root)

        status = subprocess.run(
            [py, "-m", "addm_integration.ledger", "--root", str(root), "status", "--json"],
            capture_output=True,
            check=True,
        )
        job = orjson.loads(status.stdout)[0]

    ledger = shlex.join([str(Path(py).parent / "addm-ledger"), "--root", str(root)])
    say("explore what the demo left (these work as pasted, from any folder)")
    print(f"{ledger} status --wide")
    print(f"{ledger} show {job['short_id']}")
    print(f"{ledger} verify")
    print(f"ls {shlex.quote(str(root / 'data'))}")
    print(f"cat {shlex.quote(str(root / 'data' / 'logs'))}/*.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
