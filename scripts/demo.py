#!/usr/bin/env python3
"""The main job end to end on the embedded default: no key, no network, no real crontab.

It starts the local OpenAI-compatible server on 127.0.0.1, generates a synthetic workspace, submits ``extract`` and
``run_baseline`` in 24hrbatch mode with their cron entries in a tab file, then plays cron: every few seconds it runs
each marked line of the tab file with ``/bin/sh`` under cron's bare environment, exactly as cron would, until the
entries are gone. It ends with ``addm-ledger status``.

Usage: ``python scripts/demo.py [--workspace DIR] [--restaurants N] [--batch-delay S]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crontab import CronTab

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAI  # noqa: E402
from gen_data import POLICY_ID, TASK_ID, generate  # noqa: E402

BARE_ENV = {"HOME": str(Path.home()), "LOGNAME": "demo", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=HERE.parent / "demo-workspace")
    parser.add_argument("--restaurants", type=int, default=100)
    parser.add_argument("--batch-delay", type=float, default=12.0, help="seconds the server takes per batch")
    parser.add_argument("--tick", type=float, default=4.0, help="seconds between simulated cron runs")
    args = parser.parse_args(argv)
    root: Path = args.workspace.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
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

        say("playing cron: each marked line runs under /bin/sh with a bare environment until none is left")
        started = time.monotonic()
        while lines := cron_lines(tab):
            if time.monotonic() - started > 180:
                print("demo: batches did not finish within 180 s", file=sys.stderr)
                return 1
            time.sleep(args.tick)
            for marker, command in lines:
                result = subprocess.run(["/bin/sh", "-c", command], env=BARE_ENV, cwd="/")
                print(f"[t+{time.monotonic() - started:4.0f}s] cron ran {marker}: exit {result.returncode}", flush=True)
        print("tab file now holds no ADDM entry")

        say("what the cron runs wrote to their logs (data/logs/)")
        for log in sorted((root / "data" / "logs").glob("*.log")):
            print(f"{log.name}:\n  " + "\n  ".join(log.read_text().strip().splitlines()))

        say("addm-ledger status")
        run([py, "-m", "addm_integration.ledger", "status"], root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
