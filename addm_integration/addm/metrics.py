"""Set-level scoring for run_baseline (upstream ADDM's own scoring, carried over).

These are pure functions over already-collected result rows, so the ondemand and batch paths can share one
finalize step and produce identical numbers for the same rows. Only the standard library is used: the project
must not depend on scikit-learn, yet ``average_precision`` has to reproduce its ``average_precision_score``
exactly so our AUPRC numbers stay comparable with earlier sklearn-based runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

VERDICTS: tuple[str, ...] = ("Low Risk", "High Risk", "Critical Risk")  # a policy without a definition
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")

# Scale applied to the verdict ordinal when a row has no explicit risk score, as upstream ADDM scores ("verdict
# ordinal x 5"), so verdict-only rows land on the same rough 0..10 scale as FINAL_RISK_SCORE values.
_ORDINAL_SCORE_SCALE = 5


def canonical(text: str) -> str:
    """A label as compared: case, quotes, underscores and surrounding space or punctuation ignored."""
    return " ".join(_WORD_SPLIT.sub(" ", text.replace("_", " ").lower()).split())


def _words(text: str) -> set[str]:
    return set(canonical(text).split())


def normalize_verdict(text: str | None, labels: Sequence[str] = VERDICTS) -> str | None:
    """Map free model text onto one of the policy's ``labels`` (lowest to highest), or None when none is named.

    The exact label (canonically compared) wins. Otherwise a label is named when every word that sets it apart
    from the other labels occurs as a whole word ("critical" for Critical Risk, "not" for Not Recommended), so
    "CRITICAL" or "high risk." still count and "below" is not "low". A label whose words all lie inside another
    named one's ("Recommended" in "not recommended") gives way to it; of the rest the highest wins, since a
    critical answer's text may also mention "high". Anything else is None rather than a guess, so an
    unparseable answer is scored as wrong.
    """
    if not text:
        return None
    wanted = canonical(text)
    for label in labels:
        if canonical(label) == wanted:
            return label
    present = set(wanted.split())
    words = [_words(label) for label in labels]
    shared = set.intersection(*words) if words else set()
    named = [i for i, own in enumerate(words) if ((own - shared) or own) <= present]
    whole = [i for i in named if words[i] <= present]
    kept = [i for i in named if not any(words[i] < words[j] for j in whole)]
    return labels[max(kept)] if kept else None


def ordinal(verdict: str, labels: Sequence[str] = VERDICTS) -> int:
    """Position of a canonical verdict on the policy's scale (lowest 0).

    Only canonical labels are accepted: callers must normalize first, so a typo surfaces as a ValueError
    instead of being ranked somewhere arbitrary.
    """
    try:
        return list(labels).index(verdict)
    except ValueError:
        raise ValueError(f"not a canonical verdict: {verdict!r} (expected one of {tuple(labels)})") from None


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Step-wise average precision, identical to scikit-learn's ``average_precision_score``.

    AP = sum_n (R_n - R_{n-1}) * P_n over thresholds at the distinct score values, highest first. All samples
    sharing a score enter at the same threshold, so the result does not depend on input order among ties
    (neither an optimistic nor a pessimistic tie-break). This is not the interpolated or trapezoidal area,
    which would overstate AP when precision rises again at lower thresholds.

    Returns None when there are fewer than 2 samples or when either class is absent: sklearn would warn and
    return a degenerate value there, while we want the metric to be visibly undefined in results.json.
    """
    if len(y_true) != len(scores):
        raise ValueError(f"y_true and scores differ in length: {len(y_true)} != {len(scores)}")
    labels = [int(y) for y in y_true]
    if any(y not in (0, 1) for y in labels):
        raise ValueError("y_true must contain only 0 and 1")
    values = [float(s) for s in scores]
    if any(math.isnan(s) for s in values):
        raise ValueError("scores must not contain NaN")
    n_pos = sum(labels)
    if len(labels) < 2 or n_pos == 0 or n_pos == len(labels):
        return None

    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    terms: list[float] = []
    tp = fp = 0
    prev_tp = 0
    i = 0
    while i < len(order):
        # Consume the whole tie group before evaluating precision: that is one threshold.
        threshold = values[order[i]]
        while i < len(order) and values[order[i]] == threshold:
            if labels[order[i]]:
                tp += 1
            else:
                fp += 1
            i += 1
        if tp != prev_tp:
            terms.append((tp - prev_tp) / n_pos * (tp / (tp + fp)))
            prev_tp = tp
    return math.fsum(terms)


def _is_failure(row: Mapping[str, Any]) -> bool:
    """A row is a failure when it carries an error; such rows never had a verdict to score."""
    return row.get("error") is not None


def _row_score(row: Mapping[str, Any], labels: Sequence[str]) -> float | None:
    """Ranking score for AUPRC: the model's risk score, else the verdict ordinal scaled by 5.

    A non-finite risk score is treated as missing (it cannot be ranked); rows with neither usable value give
    None and are left out of AUPRC, since inventing a score would bias the ranking.
    """
    risk = row.get("risk_score")
    if risk is not None and not isinstance(risk, bool):
        try:
            value = float(risk)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            return value
    verdict = normalize_verdict(row.get("verdict"), labels)
    if verdict is None:
        return None
    return float(ordinal(verdict, labels) * _ORDINAL_SCORE_SCALE)


def _empty_auprc() -> dict[str, Any]:
    return {"auprc_ge_high": None, "auprc_ge_critical": None, "ordinal_auprc": None, "n_samples": 0}


def score_rows(
    rows: list[dict[str, Any]], ground_truth: Mapping[str, str] | None, labels: Sequence[str] = VERDICTS
) -> dict[str, Any]:
    """Finalize a run: attach GT to each row and compute accuracy and ordinal AUPRC over the whole set.

    It is set-level (AUPRC needs every row at once), hence one call after the last row is in. Input rows are
    copied, never mutated, so a caller can keep the raw rows it wrote to its ledger.

    Accounting, as upstream ADDM counts: ``total`` counts success rows that have a GT verdict, including rows whose
    predicted verdict is None (an unparseable answer is a wrong answer, not a skipped one). Failure rows carry
    no verdict, so they are left out of accuracy and AUPRC and reported as ``n_failed`` (all failure rows,
    with or without GT) so a reader can see the subset. Rows without GT are left out of everything scored.
    GT labels are passed through ``normalize_verdict`` so a GT file spelling ("high risk") compares equal.
    With ``ground_truth`` None every metric is None/0, but rows still get ``gt_verdict``/``correct`` = None
    and ``n_failed`` still counts failures, since failures are a fact about the run, not about GT.
    """
    out_rows: list[dict[str, Any]] = []
    correct = 0
    total = 0
    n_failed = 0
    y_ordinals: list[int] = []
    auprc_scores: list[float] = []

    for row in rows:
        new_row = dict(row)
        gt_raw = ground_truth.get(row.get("business_id")) if ground_truth is not None else None
        gt = normalize_verdict(gt_raw, labels)
        new_row["gt_verdict"] = gt
        if _is_failure(row):
            n_failed += 1
            new_row["correct"] = None
        elif gt is None:
            new_row["correct"] = None
        else:
            pred = normalize_verdict(row.get("verdict"), labels)
            is_correct = pred == gt
            new_row["correct"] = is_correct
            total += 1
            correct += int(is_correct)
            score = _row_score(row, labels)
            if score is not None:
                y_ordinals.append(ordinal(gt, labels))
                auprc_scores.append(score)
        out_rows.append(new_row)

    auprc = _empty_auprc()
    if ground_truth is not None:
        ge_high = average_precision([int(o >= 1) for o in y_ordinals], auprc_scores)
        top = len(labels) - 1  # the highest label: "critical" for the Risk labels, whatever the policy calls it
        ge_critical = average_precision([int(o == top) for o in y_ordinals], auprc_scores)
        auprc = {
            "auprc_ge_high": ge_high,
            "auprc_ge_critical": ge_critical,
            "ordinal_auprc": ((ge_high + ge_critical) / 2 if ge_high is not None and ge_critical is not None else None),
            "n_samples": len(auprc_scores),
        }

    return {
        "rows": out_rows,
        "accuracy": correct / total if total else None,
        "correct": correct,
        "total": total,
        "n_failed": n_failed,
        "auprc": auprc,
    }
