"""The events a job and its batches go through, as plain frozen data.

The ledger stores facts, never intentions to be reinterpreted: each class is one thing that happened, named in the
past tense. Nothing here knows what a job computes or which service runs its batches; payload fields that only a
pipeline understands travel in ``params`` / ``outputs`` dictionaries.

Every class carries a schema version. A reader upcasts older records through ``UPCASTERS`` and refuses records
written by a newer version than it knows, so an old binary can never silently misread a new ledger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Phase(StrEnum):
    """Where a batch is in its life, in words of no one service (docs/ledger.md, "Batch phases").

    The code that talks to a service says which phase each of its status words is; every decision reads the
    phase, and the service's word is kept beside it for display.
    """

    SUBMITTED = "submitted"  # with the service, not started
    RUNNING = "running"  # being run, or run and its results being written
    STOPPING = "stopping"  # asked to stop: what already ran still comes
    FINISHED = "finished"  # ended, every request run
    FAILED = "failed"  # ended without running anything: refused as a whole
    EXPIRED = "expired"  # ended when its time ran out
    CANCELLED = "cancelled"  # ended because someone cancelled it


ENDED = frozenset({Phase.FINISHED, Phase.FAILED, Phase.EXPIRED, Phase.CANCELLED})  # nothing more will run


@dataclass(frozen=True)
class JobCreated:
    """A job exists: its identity ``key`` lets a repeated command find it instead of paying again."""

    VERSION: ClassVar[int] = 1
    job_id: str
    pipeline: str
    mode: str
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    n_items: int = 0


@dataclass(frozen=True)
class PartPlanned:
    """One batch-sized slice of a job's work, staged on disk before anything is sent.

    ``idem_key`` names the upload and tags the remote batch, so a run that crashed between sending and recording
    can find what it sent.
    """

    VERSION: ClassVar[int] = 2
    job_id: str
    idem_key: str
    n_items: int
    n_bytes: int
    attempt: int
    input_path: str
    model: str = ""
    source_batch: str | None = None
    ids_digest: str | None = None  # v2: fingerprint of the part's custom_id set (None: read the input to know it)


@dataclass(frozen=True)
class SendStarted:
    """An upload of the part is about to start: after a crash, look for it on the server before uploading again."""

    VERSION: ClassVar[int] = 1
    job_id: str
    idem_key: str


@dataclass(frozen=True)
class FileUploaded:
    VERSION: ClassVar[int] = 1
    job_id: str
    idem_key: str
    file_id: str


@dataclass(frozen=True)
class BatchCreated:
    """The service has the batch; v2: with its ``status`` (the service's word) and the ``phase`` that means."""

    VERSION: ClassVar[int] = 2
    job_id: str
    idem_key: str
    batch_id: str
    adopted: bool = False
    status: str = ""
    phase: str = Phase.SUBMITTED


@dataclass(frozen=True)
class CronInstalled:
    VERSION: ClassVar[int] = 1
    batch_id: str
    schedule: str


@dataclass(frozen=True)
class CronRemoved:
    """The batch's entry is gone; ``by_user`` (v2): taken out on purpose, so no later run puts it back."""

    VERSION: ClassVar[int] = 2
    batch_id: str
    by_user: bool = False


@dataclass(frozen=True)
class BatchPolled:
    """Recorded when the remote status or counts change, not on every poll, so the log grows with news only.

    v2: ``phase``, what ``status`` means (None: the record does not say, and the batch keeps the phase it had).
    """

    VERSION: ClassVar[int] = 2
    batch_id: str
    status: str
    counts: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()
    phase: str | None = None


@dataclass(frozen=True)
class FilesStored:
    """The batch's result files are on local disk, complete (sizes and sha256 let a replay check them)."""

    VERSION: ClassVar[int] = 1
    batch_id: str
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemsApplied:
    """These items' results are durably in the job's output; ``kind`` is ``apply`` or ``replay``."""

    VERSION: ClassVar[int] = 1
    job_id: str
    batch_id: str | None
    custom_ids: tuple[str, ...]
    attempt: int
    kind: str = "apply"
    usage: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemsFailed:
    """Items that produced no result, each with its reason; the retryable ones may be submitted again."""

    VERSION: ClassVar[int] = 1
    job_id: str
    batch_id: str | None
    failures: tuple[tuple[str, str, bool], ...]
    attempt: int
    usage: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSettled:
    """Everything the batch will ever deliver has been applied; counts are over its submitted items."""

    VERSION: ClassVar[int] = 1
    batch_id: str
    status: str
    n_applied: int
    n_failed: int
    n_unroutable: int = 0
    reason: str = ""


@dataclass(frozen=True)
class AccessRefused:
    """The service refused the account (its key, permission or credit): nothing of the job moves until the
    user fixes that. Recorded once per reason; the next exchange that gets through lifts it."""

    VERSION: ClassVar[int] = 1
    job_id: str
    batch_id: str | None
    reason: str


@dataclass(frozen=True)
class JobFinalized:
    VERSION: ClassVar[int] = 1
    job_id: str
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceReached:
    """The job's first request got an answer from the service at ``base_url``: its later calls go there.

    Recorded only then, not at creation: a job whose first try met no network follows the URL the user fixes.
    """

    VERSION: ClassVar[int] = 1
    job_id: str
    base_url: str


@dataclass(frozen=True)
class RunStarted:
    """A foreground run (ondemand) began working on the job; without its ``RunEnded`` it was killed."""

    VERSION: ClassVar[int] = 1
    job_id: str


@dataclass(frozen=True)
class RunEnded:
    """How a foreground run ended: ``finalized``, ``nothing`` (no request got through), ``unreachable`` (every
    failure was the service's), ``interrupted``, or another word for a stop that left the job open."""

    VERSION: ClassVar[int] = 1
    job_id: str
    outcome: str


@dataclass(frozen=True)
class JobAbandoned:
    """The user gave the job up: nothing more is sent, fetched or applied for it; what it applied stays."""

    VERSION: ClassVar[int] = 1
    job_id: str
    cancelled: tuple[str, ...] = ()


Event = (
    JobCreated
    | PartPlanned
    | SendStarted
    | FileUploaded
    | BatchCreated
    | CronInstalled
    | CronRemoved
    | BatchPolled
    | FilesStored
    | ItemsApplied
    | ItemsFailed
    | BatchSettled
    | AccessRefused
    | JobFinalized
    | ServiceReached
    | RunStarted
    | RunEnded
    | JobAbandoned
)

EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        JobCreated,
        PartPlanned,
        SendStarted,
        FileUploaded,
        BatchCreated,
        CronInstalled,
        CronRemoved,
        BatchPolled,
        FilesStored,
        ItemsApplied,
        ItemsFailed,
        BatchSettled,
        AccessRefused,
        JobFinalized,
        ServiceReached,
        RunStarted,
        RunEnded,
        JobAbandoned,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type name, version it upgrades from) -> function from that version's payload to the next version's payload.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("PartPlanned", 1): lambda d: {**d, "ids_digest": None},
    ("CronRemoved", 1): lambda d: {**d, "by_user": False},
    # Written before phases: only the application that wrote them knows its service's words (upcast_with).
    ("BatchCreated", 1): lambda d: {**d, "status": "", "phase": Phase.SUBMITTED},
    ("BatchPolled", 1): lambda d: {**d, "phase": None},
}


class SchemaError(ValueError):
    """A record this code cannot read faithfully (unknown type, newer version, wrong fields)."""


def upcast_with(type_name: str, version: int, upcast: Upcaster) -> None:
    """Read records of ``type_name`` v``version`` with the application's ``upcast``: for a field whose value in
    older records only the application that wrote them knows (what its service's words meant)."""
    if (type_name, version) not in UPCASTERS:
        raise SchemaError(f"no upcaster for {type_name} v{version} to replace")
    UPCASTERS[(type_name, version)] = upcast


def to_payload(event: Event) -> tuple[str, int, dict[str, Any]]:
    """Fields as they are (orjson writes tuples and mappings itself): no deep copy of 50,000 custom_ids."""
    return (
        type(event).__name__,
        type(event).VERSION,
        {f.name: getattr(event, f.name) for f in dataclasses.fields(event)},
    )


def _tuplify(value: Any) -> Any:
    if type(value) is not list:
        return value
    if not any(type(v) is list for v in value):  # a flat list, like 50,000 custom_ids: no call per element
        return tuple(value)
    return tuple(map(_tuplify, value))


def from_payload(type_name: str, version: int, data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise SchemaError(f"unknown event type {type_name!r}")
    if version > cls.VERSION:
        raise SchemaError(
            f"{type_name} v{version} was written by a newer version of this tool (this one reads up to "
            f"v{cls.VERSION}); upgrade it"
        )
    while version < cls.VERSION:
        upcast = UPCASTERS.get((type_name, version))
        if upcast is None:
            raise SchemaError(f"no upcaster for {type_name} v{version}")
        data, version = upcast(data), version + 1
    names = {f.name for f in dataclasses.fields(cls)}
    if not names.issuperset(data):
        raise SchemaError(f"{type_name} has unknown fields {sorted(set(data) - names)}")
    try:
        return cls(**{k: _tuplify(v) for k, v in data.items()})
    except TypeError as exc:
        raise SchemaError(f"{type_name}: {exc}") from None
