"""The custom_id codec: the only routing a batch result carries back, so it must be lossless for any input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addm_integration.addm.custom_id import CustomIdError, ReviewId, RunId, SampleId, decode, encode, parse

PLAIN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1)


@given(st.lists(st.text(), min_size=1, max_size=6))
def test_decode_inverts_encode_for_any_strings(parts: list[str]) -> None:
    assert decode(encode(*parts)) == tuple(parts)


@given(st.text(), st.text(), st.text())
def test_review_and_sample_ids_route_back_to_their_components(task: str, business: str, review: str) -> None:
    assert parse(ReviewId(task, business, review).encode()) == ReviewId(task, business, review)
    assert parse(SampleId(task, business).encode()) == SampleId(task, business)


@given(st.text(), st.text(), st.text(), st.text(), st.integers(min_value=1, max_value=10**6))
def test_topic_run_ids_route_back_to_topic_review_model_and_run(
    topic: str, business: str, review: str, model: str, run: int
) -> None:
    assert parse(RunId(topic, business, review, model, run).encode()) == RunId(topic, business, review, model, run)


def test_plain_topic_run_id_reads_as_upstream_writes_it() -> None:
    cid = RunId("G1_allergy", "b1", "r1", "gpt-5-nano", 3).encode()
    assert cid == "policy::G1_allergy::b1::r1::gpt-5-nano::run3"


@given(PLAIN, PLAIN, PLAIN)
def test_plain_ids_are_left_unchanged(task: str, business: str, review: str) -> None:
    assert ReviewId(task, business, review).encode() == f"review::{task}::{business}::{review}"
    assert SampleId(task, business).encode() == f"sample::{task}::{business}"


def test_separator_inside_a_component_survives() -> None:
    cid = SampleId("run::with::colons", "a:b%3A").encode()
    assert cid.count("::") == 2
    assert parse(cid) == SampleId("run::with::colons", "a:b%3A")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "review::a::b",
        "sample::a",
        "other::a::b",
        "sample::a%zz::b",
        "sample::a:b::c",
        "policy::t::b::r::m::run",
        "policy::t::b::r::m::run0",
        "policy::t::b::r::m::x1",
    ],
)
def test_foreign_or_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(CustomIdError):
        parse(bad)
