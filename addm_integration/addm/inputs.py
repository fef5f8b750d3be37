"""Reading the workspace's input files, each failure a one-line BadInput naming the file and line or field.

Inputs are read-only and checked before anything is sent, so a malformed dataset or task costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from addm_integration.addm.metrics import canonical
from addm_integration.errors import BadInput

RELEVANCE_FIELD = "is_relevant"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ENRICHMENT = ("date", "stars", "useful")  # what a judgment carries over from its review record
_RESERVED = {"review_id", *ENRICHMENT}  # what a judgment carries besides its fields


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise BadInput(f"{path}: {what} not found")
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None


def read_dataset(path: Path) -> Iterator[dict[str, Any]]:
    """The restaurant records, one per line, each checked for the fields the pipelines use.

    A restaurant or review seen twice is refused with both lines: it would be paid for twice, and its results
    would overwrite each other.
    """
    if not path.is_file():
        raise BadInput(
            f"{path}: dataset not found: the restaurants and their reviews, one JSON object per line (format: "
            "docs/formats.md); scripts/gen_data.py writes a synthetic one into an empty folder, to try the tool"
        )
    restaurants: dict[str, int] = {}
    reviews: dict[str, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadInput(f"{path}: line {number}: not valid JSON") from None
            if not isinstance(record, dict):
                raise BadInput(f"{path}: line {number}: expected a JSON object")
            for field in ("business_id", "business", "reviews"):
                if field not in record:
                    raise BadInput(f"{path}: line {number}: missing field {field!r}")
            if not isinstance(record["reviews"], list):
                raise BadInput(f"{path}: line {number}: field 'reviews' is not a list")
            first = restaurants.setdefault(str(record["business_id"]), number)
            if first != number:
                raise BadInput(f"{path}: line {number}: business_id {record['business_id']!r} already on line {first}")
            for i, review in enumerate(record["reviews"]):
                if not isinstance(review, dict) or not isinstance(review.get("review_id"), str):
                    raise BadInput(f"{path}: line {number}: reviews[{i}] has no string 'review_id'")
                if not isinstance(review.get("text"), str):
                    raise BadInput(f"{path}: line {number}: reviews[{i}] has no string 'text'")
                first = reviews.get(review["review_id"])
                if first is not None:
                    where = f"already on line {first}" if first != number else "twice on this line"
                    raise BadInput(f"{path}: line {number}: review_id {review['review_id']!r} {where}")
                reviews[review["review_id"]] = number
            yield record


@dataclass(frozen=True)
class Task:
    """A per-review task: fields with their allowed values in order, the first one each field's default."""

    task_id: str
    description: str
    fields: Mapping[str, Mapping[str, str]]
    relevance_field: str = RELEVANCE_FIELD  # the flag's name in requests and the cache (upstream: is_<...>_related)

    @cached_property
    def fingerprint(self) -> str:
        """Upstream's term_hash of the fields: a judgment recorded under another one answered another question."""
        canonical = json.dumps(self.fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @cached_property
    def choices(self) -> tuple[tuple[str, frozenset[str], str], ...]:
        """(field, allowed values, default) of each field, ready for checking an answer a line at a time."""
        return tuple((name, frozenset(values), next(iter(values))) for name, values in self.fields.items())

    @cached_property
    def readings(self) -> dict[str, dict[str, Any]]:
        """The judgment each answer text read as under this task, less what a review brings (``parse_judgment``).

        Answers to a task repeat: its fields are enums, so a strict schema leaves few distinct texts (a few
        hundred in a batch of 50,000), and reading each of them once is most of the cost of applying a batch.
        """
        return {}


def read_task(path: Path) -> Task:
    data = read_json(path, "task definition")
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    for name, kind in (("task_id", str), ("description", str), ("fields", dict)):
        if not isinstance(data.get(name), kind):
            raise BadInput(f"{path}: field {name!r} missing or not a {kind.__name__}")
    for name, values in data["fields"].items():
        if not isinstance(values, dict) or not values:
            raise BadInput(f"{path}: fields.{name}: expected a non-empty object of value -> meaning")
        if not all(isinstance(v, str) for v in values.values()):
            raise BadInput(f"{path}: fields.{name}: every meaning must be a string")
        if not _NAME.match(name) or name in _RESERVED:
            raise BadInput(f"{path}: fields.{name}: not usable as a field name")
    relevance = data.get("relevance_field", RELEVANCE_FIELD)
    if not isinstance(relevance, str) or not _NAME.match(relevance) or relevance in _RESERVED | set(data["fields"]):
        raise BadInput(f"{path}: field 'relevance_field' must be a name that is not one of the task's fields")
    return Task(data["task_id"], data["description"], data["fields"], relevance)


def read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise BadInput(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None


def read_ground_truth(path: Path, labels: Sequence[str] | None = None) -> dict[str, str] | None:
    """business_id -> verdict, or None when there is no ground-truth file (not an error: metrics are null).

    With ``labels``, every verdict must be one of them (case and spacing aside): found before anything is sent.
    """
    if not path.exists():
        return None
    data = read_json(path, "ground truth")
    restaurants = data.get("restaurants") if isinstance(data, dict) else None
    if not isinstance(restaurants, dict):
        raise BadInput(f"{path}: field 'restaurants' missing or not an object")
    out: dict[str, str] = {}
    for business_id, entry in restaurants.items():
        verdict = (entry.get("ground_truth") or {}).get("verdict") if isinstance(entry, dict) else None
        if not isinstance(verdict, str):
            raise BadInput(f"{path}: restaurants.{business_id}.ground_truth.verdict missing")
        if labels is not None:
            label = _label(verdict, labels)
            if label is None:
                raise BadInput(
                    f"{path}: restaurants.{business_id}.ground_truth.verdict {verdict!r} is not one of the "
                    f"policy's labels ({', '.join(labels)})"
                )
            verdict = label
        out[business_id] = verdict
    return out


def _label(verdict: str, labels: Sequence[str]) -> str | None:
    wanted = canonical(verdict)
    return next((label for label in labels if canonical(label) == wanted), None)
