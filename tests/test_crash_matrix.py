"""kill -9 at every step of submit and of fetch: the next run converges to what an uninterrupted run gives.

After each crash and rerun: the cache holds exactly the expected judgments, audit shows each custom_id applied
once, the server holds exactly one batch for the job, the tab file no entry, the ledger verifies and the job was
finalized once. Kills land either at a named instant (``ADDM_FAILPOINT``) or inside an HTTP call the server holds
open.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import pytest
from conftest import Workspace, submit_args
from fake_openai import chat_completion

from addm_integration.addm.custom_id import ReviewId
from addm_integration.addm.extract import facts, parse_judgment, request_body
from addm_integration.addm.inputs import read_task

TASK = ("--task", "G1a")


def _expected(ws: Workspace) -> tuple[list[str], dict[str, dict]]:
    """All custom_ids, and the cache an uninterrupted run writes when the first request fails with a 400."""
    task = read_task(ws.root / "data" / "tasks" / "yelp" / "G1a.json")
    ids, cache = [], {}
    for line in (ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        for review in record["reviews"]:
            ids.append(ReviewId("G1a", record["business_id"], review["review_id"]).encode())
            _, body = chat_completion(request_body(task, review, "gpt-5-nano"))
            text = body["choices"][0]["message"]["content"]
            cache[review["review_id"]] = parse_judgment(
                task, review["review_id"], facts(record["business_id"], review), text
            )
    del cache[ids[0].rsplit("::", 1)[1]]
    return ids, cache


def _argv(ws: Workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "addm_integration.extract", "--root", str(ws.root), *TASK, *args]


def _killed_at(ws: Workspace, failpoint: str, *args: str) -> None:
    result = subprocess.run(_argv(ws, *args), env=ws.env(ADDM_FAILPOINT=failpoint), capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, (failpoint, result.stderr)


def _killed_inside(ws: Workspace, endpoint: str, landed: Callable[[], bool], *args: str) -> None:
    """Kill the run while the server holds its request to ``endpoint``; wait until the held call takes effect."""
    key = endpoint.replace("/v1/files/", "/v1/files/{id}/").rstrip("/")
    ws.server.hold_next(endpoint, seconds=1.5)
    proc = subprocess.Popen(_argv(ws, *args), env=ws.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(k.startswith(key) for k in ws.server.stats()["by_endpoint"]):
        assert proc.poll() is None and time.monotonic() < deadline, f"{endpoint} was never called"
        time.sleep(0.01)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    while not landed():  # the server finishes the held call after the client is gone, as a real one would
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _submit(ws: Workspace) -> str:
    result = subprocess.run(_argv(ws, *submit_args(ws)), env=ws.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (batch_id,) = ws.server.batch_ids()
    return batch_id


def _fetch(ws: Workspace, batch_id: str) -> None:
    result = subprocess.run(_argv(ws, "--batch-id", batch_id), env=ws.env(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _complete(ws: Workspace, ids: list[str]) -> str:
    (batch_id,) = ws.server.batch_ids()
    ws.server.set_batch_outcome(batch_id, "completed", fail={ids[0]: 400})
    return batch_id


def _converged(ws: Workspace, ids: list[str], cache: dict[str, dict]) -> None:
    assert orjson.loads(ws.cache.read_bytes()) == {"G1a": cache}
    (batch_id,) = ws.server.batch_ids()
    applied = [e["custom_id"] for e in ws.ledger_json("audit", "--batch", batch_id)]
    assert sorted(applied) == sorted(ids[1:])
    assert ws.cron_lines() == {}
    assert ws.run("ledger", "verify").returncode == 0
    (job,) = ws.ledger_json("status")
    assert (job["state"], job["applied"], job["failed"]) == ("finalized", len(ids) - 1, 1)
    assert [e["type"] for e in ws.ledger_json("show", job["job_id"])].count("JobFinalized") == 1


SUBMIT_POINTS = ["before-upload", "after-upload", "after-create", "before-cron", "after-cron"]
FETCH_POINTS = [
    "after-download-output",
    "after-download-error",
    "after-apply-write",
    "before-finalize",
    "after-finalize-write",
    "before-cron-remove",
    "after-cron-remove",
]


@pytest.mark.parametrize("failpoint", SUBMIT_POINTS)
def test_kill_during_submit_then_rerun_sends_one_batch(ws: Workspace, failpoint: str) -> None:
    ids, cache = _expected(ws)
    _killed_at(ws, failpoint, *submit_args(ws))
    _submit(ws)
    assert len(ws.cron_lines()) == 1
    batch_id = _complete(ws, ids)
    _fetch(ws, batch_id)
    _converged(ws, ids, cache)


@pytest.mark.parametrize("endpoint", ["POST /v1/files", "POST /v1/batches"])
def test_kill_inside_a_held_submit_call_then_rerun_adopts_what_the_server_made(ws: Workspace, endpoint: str) -> None:
    ids, cache = _expected(ws)
    if endpoint == "POST /v1/files":
        landed = lambda: any(n.startswith("addm-") for n in ws.server.file_names())  # noqa: E731
    else:
        landed = lambda: len(ws.server.batch_ids()) == 1  # noqa: E731
    _killed_inside(ws, endpoint, landed, *submit_args(ws))
    _submit(ws)
    assert sum(n.startswith("addm-") for n in ws.server.file_names()) == 1  # the orphan upload was adopted
    batch_id = _complete(ws, ids)
    _fetch(ws, batch_id)
    _converged(ws, ids, cache)


@pytest.mark.parametrize("failpoint", FETCH_POINTS)
def test_kill_during_fetch_then_rerun_applies_each_item_once(ws: Workspace, failpoint: str) -> None:
    ids, cache = _expected(ws)
    batch_id = _submit(ws)
    _complete(ws, ids)
    _killed_at(ws, failpoint, "--batch-id", batch_id)
    _fetch(ws, batch_id)
    _converged(ws, ids, cache)


def test_kill_inside_a_held_download_then_rerun_downloads_again(ws: Workspace) -> None:
    ids, cache = _expected(ws)
    batch_id = _submit(ws)
    _complete(ws, ids)
    _killed_inside(ws, "GET /v1/files/", lambda: True, "--batch-id", batch_id)
    assert not (ws.root / "data" / "batches" / batch_id / "output.jsonl").exists()
    _fetch(ws, batch_id)
    _converged(ws, ids, cache)


def test_kill_during_an_ondemand_run_then_rerun_completes_without_asking_twice(ws: Workspace) -> None:
    _, cache = _expected(ws)
    ws.server.latency_ms = 150
    env = ws.env(OPENAI_API_KEY="sk-test-secret-9f3b2c7d1e", OPENAI_BASE_URL=ws.server.base_url)
    argv = _argv(ws, "--concurrency", "2")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = ws.root / "data" / "ledger" / "events.jsonl"
    deadline = time.monotonic() + 60
    while not (events.exists() and b"ItemsApplied" in events.read_bytes()):  # the first chunk is durable
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    kept = len(orjson.loads(ws.cache.read_bytes())["G1a"])
    assert 0 < kept < len(cache) + 1
    ws.server.latency_ms = 0
    ws.server.reset_stats()
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert ws.server.stats()["requests"] == len(cache) + 1 - kept  # only what was missing was asked for
    expected = {**cache}
    judged = orjson.loads(ws.cache.read_bytes())["G1a"]
    assert {k: judged[k] for k in expected} == expected
    (job,) = ws.ledger_json("status")
    assert job["state"] == "finalized" and ws.run("ledger", "verify").returncode == 0
