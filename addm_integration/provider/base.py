"""The provider seam: what the engine asks of a batch service, in words that are no one service's.

The engine plans, sends, polls, stores and settles through a ``Provider`` and never through an SDK, so it can run
in-process against a fake (the engine's failure tests do) and a second service plugs in as one adapter. Every
method raises only the errors a user sees: ``Refused`` (the account said no; asking again cannot help),
``Transient`` (the next run retries) or ``BadInput``. A service's own status words travel beside the neutral state
(``RemoteBatch.status``) so that nothing a user could read in the service's console is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ledger.events import ENDED, Phase

# Our own tags on every batch we create: ids the engine finds its batches by, whatever the service.
IDEM_METADATA_KEY = "addm_idem_key"
JOB_METADATA_KEY = "addm_job_id"
WORKSPACE_METADATA_KEY = "addm_workspace"  # the id of the workspace that sent the batch (store/ownership.py)
# How a call that nobody answered is described: no service reached, so it pins no URL to a job.
UNANSWERED = frozenset({"timed out", "connection failed"})


__all__ = ["ENDED", "STOPPED", "Connect", "Outcome", "Phase", "Provider", "RemoteBatch", "reached", "unparsable"]

STOPPED = ENDED | {Phase.STOPPING}  # nothing left to cancel: ended, or a cancel under way


@dataclass(frozen=True)
class RemoteBatch:
    """A batch as the service reported it at one moment.

    ``counts`` uses ``total``, ``completed`` and ``failed``; ``errors`` are the reasons a batch failed before it
    ran (``code``, ``message``, ``line``), already free of secrets. ``created_at`` is Unix seconds.
    """

    id: str
    phase: Phase
    status: str  # the service's own word for it, recorded beside the phase
    created_at: float
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


class Outcome(NamedTuple):
    """One reading of an answer, whether it came from a live call or a batch result line: the text to hand to the
    pipeline's parser and the token usage, or a failure reason and whether sending the item again could help.

    Immutable like an event, but a tuple: a batch of 50,000 results builds 50,000 of these.
    """

    custom_id: str
    content: str | None = None
    usage: tuple[Any, Any, Any] | None = None  # (prompt, completion, total) tokens as reported; sum_usage adds ints
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


def reached(outcome: Outcome) -> bool:
    """Whether the service answered at all (any status): a job is pinned to the first URL that did."""
    return outcome.error not in UNANSWERED


def unparsable(outcome: Outcome, why: str) -> Outcome:
    """The call succeeded but the answer could not be read: worth asking again (a retryable failure)."""
    return Outcome(outcome.custom_id, usage=outcome.usage, error=f"unparsable answer: {why}", retryable=True)


class Provider(Protocol):
    """A batch and chat service, as the engine uses it.

    Creating calls (``upload``, ``create``) are sent once, never retried by the adapter: a retried creation the
    service had already taken would be a second file or a second, paid batch nobody sees. After any doubt the
    engine looks first (``find_file``, ``find_batch``) by the names and tags it chose before sending.
    Construction never talks to the service nor fails; ``check`` says whether it can be used.
    """

    url: str  # where the calls go: a job is pinned to the first URL that answered it
    max_requests: int  # per batch
    max_bytes: int  # of a batch's input file

    def check(self) -> None:
        """Raise BadInput when calls cannot be made (no key, a setting that makes no sense): before a job."""
        ...

    def request_line(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        """One line of a batch input file, ``custom_id`` first (requeues read it back without parsing)."""
        ...

    def read_line(self, line: dict[str, Any]) -> Outcome:
        """The outcome of one result line (its ``custom_id`` already checked to be a string); no I/O."""
        ...

    def upload(self, path: Path, filename: str) -> str:
        """Send a staged input file; the file id."""
        ...

    def find_file(self, filename: str, size: int, not_before: float) -> str | None:
        """The id of an upload of this name and size made since ``not_before`` (Unix seconds), if any."""
        ...

    def create(self, file_id: str, metadata: Mapping[str, str]) -> RemoteBatch:
        """Create the batch of an uploaded input, tagged with ``metadata``."""
        ...

    def find_batch(self, idem_key: str, not_before: float) -> RemoteBatch | None:
        """The batch tagged with ``idem_key`` created since ``not_before``, if the service has one."""
        ...

    def retrieve(self, batch_id: str) -> RemoteBatch: ...

    def cancel(self, batch_id: str) -> RemoteBatch: ...

    def list(self) -> Iterator[RemoteBatch]:
        """Every batch of the account the key can see, newest first as far as the service says."""
        ...

    def download(self, file_id: str, dest: Path) -> dict[str, Any]:
        """Write a result file to ``dest`` atomically; ``{"file_id", "bytes", "sha256"}`` of what was written."""
        ...

    async def chat(self, custom_id: str, body: Mapping[str, Any]) -> Outcome:
        """One live call; a failure is an outcome, except the account's refusal, which raises ``Refused``."""
        ...

    async def aclose(self) -> None:
        """Release what ``chat`` opened, in the event loop that ran it."""
        ...


# How a run gets its provider: from the URL a job is pinned to (None: the configured one). The app passes the
# real service's; tests pass a fake.
Connect = Callable[[str | None], Provider]
