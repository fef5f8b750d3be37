"""Topic mode's own rules: the quota of (model, runs, weight), the keys of the judgement cache, and the vote.

A topic's reviews are each judged several times by several models; the raw runs and one aggregated judgment per
review live in ``judgement_cache.json`` in upstream ADDM's layout, three blocks of one JSON object::

    {"_metadata": {"<topic>": {"term_hash": ..., "created_at": ..., "model_config": {"<model>": <runs>}}},
     "raw": {"<topic>::<review_id>::<model>::run<N>": {...judgment, "_model", "_run", "_extracted_at"}},
     "aggregated": {"<topic>::<review_id>": {...vote, "_aggregated": true, "_confidence": {...}}}}

so that the same streamed, atomic merge as the single-task cache keeps it (each block is one of its "tasks").
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from addm_integration.addm.inputs import ENRICHMENT, Task
from addm_integration.errors import BadInput
from addm_integration.store.cache import FINGERPRINT

DEFAULT_MODELS = "gpt-5-mini:1:2,gpt-5-nano:3:1"
DEFAULT_WEIGHTS = {"gpt-5-mini": 2, "gpt-5-nano": 1}  # upstream's: one mini answer outweighs one nano answer
RAW, AGGREGATED, METADATA = "raw", "aggregated", "_metadata"


class Quota(NamedTuple):
    model: str
    runs: int
    weight: float


def parse_models(text: str) -> tuple[Quota, ...]:
    """``MODEL:RUNS[:WEIGHT],...``; a model without a weight gets upstream's (mini 2, nano 1, any other 1)."""
    quotas: list[Quota] = []
    for spec in text.split(","):
        parts = spec.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise argparse.ArgumentTypeError(f"expected MODEL:RUNS[:WEIGHT], got {spec.strip()!r}")
        try:
            runs = int(parts[1])
            weight = float(parts[2]) if len(parts) == 3 else float(DEFAULT_WEIGHTS.get(parts[0], 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec.strip()!r}: RUNS must be an integer, WEIGHT a number") from None
        if runs < 1 or not weight > 0:
            raise argparse.ArgumentTypeError(f"{spec.strip()!r}: RUNS must be at least 1 and WEIGHT above 0")
        if any(q.model == parts[0] for q in quotas):
            raise argparse.ArgumentTypeError(f"model {parts[0]!r} given twice")
        quotas.append(Quota(parts[0], runs, int(weight) if weight.is_integer() else weight))
    return tuple(quotas)


def format_models(quotas: Sequence[Quota]) -> str:
    return ",".join(f"{q.model}:{q.runs}:{q.weight}" for q in quotas)


def runs_of(quotas: Sequence[Quota]) -> list[tuple[str, int]]:
    """Every (model, run number) a review needs: a review lacks exactly those of these that are absent."""
    return [(q.model, run) for q in quotas for run in range(1, q.runs + 1)]


def raw_key(topic: str, review_id: str, model: str, run: int) -> str:
    return f"{topic}::{review_id}::{model}::run{run}"


def aggregated_key(topic: str, review_id: str) -> str:
    return f"{topic}::{review_id}"


def topic_ids(tasks_dir: Path) -> list[str]:
    """The topics of a workspace (``--all``): the task definitions that name the policies they were built from."""
    found = []
    for path in sorted(tasks_dir.glob("*.json")) if tasks_dir.is_dir() else []:
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            raise BadInput(f"{path}: not valid JSON") from None
        if isinstance(data, dict) and isinstance(data.get("policies"), list) and data.get("task_id") == path.stem:
            found.append(path.stem)
    if not found:
        raise BadInput(f"{tasks_dir}: no topic definitions (addm-import writes them from an ADDM checkout)")
    return found


class Vote:
    """The running weighted tally of one topic's reviews: which runs arrived, and the weight behind each value.

    Kept as flat lists of numbers, not judgments, so a pass over a million raw runs holds only a few numbers per
    review; and saved with the job after each apply, so the vote at finalize reads no raw run again. Adding a run
    twice (an apply done again after a crash, a replay) counts it once.
    """

    def __init__(self, task: Task, quotas: Sequence[Quota]) -> None:
        self.task = task
        self.slots = {pair: i for i, pair in enumerate(runs_of(quotas))}
        self.weights = {q.model: q.weight for q in quotas}
        self.full = (1 << len(self.slots)) - 1
        self.offsets: list[tuple[str, int, tuple[str, ...]]] = []
        width = 2  # the relevance flag: false, true
        for name, values in task.fields.items():
            self.offsets.append((name, width, tuple(values)))
            width += len(values)
        self.width = width
        self.tallies: dict[str, list[Any]] = {}

    def add(self, judgment: Mapping[str, Any]) -> None:
        """Count one raw run; one of another fingerprint, model or run number than the quota's is not counted."""
        if judgment.get(FINGERPRINT) != self.task.fingerprint:
            return
        slot = self.slots.get((judgment.get("_model"), judgment.get("_run")))  # type: ignore[arg-type]
        if slot is None:
            return
        tally = self.tallies.get(judgment["review_id"])
        if tally is None:
            tally = self.tallies[judgment["review_id"]] = [0, [0.0] * self.width]
        if tally[0] >> slot & 1:
            return
        tally[0] |= 1 << slot
        weight, votes = self.weights[judgment["_model"]], tally[1]
        votes[1 if judgment.get(self.task.relevance_field) is True else 0] += weight
        for name, offset, values in self.offsets:
            value = judgment.get(name)
            votes[offset + (values.index(value) if value in values else 0)] += weight

    def load(self, tallies: Mapping[str, list[Any]]) -> None:
        self.tallies.update(tallies)

    def complete(self) -> Iterator[tuple[str, list[float]]]:
        """(review_id, votes) of every review whose every (model, run) arrived."""
        return ((rid, t[1]) for rid, t in self.tallies.items() if t[0] == self.full)

    def judgment(self, review_id: str, votes: Sequence[float], facts: Sequence[Any], now: str) -> dict[str, Any]:
        """The aggregated judgment: each field's value of most weight (ties: the earlier value), and its share."""
        total = votes[0] + votes[1]
        flag = self.task.relevance_field
        out: dict[str, Any] = {"review_id": review_id, flag: votes[1] > votes[0]}
        confidence = {flag: round(max(votes[0], votes[1]) / total, 3)}
        for name, offset, values in self.offsets:
            counts = votes[offset : offset + len(values)]
            best = counts.index(max(counts))  # the first of equal weights: a tie goes to the value listed first
            out[name] = values[best]
            confidence[name] = round(counts[best] / total, 3)
        out.update(zip(ENRICHMENT, facts[1:], strict=True))
        out.update({"_aggregated": True, "_confidence": confidence, FINGERPRINT: self.task.fingerprint})
        out["_aggregated_at"] = now
        return out
