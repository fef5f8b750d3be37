"""Everything that talks to the OpenAI API, and the translation of its failures into ours.

Creating calls (upload, batch create) run with the SDK's automatic retries off: the SDK sends no idempotency key,
so a retried POST that the server had already accepted would create a second, paid batch unseen. Instead the
caller records an intent first and, after any doubt, looks the batch up by the key it put in the metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.store.credentials import Credentials
from addm_integration.store.workspace import atomic_file
from ledger.events import Phase, upcast_with

if TYPE_CHECKING:  # the SDK takes most of a second to import: only runs that talk to the API pay for it
    from openai import AsyncOpenAI, OpenAI, Timeout
    from openai.types import Batch

ENDPOINT = "/v1/chat/completions"
IDEM_METADATA_KEY = "addm_idem_key"
JOB_METADATA_KEY = "addm_job_id"
WORKSPACE_METADATA_KEY = "addm_workspace"  # the id of the workspace that sent the batch (store/ownership.py)
RETRYABLE_STATUS = frozenset({408, 429})
UNANSWERED = frozenset({"timed out", "connection failed"})  # describe()'s words for a call nobody answered
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
        text = "timed out"
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


def upload(api: OpenAI, creds: Credentials, path: Path, filename: str) -> str:
    """One POST, no SDK retry (a retried upload the server had taken would leave an orphan file)."""
    with api_call("upload of the batch input", creds), open(path, "rb") as f:
        return api.with_options(max_retries=0).files.create(file=(filename, f, "application/jsonl"), purpose="batch").id


def find_file(api: OpenAI, creds: Credentials, filename: str, size: int, not_before: float) -> str | None:
    """The id of an upload named ``filename`` of ``size`` bytes made since ``not_before``, if the server has one.

    Like ``find_batch``, it reads every page rather than trust the listing's order (pages hold up to 10,000
    files, so this is one request or a few); it runs only after a run stopped during an upload.
    """
    with api_call("upload lookup", creds):
        for f in api.files.list(purpose="batch", order="desc"):
            if f.created_at >= not_before and f.filename == filename and f.bytes == size:
                return f.id
    return None


def create_batch(api: OpenAI, creds: Credentials, file_id: str, metadata: dict[str, str]) -> Batch:
    with api_call("batch create", creds):
        return api.with_options(max_retries=0).batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata
        )


def find_batch(api: OpenAI, creds: Credentials, idem_key: str, not_before: float) -> Batch | None:
    """The batch tagged with ``idem_key`` created since ``not_before`` (Unix seconds), if the server has one.

    The listing's order is not documented (it takes no ``order``, unlike the files listing), so every page is
    read: stopping at the first older batch could miss ours and pay for it twice. This runs only after a run
    stopped between creating a batch and recording it.
    """
    with api_call("batch lookup", creds):
        for batch in api.batches.list(limit=100):
            if batch.created_at >= not_before and (batch.metadata or {}).get(IDEM_METADATA_KEY) == idem_key:
                return batch
    return None


def retrieve(api: OpenAI, creds: Credentials, batch_id: str) -> Batch:
    with api_call(f"status check of {batch_id}", creds):
        return api.batches.retrieve(batch_id)


def cancel(api: OpenAI, creds: Credentials, batch_id: str) -> Batch:
    with api_call(f"cancel of {batch_id}", creds):
        return api.batches.cancel(batch_id)


def download(api: OpenAI, creds: Credentials, file_id: str, dest: Path) -> dict[str, Any]:
    """Stream a result file to ``dest`` (atomically) and return its size and sha256.

    The caller holds the job's lock: an interrupted download's ``.part`` is this one's to overwrite.
    """
    digest = hashlib.sha256()
    size = 0
    with (
        api_call(f"download of {file_id}", creds),
        api.files.with_streaming_response.content(file_id) as response,
        atomic_file(dest, scratch=dest.with_name(dest.name + ".part")) as out,
    ):
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return {"file_id": file_id, "bytes": size, "sha256": digest.hexdigest()}


def batch_errors(batch: Batch) -> tuple[dict[str, Any], ...]:
    if not batch.errors or not batch.errors.data:
        return ()
    return tuple({"code": e.code, "message": redact(e.message or ""), "line": e.line} for e in batch.errors.data if e)
