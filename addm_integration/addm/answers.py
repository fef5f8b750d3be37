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


# OpenAI's limits on a strict structured-output schema: past them the request is refused (after paying nothing,
# but for a batch only once it ran), so they are checked before anything is sent.
MAX_PROPERTIES = 5_000
MAX_NESTING = 10
MAX_ENUM_VALUES = 1_000
LARGE_ENUM = 250
MAX_LARGE_ENUM_CHARS = 15_000


def check_strict(schema: Mapping[str, Any]) -> str | None:
    """What makes ``schema`` invalid under strict mode (open objects, optional properties, the size limits), or
    None when it is valid."""
    counts = {"properties": 0, "enum": 0}
    problem = _check_node(schema, 1, counts, "schema")
    if problem:
        return problem
    if counts["properties"] > MAX_PROPERTIES:
        return f"{counts['properties']:,} properties in all, over the limit of {MAX_PROPERTIES:,}"
    if counts["enum"] > MAX_ENUM_VALUES:
        return f"{counts['enum']:,} enum values in all, over the limit of {MAX_ENUM_VALUES:,}"
    return None


def _check_node(node: Any, depth: int, counts: dict[str, int], where: str) -> str | None:
    if not isinstance(node, Mapping):
        return f"{where}: not a schema object"
    enum = node.get("enum")
    if enum is not None:
        counts["enum"] += len(enum)
        chars = sum(len(str(v)) for v in enum)
        if len(enum) > LARGE_ENUM and chars > MAX_LARGE_ENUM_CHARS:
            return f"{where}: an enum of {len(enum)} values has {chars:,} characters, over {MAX_LARGE_ENUM_CHARS:,}"
    if node.get("type") == "object":
        if depth > MAX_NESTING:
            return f"{where}: nested more than {MAX_NESTING} levels deep"
        properties = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return f"{where}: an object must set additionalProperties to false"
        if sorted(node.get("required") or []) != sorted(properties):
            return f"{where}: every property of an object must be required"
        counts["properties"] += len(properties)
        for name, child in properties.items():
            problem = _check_node(child, depth + 1, counts, f"{where}.{name}")
            if problem:
                return problem
    if node.get("type") == "array":
        return _check_node(node.get("items"), depth, counts, f"{where}[]")
    return None
