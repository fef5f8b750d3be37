"""Tests of scripts/gen_data.py, the synthetic ADDM workspace generator.

Why: every other test and rehearsal builds on this data, so its shapes must match docs/formats.md exactly,
it must be reproducible byte for byte, and its ground truth must follow from what was planted.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# tests/conftest.py may put scripts/ on sys.path too; doing it here keeps this file runnable on its own.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from gen_data import POLICY_ID, TASK_ID, VERDICTS, generate, main

ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
HOURS_RE = re.compile(r"^\d{1,2}:\d{1,2}-\d{1,2}:\d{1,2}$")
ALLERGY_RE = re.compile(r"allerg|celiac|epipen", re.IGNORECASE)

BUSINESS_FIELDS = {
    "business_id": str,
    "name": str,
    "address": str,
    "city": str,
    "state": str,
    "postal_code": str,
    "latitude": float,
    "longitude": float,
    "stars": float,
    "review_count": int,
    "is_open": int,
    "attributes": dict,
    "categories": str,
    "hours": dict,
}
REVIEW_FIELDS = {
    "review_id": str,
    "user_id": str,
    "business_id": str,
    "stars": float,
    "useful": int,
    "funny": int,
    "cool": int,
    "text": str,
    "date": str,
    "user": dict,
}
USER_FIELDS = {
    "name": str,
    "review_count": int,
    "yelping_since": str,
    "elite": str,
    "average_stars": float,
    "fans": int,
}


def _paths(root: Path, k: int = 25, domain: str = "yelp") -> dict[str, Path]:
    """The four files of the workspace layout (docs/formats.md) that the generator must write."""
    data = root / "data"
    return {
        "dataset": data / "context" / domain / f"dataset_K{k}.jsonl",
        "task": data / "tasks" / domain / f"{TASK_ID}.json",
        "prompt": data / "query" / domain / f"{POLICY_ID}_K{k}_prompt.txt",
        "gt": data / "answers" / domain / f"{POLICY_ID}_K{k}_groundtruth.json",
    }


def _records(root: Path, k: int = 25) -> list[dict[str, Any]]:
    with _paths(root, k)["dataset"].open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A 5-restaurant K25 workspace shared by the read-only tests."""
    root = tmp_path_factory.mktemp("small")
    return root, generate(root, n_restaurants=5, k=25, seed=7)


def test_writes_the_four_files_and_reports_counts(small: tuple[Path, dict[str, Any]]) -> None:
    root, summary = small
    paths = _paths(root)
    assert all(p.is_file() for p in paths.values())
    assert summary["restaurants"] == 5
    assert summary["files"] == 4
    assert sorted(summary["paths"]) == sorted(str(p) for p in paths.values())
    records = _records(root)
    assert summary["reviews"] == sum(len(r["reviews"]) for r in records)
    # Temp files of the atomic writes are all renamed away.
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, n_restaurants=5, seed=3)
    generate(b, n_restaurants=5, seed=3)
    generate(c, n_restaurants=5, seed=4)
    for name, path_a in _paths(a).items():
        assert path_a.read_bytes() == _paths(b)[name].read_bytes(), name
    assert _paths(a)["dataset"].read_bytes() != _paths(c)["dataset"].read_bytes()
    assert _paths(a)["gt"].read_bytes() != _paths(c)["gt"].read_bytes()
    # Regenerating over an existing workspace replaces the files with the same bytes.
    before = {n: p.read_bytes() for n, p in _paths(a).items()}
    generate(a, n_restaurants=5, seed=3)
    assert {n: p.read_bytes() for n, p in _paths(a).items()} == before


def test_dataset_shapes_and_types(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    literal_attrs = 0
    for record in _records(root):
        assert list(record) == ["business_id", "business", "reviews", "review_count_actual"]
        business = record["business"]
        assert list(business) == list(BUSINESS_FIELDS)
        for field, typ in BUSINESS_FIELDS.items():
            assert type(business[field]) is typ, field
        assert business["business_id"] == record["business_id"]
        assert 1.0 <= business["stars"] <= 5.0
        assert business["is_open"] in (0, 1)
        assert business["review_count"] >= record["review_count_actual"]
        assert all(isinstance(v, str) for v in business["attributes"].values())
        literal_attrs += sum(v.startswith("{'") for v in business["attributes"].values())
        assert "Restaurants" in business["categories"].split(", ")
        assert business["hours"] and all(HOURS_RE.match(v) for v in business["hours"].values())
        assert record["review_count_actual"] == len(record["reviews"])
        for review in record["reviews"]:
            assert list(review) == list(REVIEW_FIELDS)
            for field, typ in REVIEW_FIELDS.items():
                assert type(review[field]) is typ, field
            assert review["business_id"] == record["business_id"]
            assert review["stars"] in (1.0, 2.0, 3.0, 4.0, 5.0)
            assert min(review["useful"], review["funny"], review["cool"]) >= 0
            assert DATE_RE.match(review["date"])
            assert 39 <= len(review["text"]) <= 2000
            user = review["user"]
            assert list(user) == list(USER_FIELDS)
            for field, typ in USER_FIELDS.items():
                assert type(user[field]) is typ, field
            assert DATE_RE.match(user["yelping_since"])
            assert user["yelping_since"][:4] <= review["date"][:4]
            assert 1.0 <= user["average_stars"] <= 5.0
    assert literal_attrs > 0


def test_ids_alphabet_length_and_uniqueness(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    records = _records(root)
    business_ids = [r["business_id"] for r in records]
    review_ids = [rv["review_id"] for r in records for rv in r["reviews"]]
    user_ids = [rv["user_id"] for r in records for rv in r["reviews"]]
    for ident in business_ids + review_ids + user_ids:
        assert ID_RE.match(ident), ident
    assert len(set(business_ids)) == len(business_ids)
    assert len(set(review_ids)) == len(review_ids)


@pytest.mark.parametrize("k", [25, 50])
def test_review_count_bounds(tmp_path: Path, k: int) -> None:
    generate(tmp_path, n_restaurants=12, k=k, seed=1)
    low = math.ceil(0.64 * k)
    for record in _records(tmp_path, k):
        assert low <= len(record["reviews"]) <= k
        assert record["review_count_actual"] == len(record["reviews"])


def test_task_file_first_values_are_the_safe_defaults(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    task = json.loads(_paths(root)["task"].read_text(encoding="utf-8"))
    assert list(task) == ["task_id", "description", "fields"]
    assert task["task_id"] == "G1a"
    assert "allerg" in task["description"].lower()
    fields = task["fields"]
    assert {name: list(values) for name, values in fields.items()} == {
        "incident_severity": ["none", "mild", "moderate", "severe"],
        "account_type": ["firsthand", "secondhand", "hypothetical"],
        "assurance_claim": ["false", "true", "unknown"],
        "staff_response": ["none", "accommodated", "refused", "dismissive", "unknown"],
    }
    assert all(isinstance(d, str) and d for values in fields.values() for d in values.values())


def test_policy_prompt(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    text = _paths(root)["prompt"].read_text(encoding="utf-8")
    assert 2000 <= len(text.encode("utf-8")) <= 5000
    for verdict in VERDICTS:
        assert verdict in text


def test_ground_truth_covers_every_restaurant(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    records = {r["business_id"]: r for r in _records(root)}
    gt = json.loads(_paths(root)["gt"].read_text(encoding="utf-8"))
    assert list(gt) == [
        "policy_id",
        "topic",
        "domain",
        "k",
        "computed_at",
        "has_scoring",
        "restaurants",
        "summary",
    ]
    assert (gt["policy_id"], gt["topic"], gt["domain"], gt["k"]) == ("G1_allergy_V2", "G1_allergy", "yelp", 25)
    assert set(gt["restaurants"]) == set(records)
    counts = dict.fromkeys(VERDICTS, 0)
    for business_id, entry in gt["restaurants"].items():
        record = records[business_id]
        assert entry["name"] == record["business"]["name"]
        assert entry["categories"] == record["business"]["categories"]
        assert entry["n_reviews"] == entry["n_judgments"] == len(record["reviews"])
        truth = entry["ground_truth"]
        assert truth["verdict"] in VERDICTS
        assert truth["policy_id"] == POLICY_ID
        assert isinstance(truth["matched_rule"], str) and truth["matched_rule"]
        counts[truth["verdict"]] += 1
        incidents = truth["incidents"]
        assert truth["n_incidents"] == len(incidents)
        texts = {rv["review_id"]: rv["text"] for rv in record["reviews"]}
        for incident in incidents:
            assert list(incident) == ["review_id", "severity_field", "severity_value", "account_type", "modifiers"]
            assert ALLERGY_RE.search(texts[incident["review_id"]])  # an incident of this restaurant
            assert incident["severity_field"] == "incident_severity"
            assert incident["severity_value"] in ("mild", "moderate", "severe")
            assert incident["account_type"] in ("firsthand", "secondhand")
            assert isinstance(incident["modifiers"], list)
        # The verdict follows the agenda's rules from the incidents.
        firsthand = [i["severity_value"] for i in incidents if i["account_type"] == "firsthand"]
        expected = "Critical Risk" if "severe" in firsthand else "High Risk" if incidents else "Low Risk"
        assert truth["verdict"] == expected
    assert gt["summary"] == {
        "total_restaurants": 5,
        "verdict_distribution": counts,
        "missing_judgments": 0,
    }
    assert all(counts.values())  # with >= 3 restaurants every verdict occurs


def test_other_domain_and_invalid_arguments(tmp_path: Path) -> None:
    generate(tmp_path, n_restaurants=2, k=10, domain="demo")
    assert all(p.is_file() for p in _paths(tmp_path, 10, "demo").values())
    for kwargs in ({"n_restaurants": 0}, {"k": 0}, {"domain": "../x"}, {"domain": "a/b"}):
        with pytest.raises(ValueError):
            generate(tmp_path, **kwargs)


def test_cli_prints_one_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--restaurants", "3", "--k", "25", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "3 restaurants" in out and "dataset_K25.jsonl" in out
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path), "--restaurants", "0"])
    assert exc.value.code == 2


def test_default_size_is_realistic_and_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    summary = generate(tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0
    assert summary["restaurants"] == 100
    assert 2000 <= summary["reviews"] <= 2600
    assert summary["verdicts"] == {"Low Risk": 60, "High Risk": 30, "Critical Risk": 10}
    texts = [rv["text"] for r in _records(tmp_path) for rv in r["reviews"]]
    assert len(texts) == summary["reviews"]
    assert 300 <= statistics.median(len(t) for t in texts) <= 500
    # About 12% of reviews talk about allergies, and exactly the planted ones do.
    mentioning = sum(bool(ALLERGY_RE.search(t)) for t in texts)
    assert mentioning == summary["allergy_reviews"]
    assert 0.08 <= mentioning / len(texts) <= 0.16


def test_a_file_written_again_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        generate(tmp_path, n_restaurants=2)
        dataset = _paths(tmp_path, 25, "yelp")["dataset"]
        assert stat.S_IMODE(dataset.stat().st_mode) == 0o644  # a dataset others may read, as any new file
        dataset.chmod(0o640)
        generate(tmp_path, n_restaurants=3, force=True)
        assert stat.S_IMODE(dataset.stat().st_mode) == 0o640
    finally:
        os.umask(old)
