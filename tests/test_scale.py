"""A job ten times larger than its batch limits: split into batches, finalized once, in memory that does not grow
with the job (peak RSS read from /proc by the measured process itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from conftest import KEY, Workspace
from gen_data import generate

# Runs a command as its console script would and reports the process's peak resident set (VmHWM) on exit.
_MEASURED = """
import atexit, runpy, sys
def _peak():
    for row in open("/proc/self/status"):
        if row.startswith("VmHWM:"):
            print(f"peak-kb {row.split()[1]}", file=sys.stderr)
atexit.register(_peak)
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

GROWTH_MB = 15  # what a tenfold job may add to a run's peak: its snapshot and id sets, not its requests


def _measured(ws: Workspace, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [sys.executable, "-c", _MEASURED, "addm_integration.extract", "--root", str(ws.root), *args]
    result = subprocess.run(argv, env=ws.env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("peak-kb"))
    return result, peak / 1024


def _run_job(ws: Workspace, limit: int, per_batch: int) -> tuple[float, float, list[str]]:
    """Submit, complete and fetch every batch of one job; its peak RSS at submit, at fetch, and its batches."""
    before = set(ws.server.batch_ids())
    args = ("--task", "G1a", "--limit", str(limit), "--llm-mode", "24hrbatch", "--no-cron")
    _, submit_peak = _measured(ws, *args, "--max-batch-requests", str(per_batch))
    batches = [b for b in ws.server.batch_ids() if b not in before]
    fetch_peak = 0.0
    for batch in batches:
        ws.server.set_batch_outcome(batch, "completed")
        result, peak = _measured(ws, *args, "--batch-id", batch)
        assert "applied, 0 failed" in result.stdout, result.stdout
        fetch_peak = max(fetch_peak, peak)
    return submit_peak, fetch_peak, batches


def test_a_job_ten_times_its_limits_splits_finalizes_once_and_needs_no_more_memory(tmp_path: Path, server) -> None:
    root = tmp_path / "ws"
    generate(root, n_restaurants=400, seed=5)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    ws = Workspace(root, server)
    records = [orjson.loads(line) for line in (root / "data/context/yelp/dataset_K25.jsonl").read_bytes().splitlines()]
    sizes = [len(r["reviews"]) for r in records]
    per_batch = -(-sum(sizes) // 10)
    small = max(n for n in range(1, len(sizes)) if sum(sizes[:n]) <= per_batch)

    small_submit, small_fetch, small_batches = _run_job(ws, small, per_batch)
    large_submit, large_fetch, large_batches = _run_job(ws, len(records), per_batch)

    assert len(small_batches) == 1 and len(large_batches) == 10
    assert large_submit - small_submit < GROWTH_MB, (small_submit, large_submit)
    assert large_fetch - small_fetch < GROWTH_MB, (small_fetch, large_fetch)
    (large,) = [j for j in ws.ledger_json("status") if j["batches"][0]["batch_id"] == large_batches[0]]  # type: ignore[union-attr]
    assert large["state"] == "finalized" and [b["batch_id"] for b in large["batches"]] == large_batches
    events = [e["type"] for e in ws.ledger_json("show", large["job_id"])]  # type: ignore[union-attr]
    assert events.count("JobFinalized") == 1
    cached = orjson.loads(ws.cache.read_bytes())["G1a"]
    assert len(cached) == sum(sizes)
