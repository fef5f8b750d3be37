"""The account refusing (a wrong key, no credit): the run stops at once, in both modes, with one line that names
OPENAI_API_KEY and never says to retry; under cron the entry stays and status says the job is blocked on the key.

Requests are counted at the local server: a refusal must not be paid for (in requests) item after item.
"""

from __future__ import annotations

import subprocess

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

TASK = ("--task", "G1a")
CHAT = "POST /v1/chat/completions"
CONCURRENCY = 3
WRONG_KEY = "sk-wrong-key-0000000000"


def _refuse(ws: Workspace, how: str, endpoint: str) -> None:
    """``key``: the workspace's key is not the server's; ``quota``: the account behind the key has no credit."""
    if how == "key":
        env_file = ws.root / ".env"
        env_file.write_text(env_file.read_text().replace(KEY, WRONG_KEY))
    else:
        ws.server.fail_next(endpoint, count=10**6, status=429, code="insufficient_quota")


def _fix(ws: Workspace, how: str) -> None:
    if how == "key":
        env_file = ws.root / ".env"
        env_file.write_text(env_file.read_text().replace(WRONG_KEY, KEY))
    else:
        ws.server.clear_faults()


def _one_refusal_line(result: subprocess.CompletedProcess[str], how: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "OPENAI_API_KEY" in lines[0] and "refused" in lines[0]
    assert ("credit" in lines[0]) == (how == "quota")
    assert "retr" not in lines[0].lower() and "try again" not in lines[0].lower()
    assert WRONG_KEY not in result.stderr and KEY not in result.stderr


def _state(ws: Workspace) -> str:
    (job,) = ws.ledger_json("status")
    return job["state"]


@pytest.mark.parametrize("how", ["key", "quota"])
def test_ondemand_refusal_stops_within_the_concurrency_and_exits_2(ws: Workspace, how: str) -> None:
    _refuse(ws, how, CHAT)
    result = ws.run("extract", *TASK, "--concurrency", str(CONCURRENCY))
    _one_refusal_line(result, how)
    # 150 reviews; the first refusal is answered while at most CONCURRENCY - 1 others are in flight, and the SDK's
    # own retry of a 429 is not spent on one that says the account has no credit.
    assert ws.server.stats()["by_endpoint"][CHAT] <= CONCURRENCY + 1
    assert not ws.cache.exists()
    assert _state(ws) == "blocked on the key"

    _fix(ws, how)
    again = ws.run("extract", *TASK, "--concurrency", str(CONCURRENCY))
    assert again.returncode == 0, again.stderr
    assert _state(ws) == "finalized"


def test_a_refused_key_leaves_a_good_baseline_result_as_it_was(ws: Workspace) -> None:
    policy = ("--policy", "G1_allergy_V2", "--concurrency", "2")
    assert ws.run("baseline", *policy).returncode == 0
    results = ws.root / "results" / "baseline" / "G1_allergy_V2_K25" / "results.json"
    good = results.read_bytes()
    ws.server.reset_stats()
    _refuse(ws, "key", CHAT)
    _one_refusal_line(ws.run("baseline", *policy, "--rerun"), "key")  # ask for all again
    assert ws.server.stats()["by_endpoint"][CHAT] <= 3
    assert results.read_bytes() == good


@pytest.mark.parametrize("how", ["key", "quota"])
def test_batch_submit_refused_sends_one_request_and_creates_nothing(ws: Workspace, how: str) -> None:
    _refuse(ws, how, "POST /v1/files")
    result = ws.run("extract", *TASK, *submit_args(ws))
    _one_refusal_line(result, how)
    assert ws.server.stats()["requests"] == 1
    assert ws.server.batch_ids() == [] and ws.cron_lines() == {}
    assert _state(ws) == "blocked on the key"

    _fix(ws, how)
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    assert len(ws.server.batch_ids()) == 1 and _state(ws) == "running"


@pytest.mark.parametrize("how", ["key", "quota"])
def test_a_cron_fetch_refused_logs_one_line_keeps_its_entry_and_status_says_blocked(ws: Workspace, how: str) -> None:
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    (batch,) = ws.batches()
    command = ws.cron_lines()[f"ADDM_BATCH_{batch}"]
    log = ws.root / "data" / "logs" / f"{batch}.log"
    ws.server.set_batch_outcome(batch, "completed")
    _refuse(ws, how, "GET /v1/batches/")
    ws.server.reset_stats()
    for _ in range(2):
        run = ws.run_cron_line(command)
        assert (run.returncode, run.stdout, run.stderr) == (2, "", "")
    assert ws.server.stats()["requests"] == 2  # one status check per cron run, no retry of the refusal
    logged = subprocess.CompletedProcess([], 2, "", log.read_text())
    logged.stderr = logged.stderr.strip().splitlines()[-1] + "\n"
    _one_refusal_line(logged, how)
    assert len(log.read_text().strip().splitlines()) == 2
    assert ws.batches() == [batch]
    (job,) = ws.ledger_json("status")
    assert job["state"] == "blocked on the key"
    timeline = [e["type"] for e in ws.ledger_json("show", job["job_id"])]
    assert timeline.count("AccessRefused") == 1  # the log grows with news only

    _fix(ws, how)
    assert ws.run_cron_line(command).returncode == 0
    assert ws.batches() == [] and _state(ws) == "finalized"
    assert len(orjson.loads(ws.cache.read_bytes())["G1a"]) == 150


@pytest.mark.parametrize(
    ("status", "code", "says"),
    [(403, None, "may not do this"), (400, "billing_hard_limit_reached", "no credit left")],
)
def test_no_permission_and_a_billing_limit_are_refusals_too(
    ws: Workspace, status: int, code: str | None, says: str
) -> None:
    ws.server.fail_next("POST /v1/files", count=10, status=status, code=code)
    result = ws.run("extract", *TASK, *submit_args(ws))
    assert result.returncode == 2 and ws.server.stats()["requests"] == 1
    (line,) = result.stderr.strip().splitlines()
    assert "OPENAI_API_KEY" in line and says in line and "retr" not in line.lower()
