"""What the real service does and does not promise: a cancelled or expired batch may write no line for what it
never ran, the batch listing has no documented order, and a long answer needs the SDK's own read timeout."""

from __future__ import annotations

import time

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

from addm_integration.provider import openai_api
from addm_integration.store.credentials import Credentials

TASK = ("--task", "G1a")
N_REVIEWS = 150


def _cached(ws: Workspace) -> int:
    return len(orjson.loads(ws.cache.read_bytes())["G1a"]) if ws.cache.exists() else 0


def _fetch(ws: Workspace, batch: str) -> str:
    result = ws.run("extract", *TASK, "--batch-id", batch)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_what_a_cancelled_batch_wrote_no_line_for_is_not_requeued(ws: Workspace) -> None:
    ws.server.omit_unexecuted = True
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "cancelled", complete_fraction=0.25)
    said = _fetch(ws, batch)
    ran = N_REVIEWS // 4
    assert f"cancelled: {ran} applied, {N_REVIEWS - ran} failed" in said and "requeued" not in said
    assert ws.batches() == [] and len(ws.server.batch_ids()) == 1
    (job,) = ws.ledger_json("status")
    assert (job["state"], job["failed"]) == ("finalized", N_REVIEWS - ran)
    events = ws.ledger_json("show", job["job_id"])
    (failed,) = [e for e in events if e["type"] == "ItemsFailed"]
    assert {reason for _, reason, _ in failed["data"]["failures"]} == {"batch_cancelled"}


def test_what_an_expired_batch_wrote_no_line_for_is_requeued(ws: Workspace) -> None:
    ws.server.omit_unexecuted = True
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "expired", complete_fraction=0.5)
    assert f"requeued {N_REVIEWS // 2} retryable failures" in _fetch(ws, batch)
    (second,) = ws.batches()
    ws.server.set_batch_outcome(second, "completed")
    _fetch(ws, second)
    assert _cached(ws) == N_REVIEWS


def test_adoption_finds_its_batch_whatever_the_order_of_the_batch_listing(ws: Workspace) -> None:
    from openai import OpenAI

    api = OpenAI(api_key=KEY, base_url=ws.server.base_url)
    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-5-nano"}}
    ws.server._time = lambda: time.time() - 7200  # another job's batch, two hours old
    old = api.files.create(file=("other.jsonl", orjson.dumps(line) + b"\n"), purpose="batch")
    api.batches.create(input_file_id=old.id, endpoint="/v1/chat/completions", completion_window="24h")
    ws.server._time = time.time
    ws.server.batch_list_order = "asc"  # oldest first: the older batch comes before ours

    crashed = ws.run("extract", *TASK, *submit_args(ws), env=ws.env(ADDM_FAILPOINT="after-create"))
    assert crashed.returncode == -9
    again = ws.run("extract", *TASK, *submit_args(ws))
    assert again.returncode == 0, again.stderr
    assert len(ws.server.batch_ids()) == 2  # the old one and ours, adopted: not a second, paid copy
    (job,) = ws.ledger_json("status")
    assert [b["batch_id"] for b in job["batches"]] == ws.server.batch_ids()[1:]


def test_the_read_timeout_is_the_sdk_default_unless_addm_timeout_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials("sk-anything", "http://127.0.0.1:9/v1")
    monkeypatch.delenv(openai_api.TIMEOUT_ENV, raising=False)
    assert openai_api.client(creds).timeout.read == 600
    monkeypatch.setenv(openai_api.TIMEOUT_ENV, "1800")
    assert openai_api.async_client(creds).timeout.read == 1800


@pytest.mark.parametrize("value", ["soon", "-5"])
def test_a_bad_addm_timeout_is_bad_input_before_anything_is_sent(ws: Workspace, value: str) -> None:
    result = ws.run("extract", *TASK, env=ws.env(ADDM_TIMEOUT=value))
    assert result.returncode == 2 and "ADDM_TIMEOUT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert ws.server.stats()["requests"] == 0
    assert not (ws.root / "data" / "ledger" / "events.jsonl").exists()
