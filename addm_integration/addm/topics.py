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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    review; and saved with the job after each apply, so that an apply knows which reviews its runs complete (their
    vote is written with those runs, in the same rewrite of the cache) and no vote reads a raw run again. Adding a
    run twice (an apply done again after a crash, a replay) counts it once.
    """

    def __init__(self, task: Task, quotas: Sequence[Quota]) -> None:
        self.task = task
        self.slots = {pair: i for i, pair in enumerate(runs_of(quotas))}
        self.weights = {q.model: q.weight for q in quotas}
        self.full = (1 << len(self.slots)) - 1
        self.flag, self.fingerprint = task.relevance_field, task.fingerprint
        # per field: its name, the span of its values in a review's votes, the values, and each value's position
        self.spans: list[tuple[str, int, int, tuple[str, ...], dict[str, int]]] = []
        width = 2  # the relevance flag: false, true
        for name, values in task.fields.items():
            position = {value: width + i for i, value in enumerate(values)}
            self.spans.append((name, width, width + len(values), tuple(values), position))
            width += len(values)
        self.width = width
        self.tallies: dict[str, list[Any]] = {}
        self.shares: dict[float, _Shares] = {}  # total weight -> top weight -> rounded share

    def add(self, judgment: Mapping[str, Any]) -> None:
        """Count one raw run; one of another fingerprint, model or run number than the quota's is not counted."""
        get = judgment.get
        if get(FINGERPRINT) != self.fingerprint:
            return
        model = get("_model")
        slot = self.slots.get((model, get("_run")))  # type: ignore[arg-type]
        if slot is None:
            return
        review_id = judgment["review_id"]
        tally = self.tallies.get(review_id)
        if tally is None:
            tally = self.tallies[review_id] = [0, [0] * self.width]  # int weights stay small ints: no float each
        elif tally[0] >> slot & 1:
            return
        tally[0] |= 1 << slot
        weight, votes = self.weights[model], tally[1]
        votes[1 if get(self.flag) is True else 0] += weight
        for name, start, _, _, position in self.spans:
            value = get(name)  # a value outside the list counts for the field's first one
            votes[position.get(value, start) if type(value) is str else start] += weight

    def load(self, tallies: Mapping[str, list[Any]]) -> None:
        self.tallies.update(tallies)

    def complete(self) -> Iterator[tuple[str, list[float]]]:
        """(review_id, votes) of every review whose every (model, run) arrived."""
        return ((rid, t[1]) for rid, t in self.tallies.items() if t[0] == self.full)

    def unaggregated(self) -> Iterator[str]:
        """The complete reviews whose vote is not known to be stored (by an apply, or before the job began)."""
        return (rid for rid, t in self.tallies.items() if t[0] == self.full and len(t) == 2)

    def mark_stored(self, review_ids: Iterable[str]) -> None:
        """Mark the votes of these complete reviews as stored in the cache: finalize does not write them again."""
        for rid in review_ids:
            tally = self.tallies.get(rid)
            if tally is not None and tally[0] == self.full and len(tally) == 2:
                tally.append(True)

    def judgment(self, review_id: str, votes: Sequence[float], facts: Sequence[Any], now: str) -> dict[str, Any]:
        """The aggregated judgment: each field's value of most weight (ties: the earlier value), and its share."""
        no, yes = votes[0], votes[1]
        total = no + yes
        shares = self.shares.get(total)
        if shares is None:  # few distinct weights: each share is rounded once
            shares = self.shares[total] = _Shares(total)
        out: dict[str, Any] = {"review_id": review_id, self.flag: yes > no}
        confidence = {self.flag: shares[yes if yes > no else no]}
        for name, start, stop, values, _ in self.spans:
            counts = votes[start:stop]
            top = max(counts)
            out[name] = values[counts.index(top)]  # the first of equal weights: a tie goes to the value listed first
            confidence[name] = shares[top]
        out.update(zip(ENRICHMENT, facts[1:], strict=True))
        out["_aggregated"] = True
        out["_confidence"] = confidence
        out[FINGERPRINT] = self.fingerprint
        out["_aggregated_at"] = now
        return out


class _Shares(dict[float, float]):
    """Top weight -> its share of ``total``, rounded to 3 places, each rounded the first time it is asked for."""

    def __init__(self, total: float) -> None:
        super().__init__()
        self.total = total

    def __missing__(self, top: float) -> float:
        share = self[top] = round(top / self.total, 3)
        return share


class Aggregated(Mapping[str, dict[str, Any]]):
    """The aggregated judgments of the complete ones among some reviews, by cache key, each made when it is read.

    A merge encodes its entries a few thousand at a time: the votes of 50,000 reviews are never all in memory
    as judgments at once, and they are made while the old cache is being copied.
    """

    def __init__(
        self, votes: Mapping[str, Vote], review_ids: Mapping[str, Iterable[str]], facts: Mapping[str, Any], now: str
    ) -> None:
        self.facts, self.now = facts, now
        self.which: dict[str, tuple[Vote, str]] = {}
        self.by_vote: list[tuple[Vote, list[str]]] = []
        for topic, ids in review_ids.items():
            vote = votes[topic]
            tallies, full = vote.tallies, vote.full
            complete = [rid for rid in ids if (tally := tallies.get(rid)) is not None and tally[0] == full]
            if complete:
                self.by_vote.append((vote, complete))
                self.which.update({aggregated_key(topic, rid): (vote, rid) for rid in complete})

    def __getitem__(self, key: str) -> dict[str, Any]:
        vote, rid = self.which[key]
        return vote.judgment(rid, vote.tallies[rid][1], self.facts[rid], self.now)

    def __contains__(self, key: object) -> bool:  # without making the judgment, as Mapping's would
        return key in self.which

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        """What a merge encodes, a judgment made per key without Mapping's lookup of each key again."""
        facts, now = self.facts, self.now
        for key, (vote, rid) in self.which.items():
            yield key, vote.judgment(rid, vote.tallies[rid][1], facts[rid], now)

    def __iter__(self) -> Iterator[str]:
        return iter(self.which)

    def __len__(self) -> int:
        return len(self.which)

    def topics(self) -> list[str]:
        return [vote.task.task_id for vote, _ in self.by_vote]

    def mark_stored(self) -> None:
        for vote, review_ids in self.by_vote:
            vote.mark_stored(review_ids)
