"""The queue that paces itself: parts wait for room under --max-enqueued-tokens, the service's own refusals
(token_limit_exceeded) are sent again by themselves, and cron runs alone take a job to its finalize."""

from __future__ import annotations

import orjson
from conftest import Workspace, submit_args

TASK = ("--task", "G1a", "--limit", "1", "--max-batch-requests", "9")


def _parts_bytes(ws: Workspace) -> int:
    dry = ws.run("extract", *TASK, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    return int(dry.stdout.split(" requests, ")[1].split(" bytes")[0].replace(",", ""))


def test_a_queue_capped_at_two_parts_finishes_the_job_through_cron_runs_alone(ws: Workspace) -> None:
    clock = [1_900_000_000.0]
    ws.server._time = lambda: clock[0]
    total = _parts_bytes(ws)  # three parts of nine requests (25 reviews)
    cap = total // 4 * 2 // 3 + total // 4 // 6  # the tool's estimate (4 bytes a token) lets two parts run
    ws.server.enqueued_token_limit = total // 4 // 3  # the service, counting prompt text only, lets one run
    first = ws.run("extract", *TASK, *submit_args(ws, "--max-enqueued-tokens", str(cap)))
    assert first.returncode == 0, first.stderr
    assert "1 more part(s) wait for room" in first.stdout
    assert len(ws.batches()) == 2
    (job,) = ws.ledger_json("status")
    assert job["parts"] == {"sent": 2, "waiting": 1, "done": 0}
    assert "1 waiting for room" in ws.run("ledger", "status").stdout

    refused = runs = 0
    while ws.cron_lines() and runs < 40:
        clock[0] += ws.server.batch_delay / 2  # validated at a fifth of the delay, done at the whole
        for command in list(ws.cron_lines().values()):
            result = ws.run_cron_line(command)
            assert result.returncode == 0, result.stderr
            runs += 1
        refused = sum(
            b.obj["status"] == "failed" and b.obj["errors"]["data"][0]["code"] == "token_limit_exceeded"
            for b in ws.server._batches.values()
        )
    cache = orjson.loads(ws.cache.read_bytes())["G1a"]
    reviews = orjson.loads((ws.root / "data/context/yelp/dataset_K25.jsonl").read_bytes().splitlines()[0])["reviews"]
    assert set(cache) == {r["review_id"] for r in reviews}
    assert refused >= 1  # the service refused at least one batch, and it went through later all the same
    (job,) = ws.ledger_json("status")
    assert job["state"] == "finalized" and job["failed"] == 0
    attempts = {a["attempt"] for a in ws.ledger_json("audit", "--batch", job["batches"][-1]["batch_id"])}
    assert attempts == {1}  # a refusal for tokens costs no attempt
