"""The local server refuses what the real API refuses, in its words and envelope, live and on each batch line:
a request builder that sends a bad body fails here, not only against the paid service. Valid bodies still pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import orjson
import pytest
from conftest import KEY
from fake_openai import FakeOpenAI

from addm_integration.addm.answers import response_format, strict_object

STRING = {"type": "string"}


def _body(properties: dict[str, Any] | None = None, schema: dict[str, Any] | None = None, **extra: Any) -> dict:
    fmt = response_format("judgment", properties or {"level": {"type": "string", "enum": ["low", "high"]}})
    if schema is not None:
        fmt["json_schema"]["schema"] = schema
    return {"model": "gpt-5-nano", "messages": [{"role": "user", "content": "Judge this."}], "response_format": fmt}


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = STRING
    for _ in range(levels):
        node = strict_object({"inner": node})
    return node


def _with(**change: Any) -> Callable[[dict], None]:
    return lambda body: body.update(change)


def _schema(schema: dict[str, Any]) -> Callable[[dict], None]:
    return lambda body: body["response_format"]["json_schema"].update(schema=schema)


def _send(server: FakeOpenAI, body: dict[str, Any]) -> openai.types.chat.ChatCompletion:
    api = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    known = {k: v for k, v in body.items() if k in ("model", "messages", "response_format", "temperature")}
    return api.chat.completions.create(**known, extra_body={k: v for k, v in body.items() if k not in known})


BAD = {
    "unknown parameter": (_with(reasoning_mode="deep"), None, None, "Unrecognized request argument"),
    "temperature on gpt-5": (_with(temperature=0.2), "temperature", "unsupported_value", "Only the default (1)"),
    "top_p on gpt-5": (_with(top_p=0.5), "top_p", "unsupported_value", "Only the default (1)"),
    "max_tokens on gpt-5": (_with(max_tokens=100), "max_tokens", "unsupported_parameter", "max_completion_tokens"),
    "unknown role": (
        _with(messages=[{"role": "robot", "content": "hi"}]),
        "messages[0].role",
        "invalid_value",
        "Invalid value: 'robot'",
    ),
    "unknown json_schema key": (
        lambda b: b["response_format"]["json_schema"].update(format="x"),
        "response_format.json_schema.format",
        "unknown_parameter",
        "Unknown parameter",
    ),
    "open root object": (
        _schema({"type": "object", "properties": {"a": STRING}, "required": ["a"]}),
        "response_format",
        None,
        "In context=(), 'additionalProperties' is required to be supplied and to be false",
    ),
    "open nested object": (
        _schema(strict_object({"a": {"type": "object", "properties": {}, "required": []}})),
        "response_format",
        None,
        "In context=('properties', 'a'), 'additionalProperties' is required",
    ),
    "property not required": (
        _schema({**strict_object({"a": STRING, "b": STRING}), "required": ["a"]}),
        "response_format",
        None,
        "Missing 'b'",
    ),
    "oneOf": (
        _schema(strict_object({"a": {"oneOf": [STRING, {"type": "integer"}]}})),
        "response_format",
        None,
        "'oneOf' is not permitted",
    ),
    "root not an object": (
        _schema({"type": "array", "items": STRING}),
        "response_format",
        None,
        "must be a JSON Schema of 'type",
    ),
    "over 1,000 enum values": (
        _schema(strict_object({f"f{i}": {"type": "string", "enum": [f"v{j}" for j in range(501)]} for i in range(2)})),
        "response_format",
        None,
        "1002 enum values",
    ),
    "long string enum of over 250 values": (
        _schema(strict_object({"a": {"type": "string", "enum": [f"{j:03d}" + "x" * 57 for j in range(251)]}})),
        "response_format",
        None,
        "at most 15000 characters",
    ),
    "over 10 levels of nesting": (_schema(_nested(11)), "response_format", None, "nested more than 10 levels"),
    "over 5,000 properties": (
        _schema(strict_object({f"p{i}": STRING for i in range(5001)})),
        "response_format",
        None,
        "5001 object properties",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_chat_request_gets_the_real_400_envelope(server: FakeOpenAI, case: str) -> None:
    change, param, code, says = BAD[case]
    body = _body()
    change(body)
    with pytest.raises(openai.BadRequestError) as caught:
        _send(server, body)
    error = caught.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert says in error["message"]


GOOD = {
    "temperature at its default": _with(temperature=1),
    "temperature on a non-reasoning model": _with(model="gpt-4o-mini", temperature=0.2),
    "10 levels of nesting": _schema(_nested(10)),
    "1,000 enum values": _schema(strict_object({"a": {"type": "string", "enum": [f"v{j}" for j in range(1000)]}})),
    "250 long enum values": _schema(
        strict_object({"a": {"type": "string", "enum": ["x" * 99 + f"{j}" for j in range(250)]}})
    ),
    "nullable, anyOf, $defs": _schema(
        {
            **strict_object({"a": {"type": ["string", "null"]}, "b": {"anyOf": [STRING, {"$ref": "#/$defs/n"}]}}),
            "$defs": {"n": strict_object({"x": {"type": "number", "minimum": 0}})},
        }
    ),
}


@pytest.mark.parametrize("case", GOOD, ids=list(GOOD))
def test_a_valid_chat_request_is_answered(server: FakeOpenAI, case: str) -> None:
    body = _body()
    GOOD[case](body)
    assert _send(server, body).choices[0].message.content


def test_a_bad_batch_line_gets_an_error_line_with_the_same_envelope(server: FakeOpenAI) -> None:
    api = openai.OpenAI(api_key=KEY, base_url=server.base_url)
    lines = [
        {"custom_id": "good", "method": "POST", "url": "/v1/chat/completions", "body": _body()},
        {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {**_body(), "temperature": 0}},
    ]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    upload = api.files.create(file=("lines.jsonl", data), purpose="batch")
    batch = api.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    server.set_batch_outcome(batch.id, "completed")
    done = api.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id and done.error_file_id
    (ok,) = api.files.content(done.output_file_id).text.splitlines()
    assert orjson.loads(ok)["custom_id"] == "good"
    (bad,) = [orjson.loads(line) for line in api.files.content(done.error_file_id).text.splitlines()]
    assert (bad["custom_id"], bad["error"], bad["response"]["status_code"]) == ("bad", None, 400)
    error = bad["response"]["body"]["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "temperature",
        "unsupported_value",
    )
