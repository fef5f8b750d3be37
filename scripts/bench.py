#!/usr/bin/env python3
"""Performance figures, each printed as a ratio against a baseline measured in the same run (never asserted).

    python scripts/bench.py ledger [--events 1000000]
    python scripts/bench.py scale  [--lines 50000]

``ledger``: appends per second with fsync from 1 and 4 processes; a no-op cron fetch (batch still running) with a
long history in the ledger divided by the same with a short one (goal <= 1.3); audit of one custom_id in the long
ledger (goal < 100 ms). ``scale``: see ``bench_scale``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAI  # noqa: E402
from gen_data import generate  # noqa: E402

from ledger.cli import audit_entries  # noqa: E402
from ledger.events import (  # noqa: E402
    BatchCreated,
    BatchPolled,
    BatchSettled,
    CronInstalled,
    CronRemoved,
    FilesStored,
    FileUploaded,
    ItemsApplied,
    JobCreated,
    JobFinalized,
    PartPlanned,
    SendStarted,
)
from ledger.index import Index  # noqa: E402
from ledger.log import Ledger  # noqa: E402

BARE = ["env", "-i", "HOME=/tmp", "LOGNAME=bench", "SHELL=/bin/sh", "PATH=/usr/bin:/bin"]
_APPENDER = """
import sys, time
from pathlib import Path
from ledger.events import CronInstalled
from ledger.log import Ledger
ledger, n = Ledger(Path(sys.argv[1])), int(sys.argv[2])
for i in range(n):
    ledger.append([CronInstalled(f"b{i}", "*/5 * * * *")])
"""


def line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def appends_per_second(directory: Path, processes: int, per_process: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(directory), str(per_process)], env=env)
        for _ in range(processes)
    ]
    for p in procs:
        p.wait()
    return processes * per_process / (time.perf_counter() - start)


def history(n_events: int, ids_per_job: int = 130) -> list[list]:
    """Finished jobs as a real ledger holds them (~100 events each, polls included), in append-sized chunks."""
    chunks = []
    job = 0
    total = 0
    while total < n_events:
        j, b, idem = f"hist_job_{job}", f"hist_batch_{job}", f"hist_job_{job}-000"
        ids = tuple(f"review::G1a::biz{job:07d}::rev{i:05d}xxxxxxxxxxxxx" for i in range(ids_per_job))
        events = [
            JobCreated(j, "extract", "24hrbatch", f"extract|hist|{job}", {"pipeline": {"task": "G1a"}}, ids_per_job),
            PartPlanned(j, idem, ids_per_job, 123456, 1, f"/tmp/{idem}.jsonl", "gpt-5-nano"),
            SendStarted(j, idem),
            FileUploaded(j, idem, f"file-{job}"),
            BatchCreated(j, idem, b),
            CronInstalled(b, "*/5 * * * *"),
        ]
        events += [BatchPolled(b, "in_progress", {"total": ids_per_job, "completed": k}) for k in range(86)]
        events += [
            FilesStored(b, {"output": {"file_id": f"file-o{job}", "bytes": 1, "sha256": "0"}}),
            FilesStored(b, {"error": {"file_id": None}}),
            ItemsApplied(j, b, ids, 1, "apply", {"prompt_tokens": 1000, "completion_tokens": 100}),
            BatchSettled(b, "completed", ids_per_job, 0),
            JobFinalized(j, {"judgments": ids_per_job}),
            CronRemoved(b),
        ]
        chunks.append(events)
        total += len(events)
        job += 1
    return chunks


def workspace(root: Path, server: FakeOpenAI, events: int) -> tuple[str, float]:
    """A workspace with ``events`` events of history and one running batch; (its cron command, index build s)."""
    generate(root, n_restaurants=2, seed=3)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY=sk-bench\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    ledger = Ledger(root / "data" / "ledger")
    chunk: list = []
    for events_of_job in history(events):
        chunk += events_of_job
        if len(chunk) >= 20_000:
            ledger.append(chunk)
            chunk = []
    if chunk:
        ledger.append(chunk)
    start = time.perf_counter()
    Index(ledger).catch_up()
    built = time.perf_counter() - start
    tab = root / "crontab"
    submit = [sys.executable, "-m", "addm_integration.extract", "--root", str(root), "--task", "G1a"]
    subprocess.run([*submit, "--llm-mode", "24hrbatch", "--crontab-file", str(tab)], check=True, capture_output=True)
    from crontab import CronTab

    (command,) = [j.command for j in CronTab(tabfile=str(tab)) if j.comment.startswith("ADDM_BATCH_")]
    return command, built


def time_cron(command: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([*BARE, "/bin/sh", "-c", command], capture_output=True, cwd="/")
        times.append(time.perf_counter() - start)
        assert result.returncode == 0 and not result.stdout and not result.stderr, result
    return statistics.median(times)


def bench_ledger(n_events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        line("appends/s with fsync, 1 process", f"{appends_per_second(tmp_path / 'a1', 1, 1000):,.0f}")
        line("appends/s with fsync, 4 processes (total)", f"{appends_per_second(tmp_path / 'a4', 4, 500):,.0f}")
        with FakeOpenAI(batch_delay=10**6) as server:
            small_cmd, _ = workspace(tmp_path / "small", server, 90)
            start = time.perf_counter()
            big_cmd, built = workspace(tmp_path / "big", server, n_events)
            line(f"build a {n_events:,}-event workspace (once)", f"{time.perf_counter() - start:.1f} s")
            line("  of which indexing it from scratch (once)", f"{built:.1f} s")
            time_cron(small_cmd, 1)
            time_cron(big_cmd, 1)
            pairs = [(time_cron(small_cmd, 1), time_cron(big_cmd, 1)) for _ in range(11)]  # interleaved: same noise
            small, big = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            line("no-op cron fetch, ~100 events (median of 11)", f"{small * 1000:.0f} ms")
            line(f"no-op cron fetch, {n_events:,} events (median of 11)", f"{big * 1000:.0f} ms")
            line("  ratio (goal <= 1.3)", f"{big / small:.3f}")
        ledger = Ledger(tmp_path / "big" / "data" / "ledger")
        middle = sum(1 for _ in history(n_events)) // 2
        cid = f"review::G1a::biz{middle:07d}::rev00077xxxxxxxxxxxxx"
        times = []
        for _ in range(21):
            start = time.perf_counter()
            entries = audit_entries(Index(ledger).applications(cid), custom_id=cid, batch_id=None)
            times.append(time.perf_counter() - start)
        assert len(entries) == 1, entries
        line(f"audit of one custom_id at {n_events:,} events (median)", f"{statistics.median(times) * 1000:.1f} ms")
        line("  goal < 100 ms; ratio to goal", f"{statistics.median(times) / 0.1:.3f}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ledger")
    p.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(f"bench {args.what} on {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if args.what == "ledger":
        bench_ledger(args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
