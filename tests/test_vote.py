"""The topic vote against its rule, written out the plain way: a fast tally must agree with it on any runs."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from addm_integration.addm.inputs import Task
from addm_integration.addm.topics import Quota, Vote

TASK = Task(
    "G1_spill", "Drink spills.", {"size": {"none": "", "small": "", "large": ""}, "staff": {"no": "", "yes": ""}}
)
QUOTAS = (Quota("gpt-5-mini", 1, 2), Quota("gpt-5-nano", 3, 1))
FACTS = ["biz", "2019-03-02 18:40:11", 4.0, 0]


def _rule(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The vote as the docs state it, for one review; None while a (model, run) of the quota is missing."""
    weights = {q.model: q.weight for q in QUOTAS}
    quota = {(q.model, n) for q in QUOTAS for n in range(1, q.runs + 1)}
    counted: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:  # the first arrival of a (model, run) of the quota counts, of the task's fingerprint only
        pair = (run.get("_model"), run.get("_run"))
        if run.get("_term_hash") == TASK.fingerprint and pair in quota and pair not in counted:
            counted[pair] = run
    if len(counted) < len(quota):
        return None
    total = sum(weights[m] for m, _ in counted)
    yes = sum(weights[m] for (m, _), r in counted.items() if r.get("is_relevant") is True)
    out: dict[str, Any] = {"review_id": "r1", "is_relevant": yes > total - yes}
    confidence = {"is_relevant": round(max(yes, total - yes) / total, 3)}
    for name, values in TASK.fields.items():
        listed = list(values)
        weight = dict.fromkeys(listed, 0)
        for (model, _), run in counted.items():
            value = run.get(name)
            weight[value if isinstance(value, str) and value in weight else listed[0]] += weights[model]
        top = max(weight.values())
        out[name] = next(v for v in listed if weight[v] == top)  # a tie goes to the value listed first
        confidence[name] = round(top / total, 3)
    return {**out, "date": FACTS[1], "stars": FACTS[2], "useful": FACTS[3], "_confidence": confidence}


_answer = st.fixed_dictionaries(
    {
        "review_id": st.just("r1"),
        "_term_hash": st.sampled_from([TASK.fingerprint, TASK.fingerprint, TASK.fingerprint, "0000000000000000"]),
        "is_relevant": st.booleans(),
        "size": st.sampled_from(["none", "small", "large", "huge", None]),
        "staff": st.sampled_from(["no", "yes", 3]),
    }
)
_pair = st.sampled_from([("gpt-5-mini", 1), ("gpt-5-nano", 1), ("gpt-5-nano", 2), ("gpt-5-nano", 3)])
_stray = st.tuples(st.sampled_from(["gpt-5-mini", "gpt-5-nano", "gpt-4o"]), st.integers(1, 4))


@st.composite
def _runs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Often the whole quota, with repeats, strays (another model, a run past the quota, another fingerprint)
    and gaps, in any order."""
    pairs = draw(st.permutations([("gpt-5-mini", 1), ("gpt-5-nano", 1), ("gpt-5-nano", 2), ("gpt-5-nano", 3)]))
    pairs = pairs[draw(st.integers(0, 1)) :] + draw(st.lists(st.one_of(_pair, _stray), max_size=5))
    order = draw(st.permutations(pairs))
    return [{**draw(_answer), "_model": model, "_run": run} for model, run in order]


@settings(max_examples=300, deadline=None)
@given(_runs())
def test_the_tally_votes_as_the_rule_says_whatever_runs_arrive_in_any_order(runs: list[dict[str, Any]]) -> None:
    vote = Vote(TASK, QUOTAS)
    for run in runs:
        vote.add(run)
    expected = _rule(runs)
    complete = dict(vote.complete())
    assert ("r1" in complete) == (expected is not None)
    if expected is not None:
        made = vote.judgment("r1", complete["r1"], FACTS, "2026-12-01T00:00:00+00:00")
        assert made.pop("_aggregated") is True and made.pop("_aggregated_at") == "2026-12-01T00:00:00+00:00"
        assert made.pop("_term_hash") == TASK.fingerprint
        assert made == expected


def test_a_tie_goes_to_the_value_listed_first_and_relevance_to_no() -> None:
    vote = Vote(TASK, (Quota("gpt-5-nano", 2, 1),))
    for run, (relevant, size) in enumerate([(True, "large"), (False, "small")], 1):
        vote.add(
            {"review_id": "r1", "_model": "gpt-5-nano", "_run": run, "_term_hash": TASK.fingerprint}
            | {"is_relevant": relevant, "size": size, "staff": "yes"}
        )
    made = vote.judgment("r1", dict(vote.complete())["r1"], FACTS, "now")
    assert (made["is_relevant"], made["size"], made["staff"]) == (False, "small", "yes")
    assert made["_confidence"] == {"is_relevant": 0.5, "size": 0.5, "staff": 1.0}
