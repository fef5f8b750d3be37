"""A local fake of the OpenAI Files, Batches and Chat Completions APIs (the standard library, plus the project's one
atomic write for ``--url-file``).

Why it exists: the pipeline must be exercised end to end (upload, batch lifecycle, partial results,
retries, crashes mid-call) without spending money or waiting 24 hours, and the tests must talk to it
through the real ``openai`` SDK over real HTTP so that SDK behaviour (retries, pagination, streaming
downloads, exception classes) is part of what is tested. The shapes follow the OpenAI Files, Batches
and Chat Completions APIs as they really behave (objects, statuses, request counts, result and error lines).

Key design choices:

* Everything is deterministic where the real API is merely "some model output": a chat completion is a
  pure function of its request body (seeded by the sha256 of the canonical JSON), so the same body gives
  the same answer ondemand and inside a batch, and tests can compare the two.
* The batch lifecycle is driven by wall time since creation and evaluated lazily on every read, so no
  background thread is needed and ``batch_delay=0`` completes a batch on its first retrieve.
* Faults (HTTP errors, dropped connections, held requests, forced batch outcomes) are injected through
  Python methods or ``/_control/...`` HTTP calls, so a server started as a subprocess can be driven too.

Usage as a program::

    python scripts/fake_openai.py --port 0 --batch-delay 6 --url-file /tmp/fake.url
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from addm_integration.store.workspace import atomic_file

__all__ = ["FakeOpenAI", "chat_completion", "generate_from_schema", "main", "parse_batch_input"]

#: ``created`` of every chat completion: a constant so the same body gives byte-identical bodies.
CHAT_CREATED = 1_700_000_000
BATCH_WINDOW_SECONDS = 86_400
FILE_RETENTION_SECONDS = 2_592_000
MAX_BATCH_LINES = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
#: The fake only executes chat completions, so it refuses other batch endpoints up front rather than
#: pretending to run them.
BATCH_ENDPOINTS = ("/v1/chat/completions",)
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
OUTCOME_STATUSES = ("completed", "expired", "cancelled", "failed")
IS_RELEVANT_TRUE_PROBABILITY = 0.35
NULL_PROBABILITY = 0.2

_WORDS = (
    "friendly staff",
    "quick service",
    "quiet corner",
    "long wait",
    "fresh bread",
    "outdoor seating",
    "street parking",
    "late hours",
    "clean tables",
    "loud music",
    "generous portions",
    "gluten free options",
    "cash only",
    "dog friendly",
    "slow kitchen",
    "great coffee",
)


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build the ``{"error": {...}}`` envelope the SDK parses into ``APIStatusError.body``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


#: Account refusals as the real API words them, by error code (injected with ``fail_next(..., code=...)``).
ACCOUNT_ERRORS = {
    "insufficient_quota": (
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
    ),
    "billing_hard_limit_reached": ("Billing hard limit has been reached.", "invalid_request_error"),
    "invalid_api_key": ("Incorrect API key provided.", "invalid_request_error"),
}


def error_for_status(status: int, code: str | None = None) -> dict[str, Any]:
    """Return a realistic OpenAI error body for an injected HTTP status (and, optionally, error code).

    Why: clients branch on ``type``/``code`` (e.g. ``rate_limit_exceeded`` against ``insufficient_quota``,
    both 429), so injected failures must look like the ones the real API sends, not like a bare status line.
    """
    if code is not None:
        message, type_ = ACCOUNT_ERRORS.get(
            code, (f"Request failed with code {code} (fake_openai injected fault).", "")
        )
        return error_body(message, type_ or "invalid_request_error", None, code)
    if status == 403:
        return error_body("You are not allowed to sample from this model", "invalid_request_error")
    if status == 429:
        return error_body(
            "Rate limit reached for requests (fake_openai injected fault).", "requests", None, "rate_limit_exceeded"
        )
    if status == 408:
        return error_body("Request timed out.", "server_error", None, "timeout")
    if status == 503:
        return error_body("The engine is currently overloaded, please try again later.", "server_error")
    if status >= 500:
        return error_body("The server had an error while processing your request. Sorry about that!", "server_error")
    if status == 400:
        return error_body(
            "This model's maximum context length was exceeded (fake_openai injected fault).",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )
    return error_body(f"Request failed with status {status} (fake_openai injected fault).")


class ApiError(Exception):
    """An OpenAI-shaped HTTP error; raised anywhere in request handling and rendered by the dispatcher."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, param, code)


# --------------------------------------------------------------------------------------------------------
# Deterministic content generation (shared by ondemand chat and batch lines)
# --------------------------------------------------------------------------------------------------------


def canonical_seed(body: Any) -> str:
    """sha256 hex of the canonical JSON (sorted keys, compact) of a request body.

    Why canonical: the SDK and a JSONL line may serialise the same dict with different key order or
    spacing; both must map to the same seed.
    """
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _frac(seed: str, path: str) -> float:
    """A uniform number in [0, 1) derived from ``seed`` and a schema path.

    Why hash per path instead of a shared ``random.Random``: a value depends only on its own position,
    so adding a property to a schema does not reshuffle every other value, and the result is stable
    across Python versions.
    """
    digest = hashlib.sha256(f"{seed}|{path}".encode()).hexdigest()
    return int(digest[:13], 16) / float(16**13)


def _pick(seed: str, path: str, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[min(int(_frac(seed, path) * len(options)), len(options) - 1)]


def _phrase(seed: str, path: str) -> str:
    """A short plausible phrase (1-2 fragments) so free-text fields are non-empty and readable."""
    first = _pick(seed, path + "#w0", _WORDS)
    if _frac(seed, path + "#n") < 0.5:
        return first.capitalize()
    second = _pick(seed, path + "#w1", [w for w in _WORDS if w != first])
    return f"{first.capitalize()} and {second}"


def _types(schema: Mapping[str, Any]) -> list[str]:
    type_ = schema.get("type")
    if isinstance(type_, str):
        return [type_]
    if isinstance(type_, list):
        return [t for t in type_ if isinstance(t, str)]
    return []


def _resolve_ref(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    """Follow a local ``#/...`` JSON pointer (pydantic puts nested models and enums in ``$defs``)."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            return {}
        node = node[key]
    return node if isinstance(node, Mapping) else {}


def _gen(schema: Any, root: Mapping[str, Any], seed: str, path: str, irrelevant: bool, depth: int) -> Any:
    """Generate one value valid for ``schema`` (strict structured-outputs subset)."""
    if not isinstance(schema, Mapping) or depth > 16:
        return None
    if isinstance(schema.get("$ref"), str):
        merged = {**_resolve_ref(root, schema["$ref"]), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _gen(merged, root, seed, path, irrelevant, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        values = schema["enum"]
        # An irrelevant verdict gets the "neutral" first enum value, as a real model tends to do.
        return values[0] if irrelevant else _pick(seed, path + "#enum", values)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        non_null = [b for b in branches if not (isinstance(b, Mapping) and _types(b) == ["null"])]
        if len(non_null) < len(branches) and (not non_null or _frac(seed, path + "#null") < NULL_PROBABILITY):
            return None
        branch = _pick(seed, path + "#any", non_null)
        return _gen(branch, root, seed, path, irrelevant, depth + 1)
    types = _types(schema)
    non_null_types = [t for t in types if t != "null"]
    if "null" in types and (not non_null_types or _frac(seed, path + "#null") < NULL_PROBABILITY):
        return None
    kind = _pick(seed, path + "#type", non_null_types) if non_null_types else None
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _gen_object(schema, root, seed, path, irrelevant, depth)
    if kind == "array":
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 2)))
        hi = max(lo, min(hi, max(lo, 2)))
        count = lo + min(int(_frac(seed, path + "#len") * (hi - lo + 1)), hi - lo)
        items = schema.get("items", {})
        return [_gen(items, root, seed, f"{path}[{i}]", irrelevant, depth + 1) for i in range(count)]
    if kind == "boolean":
        return _frac(seed, path) < 0.5
    if kind == "integer":
        lo = int(schema.get("minimum", 0))
        hi = int(schema.get("maximum", lo + 5))
        return lo + min(int(_frac(seed, path) * (hi - lo + 1)), max(hi - lo, 0))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 1.0))
        return round(lo + _frac(seed, path) * (hi - lo), 2)
    if kind == "null":
        return None
    return _phrase(seed, path)


def _gen_object(
    schema: Mapping[str, Any], root: Mapping[str, Any], seed: str, path: str, irrelevant: bool, depth: int
) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping):
        return {}
    relevance: bool | None = None
    flag_schema = properties.get("is_relevant")
    if isinstance(flag_schema, Mapping) and "boolean" in _types(flag_schema):
        relevance = _frac(seed, path + ".is_relevant") < IS_RELEVANT_TRUE_PROBABILITY
    child_irrelevant = irrelevant or relevance is False
    out: dict[str, Any] = {}
    for name, sub in properties.items():
        if name == "is_relevant" and relevance is not None:
            out[name] = relevance
        else:
            out[name] = _gen(sub, root, seed, f"{path}.{name}", child_irrelevant, depth + 1)
    return out


def generate_from_schema(schema: Mapping[str, Any], seed: str) -> Any:
    """Deterministically generate a plausible value valid for a strict JSON schema.

    Rules (so outputs look like a real judging model): a boolean ``is_relevant`` is true with ~35%
    probability and, when false, enum fields in that object take their first value; free strings are
    short phrases; arrays have 0-2 items; nullable values are null ~20% of the time.
    """
    return _gen(schema, schema, seed, "$", False, 0)


def _message_text(messages: list[Any]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "".join(parts)


def prompt_tokens(messages: Any) -> int:
    """The input tokens of a request, as its usage reports them and the enqueued-token limit counts them."""
    return math.ceil(len(_message_text(messages if isinstance(messages, list) else [])) / 4)


def chat_completion(body: Any, *, garbage: bool = False) -> tuple[int, dict[str, Any]]:
    """Answer one ``/v1/chat/completions`` request body: ``(status_code, response_body)``.

    Why one function: ondemand calls and batch lines must produce the same body for the same request,
    which is what the pipeline relies on when it mixes the two modes. ``garbage`` returns a 200 whose
    content is not valid JSON, to rehearse a model that ignores the schema.
    """
    refused = check_chat_request(body)
    if refused is not None:
        return refused.status, refused.body
    response_format = body.get("response_format")
    seed = canonical_seed(body)
    content: str
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        spec = response_format["json_schema"]  # checked above
        schema = spec.get("schema") if isinstance(spec.get("schema"), Mapping) else {"type": "object"}
        value = generate_from_schema(schema, seed)
        content = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif isinstance(response_format, Mapping) and response_format.get("type") == "json_object":
        # JSON mode guarantees valid JSON (not a schema), so answer with a small object.
        content = json.dumps({"answer": _phrase(seed, "$answer")}, separators=(",", ":"))
    else:
        content = f"This is a deterministic reply from fake_openai: {_phrase(seed, '$text').lower()}."
    if garbage:
        content = "Sure! Here is the JSON you asked for: " + content[: len(content) // 2]
    prompt = prompt_tokens(body["messages"])
    completion_tokens = math.ceil(len(content) / 4)
    return 200, {
        "id": f"chatcmpl-{seed[:24]}",
        "object": "chat.completion",
        "created": CHAT_CREATED,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


# --------------------------------------------------------------------------------------------------------
# Request validation: what the real API refuses with a 400 (a request the fake would answer, the real one not)
# --------------------------------------------------------------------------------------------------------

#: The top-level parameters of ``POST /v1/chat/completions`` (openai-python's ``CompletionCreateParams``).
CHAT_PARAMETERS = frozenset(
    {
        "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n", "parallel_tool_calls",
        "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store",
        "stream", "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
        "verbosity", "web_search_options",
    }
)  # fmt: skip
MESSAGE_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
#: Reasoning models take sampling parameters at their default only, and no ``max_tokens``.
REASONING_MODEL_PREFIXES = ("gpt-5", "o1", "o3", "o4")
DEFAULT_ONLY_ON_REASONING = {"temperature": 1, "top_p": 1}
UNSUPPORTED_ON_REASONING = ("max_tokens", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
JSON_SCHEMA_KEYS = frozenset({"name", "description", "schema", "strict"})
SCHEMA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
#: Strict structured outputs: the documented limits and the keywords it refuses.
STRICT_MAX_PROPERTIES = 5_000
STRICT_MAX_DEPTH = 10
STRICT_MAX_ENUM_VALUES = 1_000
STRICT_LARGE_ENUM = 250
STRICT_LARGE_ENUM_CHARS = 15_000
STRICT_MAX_STRING_CHARS = 120_000
STRICT_FORBIDDEN = ("allOf", "oneOf", "not", "dependentRequired", "dependentSchemas", "if", "then", "else")
SCHEMA_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_MODEL_PREFIXES) and "-chat" not in model


def check_chat_request(body: Any) -> ApiError | None:
    """The 400 the real API answers to this chat completion body, or None when it would accept it.

    The one validation of a chat request, a live call's and a batch line's alike. Why: a fake that answers
    anything lets a request the service refuses pass every test; these are the refusals a request builder can
    cause (a missing model or messages, unknown or unsupported parameters, bad roles, a strict schema outside
    the documented subset), worded as the service words them.
    """
    if not isinstance(body, Mapping):
        return _bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _bad("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if body.get("stream"):
        return _bad("fake_openai does not implement streaming chat completions.", "stream")
    for name in body:
        if name not in CHAT_PARAMETERS:
            return _bad(f"Unrecognized request argument supplied: {name}")
    if is_reasoning_model(model):
        for name in UNSUPPORTED_ON_REASONING:
            if body.get(name) is not None:
                hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
                return _bad(
                    f"Unsupported parameter: '{name}' is not supported with this model.{hint}",
                    name,
                    "unsupported_parameter",
                )
        for name, default in DEFAULT_ONLY_ON_REASONING.items():
            value = body.get(name)
            if value is not None and value != default:
                return _bad(
                    f"Unsupported value: '{name}' does not support {value} with this model. "
                    f"Only the default ({default}) value is supported.",
                    name,
                    "unsupported_value",
                )
    for index, message in enumerate(body["messages"]):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            return _bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            supported = ", ".join(f"'{r}'" for r in MESSAGE_ROLES[:-1]) + f", and '{MESSAGE_ROLES[-1]}'"
            return _bad(
                f"Invalid value: '{role}'. Supported values are: {supported}.", f"{where}.role", "invalid_value"
            )
        if role != "assistant" and "content" not in message:
            return _bad(
                f"Missing required parameter: '{where}.content'.", f"{where}.content", "missing_required_parameter"
            )
    response_format = body.get("response_format")
    return _check_response_format(response_format) if response_format is not None else None


def _check_response_format(response_format: Any) -> ApiError | None:
    if not isinstance(response_format, Mapping):
        return _bad("Invalid type for 'response_format': expected an object.", "response_format", "invalid_type")
    kind = response_format.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        return _bad(
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            "response_format.type",
            "invalid_value",
        )
    allowed = {"type", "json_schema"} if kind == "json_schema" else {"type"}
    for name in response_format:
        if name not in allowed:
            return _bad(f"Unknown parameter: 'response_format.{name}'.", f"response_format.{name}", "unknown_parameter")
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        return _bad(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    for name in spec:
        if name not in JSON_SCHEMA_KEYS:
            param = f"response_format.json_schema.{name}"
            return _bad(f"Unknown parameter: '{param}'.", param, "unknown_parameter")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        param = "response_format.json_schema.name"
        return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if len(name) > 64 or not set(name) <= SCHEMA_NAME_CHARS:
        return _bad(
            "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    if spec.get("strict") is True:
        problem = strict_schema_problem(spec.get("schema"))
        if problem is not None:
            return _bad(f"Invalid schema for response_format '{name}': {problem}", "response_format")
    return None


def strict_schema_problem(schema: Any) -> str | None:
    """Why strict structured outputs refuse ``schema``, in the service's words, or None when it is valid.

    The rules are the documented ones: the root is an object (not ``anyOf``); every object has
    ``additionalProperties: false`` and lists every property in ``required``; no ``allOf``, ``oneOf``, ``not``,
    ``if``/``then``/``else``, ``dependentRequired``/``dependentSchemas``; at most 5,000 properties in all and
    10 levels of object nesting; at most 1,000 enum values in all, and a string enum of more than 250 values
    at most 15,000 characters; property names, definition names, enum and const values at most 120,000
    characters in all.
    """
    if not isinstance(schema, Mapping) or "object" not in _types(schema) or "anyOf" in schema:
        got = schema.get("type") if isinstance(schema, Mapping) else None
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
    totals = {"properties": 0, "enum_values": 0, "chars": 0}
    problem = _strict_node(schema, (), 0, totals)
    if problem is not None:
        return problem
    if totals["properties"] > STRICT_MAX_PROPERTIES:
        return f"the schema has {totals['properties']} object properties in all; at most {STRICT_MAX_PROPERTIES}."
    if totals["enum_values"] > STRICT_MAX_ENUM_VALUES:
        return f"the schema has {totals['enum_values']} enum values in all; at most {STRICT_MAX_ENUM_VALUES}."
    if totals["chars"] > STRICT_MAX_STRING_CHARS:
        return (
            f"the total string length of property names, definition names, enum values and const values is "
            f"{totals['chars']}; at most {STRICT_MAX_STRING_CHARS}."
        )
    return None


def _context(path: tuple[str, ...]) -> str:
    return "In context=(" + ", ".join(f"'{p}'" for p in path) + ("," if len(path) == 1 else "") + ")"


def _strict_node(node: Any, path: tuple[str, ...], depth: int, totals: dict[str, int]) -> str | None:
    if not isinstance(node, Mapping):
        return f"{_context(path)}, schema must be an object."
    for keyword in STRICT_FORBIDDEN:
        if keyword in node:
            return f"{_context(path)}, '{keyword}' is not permitted."
    for kind in _types(node):
        if kind not in SCHEMA_TYPES:
            return f"{_context(path)}, '{kind}' is not a valid type."
    if isinstance(node.get("enum"), list):
        values = node["enum"]
        totals["enum_values"] += len(values)
        text = sum(len(v) for v in values if isinstance(v, str))
        totals["chars"] += text
        large = len(values) > STRICT_LARGE_ENUM and all(isinstance(v, str) for v in values)
        if large and text > STRICT_LARGE_ENUM_CHARS:
            return (
                f"{_context(path)}, an enum of more than {STRICT_LARGE_ENUM} string values may have at most "
                f"{STRICT_LARGE_ENUM_CHARS} characters in all; this one has {text}."
            )
    if isinstance(node.get("const"), str):
        totals["chars"] += len(node["const"])
    for defs in ("$defs", "definitions"):
        if isinstance(node.get(defs), Mapping):
            for name, sub in node[defs].items():
                totals["chars"] += len(name)
                problem = _strict_node(sub, (*path, defs, name), depth, totals)
                if problem is not None:
                    return problem
    if "object" in _types(node) or "properties" in node:
        if depth >= STRICT_MAX_DEPTH:  # the root is the first level
            return f"{_context(path)}, objects are nested more than {STRICT_MAX_DEPTH} levels deep."
        problem = _strict_object(node, path, depth, totals)
        if problem is not None:
            return problem
    if "items" in node:
        items = node["items"]
        problem = _strict_node(items, (*path, "items"), depth, totals) if isinstance(items, Mapping) else None
        if not isinstance(items, Mapping):
            return f"{_context(path)}, 'items' must be a schema object."
        if problem is not None:
            return problem
    if "anyOf" in node:
        branches = node["anyOf"]
        if not isinstance(branches, list) or not branches:
            return f"{_context(path)}, 'anyOf' must be a non-empty array."
        for index, branch in enumerate(branches):
            problem = _strict_node(branch, (*path, "anyOf", str(index)), depth, totals)
            if problem is not None:
                return problem
    return None


def _strict_object(node: Mapping[str, Any], path: tuple[str, ...], depth: int, totals: dict[str, int]) -> str | None:
    properties = node.get("properties", {})
    if not isinstance(properties, Mapping):
        return f"{_context(path)}, 'properties' must be an object."
    if node.get("additionalProperties") is not False:
        return f"{_context(path)}, 'additionalProperties' is required to be supplied and to be false."
    required = node.get("required")
    if not isinstance(required, list):
        return (
            f"{_context(path)}, 'required' is required to be supplied and to be an array including every key in "
            "properties."
        )
    for name in properties:
        if name not in required:
            return (
                f"{_context(path)}, 'required' is required to be supplied and to be an array including every key "
                f"in properties. Missing '{name}'."
            )
    for name in required:
        if name not in properties:
            return f"{_context(path)}, Extra required key '{name}' supplied."
    totals["properties"] += len(properties)
    for name, sub in properties.items():
        totals["chars"] += len(name)
        problem = _strict_node(sub, (*path, "properties", name), depth + 1, totals)
        if problem is not None:
            return problem
    return None


# --------------------------------------------------------------------------------------------------------
# Batch input validation
# --------------------------------------------------------------------------------------------------------


def _batch_error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def parse_batch_input(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], str | None, list[dict[str, Any]]]:
    """Validate a batch input file the way the Batch API does at ``validating``.

    Returns ``(lines, model, errors)``; a non-empty ``errors`` means the batch goes to ``failed``.
    Blank lines are skipped (a trailing newline is normal). At most 100 errors are reported.
    """
    raw_lines = [(i + 1, raw) for i, raw in enumerate(data.split(b"\n")) if raw.strip()]
    if not raw_lines:
        return [], None, [_batch_error("empty_file", "The input file is empty.")]
    if len(raw_lines) > MAX_BATCH_LINES:
        message = f"The batch input file contains {len(raw_lines)} requests; the limit is {MAX_BATCH_LINES}."
        return [], None, [_batch_error("too_many_tasks", message)]
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in raw_lines:
        try:
            item = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            errors.append(_batch_error("invalid_json_line", f"Line {number} is not valid JSON.", number))
            continue
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("custom_id"), str)
            or item.get("method") != "POST"
            or not isinstance(item.get("url"), str)
            or not isinstance(item.get("body"), dict)
        ):
            message = f"Line {number} must be an object with custom_id, method 'POST', url and body."
            errors.append(_batch_error("invalid_json_line", message, number))
            continue
        if item["url"] != endpoint:
            message = f"Line {number} has url '{item['url']}' but the batch endpoint is '{endpoint}'."
            errors.append(_batch_error("url_mismatch", message, number))
            continue
        custom_id = item["custom_id"]
        if custom_id in seen:
            message = f"The custom_id '{custom_id}' on line {number} is not unique within the batch."
            errors.append(_batch_error("duplicate_custom_id", message, number))
            continue
        seen.add(custom_id)
        line_model = item["body"].get("model")
        if model is None and isinstance(line_model, str):
            model = line_model
        elif line_model != model:
            message = f"Line {number} uses model '{line_model}' but the batch uses '{model}'; use one model per file."
            errors.append(_batch_error("model_mismatch", message, number))
            continue
        lines.append(item)
    return lines, model, errors[:100]


# --------------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------------


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


@dataclass
class _Outcome:
    """A forced end state and/or per-line failure plan for a batch (see ``set_batch_outcome``)."""

    status: str | None = None
    fail: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] | None = None
    complete_fraction: float = 1.0
    fail_fraction: float = 0.0


@dataclass
class _Batch:
    obj: dict[str, Any]
    created: float
    input_data: bytes
    output_expires_seconds: int | None
    outcome: _Outcome
    lines: list[dict[str, Any]] | None = None
    cancel_fraction: float = 0.0
    tokens: int = 0  # estimated input tokens, counted against the enqueued-token cap while the batch runs


@dataclass
class _Rule:
    method: str
    prefix: str
    remaining: int
    status: int | str = 500
    retry_after: float | None = None
    seconds: float = 0.0
    code: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and path.startswith(self.prefix)


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode("utf-8"), "application/json", dict(headers or {}))


def _parse_endpoint(endpoint: str) -> tuple[str, str]:
    """Split ``"POST /v1/batches"`` into method and path prefix (a bare path matches any method)."""
    parts = endpoint.strip().split(None, 1)
    if len(parts) == 1:
        method, prefix = "*", parts[0]
    else:
        method, prefix = parts[0].upper(), parts[1].strip()
    if not prefix.startswith("/"):
        raise ValueError(f"endpoint must look like 'POST /v1/batches', got {endpoint!r}")
    return method, prefix


def _stats_key(method: str, path: str) -> str:
    """Group requests by route, replacing object ids with ``{id}`` so counts are per endpoint."""
    segments = path.split("/")
    if len(segments) >= 4 and segments[1] == "v1" and segments[2] in ("files", "batches") and segments[3]:
        segments[3] = "{id}"
    return f"{method} {'/'.join(segments)}"


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Parse multipart/form-data by hand (``cgi`` is gone in 3.13) keeping file bytes exact."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise ApiError(400, "The request must be multipart/form-data with a boundary.")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        newline = chunk.find(b"\r\n")
        if newline < 0:
            continue
        head, sep, content = chunk[newline + 2 :].partition(b"\r\n\r\n")
        if not sep:
            continue
        part = Message()
        for raw in head.split(b"\r\n"):
            name, colon, value = raw.decode("utf-8", "replace").partition(":")
            if colon:
                part[name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        name = collapse_rfc2231_value(name)
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, content)
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _sub_id(prefix: str, *parts: str, length: int = 24) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:length]


def _normalize_fail(fail: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for custom_id, spec in (fail or {}).items():
        if isinstance(spec, bool) or not (
            (isinstance(spec, int) and 400 <= spec <= 599) or spec in ("request_timeout", "garbage", "omit")
        ):
            raise ValueError(f"invalid fail spec for {custom_id!r}: {spec!r}")
        out[str(custom_id)] = spec
    return out


def _make_outcome(
    status: str | None,
    fail: Mapping[str, Any] | None,
    errors: list[Any] | None,
    complete_fraction: float,
    fail_fraction: float = 0.0,
) -> _Outcome:
    if status is not None and status not in OUTCOME_STATUSES:
        raise ValueError(f"status must be one of {OUTCOME_STATUSES}, got {status!r}")
    if not 0.0 <= float(complete_fraction) <= 1.0 or not 0.0 <= float(fail_fraction) <= 1.0:
        raise ValueError("complete_fraction and fail_fraction must be within [0, 1]")
    norm_errors = None
    if errors is not None:
        norm_errors = []
        for entry in errors:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("code"), str):
                raise ValueError(f"each error needs a string 'code': {entry!r}")
            norm_errors.append(
                {
                    "code": entry["code"],
                    "message": str(entry.get("message", entry["code"])),
                    "param": entry.get("param"),
                    "line": entry.get("line"),
                }
            )
    return _Outcome(status, _normalize_fail(fail), norm_errors, float(complete_fraction), float(fail_fraction))


# --------------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP plumbing; all behaviour lives in ``FakeOpenAI._handle``.

    HTTP/1.0 (one request per connection) is deliberate: a dropped connection then never poisons a
    pooled keep-alive connection, and ``stop()`` leaves no idle handler threads behind.
    """

    server: _HTTPServer
    server_version = "fake-openai/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the CLI prints only the base url, and tests should not spam stderr."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            response = self.server.app._handle(method, self.path, self.headers, body)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = _json_response(500, error_body("fake_openai internal error", "server_error"))
        if response is None:
            # Injected "drop": close the socket without a status line.
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("x-request-id", _new_id("req_"))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (e.g. killed during a held request); the side effect stands


class FakeOpenAI:
    """In-memory fake OpenAI server for tests and demos (binds 127.0.0.1 only).

    All state sits behind one lock; handlers run in threads of a ``ThreadingHTTPServer``.
    """

    def __init__(
        self,
        batch_delay: float = 0.0,
        latency_ms: int = 0,
        api_key: str | None = None,
        *,
        port: int = 0,
        omit_unexecuted: bool = False,
        batch_list_order: str = "desc",
    ) -> None:
        self.batch_delay = float(batch_delay)
        self.latency_ms = int(latency_ms)
        self.api_key = api_key
        self.port = int(port)
        #: Cancelled and expired batches write no line at all for the requests they never ran, instead of a
        #: ``batch_cancelled`` / ``batch_expired`` error line: the service does not document writing one.
        self.omit_unexecuted = bool(omit_unexecuted)
        if batch_list_order not in ("desc", "asc"):
            raise ValueError(f"batch_list_order must be 'desc' or 'asc', got {batch_list_order!r}")
        #: ``GET /v1/batches`` lists newest first ("desc", what the service does in practice) or oldest first
        #: ("asc"): its order is not documented, so a client must not depend on it.
        self.batch_list_order = batch_list_order
        #: Cap on the input tokens of a model's validated, unfinished batches (the service's "enqueued token
        #: limit"); a batch that would go over it fails at validation with ``token_limit_exceeded``. None: no cap.
        self.enqueued_token_limit: int | None = None
        #: Wall clock; tests may replace it to walk a batch through its phases without sleeping.
        self._time: Callable[[], float] = time.time
        self._lock = threading.RLock()
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._batch_order: list[str] = []
        self._fail_rules: list[_Rule] = []
        self._hold_rules: list[_Rule] = []
        self._corrupt_chat = 0
        self._default_outcome = _Outcome()
        self._requests = 0
        self._by_endpoint: dict[str, int] = {}
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns ``http://127.0.0.1:<port>/v1``."""
        if self._server is not None and self.base_url is not None:
            return self.base_url
        server = _HTTPServer(("127.0.0.1", self.port), _Handler)
        server.app = self
        self._server = server
        self.port = server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop accepting requests and release the port (held requests in flight are abandoned)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- stats -------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts of API requests (injected failures included, control requests excluded)."""
        with self._lock:
            return {"requests": self._requests, "by_endpoint": dict(self._by_endpoint)}

    def batch_ids(self) -> list[str]:
        """Every batch created so far, oldest first: what a client has been billed for."""
        with self._lock:
            return list(self._batch_order)

    def file_names(self) -> list[str]:
        """The names of every file stored so far (uploads and results), oldest first."""
        with self._lock:
            return [f.filename for f in self._files.values()]

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_endpoint = {}

    # ---- fault controls ----------------------------------------------------------------------------------

    def fail_next(
        self,
        endpoint: str,
        count: int = 1,
        status: int | str = 500,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        """Make the next ``count`` matching requests fail with ``status`` or ``"drop"`` (no side effect).

        ``code`` sets the error's code, e.g. ``fail_next("POST /v1/chat/completions", 10**6, 429,
        code="insufficient_quota")`` for an account out of credit.
        """
        method, prefix = _parse_endpoint(endpoint)
        if status != "drop" and (isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"status must be an HTTP error code 400-599 or 'drop', got {status!r}")
        with self._lock:
            self._fail_rules.append(_Rule(method, prefix, int(count), status, retry_after, code=code))

    def clear_faults(self) -> None:
        """Drop every pending ``fail_next`` rule: the account is back in order."""
        with self._lock:
            self._fail_rules.clear()

    def hold_next(self, endpoint: str, count: int = 1, seconds: float = 1.0) -> None:
        """Delay the next ``count`` matching requests by ``seconds``, then process them normally."""
        method, prefix = _parse_endpoint(endpoint)
        with self._lock:
            self._hold_rules.append(_Rule(method, prefix, int(count), seconds=float(seconds)))

    def corrupt_next_chat(self, count: int = 1) -> None:
        """The next ``count`` chat completions answer 200 with content that is not valid JSON."""
        with self._lock:
            self._corrupt_chat += int(count)

    def set_batch_outcome(
        self,
        batch_id: str,
        status: str = "completed",
        fail: Mapping[str, Any] | None = None,
        errors: list[Any] | None = None,
        complete_fraction: float = 1.0,
    ) -> None:
        """Force ``batch_id`` to end in ``status`` on its next retrieve, regardless of ``batch_delay``.

        Raises ``KeyError`` for an unknown batch and ``ValueError`` for a batch already terminal (an
        observed terminal state never changes, as on the real API).
        """
        outcome = _make_outcome(status, fail, errors, complete_fraction)
        with self._lock:
            batch = self._batches[batch_id]
            if batch.obj["status"] in TERMINAL_STATUSES:
                raise ValueError(f"batch {batch_id} is already {batch.obj['status']}")
            batch.outcome.status = outcome.status
            batch.outcome.fail.update(outcome.fail)
            batch.outcome.errors = outcome.errors
            batch.outcome.complete_fraction = outcome.complete_fraction

    def set_default_outcome(
        self,
        status: str | None = None,
        fail: Mapping[str, Any] | None = None,
        errors: list[Any] | None = None,
        complete_fraction: float = 1.0,
        fail_fraction: float = 0.0,
    ) -> None:
        """Apply an outcome to every batch created from now on; no arguments clears it.

        ``status=None`` keeps the normal time-driven lifecycle and only applies the per-line plan;
        ``fail_fraction`` gives a deterministic (hash of custom_id) share of lines a 500.
        """
        outcome = _make_outcome(status, fail, errors, complete_fraction, fail_fraction)
        with self._lock:
            self._default_outcome = outcome

    # ---- request handling --------------------------------------------------------------------------------

    def _handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> _Response | None:
        url = urlsplit(raw_path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path.startswith("/_control/"):
            try:
                return self._control(method, path, body)
            except ApiError as exc:
                return _json_response(exc.status, exc.body)
            except KeyError as exc:
                return _json_response(400, error_body(f"Missing argument: {exc.args[0]}"))
            except (ValueError, TypeError) as exc:
                return _json_response(400, error_body(str(exc)))
        with self._lock:
            self._requests += 1
            key = _stats_key(method, path)
            self._by_endpoint[key] = self._by_endpoint.get(key, 0) + 1
            hold = self._take_rule(self._hold_rules, method, path)
            fault = self._take_rule(self._fail_rules, method, path)
        if hold is not None:
            time.sleep(hold.seconds)
        if fault is not None:
            if fault.status == "drop":
                return None
            assert isinstance(fault.status, int)
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return _json_response(fault.status, error_for_status(fault.status, fault.code), extra)
        try:
            self._check_auth(headers)
            return self._route(method, path, query, headers, body)
        except ApiError as exc:
            return _json_response(exc.status, exc.body)

    @staticmethod
    def _take_rule(rules: list[_Rule], method: str, path: str) -> _Rule | None:
        for rule in rules:
            if rule.matches(method, path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    rules.remove(rule)
                return rule
        return None

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if self.api_key is not None and not secrets.compare_digest(token.encode(), self.api_key.encode()):
            # Never echo the key (not even masked): error bodies end up in logs.
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> _Response:
        parts = path.strip("/").split("/")
        if parts[:1] == ["v1"]:
            rest = parts[1:]
            if rest == ["chat", "completions"] and method == "POST":
                return self._chat(body)
            if rest[:1] == ["files"]:
                if len(rest) == 1 and method == "POST":
                    return self._upload(headers, body)
                if len(rest) == 1 and method == "GET":
                    return self._list_files(query)
                if len(rest) == 2 and method == "GET":
                    return _json_response(200, self._get_file(rest[1]).to_json())
                if len(rest) == 2 and method == "DELETE":
                    return self._delete_file(rest[1])
                if len(rest) == 3 and rest[2] == "content" and method == "GET":
                    return _Response(200, self._get_file(rest[1]).data, "application/octet-stream")
            if rest[:1] == ["batches"]:
                if len(rest) == 1 and method == "POST":
                    return self._create_batch(body)
                if len(rest) == 1 and method == "GET":
                    return self._list_batches(query)
                if len(rest) == 2 and method == "GET":
                    return _json_response(200, self._retrieve_batch(rest[1]))
                if len(rest) == 3 and rest[2] == "cancel" and method == "POST":
                    return _json_response(200, self._cancel_batch(rest[1]))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "We could not parse the JSON body of your request. Please send valid JSON.") from exc
        if not isinstance(parsed, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return parsed

    # ---- chat --------------------------------------------------------------------------------------------

    def _chat(self, body: bytes) -> _Response:
        request = self._json_body(body)
        with self._lock:
            garbage = self._corrupt_chat > 0
            if garbage:
                self._corrupt_chat -= 1
        if self.latency_ms > 0:
            time.sleep(self.latency_ms / 1000)
        status, payload = chat_completion(request, garbage=garbage)
        return _json_response(status, payload)

    # ---- files -------------------------------------------------------------------------------------------

    def _upload(self, headers: Mapping[str, str], body: bytes) -> _Response:
        fields, files = _parse_multipart(headers.get("Content-Type") or "", body)
        if "file" not in files:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        purpose = fields.get("purpose")
        if not purpose:
            raise ApiError(
                400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in FILE_PURPOSES:
            raise ApiError(400, f"Invalid value for 'purpose': '{purpose}'.", param="purpose", code="invalid_value")
        filename, data = files["file"]
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
        if purpose == "batch" and len(data) > MAX_BATCH_FILE_BYTES:
            raise ApiError(400, "File is too large.", param="file")
        now = int(self._time())
        expires_at = now + FILE_RETENTION_SECONDS if purpose == "batch" else None
        if "expires_after[seconds]" in fields:
            seconds = self._int_field(fields["expires_after[seconds]"], "expires_after.seconds", 3600)
            expires_at = now + seconds
        record = _File(_new_id("file-"), filename, purpose, data, now, expires_at)
        with self._lock:
            self._files[record.id] = record
        return _json_response(200, record.to_json())

    @staticmethod
    def _int_field(value: Any, param: str, minimum: int, maximum: int = FILE_RETENTION_SECONDS) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if not minimum <= number <= maximum:
            raise ApiError(400, f"Invalid value for '{param}': must be between {minimum} and {maximum}.", param=param)
        return number

    def _get_file(self, file_id: str) -> _File:
        with self._lock:
            record = self._files.get(file_id)
        if record is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return record

    def _delete_file(self, file_id: str) -> _Response:
        with self._lock:
            if self._files.pop(file_id, None) is None:
                raise ApiError(404, f"No such File object: {file_id}", param="id")
        return _json_response(200, {"id": file_id, "object": "file", "deleted": True})

    def _list_files(self, query: dict[str, str]) -> _Response:
        limit = self._limit(query, default=10_000, maximum=10_000)
        with self._lock:
            records = [f for f in self._files.values() if f.purpose == query.get("purpose", f.purpose)]
        if query.get("order", "desc") == "desc":
            records.reverse()
        page = self._page([r.to_json() for r in records], query.get("after"), limit)
        return _json_response(200, page)

    @staticmethod
    def _limit(query: dict[str, str], default: int, maximum: int) -> int:
        if "limit" not in query:
            return default
        try:
            limit = int(query["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= maximum:
            raise ApiError(400, f"Invalid 'limit': must be between 1 and {maximum}.", param="limit")
        return limit

    @staticmethod
    def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
        start = 0
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise ApiError(400, f"Invalid 'after': no object with id '{after}'.", param="after")
            start = ids.index(after) + 1
        data = items[start : start + limit]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": start + limit < len(items),
        }

    # ---- batches -----------------------------------------------------------------------------------------

    def _create_batch(self, body: bytes) -> _Response:
        request = self._json_body(body)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(request.get(name), str) or not request[name]:
                raise ApiError(
                    400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
                )
        endpoint = request["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise ApiError(
                400,
                f"Invalid value for 'endpoint': fake_openai only implements {', '.join(BATCH_ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        if request["completion_window"] != "24h":
            raise ApiError(
                400, "Invalid value for 'completion_window': only '24h' is supported.", param="completion_window"
            )
        metadata = request.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(not isinstance(k, str) or len(k) > 64 for k in metadata)
            or any(not isinstance(v, str) or len(v) > 512 for v in metadata.values())
        ):
            raise ApiError(
                400,
                "Invalid 'metadata': at most 16 string pairs, keys <= 64 and values <= 512 chars.",
                param="metadata",
            )
        output_expires = None
        expires_after = request.get("output_expires_after")
        if isinstance(expires_after, dict):
            output_expires = self._int_field(expires_after.get("seconds"), "output_expires_after.seconds", 3600)
        with self._lock:
            source = self._files.get(request["input_file_id"])
            if source is None:
                raise ApiError(400, f"Cannot find file {request['input_file_id']}.", param="input_file_id")
            if source.purpose != "batch":
                raise ApiError(
                    400, "The input file must have been uploaded with purpose 'batch'.", param="input_file_id"
                )
            now = self._time()
            batch_id = _new_id("batch_")
            obj: dict[str, Any] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": endpoint,
                "model": None,
                "errors": None,
                "input_file_id": source.id,
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(now),
                "in_progress_at": None,
                "expires_at": int(now) + BATCH_WINDOW_SECONDS,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "usage": None,
                "metadata": metadata,
            }
            outcome = copy.deepcopy(self._default_outcome)
            self._batches[batch_id] = _Batch(obj, now, source.data, output_expires, outcome)
            self._batch_order.append(batch_id)
            return _json_response(200, copy.deepcopy(obj))

    def _lookup_batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def _retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._lookup_batch(batch_id)
            self._advance(batch)
            return copy.deepcopy(batch.obj)

    def _list_batches(self, query: dict[str, str]) -> _Response:
        limit = self._limit(query, default=20, maximum=100)
        with self._lock:
            order = self._batch_order if self.batch_list_order == "asc" else reversed(self._batch_order)
            stubs = [{"id": batch_id} for batch_id in order]
            page = self._page(stubs, query.get("after"), limit)
            data = []
            for stub in page["data"]:
                batch = self._batches[stub["id"]]
                self._advance(batch)
                data.append(copy.deepcopy(batch.obj))
            page["data"] = data
        return _json_response(200, page)

    def _cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._lookup_batch(batch_id)
            self._advance(batch)
            status = batch.obj["status"]
            if status in ("cancelling", "cancelled"):
                return copy.deepcopy(batch.obj)
            if status in TERMINAL_STATUSES:
                raise ApiError(409, f"Cannot cancel a batch with status '{status}'.")
            # Lines that "ran" before the cancel keep their results, as on the real API.
            batch.cancel_fraction = {"validating": 0.0, "finalizing": 1.0}.get(status, self._progress(batch))
            batch.obj["status"] = "cancelling"
            batch.obj["cancelling_at"] = int(self._time())
            return copy.deepcopy(batch.obj)

    def _progress(self, batch: _Batch) -> float:
        """Share of the in_progress phase elapsed (0..1), used for counts and for cancel."""
        span = self.batch_delay * 0.4
        if span <= 0:
            return 1.0
        return min(max((self._time() - batch.created - self.batch_delay * 0.2) / span, 0.0), 1.0)

    def _advance(self, batch: _Batch) -> None:
        """Move ``batch`` forward to the state implied by wall time or a forced outcome (lock held)."""
        obj = batch.obj
        if obj["status"] in TERMINAL_STATUSES:
            return
        now = self._time()
        if obj["status"] == "cancelling":
            self._finish(batch, "cancelled", batch.cancel_fraction, int(now))
            return
        forced = batch.outcome.status
        if forced == "failed":
            errors = batch.outcome.errors or [self._token_limit_error(batch)]
            self._fail(batch, errors, int(now))
            return
        if forced is not None:
            if obj["status"] == "validating" and not self._validate(batch, int(now)):
                return
            self._finish(batch, forced, batch.outcome.complete_fraction, int(now))
            return
        delay = self.batch_delay
        elapsed = now - batch.created
        if obj["status"] == "validating":
            if elapsed < delay * 0.2:
                return
            if not self._validate(batch, int(batch.created + delay * 0.2)):
                return
        if obj["status"] == "in_progress":
            if elapsed < delay * 0.6:
                total = obj["request_counts"]["total"]
                obj["request_counts"]["completed"] = math.floor(total * self._progress(batch))
                return
            obj["status"] = "finalizing"
            obj["finalizing_at"] = int(batch.created + delay * 0.6)
            obj["request_counts"]["completed"] = obj["request_counts"]["total"]
        if obj["status"] == "finalizing" and elapsed >= delay:
            self._finish(batch, "completed", 1.0, int(batch.created + delay))

    def _validate(self, batch: _Batch, at: int) -> bool:
        lines, model, errors = parse_batch_input(batch.input_data, batch.obj["endpoint"])
        if errors:
            self._fail(batch, errors, at)
            return False
        batch.tokens = sum(prompt_tokens(line["body"].get("messages")) for line in lines)
        if self.enqueued_token_limit is not None and self._enqueued(batch, model) > self.enqueued_token_limit:
            self._fail(batch, [self._token_limit_error(batch)], at)
            return False
        batch.lines = lines
        batch.obj.update(
            status="in_progress",
            model=model,
            in_progress_at=at,
            request_counts={"total": len(lines), "completed": 0, "failed": 0},
        )
        return True

    def _enqueued(self, batch: _Batch, model: str | None) -> int:
        """Input tokens of ``model``'s running batches with this one: earlier batches are validated first."""
        total = batch.tokens
        for batch_id in self._batch_order:
            other = self._batches[batch_id]
            if other is batch:
                break
            self._advance(other)
            if other.obj["status"] in ("in_progress", "finalizing") and other.obj["model"] == model:
                total += other.tokens
        return total

    def _token_limit_error(self, batch: _Batch) -> dict[str, Any]:
        _, model, _ = parse_batch_input(batch.input_data, batch.obj["endpoint"])
        limit = self.enqueued_token_limit if self.enqueued_token_limit is not None else 2_000_000
        return _batch_error(
            "token_limit_exceeded",
            f"Enqueued token limit reached for {model or 'the model'} in organization org-fake. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches have been completed.",
        )

    def _fail(self, batch: _Batch, errors: list[dict[str, Any]], at: int) -> None:
        batch.obj.update(
            status="failed",
            failed_at=at,
            errors={"object": "list", "data": copy.deepcopy(errors)},
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )

    def _line_spec(self, batch: _Batch, custom_id: str) -> Any:
        spec = batch.outcome.fail.get(custom_id)
        if spec is None and _frac("fail_fraction", custom_id) < batch.outcome.fail_fraction:
            spec = 500
        return spec

    def _finish(self, batch: _Batch, status: str, fraction: float, at: int) -> None:
        """Run the lines, write the output/error files and set the terminal ``status``."""
        obj = batch.obj
        if batch.lines is None:
            lines, model, errors = parse_batch_input(batch.input_data, obj["endpoint"])
            # A batch cancelled before validation whose input is bad simply ran nothing.
            batch.lines = [] if errors else lines
            obj["model"] = model
        lines = batch.lines
        ran = len(lines) if status == "completed" else math.floor(fraction * len(lines) + 1e-9)
        successes: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        for index, line in enumerate(lines):
            custom_id = line["custom_id"]
            spec = self._line_spec(batch, custom_id)
            if spec == "omit":
                continue
            record: dict[str, Any] = {
                "id": _sub_id("batch_req_", obj["id"], custom_id),
                "custom_id": custom_id,
                "response": None,
                "error": None,
            }
            request_id = _sub_id("req_", obj["id"], custom_id, length=32)
            if index >= ran:
                if self.omit_unexecuted:
                    continue
                record["error"] = {
                    "code": f"batch_{status}",
                    "message": f"This request could not be executed before the batch was {status}.",
                }
                failures.append(record)
                continue
            if spec == "request_timeout":
                record["error"] = {"code": "request_timeout", "message": "The request timed out."}
                failures.append(record)
                continue
            if isinstance(spec, int):
                code, payload = spec, error_for_status(spec)
            else:
                code, payload = chat_completion(line["body"], garbage=spec == "garbage")
            record["response"] = {"status_code": code, "request_id": request_id, "body": payload}
            if code == 200:
                usage["input_tokens"] += payload["usage"]["prompt_tokens"]
                usage["output_tokens"] += payload["usage"]["completion_tokens"]
                successes.append(record)
            else:
                failures.append(record)
        obj["output_file_id"] = self._write_results(batch, "output", successes, at)
        obj["error_file_id"] = self._write_results(batch, "error", failures, at)
        obj["request_counts"] = {"total": len(lines), "completed": len(successes), "failed": len(failures)}
        if ran > 0:
            obj["usage"] = {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            }
        obj["status"] = status
        if obj["in_progress_at"] is None and ran > 0:
            obj["in_progress_at"] = at
        if status == "completed":
            obj["finalizing_at"] = obj["finalizing_at"] or at
            obj["completed_at"] = at
        elif status == "expired":
            obj["expired_at"] = at
        else:
            obj["cancelling_at"] = obj["cancelling_at"] or at
            obj["cancelled_at"] = at

    def _write_results(self, batch: _Batch, kind: str, records: list[dict[str, Any]], at: int) -> str | None:
        """Store result lines as a file in a shuffled (seeded by batch id) order; None when empty.

        Why shuffle: the real API does not preserve input order, and clients must join on custom_id.
        """
        if not records:
            return None
        batch_id = batch.obj["id"]
        records = sorted(records, key=lambda r: _sub_id("", batch_id, r["custom_id"], length=64))
        data = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)
        retention = batch.output_expires_seconds or FILE_RETENTION_SECONDS
        record = _File(_new_id("file-"), f"{batch_id}_{kind}.jsonl", "batch_output", data, at, at + retention)
        self._files[record.id] = record
        return record.id

    # ---- control -----------------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> _Response:
        """``/_control/*``: the HTTP face of the fault methods, for servers run as a subprocess."""
        name = path[len("/_control/") :]
        if method == "GET" and name == "stats":
            return _json_response(200, self.stats())
        if method != "POST":
            raise ApiError(404, f"Invalid URL ({method} {path})")
        args = self._json_body(body)
        if name == "reset_stats":
            self.reset_stats()
        elif name == "fail_next":
            self.fail_next(
                args["endpoint"],
                int(args.get("count", 1)),
                args.get("status", 500),
                args.get("retry_after"),
                args.get("code"),
            )
        elif name == "hold_next":
            self.hold_next(args["endpoint"], int(args.get("count", 1)), float(args.get("seconds", 1.0)))
        elif name == "corrupt_next_chat":
            self.corrupt_next_chat(int(args.get("count", 1)))
        elif name == "batch_outcome":
            with self._lock:
                known = args.get("batch_id") in self._batches
            if not known:
                raise ApiError(404, f"No batch found with id '{args.get('batch_id')}'.", param="batch_id")
            self.set_batch_outcome(
                args["batch_id"],
                args.get("status", "completed"),
                args.get("fail"),
                args.get("errors"),
                float(args.get("complete_fraction", 1.0)),
            )
        elif name == "default_outcome":
            self.set_default_outcome(
                args.get("status"),
                args.get("fail"),
                args.get("errors"),
                float(args.get("complete_fraction", 1.0)),
                float(args.get("fail_fraction", 0.0)),
            )
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        return _json_response(200, {"ok": True})


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the base url as the first stdout line."""
    parser = argparse.ArgumentParser(description="Local fake OpenAI server (Files, Batches, Chat Completions).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument("--batch-delay", type=float, default=6.0, help="seconds from create to completed")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay per chat completion")
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: any non-empty)")
    parser.add_argument("--url-file", default=None, help="also write the base url to this file")
    parser.add_argument("--fail-fraction", type=float, default=0.0, help="share of batch lines that get a 500")
    parser.add_argument(
        "--omit-unexecuted",
        action="store_true",
        help="cancelled and expired batches write no line for requests that never ran",
    )
    parser.add_argument(
        "--batch-list-order", choices=("desc", "asc"), default="desc", help="order of GET /v1/batches (desc)"
    )
    parser.add_argument(
        "--enqueued-token-limit",
        type=int,
        default=None,
        help="per model: fail a batch with token_limit_exceeded when the input tokens of the running batches "
        "would go over this (default: no cap)",
    )
    args = parser.parse_args(argv)

    server = FakeOpenAI(
        args.batch_delay,
        args.latency_ms,
        args.api_key,
        port=args.port,
        omit_unexecuted=args.omit_unexecuted,
        batch_list_order=args.batch_list_order,
    )
    server.enqueued_token_limit = args.enqueued_token_limit
    if args.fail_fraction > 0:
        server.set_default_outcome(fail_fraction=args.fail_fraction)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    url = server.start()
    try:
        if args.url_file:
            # a reader polling for the file never sees a half-written url; it need not survive a power cut
            with atomic_file(Path(args.url_file), durable=False) as out:
                out.write(url.encode() + b"\n")
        print(url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
