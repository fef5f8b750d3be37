"""An in-process ``Provider`` with the batch service's semantics, and a fault at any call a test names.

Why it exists: the engine's decisions (what to send, adopt, poll, apply, requeue) can then be tested in
milliseconds, at every call, where each subprocess-and-HTTP run costs seconds. It keeps what the service really
does (docs of the Batch API): a batch goes validating -> in_progress -> finalizing -> completed, one step per
status check; validation can fail it (token_limit_exceeded, mixed models), a window or a cancel can end it with
partial results (the rest reported as batch_expired / batch_cancelled in the error file); answers come from the
local server's own answer function, so the same request gets the same answer as over HTTP. Result lines are read
by the OpenAI adapter's parser: the same code the real runs use.

Faults: ``fail(method, nth, fault)`` fails the nth call of one method (counted from the start), ``fail_call(n,
fault)`` the nth call of any method. ``lost_reply`` lets the call take effect and then loses the answer (the
case that would pay twice if the engine trusted no-answer as not-done); ``crash`` stops the run as a kill would
(before the call's effect), ``crash_after`` once the effect happened.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fake_openai import chat_completion

from addm_integration.errors import BadInput, Refused, Transient
from addm_integration.provider.base import ENDED, Outcome, RemoteBatch
from addm_integration.provider.openai_api import MAX_BYTES, MAX_REQUESTS, from_batch_line, from_body, phase
from addm_integration.store.workspace import atomic_file

FAULTS = ("server_error", "timeout", "lost_reply", "unauthorized", "no_credit", "crash", "crash_after")
METHODS = ("upload", "find_file", "create", "find_batch", "retrieve", "cancel", "list", "download", "chat")
ENDS = ("completed", "expired", "cancelled", "failed")
Answer = Callable[[str, Mapping[str, Any]], tuple[int, dict[str, Any]]]


class Crash(BaseException):
    """The run stops here as a kill would: nothing of the engine catches it."""


@dataclass(frozen=True)
class End:
    """How a batch ends: ``done`` requests ran (None: all) before an expiry or a cancel; ``code`` fails it."""

    status: str = "completed"
    done: int | None = None
    code: str | None = None


@dataclass
class _File:
    id: str
    filename: str
    data: bytes
    created_at: float


@dataclass
class _Batch:
    id: str
    input_file_id: str
    metadata: dict[str, str]
    created_at: float
    end: End
    status: str = "validating"
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: tuple[dict[str, Any], ...] = ()
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel_asked: bool = False
    checks: int = 0
    ran: tuple[str, ...] = ()  # the requests that ran (and are billed)


class FakeProvider:
    """The service in memory. ``ends`` says how the batches end, in order of creation (then: completed);
    ``checks`` how many status checks a batch takes to end."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(
        self,
        url: str = "http://127.0.0.1:9/v1",
        *,
        ends: list[End] | None = None,
        token_limit: int | None = None,
        checks: int = 3,
        answer: Answer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.ends = list(ends or [])
        self.token_limit = token_limit
        self.checks = checks
        self.answer = answer or (lambda custom_id, body: chat_completion(body))
        self.clock = clock
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.calls: list[str] = []
        self.chats: list[str] = []  # the custom_id of every live call that was answered (and paid for)
        self._faults: dict[tuple[str | None, int], str] = {}
        self._ids = itertools.count(1)

    # -- faults -----------------------------------------------------------------------------------------------

    def fail(self, method: str, nth: int, fault: str) -> None:
        assert method in METHODS and fault in FAULTS, (method, fault)
        self._faults[(method, nth)] = fault

    def fail_call(self, n: int, fault: str) -> None:
        assert fault in FAULTS, fault
        self._faults[(None, n)] = fault

    def _enter(self, method: str) -> str | None:
        """Count the call; raise the fault that strikes before its effect, or return the one that comes after."""
        self.calls.append(method)
        fault = self._faults.pop((None, len(self.calls)), None) or self._faults.pop(
            (method, self.calls.count(method)), None
        )
        if fault in (None, "lost_reply", "crash_after"):
            return fault
        if fault == "crash":
            raise Crash(f"{method} #{len(self.calls)}")
        if fault == "unauthorized":
            raise Refused(f"{method} refused (HTTP 401): the key in OPENAI_API_KEY is not valid", "HTTP 401")
        if fault == "no_credit":
            raise Refused(f"{method} refused (HTTP 429 insufficient_quota): no credit", "HTTP 429 insufficient_quota")
        said = "timed out" if fault == "timeout" else "HTTP 500 server_error: The server had an error"
        raise Transient(f"{method} failed: {said}; the next run retries")

    def _leave(self, method: str, fault: str | None) -> None:
        if fault == "lost_reply":
            raise Transient(f"{method} failed: timed out; the next run retries")
        if fault == "crash_after":
            raise Crash(f"{method} #{len(self.calls)}, after its effect")

    # -- the Provider protocol --------------------------------------------------------------------------------

    def check(self) -> None:
        if not self.url:
            raise BadInput("no service URL")

    def request_line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        return orjson.dumps(line) + b"\n"

    def read_line(self, line: dict[str, Any]) -> Outcome:
        return from_batch_line(line)

    def upload(self, path: Path, filename: str) -> str:
        fault = self._enter("upload")
        file = self._add_file(filename, path.read_bytes())
        self._leave("upload", fault)
        return file.id

    def find_file(self, filename: str, size: int, not_before: float) -> str | None:
        self._leave("find_file", self._enter("find_file"))
        for f in reversed(self.files.values()):
            if f.created_at >= not_before and f.filename == filename and len(f.data) == size:
                return f.id
        return None

    def create(self, file_id: str, metadata: Mapping[str, str]) -> RemoteBatch:
        fault = self._enter("create")
        if file_id not in self.files:
            raise BadInput(f"batch create failed: HTTP 400: no file {file_id}")
        batch_id = f"batch_fake{next(self._ids):04d}"
        end = self.ends.pop(0) if self.ends else End()
        self.batches[batch_id] = _Batch(batch_id, file_id, dict(metadata), self.clock(), end)
        self._leave("create", fault)
        return self._snapshot(self.batches[batch_id])

    def find_batch(self, idem_key: str, not_before: float) -> RemoteBatch | None:
        self._leave("find_batch", self._enter("find_batch"))
        for b in self.batches.values():
            if b.created_at >= not_before and b.metadata.get("addm_idem_key") == idem_key:
                return self._snapshot(b)
        return None

    def retrieve(self, batch_id: str) -> RemoteBatch:
        fault = self._enter("retrieve")
        batch = self._batch(batch_id)
        self._step(batch)
        self._leave("retrieve", fault)
        return self._snapshot(batch)

    def cancel(self, batch_id: str) -> RemoteBatch:
        fault = self._enter("cancel")
        batch = self._batch(batch_id)
        if phase(batch.status) in ENDED:
            raise BadInput(f"cancel of {batch_id} failed: HTTP 409: Cannot cancel a batch with status {batch.status}")
        batch.status, batch.cancel_asked = "cancelling", True
        self._leave("cancel", fault)
        return self._snapshot(batch)

    def list(self) -> Iterator[RemoteBatch]:
        self._leave("list", self._enter("list"))
        return iter([self._snapshot(b) for b in reversed(self.batches.values())])

    def download(self, file_id: str, dest: Path) -> dict[str, Any]:
        self._leave("download", self._enter("download"))
        data = self.files[file_id].data
        with atomic_file(dest, scratch=dest.with_name(dest.name + ".part")) as out:
            out.write(data)
        return {"file_id": file_id, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    async def chat(self, custom_id: str, body: Mapping[str, Any]) -> Outcome:
        try:
            fault = self._enter("chat")
        except Transient as exc:
            said = "timed out" if "timed out" in str(exc) else "HTTP 500 server_error: The server had an error"
            return Outcome(custom_id, error=said, retryable=True)
        self.chats.append(custom_id)
        status, answer = self.answer(custom_id, body)
        if fault == "lost_reply":
            return Outcome(custom_id, error="timed out", retryable=True)
        self._leave("chat", fault)
        if status != 200:
            code = (answer.get("error") or {}).get("code") or ""
            return Outcome(custom_id, error=f"HTTP {status} {code}".strip(), retryable=status >= 500 or status == 429)
        return from_body(custom_id, answer)

    async def aclose(self) -> None:
        return None

    # -- the service's side -----------------------------------------------------------------------------------

    def input_ids(self, batch_id: str) -> list[str]:
        return [cid for cid, _ in self._lines(self.batches[batch_id])]

    def paid(self) -> list[str]:
        """Every request that ran, in a batch or live (one that ran twice shows twice)."""
        return [cid for b in self.batches.values() for cid in b.ran] + self.chats

    def _add_file(self, filename: str, data: bytes) -> _File:
        file = _File(f"file-fake{next(self._ids):04d}", filename, data, self.clock())
        self.files[file.id] = file
        return file

    def _batch(self, batch_id: str) -> _Batch:
        if batch_id not in self.batches:
            raise BadInput(f"status check of {batch_id} failed: HTTP 404: No batch found with id '{batch_id}'")
        return self.batches[batch_id]

    def _lines(self, batch: _Batch) -> Iterator[tuple[str, dict[str, Any]]]:
        for raw in self.files[batch.input_file_id].data.splitlines():
            if raw.strip():
                line = orjson.loads(raw)
                yield line["custom_id"], line["body"]

    def _step(self, batch: _Batch) -> None:
        """One step of the batch's life per status check (time passes only when someone looks): ``checks`` of
        them from validating to its end (3: in_progress, finalizing, completed)."""
        if phase(batch.status) in ENDED:
            return
        lines = list(self._lines(batch))
        batch.checks += 1
        if batch.status == "validating" and not batch.cancel_asked:
            problem = self._invalid(batch, lines)
            if problem is not None:
                batch.status, batch.errors = "failed", (problem,)
                return
            batch.counts = {"total": len(lines), "completed": 0, "failed": 0}
            if batch.checks < self.checks:
                batch.status = "in_progress"
                return
        elif batch.status == "in_progress" and batch.checks < self.checks and batch.end.status == "completed":
            batch.status = "finalizing"
            return
        ending = "cancelled" if batch.cancel_asked else batch.end.status
        ran = 0 if batch.cancel_asked and batch.end.done is None else batch.end.done
        self._finish(batch, lines, ending, len(lines) if ran is None else ran)

    def _invalid(self, batch: _Batch, lines: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
        if batch.end.status == "failed":
            return {"code": batch.end.code or "invalid_request", "message": "refused at validation", "line": None}
        if len({str(body.get("model")) for _, body in lines}) > 1:
            return {"code": "mismatched_model", "message": "one model per batch", "line": None}
        if self.token_limit is not None:
            model = lines[0][1].get("model") if lines else None
            queued = sum(
                len(self.files[b.input_file_id].data) // 4
                for b in self.batches.values()
                if b.status in ("in_progress", "finalizing") and next(self._lines(b))[1].get("model") == model
            )
            if queued + len(self.files[batch.input_file_id].data) // 4 > self.token_limit:
                return {"code": "token_limit_exceeded", "message": f"Enqueued token limit reached for {model}"}
        return None

    def _finish(self, batch: _Batch, lines: list[tuple[str, dict[str, Any]]], ending: str, ran: int) -> None:
        output, errors = [], []
        for n, (cid, body) in enumerate(lines):
            if n >= ran:
                code = "batch_cancelled" if ending == "cancelled" else "batch_expired"
                message = "not run before the batch ended"
                errors.append(
                    {"id": f"r{n}", "custom_id": cid, "response": None, "error": {"code": code, "message": message}}
                )
                continue
            status, answer = self.answer(cid, body)
            row = {"id": f"r{n}", "custom_id": cid, "response": {"status_code": status, "body": answer}, "error": None}
            (output if status == 200 else errors).append(row)
        batch.ran = tuple(cid for cid, _ in lines[:ran])
        batch.counts = {"total": len(lines), "completed": len(output), "failed": len(lines) - len(output)}
        batch.output_file_id = self._jsonl("output", output)
        batch.error_file_id = self._jsonl("error", errors)
        batch.status = ending

    def _jsonl(self, name: str, rows: list[dict[str, Any]]) -> str | None:
        if not rows:
            return None
        return self._add_file(name, b"".join(orjson.dumps(r) + b"\n" for r in rows)).id

    def _snapshot(self, batch: _Batch) -> RemoteBatch:
        return RemoteBatch(
            id=batch.id,
            phase=phase(batch.status),
            status=batch.status,
            created_at=batch.created_at,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            counts=dict(batch.counts),
            errors=batch.errors,
            metadata=dict(batch.metadata),
        )
