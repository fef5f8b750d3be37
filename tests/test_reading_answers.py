"""Reading an answer and the id it came back under, as every line of a batch is read: the checks a faster reading
must keep, in-process."""

from __future__ import annotations

import pytest

from addm_integration.addm.custom_id import ReviewId, RunId, SampleId, route
from addm_integration.addm.extract import parse_judgment
from addm_integration.addm.inputs import Task
from addm_integration.engine.pipeline import sum_usage
from addm_integration.provider.openai_api import from_batch_line

TASK = Task("T1", "a task", {"severity": {"none": "-", "mild": "-"}, "claim": {"false": "-", "true": "-"}})
FACTS = ["b1", "2020-01-02 03:04:05", 4.0, 2]


def _enriched(task: Task) -> dict[str, object]:
    """What every judgment of FACTS carries besides the answer."""
    return {"date": FACTS[1], "stars": FACTS[2], "useful": FACTS[3], "_term_hash": task.fingerprint}


def test_a_value_outside_the_list_or_not_a_string_falls_back_to_the_fields_default() -> None:
    text = '{"is_relevant": true, "severity": "extreme", "claim": ["true"]}'
    judgment = parse_judgment(TASK, "r1", FACTS, text)
    assert judgment == {
        "review_id": "r1",
        "is_relevant": True,
        "severity": "none",
        "claim": "false",
        "date": "2020-01-02 03:04:05",
        "stars": 4.0,
        "useful": 2,
        "_term_hash": TASK.fingerprint,
    }
    assert list(judgment) == ["review_id", "is_relevant", "severity", "claim", "date", "stars", "useful", "_term_hash"]


def test_an_answer_that_is_not_relevant_keeps_none_of_its_fields_and_a_fenced_one_is_read() -> None:
    judgment = parse_judgment(TASK, "r1", FACTS, '```json\n{"is_relevant": false, "severity": "mild"}\n```')
    assert judgment == {"review_id": "r1", "is_relevant": False, **_enriched(TASK)}
    assert parse_judgment(TASK, "r1", FACTS, '{"is_relevant": true}')["severity"] == "none"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[true]", "not a JSON object"),
        ('{"is_relevant": 1}', "is_relevant missing or not a boolean"),
        ('{"severity": "mild"}', "is_relevant missing or not a boolean"),
        ("{not json", "not JSON"),
    ],
)
def test_an_answer_that_cannot_be_read_is_refused_with_its_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_judgment(TASK, "r1", FACTS, text)


@pytest.mark.parametrize("facts", [FACTS[:3], [*FACTS, "extra"]])
def test_a_snapshot_of_a_review_of_another_shape_is_refused_not_read_by_position(facts: list[object]) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        parse_judgment(TASK, "r1", facts, '{"is_relevant": false}')


def test_route_reads_escaped_ids_in_either_case_of_the_escape() -> None:
    escaped = ReviewId("G1a", "b:1", "r%2::x").encode()
    assert route(escaped, ReviewId) == ReviewId("G1a", "b:1", "r%2::x")
    assert route("review::G1a::b%3a1::r", ReviewId) == ReviewId("G1a", "b:1", "r")
    assert route(RunId("G1a", "b", "r", "m", 2).encode(), RunId) == RunId("G1a", "b", "r", "m", 2)


@pytest.mark.parametrize(
    "cid",
    [
        SampleId("run", "b").encode(),
        "review::G1a::b:1::r",
        "review::G1a::b::r::x",
        "policy::t::b::r::m::run01",
        "policy::t::b::r::m::run\u0661",
    ],
)
def test_route_gives_none_for_another_kind_or_a_malformed_id(cid: str) -> None:
    assert route(cid, ReviewId) is None and route(cid, RunId) is None


@pytest.mark.parametrize("content", [None, ["text"], 5])
def test_a_result_line_without_text_content_is_a_retryable_failure_not_an_answer(content: object) -> None:
    body = {"choices": [{"message": {"content": content}}]}
    outcome = from_batch_line({"custom_id": "c1", "response": {"status_code": 200, "body": body}})
    assert outcome.content is None and outcome.retryable and outcome.error and "content" in outcome.error


def test_an_answer_text_read_before_is_read_under_each_task_apart_into_a_judgment_of_its_own() -> None:
    text = '{"is_relevant": true, "severity": "mild", "claim": "maybe"}'
    first = parse_judgment(TASK, "r1", FACTS, text)
    first["_model"], first["severity"] = "gpt-5-nano", "changed"  # topic mode adds to the judgment it gets
    again = parse_judgment(TASK, "r2", FACTS, text)
    assert again == {"review_id": "r2", "is_relevant": True, "severity": "mild", "claim": "false", **_enriched(TASK)}
    other = Task("T1", "other values", {"severity": {"severe": "-", "mild": "-"}, "claim": {"maybe": "-"}})
    read = parse_judgment(other, "r1", FACTS, text)
    assert read == {"review_id": "r1", "is_relevant": True, "severity": "mild", "claim": "maybe", **_enriched(other)}
    with pytest.raises(ValueError, match="is_related missing"):
        parse_judgment(Task("T1", "another flag", TASK.fields, "is_related"), "r1", FACTS, text)


def test_the_tokens_of_result_lines_add_up_a_count_missing_or_not_an_integer_counting_nothing() -> None:
    def line(usage: object) -> dict[str, object]:
        body = {"choices": [{"message": {"content": "{}"}}], "usage": usage}
        return {"custom_id": "c", "response": {"status_code": 200, "body": body}}

    full = {"prompt_tokens": 700, "completion_tokens": 30, "total_tokens": 730, "prompt_tokens_details": {}}
    odd = {"prompt_tokens": "7", "completion_tokens": True, "total_tokens": 5.0}
    outcomes = [from_batch_line(line(u)) for u in (full, {"prompt_tokens": 5}, odd, None, [1, 2, 3])]
    assert sum_usage(outcomes) == {"prompt_tokens": 705, "completion_tokens": 30, "total_tokens": 730}
