"""extract end to end, through real processes, the real SDK over HTTP, and the cron line run as cron runs it."""

from __future__ import annotations

import orjson
from conftest import KEY, Workspace, submit_args

from addm_integration.addm.custom_id import ReviewId


def _expected_reviews(ws: Workspace) -> dict[str, str]:
    """review_id -> business_id of every review in the dataset."""
    out = {}
    for line in (ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        out.update({r["review_id"]: record["business_id"] for r in record["reviews"]})
    return out


def _check_judgments(ws: Workspace, reviews: dict[str, str]) -> dict[str, dict]:
    task = orjson.loads((ws.root / "data" / "tasks" / "yelp" / "G1a.json").read_bytes())
    cache = orjson.loads(ws.cache.read_bytes())["G1a"]
    assert set(cache) == set(reviews)
    for review_id, judgment in cache.items():
        assert judgment["review_id"] == review_id
        assert isinstance(judgment["is_relevant"], bool)
        assert {"date", "stars", "useful"} <= set(judgment)
        for field, values in task["fields"].items():
            if judgment["is_relevant"]:
                assert judgment[field] in values
            else:
                assert field not in judgment
    return cache


def test_batch_submit_cron_fetch_applies_each_review_once_and_then_goes_quiet(ws: Workspace) -> None:
    submitted = ws.run("extract", "--task", "G1a", *submit_args(ws))
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted" in submitted.stdout

    lines = ws.cron_lines()
    assert len(lines) == 1
    ((marker, command),) = lines.items()
    batch_id = marker.removeprefix("ADDM_BATCH_")
    assert KEY not in ws.tab.read_text()

    # While the batch runs, the cron line prints nothing and exits 0.
    running = ws.run_cron_line(command)
    assert (running.returncode, running.stdout, running.stderr) == (0, "", "")
    log = ws.root / "data" / "logs" / f"{batch_id}.log"
    assert log.read_text() == ""
    assert not ws.cache.exists()

    ws.server.set_batch_outcome(batch_id, "completed")
    done = ws.run_cron_line(command)
    assert done.returncode == 0
    assert "applied" in log.read_text()

    reviews = _expected_reviews(ws)
    _check_judgments(ws, reviews)
    assert ws.cron_lines() == {}

    audit = ws.ledger_json("audit", "--batch", batch_id)
    applied = [e["custom_id"] for e in audit]
    expected = {ReviewId("G1a", business, review).encode() for review, business in reviews.items()}
    assert sorted(applied) == sorted(expected)  # every custom_id exactly once
    assert all(e["kind"] == "apply" and e["attempt"] == 1 and e["job_id"] for e in audit)

    # One more run: no file changes, no request.
    before = ws.files()
    ws.server.reset_stats()
    again = ws.run("extract", "--task", "G1a", "--batch-id", batch_id, "--crontab-file", str(ws.tab))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert ws.server.stats()["requests"] == 0
    assert ws.files() == before

    status = ws.ledger_json("status")
    assert [(j["pipeline"], j["mode"], j["state"], j["applied"], j["pending"]) for j in status] == [
        ("extract", "24hrbatch", "finalized", len(reviews), 0)
    ]
    for path, data in ws.files().items():
        assert KEY.encode() not in data or path == ".env", path


def test_ondemand_and_batch_give_identical_cache_entries(ws: Workspace, tmp_path) -> None:
    ondemand = ws.run("extract", "--task", "G1a", env=ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url))
    assert ondemand.returncode == 0, ondemand.stderr
    live = orjson.loads(ws.cache.read_bytes())
    ws.cache.unlink()

    assert ws.run("extract", "--task", "G1a", *submit_args(ws)).returncode == 0
    (batch_id,) = ws.batches()
    ws.server.set_batch_outcome(batch_id, "completed")
    fetched = ws.run("extract", "--task", "G1a", "--batch-id", batch_id)
    assert fetched.returncode == 0, fetched.stderr
    assert orjson.loads(ws.cache.read_bytes()) == live
    assert len(live["G1a"]) == len(_expected_reviews(ws))


def test_ondemand_failures_stay_missing_and_the_next_run_asks_only_for_them(ws: Workspace) -> None:
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)
    ws.server.fail_next("POST /v1/chat/completions", count=3, status=400)
    first = ws.run("extract", "--task", "G1a", "--concurrency", "4", env=env)
    assert first.returncode == 0, first.stderr
    assert "3 requests failed" in first.stdout
    reviews = _expected_reviews(ws)
    assert len(orjson.loads(ws.cache.read_bytes())["G1a"]) == len(reviews) - 3

    ws.server.reset_stats()
    second = ws.run("extract", "--task", "G1a", env=env)
    assert second.returncode == 0, second.stderr
    assert ws.server.stats()["by_endpoint"] == {"POST /v1/chat/completions": 3}
    _check_judgments(ws, reviews)


def test_second_submit_of_the_same_job_sends_nothing(ws: Workspace) -> None:
    assert ws.run("extract", "--task", "G1a", *submit_args(ws)).returncode == 0
    ws.server.reset_stats()
    again = ws.run("extract", "--task", "G1a", *submit_args(ws))
    assert again.returncode == 0, again.stderr
    assert "already submitted" in again.stdout
    assert "POST /v1/batches" not in ws.server.stats()["by_endpoint"]
    assert "POST /v1/files" not in ws.server.stats()["by_endpoint"]
    assert len(ws.cron_lines()) == 1


def test_wait_polls_in_the_foreground_until_finalized(ws: Workspace) -> None:
    ws.server.set_default_outcome(status="completed")
    result = ws.run("extract", "--task", "G1a", *submit_args(ws, "--wait", "--poll-interval", "0"))
    assert result.returncode == 0, result.stderr
    assert "reviews judged" in result.stdout
    assert ws.cron_lines() == {}
    _check_judgments(ws, _expected_reviews(ws))


def test_ondemand_with_the_service_down_exits_75_and_keeps_nothing_half_done(ws: Workspace) -> None:
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL="http://127.0.0.1:9/v1")  # nothing listens there
    result = ws.run("extract", "--task", "G1a", "--limit", "1", env=env)
    assert result.returncode == 75, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "next run retries" in result.stderr
    assert not ws.cache.exists()
