"""``addm-extract``: one judgment per (task, review), stored in the judgment cache.

The cache is the source of truth for what is done: the work list is every selected review without a judgment,
so a rerun after any failure asks only for what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson

from addm_integration.addm import answers, topics
from addm_integration.addm.custom_id import ReviewId, RunId, route
from addm_integration.addm.inputs import ENRICHMENT, Task, read_dataset, read_task
from addm_integration.engine.pipeline import Settled, WorkItem, keep_inputs, kept_inputs, load_kept
from addm_integration.errors import BadInput
from addm_integration.provider.base import Outcome, unparsable
from addm_integration.store.cache import FINGERPRINT, JudgmentCache
from addm_integration.store.context import Context
from addm_integration.store.workspace import atomic_write
from ledger.reducer import JobState

REVIEW_CHARS = 8000
T = TypeVar("T")


def request_body(task: Task, review: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The one request body of a review, for a live call and a batch line alike (no temperature: gpt-5 refuses)."""
    flag = task.relevance_field
    lines = [
        f"You are judging one restaurant review for this task: {task.description}",
        "",
        "Fields to fill when the review is relevant:",
    ]
    for name, values in task.fields.items():
        lines.append(f"{name.upper()} (one of: {', '.join(values)})")
        lines.extend(f"  - {value}: {meaning}" for value, meaning in values.items())
    lines += [
        "",
        "Review:",
        str(review["text"])[:REVIEW_CHARS],
        "",
        f"Answer with a JSON object: {flag} (true when the review bears on the task) and every field above. "
        f"When the review is not relevant, set {flag} to false and each field to its first value.",
    ]
    return {
        "model": model,
        "messages": [{"role": "user", "content": "\n".join(lines)}],
        "response_format": answer_format(task),
    }


def answer_format(task: Task) -> dict[str, Any]:
    """The strict schema of a judgment: the task's relevance flag, then one string enum per field."""
    properties: dict[str, Any] = {task.relevance_field: {"type": "boolean"}}
    properties.update({name: {"type": "string", "enum": list(values)} for name, values in task.fields.items()})
    return answers.response_format(f"judgment_{task.task_id}", properties)


def facts(business_id: str, review: Mapping[str, Any]) -> list[Any]:
    """What a job keeps of a review to route and enrich its judgment: not the text, which is large."""
    return [business_id, *(review.get(name) for name in ENRICHMENT)]


# Where each enrichment sits in ``facts``: a judgment copies them by index, where a zip over a slice of the facts
# took a fifth of reading an answer.
_FACT_AT = tuple(enumerate(ENRICHMENT, 1))


# Bounds of ``Task.readings``: a run of free-text answers, all distinct, must not keep them all.
_READINGS = 4096
_READING_CHARS = 1024


def parse_judgment(task: Task, review_id: str, review_facts: Sequence[Any], text: str) -> dict[str, Any]:
    """The cached judgment of an answer: out-of-list values fall back to the field's default. Raises ValueError.

    A text the task has read before is not parsed nor checked again: ``Task.readings`` keeps the judgment it read
    as, less what the review brings. Each judgment is a copy of its own all the same, which its caller may add to:
    a copy with every key in place and five stores, where building it key by key grew the dict twice.
    """
    readings = task.readings
    read = readings.get(text)
    if read is None:
        read = {"review_id": None, **_fields(task, text), **dict.fromkeys(ENRICHMENT), FINGERPRINT: task.fingerprint}
        if len(readings) < _READINGS and len(text) <= _READING_CHARS:
            readings[text] = read
    if len(review_facts) != len(_FACT_AT) + 1:
        raise ValueError(f"the job's snapshot holds {len(review_facts)} facts of the review, not {len(_FACT_AT) + 1}")
    judgment = read.copy()
    judgment["review_id"] = review_id
    for at, name in _FACT_AT:
        judgment[name] = review_facts[at]
    return judgment


def _fields(task: Task, text: str) -> dict[str, Any]:
    """The relevance flag of an answer and, when it is relevant, its fields checked against the task's values."""
    answer = answers.parse_json_answer(text)
    if type(answer) is not dict:
        raise ValueError("not a JSON object")
    flag = task.relevance_field
    relevant = answer.get(flag)
    if type(relevant) is not bool:
        raise ValueError(f"{flag} missing or not a boolean")
    fields: dict[str, Any] = {flag: relevant}
    if relevant:
        get = answer.get
        for name, values, default in task.choices:
            value = get(name)
            fields[name] = value if type(value) is str and value in values else default
    return fields


def _judged(
    outcomes: Sequence[Outcome],
    route: Callable[[str], T | None],
    judge: Callable[[T, str], dict[str, Any]],
    applied: list[str],
    failures: list[tuple[str, str, bool]],
) -> Iterator[tuple[T, dict[str, Any]]]:
    """(what it names, its judgment) of each outcome that answered for an item of this job, noted in ``applied``;
    every other outcome goes to ``failures`` with its reason. The one reading of answers of both extract modes."""
    for outcome in outcomes:
        if outcome.error is not None:
            failures.append(outcome.failure)
            continue
        target = route(outcome.custom_id)
        if target is None:
            failures.append((outcome.custom_id, "not a review of this job", False))
            continue
        try:
            judgment = judge(target, outcome.content or "")
        except ValueError as exc:
            failures.append(unparsable(outcome, str(exc)).failure)
            continue
        applied.append(outcome.custom_id)
        yield target, judgment


def _judge(task: Task, reviews: Mapping[str, Sequence[Any]], review_id: str, text: str) -> dict[str, Any]:
    return parse_judgment(task, review_id, reviews[review_id], text)


def _judge_run(
    tasks: Mapping[str, Task], reviews: Mapping[str, Sequence[Any]], run: RunId, text: str
) -> dict[str, Any]:
    return parse_judgment(tasks[run.topic], run.review_id, reviews[run.review_id], text)


def load_task(ctx: Context, domain: str, task_id: str) -> Task:
    """A task (or topic) definition, checked before anything is sent: its id, and a schema the service accepts."""
    path = ctx.ws.task(domain, task_id)
    task = read_task(path)
    if task.task_id != task_id:
        raise BadInput(f"{path}: task_id is {task.task_id!r}, expected {task_id!r}")
    problem = answers.check_strict(answer_format(task)["json_schema"]["schema"])
    if problem:
        raise BadInput(f"{path}: the task's answer schema breaks OpenAI's strict-mode rules: {problem}")
    return task


@dataclass
class Extract:
    name: ClassVar[str] = "extract"
    module: ClassVar[str] = "addm_integration.extract"
    unkeyed: ClassVar[frozenset[str]] = frozenset()
    ctx: Context
    task_id: str
    domain: str = "yelp"
    k: int = 25
    limit: int | None = None
    model: str = "gpt-5-nano"
    _task: Task | None = field(default=None, repr=False)
    _reviews: dict[str, list[Any]] | None = field(default=None, repr=False)
    _dataset: dict[str, list[Any]] | None = field(default=None, repr=False)

    @classmethod
    def from_params(cls, ctx: Context, params: Mapping[str, Any]) -> Extract:
        if "topics" in params:  # a topic-mode job: its cron runs name this same module
            return TopicExtract.from_params(ctx, params)
        return cls(ctx, params["task"], params["domain"], params["k"], params["limit"], params["model"])

    def params(self) -> dict[str, Any]:
        return {"task": self.task_id, "domain": self.domain, "k": self.k, "limit": self.limit, "model": self.model}

    @staticmethod
    def key_before(params: Mapping[str, Any]) -> str | None:
        p = params
        return f"extract|{p['domain']}|{p['task']}|K{p['k']}|limit={p['limit']}|{p['model']}"

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = load_task(self.ctx, self.domain, self.task_id)
        return self._task

    def _selected(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(business_id, review) of the selected restaurants, in dataset order, streamed from the file."""
        for n, record in enumerate(read_dataset(self.ctx.ws.dataset(self.domain, self.k))):
            if self.limit is not None and n >= self.limit:
                return
            for review in record["reviews"]:
                yield record["business_id"], review

    def reviews(self, job_id: str | None) -> dict[str, list[Any]]:
        """review_id -> facts of the job's reviews, as its last submit saw them in the dataset.

        A batch is applied from this snapshot, not from the dataset: a 50,000-line apply does not parse the
        review texts again, and a replay post mortem routes exactly as the first apply did.
        """
        if self._reviews is None:
            self._reviews = kept_inputs(self.ctx.ws, job_id, self._from_dataset)
        return self._reviews

    def _from_dataset(self) -> dict[str, list[Any]]:
        return {review["review_id"]: facts(business_id, review) for business_id, review in self._selected()}

    def check(self) -> None:
        self._task = load_task(self.ctx, self.domain, self.task_id)
        self._dataset_now()

    def _dataset_now(self) -> dict[str, list[Any]]:
        """The dataset as it is now, read once per run: what ``check`` refused or passed is what a submit keeps."""
        if self._dataset is None:
            self._dataset = self._from_dataset()
        return self._dataset

    @property
    def cache(self) -> JudgmentCache:
        return JudgmentCache(self.ctx.ws.cache(self.domain))

    def work(self, job_id: str | None) -> Iterator[WorkItem]:
        task = self.task
        self._reviews = reviews = self._dataset_now()  # this submit's snapshot
        done = self.cache.present(self.task_id, reviews, fingerprint=task.fingerprint)
        yield from keep_inputs(self.ctx.ws, job_id, reviews, self._missing(task, done))

    def _missing(self, task: Task, done: Container[str]) -> Iterator[WorkItem]:
        for business_id, review in self._selected():
            if review["review_id"] not in done:
                cid = ReviewId(self.task_id, business_id, review["review_id"]).encode()
                yield WorkItem(cid, request_body(task, review, self.model))

    def apply(self, job: JobState, outcomes: Sequence[Outcome]) -> Settled:
        task, reviews = self.task, self.reviews(job.job_id)
        applied: list[str] = []
        failures: list[tuple[str, str, bool]] = []
        owned = partial(self._route, reviews)
        judgments = dict(_judged(outcomes, owned, partial(_judge, task, reviews), applied, failures))
        self.cache.merge(self.task_id, judgments)
        return Settled(tuple(applied), tuple(failures))

    def _route(self, reviews: Mapping[str, list[Any]], custom_id: str) -> str | None:
        """The review a custom_id names, when it is one of this job's; None for anything else."""
        target = route(custom_id, ReviewId)
        if target is None or target.task_id != self.task_id:
            return None
        review = reviews.get(target.review_id)
        return target.review_id if review is not None and review[0] == target.business_id else None

    def finalize(self, job: JobState) -> dict[str, Any]:
        """Apply already persisted every judgment; finalize records where the cache is and what the job left missing.

        Counted from the job's own account (its reviews, less the items still failing): the work list held every
        review without a judgment, so this needs no second pass over a cache of a million entries.
        """
        reviews = self.reviews(job.job_id)
        return {"cache": str(self.cache.path), "judgments": len(reviews) - len(job.failures), "reviews": len(reviews)}

    def retry_hint(self) -> str:
        return "the same command asks again for every review still without a judgment"

    def nothing_to_do(self) -> str:
        return f"extract {self.task_id}: nothing to do, every review already has a judgment in {self.cache.path}"

    def summary(self, job: JobState) -> str:
        out = job.outputs
        missing = out.get("reviews", 0) - out.get("judgments", 0)
        tail = f"; {missing} missing (run again to ask for them)" if missing else ""
        judged = f"{out.get('judgments')}/{out.get('reviews')}"
        return f"extract {self.task_id}: {judged} reviews judged in {out.get('cache')}{tail}"


@dataclass
class TopicExtract(Extract):
    """Topic mode: every review judged against each topic, several times by several models, then aggregated.

    The same request body, parser and apply path as a single task, with one (model, run) per item; the raw runs
    and the vote go to the judgement cache. ``task_id`` is unused: the topics are the tasks.
    """

    topics: tuple[str, ...] = ()
    quotas: tuple[topics.Quota, ...] = ()
    _tasks: dict[str, Task] = field(default_factory=dict, repr=False)
    _tally: dict[str, topics.Vote] | None = field(default=None, repr=False)

    @classmethod
    def from_params(cls, ctx: Context, params: Mapping[str, Any]) -> TopicExtract:
        quotas = tuple(topics.Quota(*q) for q in params["models"])
        return cls(
            ctx,
            "",
            params["domain"],
            params["k"],
            params["limit"],
            quotas[0].model,
            topics=tuple(params["topics"]),
            quotas=quotas,
        )

    def params(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics),
            "models": [list(q) for q in self.quotas],
            "domain": self.domain,
            "k": self.k,
            "limit": self.limit,
        }

    @staticmethod
    def key_before(params: Mapping[str, Any]) -> str | None:
        p, models = params, topics.format_models([topics.Quota(*q) for q in params["models"]])
        return f"extract|{p['domain']}|topics={','.join(p['topics'])}|K{p['k']}|limit={p['limit']}|models={models}"

    def check(self) -> None:
        for topic in self.topics:
            self.topic_task(topic)
        self._dataset_now()

    def topic_task(self, topic: str) -> Task:
        if topic not in self._tasks:
            if "::" in topic:
                raise BadInput(f"{self.ctx.ws.task(self.domain, topic)}: a topic id may not contain '::'")
            self._tasks[topic] = load_task(self.ctx, self.domain, topic)
        return self._tasks[topic]

    @property
    def cache(self) -> JudgmentCache:
        return JudgmentCache(self.ctx.ws.judgement_cache(self.domain))

    def work(self, job_id: str | None) -> Iterator[WorkItem]:
        tasks = [self.topic_task(topic) for topic in self.topics]
        self._reviews = reviews = self._dataset_now()

        def count_stored(job_id: str) -> None:  # the runs already stored, counted once so that no apply reads them
            self._tally = self._count_stored(reviews)
            self._save_votes(job_id)

        yield from keep_inputs(self.ctx.ws, job_id, reviews, self._missing_runs(tasks, reviews), also=count_stored)

    def _missing_runs(self, tasks: Sequence[Task], reviews: Mapping[str, Any]) -> Iterator[WorkItem]:
        pairs = topics.runs_of(self.quotas)
        for topic, task in zip(self.topics, tasks, strict=True):
            wanted = {topics.raw_key(topic, rid, m, n): None for rid in reviews for m, n in pairs}
            done = self.cache.present(topics.RAW, wanted, fingerprint=task.fingerprint)
            del wanted
            for business_id, review in self._selected():
                rid = review["review_id"]
                for model, run in pairs:
                    if topics.raw_key(topic, rid, model, run) not in done:
                        cid = RunId(topic, business_id, rid, model, run).encode()
                        yield WorkItem(cid, request_body(task, review, model))

    def apply(self, job: JobState, outcomes: Sequence[Outcome]) -> Settled:
        """Store the runs, and the vote of every review they complete, in one rewrite of the cache."""
        reviews = self.reviews(job.job_id)
        quota = dict.fromkeys(topics.runs_of(self.quotas))
        tasks = {topic: self.topic_task(topic) for topic in self.topics}
        now = _now()
        raw: dict[str, dict[str, Any]] = {}
        touched: dict[str, dict[str, None]] = {topic: {} for topic in self.topics}
        applied: list[str] = []
        failures: list[tuple[str, str, bool]] = []
        owned = partial(self._route_run, reviews, quota=quota)
        judge = partial(_judge_run, tasks, reviews)
        for (topic, _, rid, model, run), judgment in _judged(outcomes, owned, judge, applied, failures):
            judgment["_model"], judgment["_run"], judgment["_extracted_at"] = model, run, now
            raw[topics.raw_key(topic, rid, model, run)] = judgment
            touched[topic][rid] = None
        if raw:
            votes = self._votes(job.job_id)
            for key, judgment in raw.items():
                votes[key.partition("::")[0]].add(judgment)
            aggregated = topics.Aggregated(votes, touched, reviews, now)
            changed = [topic for topic, rids in touched.items() if rids]
            cache = self.cache
            meta = self._metadata(cache, changed, now)
            cache.merge_many({topics.RAW: raw, topics.AGGREGATED: aggregated, topics.METADATA: meta})
            aggregated.mark_stored()
            self._save_votes(job.job_id)
        return Settled(tuple(applied), tuple(failures))

    def votes_path(self, job_id: str) -> Path:
        return self.ctx.ws.votes(job_id)

    def _new_votes(self) -> dict[str, topics.Vote]:
        return {topic: topics.Vote(self.topic_task(topic), self.quotas) for topic in self.topics}

    def _votes(self, job_id: str) -> dict[str, topics.Vote]:
        """The job's running tally, as its submit and applies left it (counted from the cache when it is gone).

        Read once per process: every later apply of the run, and its finalize, go on from the same tally.
        """
        if self._tally is None:
            path = self.votes_path(job_id)
            if path.exists():
                saved = load_kept(path, "vote tally")
                self._tally = self._new_votes()
                for topic, vote in self._tally.items():
                    vote.load(saved.get(topic, {}))
            else:
                self._tally = self._count_stored(self.reviews(job_id))
        return self._tally

    def _save_votes(self, job_id: str) -> None:
        assert self._tally is not None
        atomic_write(self.votes_path(job_id), orjson.dumps({t: v.tallies for t, v in self._tally.items()}))

    def _count_stored(self, reviews: Mapping[str, Any]) -> dict[str, topics.Vote]:
        """The tally of the runs the cache holds for these reviews (one streamed pass over the raw runs), with the
        complete reviews whose vote the cache already holds marked as stored."""
        votes = self._new_votes()
        for block in self.cache.entries(topics.RAW):
            for key, judgment in block.items():
                vote = votes.get(key.partition("::")[0])
                if vote is not None and type(judgment) is dict and judgment.get("review_id") in reviews:
                    vote.add(judgment)
        for topic, vote in votes.items():
            complete = {topics.aggregated_key(topic, rid): rid for rid, _ in vote.complete()}
            stored = self.cache.present(topics.AGGREGATED, complete, fingerprint=vote.task.fingerprint)
            vote.mark_stored(complete[key] for key in stored)
        return votes

    def _metadata(self, cache: JudgmentCache, changed: Sequence[str], now: str) -> dict[str, Any]:
        """The ``_metadata`` entries of the topics whose judgments change: schema, quota, and when."""
        if not changed:
            return {}
        before = {k: v for block in cache.entries(topics.METADATA) for k, v in block.items()}
        meta: dict[str, Any] = {}
        for topic in changed:
            fingerprint = self.topic_task(topic).fingerprint
            old = before.get(topic)
            same = isinstance(old, dict) and old.get("term_hash") == fingerprint
            meta[topic] = {
                "term_hash": fingerprint,
                "created_at": old.get("created_at", now) if same else now,  # type: ignore[union-attr]
                "updated_at": now,
                "model_config": {q.model: q.runs for q in self.quotas},
                "model_weights": {q.model: q.weight for q in self.quotas},
            }
        return meta

    def _route_run(
        self, reviews: Mapping[str, list[Any]], custom_id: str, quota: Mapping[tuple[str, int], None]
    ) -> RunId | None:
        target = route(custom_id, RunId)
        if target is None or target.topic not in self.topics or (target.model, target.run) not in quota:
            return None
        review = reviews.get(target.review_id)
        return target if review is not None and review[0] == target.business_id else None

    def finalize(self, job: JobState) -> dict[str, Any]:
        """Store the vote of every complete review not stored yet (the applies stored those they completed)."""
        reviews = self.reviews(job.job_id)
        votes = self._votes(job.job_id)
        now = _now()
        aggregated = topics.Aggregated(votes, {t: v.unaggregated() for t, v in votes.items()}, reviews, now)
        cache = self.cache
        if aggregated:
            meta = self._metadata(cache, aggregated.topics(), now)
            cache.merge_many({topics.AGGREGATED: aggregated, topics.METADATA: meta})
        total = len(reviews) * len(self.topics)
        complete = sum(1 for vote in votes.values() for _ in vote.complete())
        return {"cache": str(cache.path), "aggregated": complete, "reviews": total, "runs": job.applied}

    def retry_hint(self) -> str:
        return "the same command asks again for every run still missing"

    def summary(self, job: JobState) -> str:
        out = job.outputs
        missing = out.get("reviews", 0) - out.get("aggregated", 0)
        tail = f"; {missing} not complete yet (run again to ask for their missing runs)" if missing else ""
        done = f"{out.get('aggregated')}/{out.get('reviews')}"
        return f"extract {','.join(self.topics)}: {done} reviews aggregated in {out.get('cache')}{tail}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
