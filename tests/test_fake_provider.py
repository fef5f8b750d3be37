"""The in-process provider behaves as the service does, and fails where a test says: the engine's fast tests are
only worth what this fake is."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import orjson
import pytest
from fake_openai import chat_completion
from fake_provider import FAULTS, METHODS, Crash, End, FakeProvider

from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.provider.base import Phase, Provider
from addm_integration.provider.openai_api import OpenAIProvider


def _body(model: str = "gpt-5-nano", text: str = "hi") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _send(fake: FakeProvider, tmp_path: Path, n: int = 4, model: str = "gpt-5-nano", tag: str = "k1") -> str:
    path = tmp_path / f"{tag}.jsonl"
    path.write_bytes(b"".join(fake.request_line(f"c{i}", _body(model, f"q{i}")) for i in range(n)))
    file_id = fake.upload(path, f"addm-{tag}.jsonl")
    return fake.create(file_id, {"addm_idem_key": tag}).id


def _results(fake: FakeProvider, batch_id: str, tmp_path: Path) -> dict[str, object]:
    remote = next(b for b in fake.list() if b.id == batch_id)
    out = {}
    for file_id in (remote.output_file_id, remote.error_file_id):
        if file_id:
            dest = tmp_path / f"{file_id}.jsonl"
            meta = fake.download(file_id, dest)
            assert meta["bytes"] == dest.stat().st_size
            for raw in dest.read_bytes().splitlines():
                outcome = fake.read_line(orjson.loads(raw))
                out[outcome.custom_id] = outcome
    return out


def test_every_provider_method_is_implemented_by_the_adapter_and_the_fake_alike() -> None:
    wanted = {n for n, v in vars(Provider).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert wanted == set(METHODS) | {"check", "request_line", "read_line", "aclose"}
    for name in wanted:
        expected = list(inspect.signature(getattr(Provider, name)).parameters)
        for cls in (OpenAIProvider, FakeProvider):
            assert list(inspect.signature(getattr(cls, name)).parameters) == expected, (cls, name)
            assert inspect.iscoroutinefunction(getattr(cls, name)) == inspect.iscoroutinefunction(
                getattr(Provider, name)
            )


def test_a_batch_walks_validating_in_progress_finalizing_completed_one_step_per_check(tmp_path: Path) -> None:
    fake = FakeProvider()
    batch_id = _send(fake, tmp_path)
    seen = [(r.status, r.phase) for r in (fake.retrieve(batch_id) for _ in range(3))]
    assert seen == [
        ("in_progress", Phase.RUNNING),
        ("finalizing", Phase.RUNNING),
        ("completed", Phase.FINISHED),
    ]
    outcomes = _results(fake, batch_id, tmp_path)
    assert sorted(outcomes) == ["c0", "c1", "c2", "c3"] and all(o.ok for o in outcomes.values())
    expected = chat_completion(_body(text="q0"))[1]["choices"][0]["message"]["content"]
    assert outcomes["c0"].content == expected  # the same answer the local server gives


def test_an_expired_batch_keeps_what_ran_and_reports_the_rest_as_batch_expired(tmp_path: Path) -> None:
    fake = FakeProvider(ends=[End("expired", done=1)])
    batch_id = _send(fake, tmp_path)
    assert [fake.retrieve(batch_id).status for _ in range(2)] == ["in_progress", "expired"]
    outcomes = _results(fake, batch_id, tmp_path)
    assert outcomes["c0"].ok
    assert {o.error for c, o in outcomes.items() if c != "c0"} == {"batch_expired"}
    assert all(o.retryable for c, o in outcomes.items() if c != "c0")


def test_a_cancelled_batch_ends_cancelling_then_cancelled_and_refuses_a_second_cancel(tmp_path: Path) -> None:
    fake = FakeProvider()
    batch_id = _send(fake, tmp_path)
    assert fake.cancel(batch_id).phase is Phase.STOPPING
    assert fake.retrieve(batch_id).phase is Phase.CANCELLED
    outcomes = _results(fake, batch_id, tmp_path)
    assert {o.error for o in outcomes.values()} == {"batch_cancelled"}
    assert not any(o.retryable for o in outcomes.values())
    with pytest.raises(BadInput, match="409"):
        fake.cancel(batch_id)


def test_validation_fails_a_batch_over_the_token_limit_or_of_mixed_models_with_no_files(tmp_path: Path) -> None:
    fake = FakeProvider()
    first = _send(fake, tmp_path, n=2, tag="a")
    fake.token_limit = (tmp_path / "a.jsonl").stat().st_size // 4 + 10  # room for one such batch, not two
    assert fake.retrieve(first).phase is Phase.RUNNING
    second = _send(fake, tmp_path, n=2, tag="b")
    failed = fake.retrieve(second)
    assert failed.phase is Phase.FAILED and failed.errors[0]["code"] == "token_limit_exceeded"
    assert failed.output_file_id is None and failed.error_file_id is None
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(fake.request_line("x", _body("gpt-5-nano")) + fake.request_line("y", _body("gpt-5-mini")))
    batch = fake.create(fake.upload(mixed, "mixed.jsonl"), {})
    assert fake.retrieve(batch.id).errors[0]["code"] == "mismatched_model"
    assert fake.batches[second].ran == () and fake.paid() == []  # a failed batch runs nothing, bills nothing


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_strikes_exactly_the_call_it_names(tmp_path: Path, fault: str) -> None:
    fake = FakeProvider()
    fake.fail("create", 2, fault)
    _send(fake, tmp_path, tag="a")  # the first create is untouched
    raised = {
        "server_error": Transient,
        "timeout": Transient,
        "lost_reply": Transient,
        "unauthorized": Refused,
        "no_credit": Refused,
        "crash": Crash,
        "crash_after": Crash,
    }[fault]
    with pytest.raises(raised):
        _send(fake, tmp_path, tag="b")
    took_effect = fault in ("lost_reply", "crash_after")
    assert (fake.find_batch("b", 0) is not None) is took_effect  # what an engine must look up after doubt
    _send(fake, tmp_path, tag="c")  # and the fault is spent
    assert len(fake.batches) == 2 + took_effect


@pytest.mark.parametrize("method", METHODS)
def test_every_method_can_be_failed_by_its_place_in_the_sequence_of_calls(tmp_path: Path, method: str) -> None:
    fake = FakeProvider()
    batch_id = _send(fake, tmp_path)
    fake.fail_call(len(fake.calls) + 1, "server_error")
    calls = {
        "upload": lambda: fake.upload(tmp_path / "k1.jsonl", "again.jsonl"),
        "find_file": lambda: fake.find_file("addm-k1.jsonl", 1, 0),
        "create": lambda: fake.create(next(iter(fake.files)), {}),
        "find_batch": lambda: fake.find_batch("k1", 0),
        "retrieve": lambda: fake.retrieve(batch_id),
        "cancel": lambda: fake.cancel(batch_id),
        "list": lambda: list(fake.list()),
        "download": lambda: fake.download(next(iter(fake.files)), tmp_path / "d.jsonl"),
        "chat": lambda: asyncio.run(fake.chat("c9", _body())),
    }
    if method == "chat":  # a live call's failure is an outcome, as over HTTP
        outcome = calls[method]()
        assert outcome.error and outcome.retryable and fake.chats == []
    else:
        with pytest.raises(Transient):
            calls[method]()
    assert fake.calls[-1] == method
    calls[method]()  # the next call of it goes through


def test_a_live_call_answers_as_the_server_and_a_refusal_raises() -> None:
    fake = FakeProvider()
    fake.fail("chat", 2, "no_credit")
    first = asyncio.run(fake.chat("c1", _body()))
    assert first.ok and first.content == chat_completion(_body())[1]["choices"][0]["message"]["content"]
    with pytest.raises(Refused, match="insufficient_quota"):
        asyncio.run(fake.chat("c2", _body()))
    assert fake.chats == ["c1"]
