"""Honest under failure: a run that got nothing through changes no result file and leaves its job open; the same
command asks only for what is missing and says how much; a job stuck for reasons outside the tool has a way out;
the state a job shows is the truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import Workspace, submit_args

POLICY = ("--policy", "G1_allergy_V2")
TASK = ("--task", "G1a")
DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens there
CHAT = "POST /v1/chat/completions"
# a refusal the tool cannot get past alone (one for tokens is sent again by itself: test_queue)
INVALID_FILE = [{"code": "invalid_json_line", "message": "Line 1 is not valid JSON."}]


def _results(ws: Workspace) -> Path:
    (path,) = ws.root.glob("results/baseline/*/results.json")
    return path


def _states(ws: Workspace) -> list[str]:
    return [job["state"] for job in ws.ledger_json("status")]


def _chats(ws: Workspace) -> int:
    return ws.server.stats()["by_endpoint"].get(CHAT, 0)


def _fetch(ws: Workspace, outcome: str = "completed", **kwargs: object) -> subprocess.CompletedProcess[str]:
    (batch_id,) = ws.batches()
    ws.server.set_batch_outcome(batch_id, outcome, **kwargs)
    return ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"])


def _input_lines(ws: Workspace) -> int:
    (batch_id,) = ws.batches()
    return len((ws.root / "data" / "batches" / batch_id / "input.jsonl").read_bytes().splitlines())


def test_an_ondemand_extract_outage_leaves_the_cache_byte_identical_and_the_same_command_continues(
    ws: Workspace,
) -> None:
    ws.server.fail_next(CHAT, count=3, status=400)
    assert ws.run("extract", *TASK, "--concurrency", "4").returncode == 0
    before = ws.cache.read_bytes()

    down = ws.run("extract", *TASK, env=ws.env(OPENAI_BASE_URL=DEAD_URL))
    assert down.returncode == 75, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and DEAD_URL in down.stderr and "retries" in down.stderr
    assert ws.cache.read_bytes() == before
    assert _states(ws) == ["finalized", "waiting for the service"]

    ws.server.reset_stats()
    back = ws.run("extract", *TASK)
    assert back.returncode == 0, back.stderr
    assert _chats(ws) == 3 and "the 3 requests it still lacked" in back.stdout
    assert len(orjson.loads(ws.cache.read_bytes())["G1a"]) == 150
    assert _states(ws) == ["finalized", "finalized"]


def test_an_ondemand_baseline_outage_keeps_results_json_byte_identical_and_the_job_open(ws: Workspace) -> None:
    assert ws.run("baseline", *POLICY).returncode == 0
    before = _results(ws).read_bytes()

    down = ws.run("baseline", *POLICY, "--rerun", env=ws.env(OPENAI_BASE_URL=DEAD_URL))
    assert down.returncode == 75, down.stderr
    assert _results(ws).read_bytes() == before
    assert _states(ws) == ["finalized", "waiting for the service"]

    ws.server.reset_stats()
    back = ws.run("baseline", *POLICY, "--rerun")
    assert back.returncode == 0, back.stderr
    assert _chats(ws) == 6
    assert orjson.loads(_results(ws).read_bytes())["job_id"] != orjson.loads(before)["job_id"]


def test_a_baseline_batch_that_got_nothing_through_finalizes_nothing_and_the_same_submit_continues(
    ws: Workspace,
) -> None:
    assert ws.run("baseline", *POLICY).returncode == 0
    before = _results(ws).read_bytes()
    assert ws.run("baseline", *POLICY, "--rerun", *submit_args(ws)).returncode == 0
    failed = _fetch(ws, "failed", errors=INVALID_FILE)
    assert failed.returncode == 0
    assert _results(ws).read_bytes() == before
    assert ws.cron_lines() == {} and _states(ws) == ["finalized", "nothing got through"]

    again = ws.run("baseline", *POLICY, "--rerun", *submit_args(ws))
    assert again.returncode == 0, again.stderr
    assert "the 6 requests it still lacked" in again.stdout and _input_lines(ws) == 6
    assert _fetch(ws).returncode == 0
    assert orjson.loads(_results(ws).read_bytes())["mode"] == "24hrbatch"
    assert _states(ws) == ["finalized", "finalized"]


def test_the_same_baseline_command_asks_only_for_restaurants_without_a_verdict(ws: Workspace) -> None:
    ws.server.fail_next(CHAT, count=2, status=400)
    first = ws.run("baseline", *POLICY, "--concurrency", "1")
    assert first.returncode == 0 and orjson.loads(_results(ws).read_bytes())["n_failed"] == 2

    ws.server.reset_stats()
    second = ws.run("baseline", *POLICY)  # a finished selection with failures: only those, results filled in
    assert second.returncode == 0, second.stderr
    assert _chats(ws) == 2 and "sent 2 requests" in second.stdout
    results = orjson.loads(_results(ws).read_bytes())
    assert (results["n"], results["n_failed"]) == (6, 0)

    ws.server.reset_stats()
    for mode in ((), submit_args(ws)):  # a finished clean selection: nothing sent, in either mode
        clean = ws.run("baseline", *POLICY, *mode)
        assert clean.returncode == 0, clean.stderr
        assert "nothing to do" in clean.stdout and str(_results(ws)) in clean.stdout
    assert ws.server.stats()["requests"] == 0

    assert ws.run("baseline", *POLICY, "--rerun").returncode == 0
    assert _chats(ws) == 6
    assert ws.run("baseline", *POLICY, "--rerun", *submit_args(ws)).returncode == 0
    assert _input_lines(ws) == 6


def test_a_batch_job_follows_the_url_fixed_after_a_first_try_without_network(ws: Workspace) -> None:
    env_file = ws.root / ".env"
    good = env_file.read_text()
    env_file.write_text(good.replace(ws.server.base_url, DEAD_URL))
    stuck = ws.run("extract", *TASK, *submit_args(ws))
    assert stuck.returncode == 75, stuck.stderr
    assert _states(ws) == ["waiting for the service"]

    env_file.write_text(good)
    fixed = ws.run("extract", *TASK, *submit_args(ws))
    assert fixed.returncode == 0, fixed.stderr
    assert len(ws.server.batch_ids()) == 1
    assert _fetch(ws).returncode == 0
    assert len(orjson.loads(ws.cache.read_bytes())["G1a"]) == 150
    (job,) = ws.ledger_json("status")
    reached = [e["data"]["base_url"] for e in ws.ledger_json("show", job["job_id"]) if e["type"] == "ServiceReached"]
    assert reached == [ws.server.base_url] and job["state"] == "finalized"


def test_abandon_removes_entries_cancels_batches_keeps_what_was_applied_and_the_command_starts_anew(
    ws: Workspace,
) -> None:
    assert ws.run("extract", *TASK, *submit_args(ws, "--max-batch-requests", "40")).returncode == 0
    first, *others = ws.server.batch_ids()
    ws.server.set_batch_outcome(first, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{first}"]).returncode == 0
    applied = ws.cache.read_bytes()
    (job,) = ws.ledger_json("status")

    gave_up = ws.run("ledger", "abandon", job["job_id"], "--cancel")
    assert gave_up.returncode == 0, gave_up.stderr
    assert f"{len(others)} batch(es) cancelled" in gave_up.stdout
    assert ws.cron_lines() == {} and ws.cache.read_bytes() == applied
    assert ws.server.stats()["by_endpoint"]["POST /v1/batches/{id}/cancel"] == len(others)
    assert _states(ws) == ["abandoned"]
    assert "JobAbandoned" in [e["type"] for e in ws.ledger_json("show", job["job_id"])]

    anew = ws.run("extract", *TASK, *submit_args(ws))
    assert anew.returncode == 0, anew.stderr
    assert "submitted 110 requests" in anew.stdout
    assert sorted(_states(ws)) == ["abandoned", "running"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_ondemand_run_shows_running_while_alive_then_interrupted_and_the_command_continues(
    ws: Workspace, sig: signal.Signals
) -> None:
    ws.server.hold_next(CHAT, count=1, seconds=20)
    argv = [sys.executable, "-m", "addm_integration.extract", "--root", str(ws.root), *TASK, "--limit", "1"]
    run = subprocess.Popen(
        [*argv, "--concurrency", "1"], env=ws.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while _chats(ws) == 0:
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.02)
    assert _states(ws) == ["running"]
    os.kill(run.pid, sig)
    _, err = run.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert run.returncode == 130 and b"same command" in err and b"Traceback" not in err
    assert _states(ws) == ["interrupted"]

    again = ws.run("extract", *TASK, "--limit", "1")
    assert again.returncode == 0, again.stderr
    assert "the 25 requests it still lacked" in again.stdout and _states(ws) == ["finalized"]


def test_an_ondemand_run_whose_every_request_is_refused_for_itself_exits_2_and_finalizes_nothing(
    ws: Workspace,
) -> None:
    ws.server.fail_next(CHAT, count=25, status=400)
    refused = ws.run("extract", *TASK, "--limit", "1")
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "HTTP 400" in refused.stderr
    assert "retries" not in refused.stderr and not ws.cache.exists()
    assert _states(ws) == ["nothing got through"]
    ws.server.reset_stats()
    assert ws.run("extract", *TASK, "--limit", "1").returncode == 0
    assert _chats(ws) == 25 and _states(ws) == ["finalized"]
