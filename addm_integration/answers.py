"""Structured-output plumbing shared by both pipelines: the ``response_format`` and reading the answer text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def response_format(name: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """A strict json_schema format: strict mode wants every property required and no extra ones."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _NAME_UNSAFE.sub("_", name)[:64],
            "strict": True,
            "schema": strict_object(properties),
        },
    }


def strict_object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }


def parse_json_answer(text: str) -> Any:
    """The JSON inside an answer, a surrounding Markdown code fence tolerated; raises ValueError."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        match = _FENCE.match(text)
        if match is None:
            raise ValueError(f"not JSON ({exc.msg})") from None
    try:
        return orjson.loads(match.group(1))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
