"""The OpenAI adapter of the provider seam: every call to the OpenAI API, the translation of its failures into
ours, and the reading of its answers and result lines.

Creating calls (upload, batch create) run with the SDK's automatic retries off: the SDK sends no idempotency key,
so a retried POST that the server had already accepted would create a second, paid batch unseen. Instead the
caller records an intent first and, after any doubt, looks the batch up by the key it put in the metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.provider.base import IDEM_METADATA_KEY, Connect, Outcome, RemoteBatch
from addm_integration.store import credentials
from addm_integration.store.credentials import Credentials
from addm_integration.store.workspace import atomic_file
from ledger.events import Phase, upcast_with

if TYPE_CHECKING:  # the SDK takes most of a second to import: only runs that talk to the API pay for it
    from openai import AsyncOpenAI, OpenAI, Timeout
    from openai.types import Batch

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # per batch
MAX_BYTES = 200_000_000  # of a batch's input file
RETRYABLE_STATUS = frozenset({408, 429})
RETRYABLE_CODES = frozenset({"batch_expired", "request_timeout"})  # result-line error codes worth sending again
_tuple = tuple.__new__
_SECRET = re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}")


# The Batch API's status words as the ledger's phases (docs/ledger.md, "Batch phases").
PHASES = {
    "validating": Phase.SUBMITTED,
    "in_progress": Phase.RUNNING,
    "finalizing": Phase.RUNNING,
    "cancelling": Phase.STOPPING,
    "completed": Phase.FINISHED,
    "failed": Phase.FAILED,
    "expired": Phase.EXPIRED,
    "cancelled": Phase.CANCELLED,
}
CREATED_STATUS = "validating"  # what a new batch says, and what records older than phases assumed


def phase(status: str) -> Phase:
    """The phase of a batch the service says is ``status``; a word it adds later is polled again, never an end."""
    return PHASES.get(status, Phase.RUNNING)


def read_older_records() -> None:
    """Tell the ledger what records written before phases meant: their status words were this service's."""
    upcast_with("BatchPolled", 1, lambda d: {**d, "phase": phase(d["status"])})
    upcast_with("BatchCreated", 1, lambda d: {**d, "status": CREATED_STATUS, "phase": Phase.SUBMITTED})


TIMEOUT_ENV = "ADDM_TIMEOUT"
# Codes that say the account has no credit, whatever the status (429 insufficient_quota, 400 billing limits).
CREDIT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})


def require_key(creds: Credentials) -> None:
    """What a run needs before it creates a job: a key, and a timeout setting that makes sense."""
    if not creds.api_key:
        raise BadInput("OPENAI_API_KEY is not set: export it or put it in <root>/.env (chmod 600)")
    timeout()


def timeout() -> Timeout:
    """The SDK's own 600 s read timeout unless ADDM_TIMEOUT says otherwise.

    A long run_baseline answer (a whole restaurant's reviews in, a reasoned verdict out) can take minutes; a
    shorter timeout would cut it and pay for it again.
    """
    from openai import DEFAULT_TIMEOUT, Timeout

    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise BadInput(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds greater than 0")
    return Timeout(seconds, connect=min(seconds, DEFAULT_TIMEOUT.connect or 5.0))


def _credit_code(content: bytes) -> bool:
    try:
        error = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return type(error) is dict and error.get("code") in CREDIT_CODES


def _final_if_no_credit(response: Any) -> None:
    """The SDK retries every 429, but one that says the account has no credit says the same again: one is enough."""
    if response.status_code == 429:
        response.read()
        if _credit_code(response.content):
            response.headers["x-should-retry"] = "false"


async def _final_if_no_credit_async(response: Any) -> None:
    if response.status_code == 429:
        await response.aread()
        if _credit_code(response.content):
            response.headers["x-should-retry"] = "false"


def client(creds: Credentials, *, max_retries: int = 2) -> OpenAI:
    require_key(creds)
    from openai import DefaultHttpxClient, OpenAI

    http = DefaultHttpxClient(event_hooks={"response": [_final_if_no_credit]})
    return OpenAI(
        api_key=creds.api_key, base_url=creds.base_url, max_retries=max_retries, timeout=timeout(), http_client=http
    )


def async_client(creds: Credentials, *, max_retries: int = 2) -> AsyncOpenAI:
    require_key(creds)
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    http = DefaultAsyncHttpxClient(event_hooks={"response": [_final_if_no_credit_async]})
    return AsyncOpenAI(
        api_key=creds.api_key, base_url=creds.base_url, max_retries=max_retries, timeout=timeout(), http_client=http
    )


_TOKEN = re.compile(r"[^\s\"'`,;()\[\]{}<>]+")
_MASK = re.compile(r"\*+|\.{3,}|\u2026")


def _quotes_key(token: str, secret: str) -> bool:
    """Whether a word of a message carries part of the key: 8 characters of it anywhere, or (where a server echoes
    a masked key, ``abcd****wxyz``) its first or last 4 around the mask."""
    pieces = [p for p in _MASK.split(token) if p]
    masked = pieces != [token]
    for piece in pieces:
        if len(piece) >= 8 and any(piece[i : i + 8] in secret for i in range(len(piece) - 7)):
            return True
        if masked and len(piece) >= 4 and (secret.startswith(piece) or secret.endswith(piece)):
            return True
    return False


def redact(text: str, secret: str | None = None) -> str:
    """Remove the key (whatever its shape, whole or in part) and anything shaped like an OpenAI key from text
    bound for a user, a log or the ledger. Redact before cutting a text short: a cut can split a key."""
    if secret:
        text = text.replace(secret, "***")
        if len(secret) >= 8:
            text = _TOKEN.sub(lambda m: "***" if _quotes_key(m.group(), secret) else m.group(), text)
    return _SECRET.sub("sk-***", text)


def retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def describe(exc: BaseException, secret: str | None = None) -> str:
    """One line naming what failed, fit for a log: status, error code, message; never the key."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        text = "timed out"  # the words of base.UNANSWERED: nobody answered
    elif isinstance(exc, openai.APIConnectionError):
        text = "connection failed"
    elif isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") or body.get("type") or ""
        message = body.get("message") or exc.message
        text = f"HTTP {exc.status_code}" + (f" {code}" if code else "") + f": {message}"
    else:
        text = f"{exc.__class__.__name__}: {exc}"
    return redact(" ".join(text.split()), secret)[:300]


def is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(exc, openai.APIStatusError) and retryable_status(exc.status_code)


def refused_status(status: int, code: str | None) -> bool:
    """The account refused: a wrong key (401), no permission (403) or no credit (its code says so)."""
    return status in (401, 403) or code in CREDIT_CODES


def refusal(exc: BaseException, what: str, secret: str | None) -> Refused | None:
    """The account's refusal as the one error a user gets for it, or None when ``exc`` is something else.

    The line says what to fix and never to try again: the same refusal would come back, and be paid for
    in requests, until the key or the account is put right.
    """
    import openai

    if not isinstance(exc, openai.APIStatusError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    code = body.get("code") if isinstance(body.get("code"), str) else None
    if not refused_status(exc.status_code, code):
        return None
    reason = f"HTTP {exc.status_code}" + (f" {code}" if code else "")
    if exc.status_code == 401:
        fix = "the key in OPENAI_API_KEY is not valid; put a working key in the environment or <root>/.env"
    elif code in CREDIT_CODES:
        fix = "the OpenAI account of OPENAI_API_KEY has no credit left; add credit or raise its billing limit"
    else:
        said = body.get("message") if not code and isinstance(body.get("message"), str) else ""
        fix = (f"{' '.join(said.split())[:120]}: " if said else "") + (
            "the account of OPENAI_API_KEY may not do this; check the key's project, organization and model access"
        )
    return Refused(redact(f"{what} refused ({reason}): {fix}", secret), reason)


@contextlib.contextmanager
def api_call(what: str, creds: Credentials) -> Iterator[None]:
    """Turn an SDK failure into Refused (fix the key or account), Transient (the next run retries) or BadInput."""
    import openai

    try:
        yield
    except openai.OpenAIError as exc:
        refused = refusal(exc, what, creds.api_key)
        if refused is not None:
            raise refused from None
        line = f"{what} failed: {describe(exc, creds.api_key)}"
        if is_transient(exc):
            raise Transient(f"{line}; the next run retries") from None
        raise BadInput(line) from None


def batch_errors(batch: Batch) -> tuple[dict[str, Any], ...]:
    if not batch.errors or not batch.errors.data:
        return ()
    return tuple({"code": e.code, "message": redact(e.message or ""), "line": e.line} for e in batch.errors.data if e)


def request_line(custom_id: str, body: Mapping[str, Any]) -> bytes:
    """One line of a batch input file; ``custom_id`` first, where requeues read it back without parsing."""
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"


def snapshot(batch: Batch) -> RemoteBatch:
    """The SDK's batch as the engine reads it: its phase beside the status word, its errors free of secrets."""
    counts = batch.request_counts.model_dump() if batch.request_counts else {}
    return RemoteBatch(
        id=batch.id,
        phase=phase(batch.status),
        status=batch.status,
        created_at=float(batch.created_at),
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        counts=counts,
        errors=batch_errors(batch),
        metadata=dict(batch.metadata or {}),
    )


def from_body(custom_id: str, body: Any, latency_ms: float | None = None) -> Outcome:
    """A chat completion (as JSON) that came back with a 2xx status: live or in a batch, the same reading."""
    try:
        content = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return Outcome(custom_id, error="answer without choices", retryable=True)
    if type(content) is not str:  # null, or the parts of a multimodal answer: no text for a parser to read
        why = "answer without content" if content is None else "answer whose content is not text"
        return Outcome(custom_id, error=why, retryable=True)
    usage = body.get("usage")
    if type(usage) is dict:  # its three counts, not the whole object: that is a third of a read batch's memory
        usage = (usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens"))
    else:
        usage = None
    # Built as the tuple it is: the generated __new__ of a NamedTuple is a slow call, once per line of a batch.
    return _tuple(Outcome, (custom_id, content, usage, None, False, latency_ms))


def from_batch_line(line: dict[str, Any]) -> Outcome:
    """One line of a batch output or error file (its ``custom_id`` already checked to be a string).

    Classified by content, never by which file the line came from.
    """
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


class OpenAIProvider:
    """The ``Provider`` of the OpenAI API over the ``openai`` SDK, for one key and base URL.

    The SDK clients are made at the first call that needs them (importing the SDK takes most of a second, and a
    run that has nothing to do never pays for it); ``check`` is what a run asks before it creates a job.
    """

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.url = creds.base_url
        self._sync: OpenAI | None = None
        self._async: AsyncOpenAI | None = None

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.creds!r})"

    @property
    def _api(self) -> OpenAI:
        if self._sync is None:
            self._sync = client(self.creds)
        return self._sync

    def check(self) -> None:
        require_key(self.creds)

    def request_line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        return request_line(custom_id, body)

    def read_line(self, line: dict[str, Any]) -> Outcome:
        return from_batch_line(line)

    def upload(self, path: Path, filename: str) -> str:
        """One POST, no SDK retry (a retried upload the server had taken would leave an orphan file)."""
        with api_call("upload of the batch input", self.creds), open(path, "rb") as f:
            api = self._api.with_options(max_retries=0)
            return api.files.create(file=(filename, f, "application/jsonl"), purpose="batch").id

    def find_file(self, filename: str, size: int, not_before: float) -> str | None:
        """Like ``find_batch``, every page rather than trust the listing's order (pages hold up to 10,000 files,
        so this is one request or a few); it runs only after a run stopped during an upload."""
        with api_call("upload lookup", self.creds):
            for f in self._api.files.list(purpose="batch", order="desc"):
                if f.created_at >= not_before and f.filename == filename and f.bytes == size:
                    return f.id
        return None

    def create(self, file_id: str, metadata: Mapping[str, str]) -> RemoteBatch:
        with api_call("batch create", self.creds):
            batch = self._api.with_options(max_retries=0).batches.create(
                input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=dict(metadata)
            )
        return snapshot(batch)

    def find_batch(self, idem_key: str, not_before: float) -> RemoteBatch | None:
        """The listing's order is not documented (it takes no ``order``, unlike the files listing), so every page
        is read: stopping at the first older batch could miss ours and pay for it twice. This runs only after a
        run stopped between creating a batch and recording it."""
        with api_call("batch lookup", self.creds):
            for batch in self._api.batches.list(limit=100):
                if batch.created_at >= not_before and (batch.metadata or {}).get(IDEM_METADATA_KEY) == idem_key:
                    return snapshot(batch)
        return None

    def retrieve(self, batch_id: str) -> RemoteBatch:
        with api_call(f"status check of {batch_id}", self.creds):
            return snapshot(self._api.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> RemoteBatch:
        with api_call(f"cancel of {batch_id}", self.creds):
            return snapshot(self._api.batches.cancel(batch_id))

    def list(self) -> Iterator[RemoteBatch]:
        """Every page, read before the first batch is handed out: a failure midway is one error, not half a list."""
        with api_call("batch list", self.creds):
            batches = [snapshot(b) for b in self._api.batches.list(limit=100)]
        return iter(batches)

    def download(self, file_id: str, dest: Path) -> dict[str, Any]:
        """Stream a result file to ``dest`` (atomically); its size and sha256.

        The caller holds the job's lock: an interrupted download's ``.part`` is this one's to overwrite.
        """
        digest = hashlib.sha256()
        size = 0
        with (
            api_call(f"download of {file_id}", self.creds),
            self._api.files.with_streaming_response.content(file_id) as response,
            atomic_file(dest, scratch=dest.with_name(dest.name + ".part")) as out,
        ):
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return {"file_id": file_id, "bytes": size, "sha256": digest.hexdigest()}

    async def chat(self, custom_id: str, body: Mapping[str, Any]) -> Outcome:
        if self._async is None:
            self._async = async_client(self.creds)
        started = time.perf_counter()
        try:
            # The raw body, read as a batch line's body is: the same parser for both modes, and no model building.
            raw = await self._async.chat.completions.with_raw_response.create(**body)
            answer = orjson.loads(raw.content)
        except Exception as exc:
            refused = refusal(exc, "requests", self.creds.api_key)
            if refused is not None:
                raise refused from None
            return from_exception(custom_id, exc, self.creds.api_key)
        return from_body(custom_id, answer, latency_ms=round((time.perf_counter() - started) * 1000, 1))

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.close()
            self._async = None


def connector(root: Path) -> Connect:
    """How the application reaches the OpenAI API: the key and URL of ``root`` (a job's pinned URL wins)."""
    return lambda base_url: OpenAIProvider(credentials.resolve(root, base_url=base_url))
