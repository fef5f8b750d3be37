"""Planning: the work as staged, batch-sized parts, by the one split rule; nothing is sent here.

A part holds one model's request lines within the request and byte limits. The dry run counts with the same rule
(``split``), so what it announces is what a submit would stage.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from addm_integration.engine.pipeline import WorkItem
from addm_integration.errors import BadInput
from addm_integration.provider.base import Provider
from addm_integration.store.context import Context
from ledger.events import PartPlanned
from ledger.reducer import JobState


@dataclass(frozen=True)
class Limits:
    """A part's size at most: the service's own limits (``Provider.max_requests``, ``max_bytes``) or the smaller
    ones a submit was given, recorded with the job so that its requeues split as its submit did."""

    max_requests: int
    max_bytes: int

    @classmethod
    def of(cls, provider: Provider, recorded: Mapping[str, int] | None = None) -> Limits:
        return cls(**{"max_requests": provider.max_requests, "max_bytes": provider.max_bytes, **(recorded or {})})


def batch_lines(
    items: Iterable[WorkItem], request_line: Callable[[str, Mapping[str, Any]], bytes]
) -> Iterator[tuple[str, bytes, str]]:
    """(custom_id, request line, model) of each item, the line in the provider's format (``request_line``): the
    model decides which part the line may go in."""
    for item in items:
        yield item.custom_id, request_line(item.custom_id, item.body), str(item.body.get("model", ""))


def ids_digest(custom_ids: Iterable[str]) -> str:
    """A fingerprint of a set of custom_ids, recorded with each part.

    Results that name exactly the submitted set are known complete from it, without reading the batch's input
    (up to 200 MB) again; only a batch with something missing or foreign needs that read.
    """
    return hashlib.blake2b(orjson.dumps(sorted(custom_ids)), digest_size=16).hexdigest()


class _StagedPart:
    """One staged input file being written; fsynced on close so the plan never names a half-written file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.ids: list[str] = []
        self.size = 0

    def write(self, custom_id: str, line: bytes) -> None:
        self.file.write(line)
        self.ids.append(custom_id)
        self.size += len(line)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def staging_for(ctx: Context, key: str) -> Path:
    """The staged inputs of one job identity: only runs holding that identity's job lock write or sweep here."""
    return ctx.ws.staging_dir / hashlib.sha256(key.encode()).hexdigest()[:16]


def unsent_inputs(state_of: Callable[[str], JobState], job_ids: Iterable[str]) -> set[str]:
    """The staged inputs that planned parts still need (those with no batch yet)."""
    return {p.input_path for j in job_ids for p in state_of(j).parts.values() if p.batch_id is None}


def sweep_staging(ctx: Context, key: str) -> None:
    """Remove this identity's staged inputs that no part still to be sent names: what a run killed between
    staging and recording left (up to 200 MB each), or between recording a batch and removing its input."""
    folder = staging_for(ctx, key)
    staged = list(folder.glob("*.jsonl")) if folder.exists() else []
    if staged:
        needed = unsent_inputs(lambda j: ctx.job_state(j).jobs[j], ctx.index.job_ids(key))
        for path in staged:
            if str(path) not in needed:
                path.unlink(missing_ok=True)


def split(lines: Iterable[tuple[str, bytes, str]], limits: Limits) -> Iterator[tuple[int, str, bytes, str]]:
    """The one split rule: (part number, custom_id, request line, model) of each line, parts numbered from 0.

    A part holds one model's lines (the service fails a batch of mixed models) within the request and byte limits.
    Duplicate custom_ids and requests larger than a whole batch are refused, before anything is written or sent.
    """
    seen: set[str] = set()
    filling: dict[str, list[int]] = {}  # model -> [part number, requests, bytes] of the part it fills
    parts = 0
    for custom_id, line, model in lines:
        if custom_id in seen:
            raise BadInput(f"duplicate custom_id {custom_id!r} in the work list; nothing was sent")
        seen.add(custom_id)
        if len(line) > limits.max_bytes:
            raise BadInput(
                f"request {custom_id!r} is {len(line):,} bytes, over the batch limit of "
                f"{limits.max_bytes:,}; nothing was sent"
            )
        part = filling.get(model)
        if part is None or part[1] >= limits.max_requests or part[2] + len(line) > limits.max_bytes:
            part = filling[model] = [parts, 0, 0]
            parts += 1
        part[1] += 1
        part[2] += len(line)
        yield part[0], custom_id, line, model


def plan_parts(
    ctx: Context,
    job_id: str,
    key: str,
    lines: Iterable[tuple[str, bytes, str]],
    limits: Limits,
    *,
    first_index: int,
    attempt: int,
    source_batch: str | None = None,
) -> list[PartPlanned]:
    """Write (custom_id, request line, model) triples as staged JSONL parts, split by ``split``; nothing is sent.

    Called under the job lock of ``key``, which makes sweeping that identity's leftovers first safe.
    """
    sweep_staging(ctx, key)
    staging = staging_for(ctx, key)
    staging.mkdir(parents=True, exist_ok=True)
    staged: list[_StagedPart] = []
    models: list[str] = []
    filling: dict[str, _StagedPart] = {}
    try:
        for number, custom_id, line, model in split(lines, limits):
            if number == len(staged):
                if model in filling:
                    filling[model].close()
                idem = f"{job_id}-{first_index + number:03d}-{secrets.token_hex(4)}"
                filling[model] = _StagedPart(staging / f"{idem}.jsonl")
                staged.append(filling[model])
                models.append(model)
            staged[number].write(custom_id, line)
        for part in filling.values():
            part.close()
    except BaseException:
        for part in staged:
            part.file.close()
            part.path.unlink(missing_ok=True)
        raise
    return [
        PartPlanned(job_id, p.path.stem, len(p.ids), p.size, attempt, str(p.path), m, source_batch, ids_digest(p.ids))
        for p, m in zip(staged, models, strict=True)
    ]
