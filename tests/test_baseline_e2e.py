"""run_baseline in both modes: the same results.json, failure rows kept, finalized exactly once."""

from __future__ import annotations

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

from addm_integration.addm.custom_id import SampleId

POLICY = "G1_allergy_V2"
MAY_DIFFER = {"job_id", "timestamp", "mode"}
ROW_MAY_DIFFER = {"latency_ms", "cost_usd"}


def _results(ws: Workspace) -> dict:
    return orjson.loads((ws.root / "results" / "baseline" / f"{POLICY}_K25" / "results.json").read_bytes())


def _comparable(results: dict) -> dict:
    out = {k: v for k, v in results.items() if k not in MAY_DIFFER}
    out["results"] = [{k: v for k, v in r.items() if k not in ROW_MAY_DIFFER} for r in results["results"]]
    return out


def _business_ids(ws: Workspace) -> list[str]:
    lines = (ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl").read_bytes().splitlines()
    return [orjson.loads(line)["business_id"] for line in lines]


def _ondemand(ws: Workspace, *args: str) -> dict:
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)
    result = ws.run("baseline", "--policy", POLICY, "--concurrency", "1", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    return _results(ws)


def _batch(ws: Workspace, fail: dict[str, int] | None = None) -> tuple[dict, str]:
    assert ws.run("baseline", "--policy", POLICY, "--rerun", *submit_args(ws)).returncode == 0
    (batch_id,) = ws.batches()
    ws.server.set_batch_outcome(batch_id, "completed", fail=fail)
    fetched = ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"])
    assert fetched.returncode == 0
    return _results(ws), batch_id


def test_ondemand_and_batch_write_the_same_results(ws: Workspace) -> None:
    live = _ondemand(ws)
    batch, _ = _batch(ws)
    assert (live["mode"], batch["mode"]) == ("ondemand", "24hrbatch")
    assert _comparable(batch) == _comparable(live)
    assert live["n"] == 6 and [r["business_id"] for r in live["results"]] == _business_ids(ws)
    assert all(r["latency_ms"] is not None for r in live["results"])
    assert all(r["latency_ms"] is None for r in batch["results"])
    # The batch price is half the ondemand price, row by row.
    for a, b in zip(live["results"], batch["results"], strict=True):
        assert b["cost_usd"] == pytest.approx(a["cost_usd"] / 2)


def test_failed_restaurants_are_failure_rows_in_both_modes(ws: Workspace) -> None:
    ids = _business_ids(ws)
    ws.server.fail_next("POST /v1/chat/completions", count=2, status=400)
    live = _ondemand(ws)  # concurrency 1: the first two restaurants fail
    failed = {SampleId(POLICY, b).encode(): 400 for b in ids[:2]}
    batch, _ = _batch(ws, fail=failed)
    assert _comparable(batch) == _comparable(live)
    rows = {r["business_id"]: r for r in batch["results"]}
    for b in ids[:2]:
        assert rows[b]["error"].startswith("HTTP 400") and rows[b]["correct"] is None
    assert batch["n_failed"] == 2
    assert batch["total"] == sum(1 for r in batch["results"] if r["correct"] is not None) == 4


def test_finished_fetch_rerun_changes_nothing_and_finalizes_once(ws: Workspace) -> None:
    _, batch_id = _batch(ws)
    before = ws.files()
    again = ws.run("baseline", "--policy", POLICY, "--batch-id", batch_id)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert ws.files() == before
    (job,) = ws.ledger_json("status")
    timeline = ws.ledger_json("show", job["job_id"])
    assert [e["type"] for e in timeline].count("JobFinalized") == 1


def test_missing_ground_truth_writes_results_with_null_metrics(ws: Workspace) -> None:
    (ws.root / "data" / "answers" / "yelp" / f"{POLICY}_K25_groundtruth.json").unlink()
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)
    result = ws.run("baseline", "--policy", POLICY, env=env)
    assert result.returncode == 0
    assert "no ground truth" in result.stderr
    results = _results(ws)
    assert results["accuracy"] is None and results["auprc"]["ordinal_auprc"] is None
    assert results["n"] == 6


def test_dev_run_folder_is_fixed_at_submit_not_at_fetch(ws: Workspace) -> None:
    assert ws.run("baseline", "--policy", POLICY, "--dev", *submit_args(ws)).returncode == 0
    (job,) = ws.ledger_json("status")
    timeline = ws.ledger_json("show", job["job_id"])
    run_dir = timeline[0]["data"]["params"]["pipeline"]["run_dir"]
    assert run_dir.startswith("results/dev/") and run_dir.endswith(f"_{POLICY}_K25")
    (batch_id,) = ws.batches()
    ws.server.set_batch_outcome(batch_id, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"]).returncode == 0
    assert (ws.root / run_dir / "results.json").is_file()
    assert not (ws.root / "results" / "baseline").exists()
