"""addm-import reads an ADDM checkout in upstream's layout (synthetic content) and writes a workspace the pipelines
run on: each label family scored with its own labels, upstream's system prompt sent, a scoring trace kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from addm_checkout import EXTENDING, FAMILIES, SCORING, SYSTEM_PROMPT, build
from conftest import KEY

from addm_integration.addm.run_baseline import Baseline
from addm_integration.store.context import Context


def _import(checkout: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "addm_integration.importer", str(checkout), "--root", str(root), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def imported(tmp_path: Path) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    checkout, root = tmp_path / "dev-ADDM", tmp_path / "ws"
    build(checkout)
    result = _import(checkout, root)
    assert result.returncode == 0, result.stderr
    return checkout, root, result


def test_import_writes_tasks_policies_agendas_ground_truth_and_dataset(imported) -> None:
    checkout, root, result = imported
    query, tasks = root / "data/query/yelp", root / "data/tasks/yelp"
    spill = orjson.loads((tasks / "T1a.json").read_bytes())
    assert spill == {
        "task_id": "T1a",
        "description": "Judge how a restaurant handles drink spills.",
        "fields": {
            "spill_size": {"none": "no spill described", "small": "a glass tipped over", "large": "a table flooded"},
            "staff_reaction": {"helped": "staff cleaned up at once", "ignored": "nobody came"},
        },
        "relevance_field": "is_spill_related",
    }
    napkin = orjson.loads((tasks / "T1b.json").read_bytes())  # from data/query/<d>/past_prompt/
    assert napkin["relevance_field"] == "is_relevant" and list(napkin["fields"]) == ["napkin_kind"]
    assert not (tasks / "T1c.json").exists()
    for policy_id, labels in FAMILIES.items():
        definition = orjson.loads((query / f"{policy_id}.json").read_bytes())
        assert definition == {
            "policy_id": policy_id,
            "verdicts": labels,
            "system_prompt": "output_schema.txt",
            "scoring": False,
        }
    assert orjson.loads((query / f"{SCORING}.json").read_bytes())["scoring"] is True
    assert orjson.loads((query / f"{SCORING}.json").read_bytes())["verdicts"] == FAMILIES["G2_dates_V1"]
    assert orjson.loads((query / f"{EXTENDING}.json").read_bytes())["verdicts"] == FAMILIES["G6_regulars_V1"]
    assert (query / "output_schema.txt").read_text() == SYSTEM_PROMPT
    # A K-specific agenda keeps its K; one without K serves every K.
    assert (query / "G1_spill_V1_K25_prompt.txt").read_text() == "Agenda of spills at K25.\n"
    assert not (query / "G1_spill_V1_K50_prompt.txt").exists()
    for k in (25, 50, 100, 200):
        assert (query / f"G2_dates_V1_K{k}_prompt.txt").read_text() == "Agenda of dates, for every K.\n"
    gt = root / "data/answers/yelp/G6_regulars_V1_K25_groundtruth.json"
    assert gt.read_bytes() == (checkout / "data/answers/yelp/G6_regulars_V1_K25_groundtruth.json").read_bytes()
    dataset = root / "data/context/yelp/dataset_K25.jsonl"
    assert os.path.samefile(dataset, checkout / "data/context/yelp/dataset_K25.jsonl")  # linked, not copied
    out = result.stdout
    assert "wrote data/tasks/yelp/T1a.json" in out
    assert 'skipped data/tasks/yelp/T1c_prompt.txt\n  no "L0: Primitives" section' in out
    assert "skipped src/addm/query/policies/G9/broken/V1.yaml\n  not valid YAML" in out
    assert "skipped data/query/yelp/G9_unknown_V1_K25_prompt.txt\n  an agenda of no policy" in out
    assert "3 skipped" in out and all(len(line) <= 80 for line in out.splitlines()[:-1])


def test_a_second_import_changes_nothing_and_a_differing_file_needs_force(imported) -> None:
    checkout, root, _ = imported
    before = _files(root)
    again = _import(checkout, root)
    assert again.returncode == 0 and "wrote" not in again.stdout
    assert "0 written" in again.stdout
    assert _files(root) == before
    edited = root / "data/query/yelp/G2_dates_V1.json"
    edited.write_text('{"policy_id": "G2_dates_V1", "verdicts": ["No", "Yes"]}\n')
    kept = _import(checkout, root)
    assert "kept data/query/yelp/G2_dates_V1.json\n  it differs" in kept.stdout
    assert edited.read_text().startswith('{"policy_id": "G2_dates_V1", "verdicts": ["No"')
    forced = _import(checkout, root, "--force")
    assert "wrote data/query/yelp/G2_dates_V1.json" in forced.stdout
    assert _files(root) == before


def test_import_of_something_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _import(tmp_path / "empty", tmp_path / "ws")
    assert result.returncode == 2 and "not an ADDM checkout" in result.stderr
    assert not (tmp_path / "ws").exists()


def test_requests_carry_the_policys_labels_upstreams_prompt_and_a_strict_scoring_trace(imported) -> None:
    _, root, _ = imported
    ctx = Context.open(root)
    for policy_id, labels in {**FAMILIES, SCORING: FAMILIES["G2_dates_V1"]}.items():
        (item, *_) = Baseline(ctx, policy_id).work(None)
        schema = item.body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["verdict"]["enum"] == labels
        assert item.body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        justification = schema["properties"]["justification"]
        assert ("scoring_trace" in justification["properties"]) is (policy_id == SCORING)
    trace = justification["properties"]["scoring_trace"]
    entry = trace["properties"]["breakdown"]["items"]
    assert list(entry["properties"]) == ["evidence_id", "base_points", "modifiers", "subtotal"]
    for node in (justification, trace, entry):  # strict: closed, every property required
        assert node["additionalProperties"] is False and node["required"] == list(node["properties"])


@pytest.mark.parametrize("policy_id", [*FAMILIES, SCORING])
def test_run_baseline_scores_each_label_family_with_its_own_labels(imported, server, policy_id: str) -> None:
    _, root, _ = imported
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ADDM_"))}
    env.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url)
    argv = [sys.executable, "-m", "addm_integration.run_baseline", "--root", str(root), "--policy", policy_id]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = orjson.loads((root / "results/baseline" / f"{policy_id}_K25" / "results.json").read_bytes())
    labels = FAMILIES.get(policy_id, FAMILIES["G2_dates_V1"])
    assert results["verdicts"] == labels and results["run_id"] == policy_id
    assert results["total"] == 6 and isinstance(results["accuracy"], float)
    assert {r["gt_verdict"] for r in results["results"]} == set(labels)
    assert all(r["verdict"] in labels for r in results["results"])
    if policy_id == SCORING:
        assert all("scoring_trace" in r["parsed"]["justification"] for r in results["results"])


def test_import_writes_one_topic_definition_per_topic_with_the_union_of_its_policies_terms(imported) -> None:
    _, root, _ = imported
    topic = orjson.loads((root / "data/tasks/yelp/G1_spill.json").read_bytes())
    assert topic == {
        "task_id": "G1_spill",
        "description": "Synthetic",
        "fields": {
            "account_type": {"hearsay": "Someone told the reviewer", "firsthand": "The reviewer was there"},
            "spill_size": {"none": "No spill", "flood": "The table was flooded"},
        },
        "policies": ["G1_spill_V1", "G1_spill_V2"],
    }
    assert list(orjson.loads((root / "data/tasks/yelp/G2_dates.json").read_bytes())["fields"]) == ["account_type"]
    dry = subprocess.run(
        [sys.executable, "-m", "addm_integration.extract", "--root", str(root), "--all", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    reviews = sum(len(orjson.loads(line)["reviews"]) for line in (root / "data/context/yelp/dataset_K25.jsonl").open())
    assert f" {3 * 4 * reviews} requests" in dry.stdout  # three topics, mini x1 and nano x3 each


def test_an_unexpected_import_failure_is_one_line_with_its_traceback_saved(tmp_path: Path, monkeypatch, capsys) -> None:
    from addm_integration import importer

    def bug(*_: object) -> list[str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(importer, "run_import", bug)
    (tmp_path / "ws").mkdir()
    code = importer.main([str(tmp_path), "--root", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code == 70 and err.count("\n") == 1 and "Traceback" not in err, err
    assert len(list((tmp_path / "ws" / "data" / "logs").glob("error-*.txt"))) == 1
