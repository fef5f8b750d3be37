"""Everything checkable is checked before anything is sent; runs of another K or selection side by side; a changed
task re-asked; run_baseline applies what it sent whatever happens to the dataset; ``--mode batch``."""

from __future__ import annotations

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

from addm_integration.addm import answers, metrics
from addm_integration.addm.extract import Extract
from addm_integration.store.cache import JudgmentCache
from addm_integration.store.context import Context

POLICY = "G1_allergy_V2"
GT = f"data/answers/yelp/{POLICY}_K25_groundtruth.json"


def _live(ws: Workspace) -> dict[str, str]:
    return ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)


def _results(ws: Workspace, run_dir: str) -> dict:
    return orjson.loads((ws.root / "results" / "baseline" / run_dir / "results.json").read_bytes())


def _dataset(ws: Workspace) -> list[bytes]:
    return (ws.root / "data/context/yelp/dataset_K25.jsonl").read_bytes().splitlines()


def _set_gt(ws: Workspace, business_id: str, verdict: str | None) -> None:
    path = ws.root / GT
    data = orjson.loads(path.read_bytes())
    data["restaurants"][business_id]["ground_truth"]["verdict"] = verdict
    path.write_bytes(orjson.dumps(data))


def _refused_before_sending(ws: Workspace, result, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert all(needle in line for needle in needles), line
    assert ws.server.stats()["requests"] == 0
    assert not (ws.root / "data/ledger/events.jsonl").exists() and ws.cron_lines() == {}


@pytest.mark.parametrize(
    ("verdict", "mode"),
    [(None, ("--llm-mode", "24hrbatch")), ("Medium Risk", ("--llm-mode", "ondemand")), (None, ("--dry-run",))],
)
def test_a_ground_truth_verdict_missing_or_not_a_label_is_refused_before_anything_is_sent(
    ws: Workspace, verdict: str | None, mode: tuple[str, ...]
) -> None:
    business_id = orjson.loads(_dataset(ws)[-1])["business_id"]
    _set_gt(ws, business_id, verdict)
    args = submit_args(ws) if "24hrbatch" in mode else mode
    result = ws.run("baseline", "--policy", POLICY, *args, env=_live(ws))
    _refused_before_sending(ws, result, GT, business_id)


def test_a_missing_agenda_is_refused_before_anything_is_sent(ws: Workspace) -> None:
    (ws.root / f"data/query/yelp/{POLICY}_K25_prompt.txt").unlink()
    result = ws.run("baseline", "--policy", POLICY, *submit_args(ws))
    _refused_before_sending(ws, result, f"{POLICY}_K25_prompt.txt", "not found")


def test_a_policy_whose_schema_breaks_the_strict_limits_is_refused_before_anything_is_sent(ws: Workspace) -> None:
    definition = ws.root / f"data/query/yelp/{POLICY}.json"
    definition.write_text(orjson.dumps({"policy_id": POLICY, "verdicts": [f"level {i}" for i in range(1001)]}).decode())
    result = ws.run("baseline", "--policy", POLICY, *submit_args(ws))
    _refused_before_sending(ws, result, str(definition), "1,001 enum values")


def _schema(**properties: object) -> dict:
    return answers.response_format("x", properties)["json_schema"]["schema"]


def test_strict_mode_rules_and_limits_are_checked() -> None:
    string = {"type": "string"}
    valid = _schema(a=string, b={"type": "array", "items": answers.strict_object({"c": string})})
    assert answers.check_strict(valid) is None
    open_object = {"type": "object", "properties": {"b": string}, "required": ["b"]}
    assert "additionalProperties" in answers.check_strict(_schema(a=open_object))
    optional = {**open_object, "additionalProperties": False, "required": []}
    assert "required" in answers.check_strict(_schema(a=optional))
    nested: dict = string
    for _ in range(10):
        nested = answers.strict_object({"n": nested})
    assert "10 levels" in answers.check_strict(_schema(a=nested))
    assert "5,001 properties" in answers.check_strict(_schema(**{f"p{i}": string for i in range(5001)}))
    wide = {"type": "string", "enum": [f"{i:060d}" for i in range(251)]}
    assert "15,000" in answers.check_strict(_schema(a=wide))
    assert answers.check_strict(_schema(a={"type": "string", "enum": [f"{i:060d}" for i in range(250)]})) is None


def test_runs_of_another_k_or_selection_are_written_side_by_side(ws: Workspace) -> None:
    for args in ((), ("-n", "3"), ("-n", "2", "--skip", "2")):
        result = ws.run("baseline", "--policy", POLICY, *args, env=_live(ws))
        assert result.returncode == 0, result.stderr
    full, first3, middle = (_results(ws, f"{POLICY}_K25{s}") for s in ("", "_n3", "_n2_s2"))
    ids = [orjson.loads(line)["business_id"] for line in _dataset(ws)]
    assert [r["business_id"] for r in full["results"]] == ids
    assert [r["business_id"] for r in first3["results"]] == ids[:3]
    assert [r["business_id"] for r in middle["results"]] == ids[2:4]
    for results in (full, first3, middle):
        assert results["run_id"] == POLICY and results["job_id"].startswith("job_")
        assert results["verdicts"] == ["Low Risk", "High Risk", "Critical Risk"]


def test_results_without_ground_truth_hold_no_count_a_reader_would_divide(ws: Workspace) -> None:
    (ws.root / GT).unlink()
    assert ws.run("baseline", "--policy", POLICY, env=_live(ws)).returncode == 0
    results = _results(ws, f"{POLICY}_K25")
    # Upstream's reader prints accuracy * 100 whenever correct and total are both numbers.
    assert (results["accuracy"], results["correct"], results["total"]) == (None, None, None)
    assert isinstance(results["n"], int) and results["run_id"] == POLICY


def _judged(ws: Workspace) -> dict:
    return orjson.loads(ws.cache.read_bytes())["G1a"]


def test_a_changed_task_definition_re_asks_its_reviews_and_the_dry_run_counts_them(ws: Workspace) -> None:
    args = ("extract", "--task", "G1a", "--limit", "2")
    assert ws.run(*args, env=_live(ws)).returncode == 0
    first = _judged(ws)
    assert len({j["_term_hash"] for j in first.values()}) == 1
    assert "0 requests" in ws.run(*args, "--dry-run").stdout
    task_path = ws.root / "data/tasks/yelp/G1a.json"
    task = orjson.loads(task_path.read_bytes())
    task["fields"]["portion"] = {"none": "not mentioned", "small": "too small"}
    task_path.write_bytes(orjson.dumps(task))
    dry = ws.run(*args, "--dry-run")
    assert f"{len(first)} requests" in dry.stdout, dry.stdout
    ws.server.reset_stats()
    assert ws.run(*args, env=_live(ws)).returncode == 0
    assert ws.server.stats()["by_endpoint"]["POST /v1/chat/completions"] == len(first)
    again = _judged(ws)
    assert set(again) == set(first)
    assert {j["_term_hash"] for j in again.values()} != {j["_term_hash"] for j in first.values()}
    assert all("portion" in j for j in again.values() if j["is_relevant"])


def test_judgments_from_before_fingerprints_are_kept_not_paid_again(ws: Workspace) -> None:
    extract = Extract(Context.open(ws.root), "G1a", limit=2)
    reviews = extract.reviews(None)
    JudgmentCache(ws.cache).merge("G1a", {r: {"review_id": r, "is_relevant": False} for r in reviews})
    assert list(extract.work(None)) == []
    stale = {"review_id": "x", "is_relevant": False, "_term_hash": "0" * 16}
    JudgmentCache(ws.cache).merge("G1a", {r: {**stale, "review_id": r} for r in list(reviews)[:3]})
    assert len(list(extract.work(None))) == 3


def test_the_relevance_flag_is_the_one_the_task_names_in_requests_and_cache(ws: Workspace) -> None:
    task_path = ws.root / "data/tasks/yelp/G1a.json"
    task_path.write_bytes(orjson.dumps({**orjson.loads(task_path.read_bytes()), "relevance_field": "is_spill_related"}))
    assert ws.run("extract", "--task", "G1a", "--limit", "2", *submit_args(ws)).returncode == 0
    (batch_id,) = ws.batches()
    line = orjson.loads((ws.root / "data/batches" / batch_id / "input.jsonl").read_bytes().splitlines()[0])
    schema = line["body"]["response_format"]["json_schema"]["schema"]
    assert "is_spill_related" in schema["required"] and "is_relevant" not in schema["properties"]
    ws.server.set_batch_outcome(batch_id, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"]).returncode == 0
    judged = _judged(ws)
    assert judged and all(type(j["is_spill_related"]) is bool and "is_relevant" not in j for j in judged.values())


def test_mode_batch_is_the_same_flag_as_llm_mode_24hrbatch(ws: Workspace) -> None:
    result = ws.run("baseline", "--policy", POLICY, "--mode", "batch", "--crontab-file", str(ws.tab))
    assert result.returncode == 0, result.stderr
    (job,) = ws.ledger_json("status")
    assert job["mode"] == "24hrbatch" and len(ws.batches()) == 1


def _submit_then(ws: Workspace, change) -> tuple[dict, list[bytes]]:
    """Submit -n 3 as a batch, change the dataset, then fetch: what the results say."""
    assert ws.run("baseline", "--policy", POLICY, "-n", "3", *submit_args(ws)).returncode == 0
    before = _dataset(ws)
    change(ws.root / "data/context/yelp/dataset_K25.jsonl", before)
    (batch_id,) = ws.batches()
    ws.server.set_batch_outcome(batch_id, "completed")
    fetched = ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"])
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert ws.cron_lines() == {}
    return _results(ws, f"{POLICY}_K25_n3"), before


def _as_submitted(results: dict, before: list[bytes]) -> None:
    records = [orjson.loads(line) for line in before[:3]]
    assert [(r["business_id"], r["name"]) for r in results["results"]] == [
        (r["business_id"], r["business"]["name"]) for r in records
    ]
    assert results["n"] == 3 and results["n_failed"] == 0 and results["total"] == 3


def test_run_baseline_applies_what_it_submitted_though_the_dataset_changed(ws: Workspace) -> None:
    def move_and_remove(path, lines) -> None:  # the second restaurant gone, the fifth moved to the front
        path.write_bytes(b"\n".join([lines[4], lines[0], lines[2], lines[3], lines[5]]) + b"\n")

    results, before = _submit_then(ws, move_and_remove)
    _as_submitted(results, before)


def test_run_baseline_applies_with_the_dataset_gone(ws: Workspace) -> None:
    results, before = _submit_then(ws, lambda path, _: path.unlink())
    _as_submitted(results, before)


LOYALTY = ("Low Loyalty", "Moderate Loyalty", "High Loyalty")
WAITING = ("Not Worth Waiting", "Worth Waiting", "Definitely Worth Waiting")


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("moderate_loyalty", LOYALTY, "Moderate Loyalty"),
        ('"HIGH loyalty"', LOYALTY, "High Loyalty"),
        ("Moderate Risk", LOYALTY, "Moderate Loyalty"),
        ("Medium", LOYALTY, None),
        ("it is not worth waiting", WAITING, "Not Worth Waiting"),
        ("worth waiting!", WAITING, "Worth Waiting"),
        ("Not recommended.", ("Not Recommended", "Acceptable", "Recommended"), "Not Recommended"),
        ("Low Loyalty", ("Low Risk", "High Risk", "Critical Risk"), "Low Risk"),
    ],
)
def test_a_verdict_is_read_against_the_policys_own_labels(text: str, labels: tuple, expected: str | None) -> None:
    assert metrics.normalize_verdict(text, labels) == expected


def test_a_three_label_policy_is_scored_on_all_its_labels_in_index_order() -> None:
    gt = {"a": "Low Loyalty", "b": "Moderate Loyalty", "c": "Moderate Loyalty", "d": "High Loyalty"}
    rows = [{"business_id": b, "verdict": v} for b, v in zip(gt, LOYALTY[:2] + LOYALTY[1:], strict=True)]
    scored = metrics.score_rows(rows, gt, LOYALTY)
    assert (scored["correct"], scored["total"]) == (4, 4)  # the Moderate ones count (they used to drop out)
    assert scored["auprc"]["auprc_ge_high"] == 1.0 and scored["auprc"]["auprc_ge_critical"] == 1.0
