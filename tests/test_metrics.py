"""Tests for addm_integration.addm.metrics.

Expected AP values are computed by hand (arithmetic in the comments); they were also cross-checked once
against scikit-learn 1.9.1 ``average_precision_score`` outside the project, which is not a test dependency.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addm_integration.addm.metrics import (
    VERDICTS,
    average_precision,
    normalize_verdict,
    ordinal,
    score_rows,
)

# --- normalize_verdict / ordinal ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Low Risk", "Low Risk"),
        ("High Risk", "High Risk"),
        ("Critical Risk", "Critical Risk"),
        ("CRITICAL", "Critical Risk"),
        ("  high risk.  ", "High Risk"),
        ("low", "Low Risk"),
        # critical wins over high, and high over low, whatever the order in the text
        ("Critical - higher than High Risk", "Critical Risk"),
        ("High Risk (not low)", "High Risk"),
        ("low, maybe high, possibly critical", "Critical Risk"),
        ("Medium Risk", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_verdict(text: str | None, expected: str | None) -> None:
    assert normalize_verdict(text) == expected


def test_normalize_verdict_is_idempotent_on_canonical_labels() -> None:
    for label in VERDICTS:
        assert normalize_verdict(label) == label


def test_ordinal() -> None:
    assert [ordinal(v) for v in VERDICTS] == [0, 1, 2]
    with pytest.raises(ValueError):
        ordinal("high")


# --- average_precision: hand-computed cases -------------------------------------------------------------------


def test_ap_without_ties_is_step_not_interpolated() -> None:
    # Ranked labels (scores 5..1): 1 0 0 1 1; P=3 positives, each recall step is 1/3.
    # Precision at each positive: 1/1, 2/4, 3/5 -> AP = 1/3*(1 + 1/2 + 3/5) = 0.7.
    # Interpolated AP would use max precision to the right: 1/3*(1 + 3/5 + 3/5) = 0.7333..., so this catches it.
    assert average_precision([1, 0, 0, 1, 1], [5, 4, 3, 2, 1]) == pytest.approx(0.7, abs=1e-12)


def test_ap_simple_no_ties() -> None:
    # Ranked labels 1 0 1: AP = 1/2*1 + 1/2*(2/3) = 5/6.
    assert average_precision([1, 0, 1], [3, 2, 1]) == pytest.approx(5 / 6, abs=1e-12)


def test_ap_with_ties_enter_together() -> None:
    # Scores 0.8 | 0.5 0.5 0.5 | 0.2 with labels 1 | 1 0 1 | 0; P=3.
    # Threshold 0.8: tp=1 fp=0 -> P=1, R=1/3. Threshold 0.5: tp=3 fp=1 -> P=3/4, R=1.
    # AP = 1/3*1 + 2/3*3/4 = 5/6 = 0.8333.
    # Positive-first tie-break would give 1.0; negative-first 1/3 + 1/3*2/3 + 1/3*3/4 = 0.8056.
    assert average_precision([1, 1, 0, 1, 0], [0.8, 0.5, 0.5, 0.5, 0.2]) == pytest.approx(5 / 6, abs=1e-12)


def test_ap_all_tied() -> None:
    # One threshold: P=2/3, R=1 -> AP = 2/3 (pos-first would be 1.0, neg-first 0.5833).
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3, abs=1e-12)


def test_ap_tie_result_independent_of_input_order() -> None:
    assert average_precision([0, 1, 1], [0.5, 0.5, 0.5]) == average_precision([1, 1, 0], [0.5, 0.5, 0.5])


def test_ap_perfect_ranking() -> None:
    assert average_precision([0, 1, 0, 1, 1], [0.1, 0.9, 0.2, 0.8, 0.7]) == 1.0


def test_ap_worst_ranking() -> None:
    # Ranked 0 0 1: one positive at rank 3 -> AP = 1/3.
    assert average_precision([1, 0, 0], [1, 2, 3]) == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.parametrize(
    ("y", "s"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3]),  # no negative
        ([0, 0], [0.1, 0.2]),  # no positive
        ([1], [0.5]),  # fewer than 2 samples
        ([], []),
    ],
)
def test_ap_undefined_is_none(y: list[int], s: list[float]) -> None:
    assert average_precision(y, s) is None


def test_ap_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        average_precision([1, 0], [0.1])
    with pytest.raises(ValueError):
        average_precision([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        average_precision([1, 0], [math.nan, 0.2])


# --- average_precision: property test against a brute-force reference ---------------------------------------


def _reference_ap(y: list[int], s: list[float]) -> Fraction:
    """Independent O(n^2) definition: for each distinct threshold t (high to low), precision and recall of
    "score >= t", AP = sum (R_t - R_prev) * P_t, in exact rational arithmetic."""
    n_pos = sum(y)
    ap = Fraction(0)
    prev_recall = Fraction(0)
    for t in sorted(set(s), reverse=True):
        selected = [yi for yi, si in zip(y, s, strict=True) if si >= t]
        tp = sum(selected)
        recall = Fraction(tp, n_pos)
        precision = Fraction(tp, len(selected))
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


# Scores drawn from a small pool so ties are frequent; floats included so ordering is not only integer.
_score = st.one_of(st.integers(0, 6).map(float), st.sampled_from([0.25, 0.5, 2.5, 7.75, -1.0]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), _score), min_size=0, max_size=30))
def test_ap_matches_bruteforce(pairs: list[tuple[int, float]]) -> None:
    y = [p[0] for p in pairs]
    s = [p[1] for p in pairs]
    got = average_precision(y, s)
    if len(y) < 2 or sum(y) in (0, len(y)):
        assert got is None
        return
    assert got is not None
    assert got == pytest.approx(float(_reference_ap(y, s)), abs=1e-12)
    assert 0.0 < got <= 1.0


# --- score_rows ---------------------------------------------------------------------------------------------


def _rows() -> list[dict]:
    return [
        {"business_id": "b1", "verdict": "Critical Risk", "risk_score": 9.0},  # GT Critical: correct
        {"business_id": "b2", "verdict": "High Risk", "risk_score": None},  # GT Low: wrong, score 1*5=5
        {"business_id": "b3", "verdict": "Low Risk", "risk_score": 1.0},  # GT Low: correct
        {"business_id": "b4", "verdict": None, "risk_score": None},  # GT High: wrong, no score -> no AUPRC
        {"business_id": "b5", "name": "F", "error": "timeout"},  # failure: out of accuracy and AUPRC
        {"business_id": "b6", "verdict": "High Risk", "risk_score": 6.0},  # no GT: out of everything
        {"business_id": "b7", "verdict": "High Risk", "risk_score": None},  # GT High: correct, score 5
    ]


_GT = {
    "b1": "Critical Risk",
    "b2": "Low Risk",
    "b3": "Low Risk",
    "b4": "High Risk",
    "b5": "High Risk",
    "b7": "High Risk",
}


def test_score_rows_accuracy_and_auprc() -> None:
    rows = _rows()
    before = copy.deepcopy(rows)
    res = score_rows(rows, _GT)

    # total = b1 b2 b3 b4 b7 = 5 (b4 has no verdict but counts), correct = b1 b3 b7 = 3 -> 0.6
    assert res["total"] == 5
    assert res["correct"] == 3
    assert res["accuracy"] == pytest.approx(0.6)
    assert res["n_failed"] == 1

    # AUPRC samples: b1 (9, GT 2), b2 (5, GT 0), b7 (5, GT 1), b3 (1, GT 0) -> n=4.
    # >= High: labels by score 9:1 | 5:{0,1} | 1:0 -> thr 9 P=1 R=1/2; thr 5 P=2/3 R=1 -> AP = 1/2 + 1/2*2/3 = 5/6
    # Critical: only b1 positive, ranked first -> AP = 1.0  (with ">= 1" positives it would be 5/6)
    # ordinal = (5/6 + 1) / 2 = 11/12
    auprc = res["auprc"]
    assert auprc["n_samples"] == 4
    assert auprc["auprc_ge_high"] == pytest.approx(5 / 6, abs=1e-12)
    assert auprc["auprc_ge_critical"] == pytest.approx(1.0, abs=1e-12)
    assert auprc["ordinal_auprc"] == pytest.approx(11 / 12, abs=1e-12)

    by_id = {r["business_id"]: r for r in res["rows"]}
    assert [(by_id[b]["gt_verdict"], by_id[b]["correct"]) for b in ["b1", "b2", "b3", "b4", "b5", "b6", "b7"]] == [
        ("Critical Risk", True),
        ("Low Risk", False),
        ("Low Risk", True),
        ("High Risk", False),
        ("High Risk", None),
        (None, None),
        ("High Risk", True),
    ]
    assert [r["business_id"] for r in res["rows"]] == [r["business_id"] for r in rows]
    assert by_id["b5"]["error"] == "timeout"

    # inputs untouched, output rows are new dicts
    assert rows == before
    assert all(o is not i for o, i in zip(res["rows"], rows, strict=True))


def test_score_rows_without_ground_truth() -> None:
    rows = _rows()
    res = score_rows(rows, None)
    assert res["accuracy"] is None
    assert (res["correct"], res["total"]) == (0, 0)
    assert res["auprc"] == {
        "auprc_ge_high": None,
        "auprc_ge_critical": None,
        "ordinal_auprc": None,
        "n_samples": 0,
    }
    assert all(r["gt_verdict"] is None and r["correct"] is None for r in res["rows"])
    assert res["n_failed"] == 1
    assert len(res["rows"]) == len(rows)


def test_score_rows_single_class_gives_null_auprc() -> None:
    # All GT Low: both AP undefined (no positive), ordinal too; accuracy still defined.
    rows = [
        {"business_id": "a", "verdict": "Low Risk", "risk_score": 1.0},
        {"business_id": "b", "verdict": "High Risk", "risk_score": 6.0},
    ]
    res = score_rows(rows, {"a": "Low Risk", "b": "Low Risk"})
    assert res["accuracy"] == pytest.approx(0.5)
    assert res["auprc"] == {
        "auprc_ge_high": None,
        "auprc_ge_critical": None,
        "ordinal_auprc": None,
        "n_samples": 2,
    }


def test_score_rows_ordinal_none_when_only_critical_missing() -> None:
    # GT Low/High only: >=High defined (perfect ranking -> 1.0), Critical has no positive -> None -> mean None.
    rows = [
        {"business_id": "a", "verdict": "Low Risk", "risk_score": None},  # score 0
        {"business_id": "b", "verdict": "High Risk", "risk_score": None},  # score 5
    ]
    res = score_rows(rows, {"a": "Low Risk", "b": "High Risk"})
    assert res["auprc"]["auprc_ge_high"] == 1.0
    assert res["auprc"]["auprc_ge_critical"] is None
    assert res["auprc"]["ordinal_auprc"] is None


def test_score_rows_empty() -> None:
    res = score_rows([], {})
    assert res["rows"] == []
    assert res["accuracy"] is None
    assert (res["correct"], res["total"], res["n_failed"]) == (0, 0, 0)
    assert res["auprc"]["n_samples"] == 0
