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

from addm_integration.credentials import Credentials
from addm_integration.errors import BadInput, Transient
from ledger.log import fsync_dir

if TYPE_CHECKING:  # the SDK takes most of a second to import: only runs that talk to the API pay for it
    from openai import AsyncOpenAI, OpenAI
    from openai.types import Batch

ENDPOINT = "/v1/chat/completions"
IDEM_METADATA_KEY = "addm_idem_key"
JOB_METADATA_KEY = "addm_job_id"
WORKSPACE_METADATA_KEY = "addm_workspace"  # the id of the workspace that sent the batch (ownership.py)
RETRYABLE_STATUS = frozenset({408, 429})
UNANSWERED = frozenset({"timed out", "connection failed"})  # describe()'s words for a call nobody answered
_SECRET = re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}")


def require_key(creds: Credentials) -> None:
    if not creds.api_key:
        raise BadInput("OPENAI_API_KEY is not set: export it or put it in <root>/.env (chmod 600)")


def client(creds: Credentials, *, max_retries: int = 2, timeout: float = 120.0) -> OpenAI:
    require_key(creds)
    from openai import OpenAI

    return OpenAI(api_key=creds.api_key, base_url=creds.base_url, max_retries=max_retries, timeout=timeout)


def async_client(creds: Credentials, *, max_retries: int = 2, timeout: float = 120.0) -> AsyncOpenAI:
    require_key(creds)
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=creds.api_key, base_url=creds.base_url, max_retries=max_retries, timeout=timeout)


def redact(text: str, secret: str | None = None) -> str:
    """Remove the key (and anything shaped like one) from text bound for a user, a log or the ledger."""
    if secret:
        text = text.replace(secret, "***")
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
    return redact(" ".join(text.split())[:300], secret)


def is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(exc, openai.APIStatusError) and retryable_status(exc.status_code)


@contextlib.contextmanager
def api_call(what: str, creds: Credentials) -> Iterator[None]:
    """Turn an SDK failure into Transient (the next run retries) or BadInput (the user must act)."""
    import openai

    try:
        yield
    except openai.OpenAIError as exc:
        line = f"{what} failed: {describe(exc, creds.api_key)}"
        if is_transient(exc):
            raise Transient(f"{line}; the next run retries") from None
        raise BadInput(line) from None


def upload(api: OpenAI, creds: Credentials, path: Path, filename: str) -> str:
    """One POST, no SDK retry (a retried upload the server had taken would leave an orphan file)."""
    with api_call("upload of the batch input", creds), open(path, "rb") as f:
        return api.with_options(max_retries=0).files.create(file=(filename, f, "application/jsonl"), purpose="batch").id


def find_file(api: OpenAI, creds: Credentials, filename: str, size: int, not_before: float) -> str | None:
    """The id of an upload named ``filename`` of ``size`` bytes that a crashed run made, if the server has one."""
    with api_call("upload lookup", creds):
        for f in api.files.list(purpose="batch", order="desc"):
            if f.filename == filename and f.bytes == size:
                return f.id
            if f.created_at < not_before:
                return None
    return None


def create_batch(api: OpenAI, creds: Credentials, file_id: str, metadata: dict[str, str]) -> Batch:
    with api_call("batch create", creds):
        return api.with_options(max_retries=0).batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata
        )


def find_batch(api: OpenAI, creds: Credentials, idem_key: str, not_before: float) -> Batch | None:
    """The batch tagged with ``idem_key``, looking back no further than ``not_before`` (Unix seconds)."""
    with api_call("batch lookup", creds):
        for batch in api.batches.list(limit=100):
            if (batch.metadata or {}).get(IDEM_METADATA_KEY) == idem_key:
                return batch
            if batch.created_at < not_before:
                return None
    return None


def retrieve(api: OpenAI, creds: Credentials, batch_id: str) -> Batch:
    with api_call(f"status check of {batch_id}", creds):
        return api.batches.retrieve(batch_id)


def cancel(api: OpenAI, creds: Credentials, batch_id: str) -> Batch:
    with api_call(f"cancel of {batch_id}", creds):
        return api.batches.cancel(batch_id)


def download(api: OpenAI, creds: Credentials, file_id: str, dest: Path) -> dict[str, Any]:
    """Stream a result file to ``dest`` (atomically) and return its size and sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    with (
        api_call(f"download of {file_id}", creds),
        api.files.with_streaming_response.content(file_id) as response,
        open(tmp, "wb") as out,
    ):
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return {"file_id": file_id, "bytes": size, "sha256": digest.hexdigest()}


def batch_errors(batch: Batch) -> tuple[dict[str, Any], ...]:
    if not batch.errors or not batch.errors.data:
        return ()
    return tuple({"code": e.code, "message": redact(e.message or ""), "line": e.line} for e in batch.errors.data if e)
