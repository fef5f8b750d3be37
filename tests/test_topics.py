"""Topic mode: each review judged by several models several times, the runs voted into one judgment per review."""

from __future__ import annotations

import signal
import subprocess

import orjson
from conftest import Workspace, submit_args

from addm_integration.addm.custom_id import RunId, parse
from addm_integration.engine.advance import input_lines

TOPIC = "G1_spill"
MODELS = ("--models", "gpt-5-mini:2,gpt-5-nano:2")
FIELDS = {
    "spill_size": {"none": "no spill", "small": "a glass tipped over", "large": "a table flooded"},
    "staff_reaction": {"none": "not described", "helped": "staff cleaned up", "ignored": "nobody came"},
}


def _topic(ws: Workspace, fields: dict = FIELDS) -> None:
    definition = {"task_id": TOPIC, "description": "Drink spills.", "fields": fields, "policies": ["G1_spill_V1"]}
    (ws.root / "data" / "tasks" / "yelp" / f"{TOPIC}.json").write_bytes(orjson.dumps(definition))


def _judgements(ws: Workspace) -> dict:
    return orjson.loads((ws.root / "data" / "answers" / "yelp" / "judgement_cache.json").read_bytes())


def _without_times(block: dict) -> dict:
    return {k: {f: v for f, v in j.items() if not f.endswith("_at")} for k, j in block.items()}


def _n_reviews(ws: Workspace, limit: int) -> int:
    lines = (ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl").read_bytes().splitlines()
    return sum(len(orjson.loads(line)["reviews"]) for line in lines[:limit])


def _batch_until_done(ws: Workspace, *args: str) -> set[str]:
    """Submit in 24hrbatch mode, then complete every batch and run its entry as cron would, until none is left."""
    result = ws.run("extract", *args, *submit_args(ws))
    assert result.returncode == 0, result.stderr
    seen: set[str] = set()
    while ws.batches():
        for batch_id in ws.batches():
            ws.server.set_batch_outcome(batch_id, "completed")
            assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"]).returncode == 0
            seen.add(batch_id)
    return seen


def test_two_models_two_runs_give_the_same_raw_runs_and_votes_in_both_modes(ws: Workspace, tmp_path) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, *MODELS, "--limit", "2")
    live = ws.run("extract", *args)
    assert live.returncode == 0, live.stderr
    n = _n_reviews(ws, 2)
    assert f"{n}/{n} reviews aggregated" in live.stdout
    ondemand = _judgements(ws)

    (ws.root / "data" / "answers" / "yelp" / "judgement_cache.json").unlink()
    batches = _batch_until_done(ws, *args, "--max-batch-requests", str(n + 3))
    batched = _judgements(ws)

    assert len(ondemand["raw"]) == 4 * n and len(ondemand["aggregated"]) == n
    assert _without_times(batched["raw"]) == _without_times(ondemand["raw"])
    assert _without_times(batched["aggregated"]) == _without_times(ondemand["aggregated"])
    assert batched["_metadata"][TOPIC]["model_config"] == {"gpt-5-mini": 2, "gpt-5-nano": 2}
    some = next(iter(batched["aggregated"].values()))
    assert some["_aggregated"] is True and set(some["_confidence"]) >= set(FIELDS)
    assert {"date", "stars", "useful", "review_id"} <= set(some)
    for batch_id in batches:  # one model per batch
        lines = list(input_lines(ws.root / "data" / "batches" / batch_id / "input.jsonl"))
        assert len({orjson.loads(raw)["body"]["model"] for _, raw in lines}) == 1
        assert all(type(parse(cid)) is RunId for cid, _ in lines)


def test_a_review_missing_only_run_2_of_nano_is_asked_exactly_for_it(ws: Workspace) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, *MODELS, "--limit", "1")
    assert ws.run("extract", *args).returncode == 0
    path = ws.root / "data" / "answers" / "yelp" / "judgement_cache.json"
    data = orjson.loads(path.read_bytes())
    first, second = sorted({key.split("::")[1] for key in data["raw"]})[:2]
    # the first review lacks run 2 of nano but holds a stray run 3: counting its nano runs would say "complete"
    stray = data["raw"].pop(f"{TOPIC}::{first}::gpt-5-nano::run2")
    data["raw"][f"{TOPIC}::{first}::gpt-5-nano::run3"] = {**stray, "_run": 3}
    del data["raw"][f"{TOPIC}::{second}::gpt-5-nano::run1"]
    path.write_bytes(orjson.dumps(data))

    result = ws.run("extract", *args, *submit_args(ws, "--no-cron"))
    assert result.returncode == 0, result.stderr
    (batch_dir,) = (ws.root / "data" / "batches").iterdir()
    asked = [parse(cid) for cid, _ in input_lines(batch_dir / "input.jsonl")]
    assert sorted((r.review_id, r.model, r.run) for r in asked) == sorted(
        [(first, "gpt-5-nano", 2), (second, "gpt-5-nano", 1)]
    )


def test_a_changed_topic_schema_asks_again_for_every_run(ws: Workspace) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, *MODELS, "--limit", "1")
    assert ws.run("extract", *args).returncode == 0
    again = ws.run("extract", *args)
    assert "nothing to do" in again.stdout
    _topic(ws, {**FIELDS, "mop_used": {"no": "no mop", "yes": "a mop"}})
    result = ws.run("extract", *args, "--dry-run")
    n = _n_reviews(ws, 1)
    assert f"{4 * n} requests" in result.stdout, result.stdout
    assert ws.run("extract", *args).returncode == 0
    data = _judgements(ws)
    assert all("mop_used" in j for j in data["aggregated"].values())
    assert len(data["aggregated"]) == n


def test_the_local_server_refuses_a_batch_of_mixed_models_as_the_service_does() -> None:
    from fake_openai import parse_batch_input

    lines = [
        {"custom_id": f"c{n}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": model}}
        for n, model in enumerate(("gpt-5-mini", "gpt-5-nano"))
    ]
    _, _, errors = parse_batch_input(b"\n".join(orjson.dumps(x) for x in lines), "/v1/chat/completions")
    assert [(e["code"], e["line"]) for e in errors] == [("model_mismatch", 2)]


def test_the_apply_that_brings_a_reviews_last_run_stores_its_vote_and_finalize_writes_nothing_more(
    ws: Workspace,
) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, "--models", "gpt-5-mini:1,gpt-5-nano:1", "--limit", "1")
    assert ws.run("extract", *args, *submit_args(ws)).returncode == 0
    first, second = ws.batches()  # one per model
    ws.server.set_batch_outcome(first, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{first}"]).returncode == 0
    assert "aggregated" not in _judgements(ws)  # every review still lacks its run of the other model

    ws.server.set_batch_outcome(second, "completed")
    command = ws.cron_lines()[f"ADDM_BATCH_{second}"]
    killed = subprocess.run(["/bin/sh", "-c", command], env=ws.env(ADDM_FAILPOINT="before-finalize"), timeout=60)
    assert killed.returncode == 128 + signal.SIGKILL  # as the shell reports a child killed
    n = _n_reviews(ws, 1)
    path = ws.root / "data" / "answers" / "yelp" / "judgement_cache.json"
    stored = path.read_bytes()
    assert len(orjson.loads(stored)["aggregated"]) == n  # written with the last runs, before any finalize

    assert ws.run_cron_line(command).returncode == 0
    log = (ws.root / "data" / "logs" / f"{second}.log").read_text()
    assert f"{n}/{n} reviews aggregated" in log, log
    assert path.read_bytes() == stored  # the finalize had nothing left to write


def test_votes_missing_for_reviews_complete_before_the_job_are_stored_at_its_finalize(ws: Workspace) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, *MODELS, "--limit", "1")
    assert ws.run("extract", *args).returncode == 0
    data = _judgements(ws)
    votes = data.pop("aggregated")  # lost, or never written by the tool that stored the runs
    del data["raw"][next(iter(data["raw"]))]  # and one review lacks a run: the job asks for it alone
    (ws.root / "data" / "answers" / "yelp" / "judgement_cache.json").write_bytes(orjson.dumps(data))
    result = ws.run("extract", *args)
    assert result.returncode == 0, result.stderr
    assert _without_times(_judgements(ws)["aggregated"]) == _without_times(votes)


def test_dry_run_counts_the_batches_a_submit_sends_one_model_per_batch(ws: Workspace) -> None:
    _topic(ws)
    args = ("--topic", TOPIC, *MODELS, "--limit", "2", "--llm-mode", "24hrbatch")
    dry = ws.run("extract", *args, "--dry-run", "--no-cron")
    assert dry.returncode == 0, dry.stderr
    sent = _batch_until_done(ws, *args)
    assert f"{len(sent)} batch(es)" in dry.stdout, (dry.stdout, sent)
