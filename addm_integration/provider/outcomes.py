"""One reading of an answer, whether it came from a live call or a batch result line.

Both modes reduce what came back to an ``Outcome``: the text to hand to the pipeline's parser and the token usage,
or a failure reason and whether sending the item again could help. Classification is by content, never by which
file a line came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from addm_integration.provider.openai_api import UNANSWERED, describe, redact, refused_status, retryable_status

RETRYABLE_CODES = frozenset({"batch_expired", "request_timeout"})


class Outcome(NamedTuple):
    """Immutable like an event, but a tuple: a batch of 50,000 results builds 50,000 of these."""

    custom_id: str
    content: str | None = None
    usage: Mapping[str, Any] | None = None  # as the API reported it; sum_usage reads the token counts
    error: str | None = None
    retryable: bool = False
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failure(self) -> tuple[str, str, bool]:
        """(custom_id, reason, retryable), as ItemsFailed records it."""
        return self.custom_id, self.error or "error", self.retryable


def from_body(custom_id: str, body: Any, latency_ms: float | None = None) -> Outcome:
    """A chat completion (as JSON) that came back with a 2xx status."""
    try:
        content = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return Outcome(custom_id, error="answer without choices", retryable=True)
    if content is None:
        return Outcome(custom_id, error="answer without content", retryable=True)
    usage = body.get("usage")
    return Outcome(custom_id, content, usage if type(usage) is dict else None, None, False, latency_ms)


def from_batch_line(line: dict[str, Any]) -> Outcome:
    """One line of a batch output or error file (its ``custom_id`` already checked to be a string)."""
    custom_id = line["custom_id"]
    error = line.get("error")
    if error:
        code = str(error.get("code") or "error") if type(error) is dict else "error"
        return Outcome(custom_id, error=code, retryable=code in RETRYABLE_CODES)
    response = line.get("response")
    if type(response) is not dict:
        return Outcome(custom_id, error="line without response", retryable=True)
    status = response.get("status_code")
    body = response.get("body")
    if type(status) is int and 200 <= status < 300:
        return from_body(custom_id, body)
    if type(status) is not int:
        status = int(status) if isinstance(status, str) and status.isdigit() else 0
    detail = body.get("error") if type(body) is dict else None
    detail = detail if type(detail) is dict else {}
    code = detail.get("code") or detail.get("type") or ""
    message = detail.get("message") or ""
    reason = redact(f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else ""))
    retryable = retryable_status(status) and not refused_status(status, code or None)  # no credit: not a rate limit
    return Outcome(custom_id, error=" ".join(reason.split())[:300], retryable=retryable)


def from_exception(custom_id: str, exc: BaseException, secret: str | None) -> Outcome:
    """A live call that raised after the SDK's own retries."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return Outcome(custom_id, error=describe(exc, secret), retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return Outcome(custom_id, error=describe(exc, secret), retryable=retryable_status(exc.status_code))
    return Outcome(custom_id, error=describe(exc, secret), retryable=False)


def reached(outcome: Outcome) -> bool:
    """Whether the service answered at all (any status): a job is pinned to the first URL that did."""
    return outcome.error not in UNANSWERED


def unparsable(outcome: Outcome, why: str) -> Outcome:
    """The call succeeded but the answer could not be read: worth asking again (a retryable failure)."""
    return Outcome(outcome.custom_id, usage=outcome.usage, error=f"unparsable answer: {why}", retryable=True)
