"""``addm-baseline``: one verdict per (policy, restaurant), scored against the ground truth once, at the end.

Rows live in a per-job file beside the ledger until the job finalizes, so a failed restaurant is a failure row in
both modes (never silently absent) and the set-level scoring sees exactly the same rows either way.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson

from addm_integration.addm import answers
from addm_integration.addm.custom_id import SampleId, route
from addm_integration.addm.inputs import read_dataset, read_ground_truth, read_text
from addm_integration.addm.metrics import VERDICTS, normalize_verdict, score_rows
from addm_integration.addm.policies import Policy, read_policy
from addm_integration.engine import prices
from addm_integration.engine.pipeline import Settled, WorkItem, job_key, keep_inputs, kept_inputs, load_kept, sum_usage
from addm_integration.errors import BadInput
from addm_integration.provider.base import Outcome, unparsable
from addm_integration.store.context import Context
from addm_integration.store.workspace import atomic_write, atomic_write_json
from ledger.log import format_ts
from ledger.reducer import JobState

_RISK_SCORE = re.compile(r"FINAL_RISK_SCORE\W*(-?\d+(?:\.\d+)?)", re.IGNORECASE)

SYSTEM_PROMPT = """\
You are an expert auditor of restaurants. You receive the full record of one restaurant (its business data \
and its customer reviews) under "Context", and an assessment policy under "Agenda". Apply the agenda to the \
reviews and decide one verdict.

Rules for your answer:
1. Answer with one JSON object and nothing else: no Markdown, no commentary before or after it.
2. "verdict" is exactly one of {labels}, as the agenda defines them.
3. "evidences" lists the reviews your verdict rests on. Each evidence has:
   - "evidence_id": "E1", "E2", ... in order;
   - "review_id": the id of the review, copied exactly from the context;
   - "field": which aspect of the agenda the review speaks to (for example incident_severity);
   - "judgement": your reading of the review on that aspect (for example "severe, firsthand");
   - "snippet": a short verbatim quote from the review that supports the judgement.
   Cite only reviews that exist in the context; never invent a review id or a quote.
4. "justification" explains the verdict:
   - "triggered_rule": the agenda rule that decides the verdict (for example "R1");
   - "direct_evidence": the evidence ids that trigger that rule;{scoring}
   - "reasoning": two to four sentences connecting the evidence to the rule.
5. "other_notes": anything a human reviewer should know (conflicting reviews, hearsay, ambiguity); an empty
   string when there is nothing to add.
When no review bears on the agenda, the verdict is the agenda's lowest level with an empty evidence list, and
the justification says so. Base everything on the context alone: no outside knowledge of the restaurant.
"""
_SCORING_RULE = """
   - "scoring_trace": how the agenda's points add up: "total_score", and in "breakdown" one entry per evidence
     that scores ("evidence_id", its "base_points", the "modifiers" applied by name, its "subtotal");"""


def system_prompt(policy: Policy) -> str:
    """The project's own instructions, naming the policy's labels (a policy may bring its own file instead)."""
    labels = ", ".join(f'"{label}"' for label in policy.verdicts[:-1]) + f' or "{policy.verdicts[-1]}"'
    return SYSTEM_PROMPT.format(labels=labels, scoring=_SCORING_RULE if policy.scoring else "")


def answer_format(policy: Policy) -> dict[str, Any]:
    string, number = {"type": "string"}, {"type": "number"}
    evidence = answers.strict_object(
        {"evidence_id": string, "review_id": string, "field": string, "judgement": string, "snippet": string}
    )
    reasons: dict[str, Any] = {"triggered_rule": string, "direct_evidence": {"type": "array", "items": string}}
    if policy.scoring:
        entry = answers.strict_object(
            {
                "evidence_id": string,
                "base_points": number,
                "modifiers": {"type": "array", "items": string},
                "subtotal": number,
            }
        )
        reasons["scoring_trace"] = answers.strict_object(
            {"total_score": number, "breakdown": {"type": "array", "items": entry}}
        )
    reasons["reasoning"] = string
    return answers.response_format(
        "restaurant_verdict",
        {
            "verdict": {"type": "string", "enum": list(policy.verdicts)},
            "evidences": {"type": "array", "items": evidence},
            "justification": answers.strict_object(reasons),
            "other_notes": string,
        },
    )


@dataclass(frozen=True)
class Asked:
    """What every request of a run shares, read and checked once before anything is sent."""

    policy: Policy
    system_prompt: str
    agenda: str
    response_format: dict[str, Any]


def user_content(record: Mapping[str, Any], agenda: str) -> str:
    return f"# Context\n\n{orjson.dumps(record).decode()}\n\n# Agenda\n\n{agenda}"


def request_body(record: Mapping[str, Any], asked: Asked, model: str) -> dict[str, Any]:
    """The one request body of a restaurant for both modes: the record as context, then the agenda."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": asked.system_prompt},
            {"role": "user", "content": user_content(record, asked.agenda)},
        ],
        "response_format": asked.response_format,
    }


def read_answer(text: str, labels: Sequence[str] = VERDICTS) -> tuple[Any, str | None, float | None]:
    """(parsed JSON or None, normalized verdict, risk score); raises ValueError when no verdict can be read."""
    try:
        parsed = answers.parse_json_answer(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        verdict = normalize_verdict(str(parsed.get("verdict") or ""), labels)
        risk = None
    else:
        match = _RISK_SCORE.search(text)
        verdict, risk = normalize_verdict(text, labels), float(match.group(1)) if match else None
    if verdict is None and risk is None:
        raise ValueError("no verdict in the answer")
    return (parsed if isinstance(parsed, dict) else None), verdict, risk


def normalize_policy(policy: str) -> str:
    return policy.replace("/", "_")


def run_dir_name(policy: str, k: int, n: int, skip: int) -> str:
    """``<policy>_K<k>`` plus ``_n<N>`` / ``_s<S>`` for a subset: runs of another K or selection never collide."""
    return f"{policy}_K{k}" + (f"_n{n}" if n else "") + (f"_s{skip}" if skip else "")


@dataclass
class Baseline:
    name: ClassVar[str] = "run_baseline"
    module: ClassVar[str] = "addm_integration.run_baseline"
    unkeyed: ClassVar[frozenset[str]] = frozenset({"run_dir"})
    ctx: Context
    policy: str
    domain: str = "yelp"
    k: int = 25
    n: int = 0
    skip: int = 0
    model: str = "gpt-5-nano"
    dev: bool = False
    run_dir: str = ""
    rerun: bool = field(default=False, compare=False)  # ask again even for restaurants a finished run answered
    _records: dict[str, Mapping[str, Any]] | None = field(default=None, repr=False)
    _asked: Asked | None = field(default=None, repr=False)
    _sent: dict[str, Any] | None = field(default=None, repr=False)
    _inputs: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.policy = normalize_policy(self.policy)
        if not self.run_dir:  # fixed now, when the job is created, never at fetch time
            name = run_dir_name(self.policy, self.k, self.n, self.skip)
            if self.dev:
                name = f"{self.ctx.clock().strftime('%Y%m%d_%H%M%S')}_{name}"
            self.run_dir = str(Path("results", "dev" if self.dev else "baseline", name))

    @classmethod
    def from_params(cls, ctx: Context, params: Mapping[str, Any]) -> Baseline:
        return cls(ctx, **params)

    def params(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "domain": self.domain,
            "k": self.k,
            "n": self.n,
            "skip": self.skip,
            "model": self.model,
            "dev": self.dev,
            "run_dir": self.run_dir,
        }

    @staticmethod
    def key_before(params: Mapping[str, Any]) -> str | None:
        p, dev = params, "|dev" if params["dev"] else ""
        return f"run_baseline|{p['domain']}|{p['policy']}|K{p['k']}|n={p['n']}|skip={p['skip']}|{p['model']}{dev}"

    @property
    def records(self) -> dict[str, Mapping[str, Any]]:
        """business_id -> restaurant record of the selection (``--skip`` then ``-n``), in dataset order."""
        if self._records is None:
            selected: dict[str, Mapping[str, Any]] = {}
            for i, record in enumerate(read_dataset(self.ctx.ws.dataset(self.domain, self.k))):
                if i < self.skip:
                    continue
                if self.n and len(selected) >= self.n:
                    break
                selected[record["business_id"]] = record
            self._records = selected
        return self._records

    def load_rows(self, job_id: str) -> dict[str, dict[str, Any]]:
        path = self.ctx.ws.rows(job_id)
        return load_kept(path, "rows of the run") if path.exists() else {}

    @property
    def asked(self) -> Asked:
        """The policy, prompt, agenda and answer schema, each checked: a bad one costs nothing."""
        if self._asked is None:
            definition = self.ctx.ws.policy(self.domain, self.policy)
            policy = read_policy(definition, self.policy)
            prompt = (
                read_text(definition.parent / policy.system_prompt, "system prompt of the policy")
                if policy.system_prompt
                else system_prompt(policy)
            )
            agenda = read_text(self.ctx.ws.agenda(self.domain, self.policy, self.k), "policy agenda")
            response_format = answer_format(policy)
            problem = answers.check_strict(response_format["json_schema"]["schema"])
            if problem:
                raise BadInput(f"{definition}: the policy's answer schema breaks OpenAI's strict-mode rules: {problem}")
            self._asked = Asked(policy, prompt, agenda, response_format)
        return self._asked

    def _snapshot(self) -> dict[str, Any]:
        """What a job applies and scores from, taken from the inputs as they are now (checked: the ground truth's
        labels too, before anything is sent)."""
        asked = self.asked
        gt_path = self.ctx.ws.ground_truth(self.domain, self.policy, self.k)
        fixed = len(asked.system_prompt) + len(user_content({}, asked.agenda)) - 2  # all but the record's JSON
        return {
            "policy": asked.policy.to_json(),
            "system_prompt": asked.system_prompt,
            "agenda": asked.agenda,
            "restaurants": [
                [b, r["business"].get("name"), fixed + len(orjson.dumps(r).decode())] for b, r in self.records.items()
            ],
            "ground_truth_path": str(gt_path),
            "ground_truth": read_ground_truth(gt_path, asked.policy.verdicts),
        }

    def check(self) -> None:
        self._snapshot_now()

    def _snapshot_now(self) -> dict[str, Any]:
        """The inputs as they are now, read once per run: what ``check`` refused or passed is what a submit keeps."""
        if self._inputs is None:
            self._inputs = self._snapshot()
        return self._inputs

    def sent(self, job_id: str) -> dict[str, Any]:
        """The job's snapshot taken at submit: a fetch, a replay or a post mortem applies and scores exactly what
        was sent."""
        if self._sent is None:
            self._sent = kept_inputs(self.ctx.ws, job_id, self._snapshot)
        return self._sent

    def _restaurants(self, job_id: str) -> dict[str, tuple[str | None, int]]:
        return {b: (name, chars) for b, name, chars in self.sent(job_id)["restaurants"]}

    def work(self, job_id: str | None) -> Iterator[WorkItem]:
        """The restaurants without a verdict: of this job, or for a new job those the last finished run lacked."""
        asked, snapshot = self.asked, self._snapshot_now()
        own = job_id is not None and self.ctx.ws.rows(job_id).exists()
        rows = self.load_rows(job_id) if own and job_id is not None else self._earlier_successes()

        def start(job_id: str) -> None:
            if not own:  # the rows this job starts from
                atomic_write(self.ctx.ws.rows(job_id), orjson.dumps(rows))
            self._sent = snapshot

        items = (
            WorkItem(SampleId(self.policy, business_id).encode(), request_body(record, asked, self.model))
            for business_id, record in self.records.items()
            if "error" in rows.get(business_id, {"error": None})
        )
        yield from keep_inputs(self.ctx.ws, job_id, snapshot, items, also=start)

    def _earlier_successes(self) -> dict[str, dict[str, Any]]:
        """The rows with a verdict of the last run of this selection that is over; none with ``--rerun``."""
        earlier = None if self.rerun else self.ctx.previous_job(job_key(self.ctx, self))
        if earlier is None:
            return {}
        rows = self.load_rows(earlier.job_id)
        return {b: row for b, row in rows.items() if b in self.records and "error" not in row}

    def retry_hint(self) -> str:
        return "the same command asks again for the restaurants that failed and fills them in"

    def nothing_to_do(self) -> str:
        earlier = self.ctx.previous_job(job_key(self.ctx, self))
        where = earlier.outputs.get("results") if earlier is not None else None
        if not where:
            return f"run_baseline {self.policy}: nothing to do, the selection has no restaurant"
        return (
            f"run_baseline {self.policy}: nothing to do, every restaurant of this selection has a verdict in "
            f"{where} (--rerun asks for all again)"
        )

    def apply(self, job: JobState, outcomes: Sequence[Outcome]) -> Settled:
        rows = self.load_rows(job.job_id)
        restaurants = self._restaurants(job.job_id)
        labels = tuple(self.sent(job.job_id)["policy"]["verdicts"])
        applied: list[str] = []
        failures: list[tuple[str, str, bool]] = []
        for outcome in outcomes:
            business_id = self._route(restaurants, outcome.custom_id)
            if business_id is None:
                failures.append((outcome.custom_id, "not a restaurant of this job", False))
                continue
            name, chars = restaurants[business_id]
            if outcome.ok:
                try:
                    rows[business_id] = self._row(job, business_id, name, chars, outcome, labels)
                    applied.append(outcome.custom_id)
                    continue
                except ValueError as exc:
                    outcome = unparsable(outcome, str(exc))
            failures.append(outcome.failure)
            if "error" in rows.get(business_id, {"error": None}):  # a failure never replaces a success
                rows[business_id] = {"business_id": business_id, "name": name, "error": outcome.error}
        if outcomes:
            atomic_write(self.ctx.ws.rows(job.job_id), orjson.dumps(rows))
        return Settled(tuple(applied), tuple(failures))

    def _row(
        self, job: JobState, business_id: str, name: str | None, chars: int, outcome: Outcome, labels: Sequence[str]
    ) -> dict[str, Any]:
        text = outcome.content or ""
        parsed, verdict, risk = read_answer(text, labels)
        usage = sum_usage([outcome])
        return {
            "business_id": business_id,
            "name": name,
            "response": text,
            "parsed": parsed,
            "verdict": verdict,
            "risk_score": risk,
            "prompt_chars": chars,
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "cost_usd": prices.cost(self.model, usage, job.mode),
            "latency_ms": outcome.latency_ms,
            "llm_calls": 1,
        }

    def _route(self, restaurants: Mapping[str, Any], custom_id: str) -> str | None:
        """The restaurant a custom_id names, when it is one of this job's; None for anything else."""
        target = route(custom_id, SampleId)
        if target is None or target.run_name != self.policy:
            return None
        return target.sample_id if target.sample_id in restaurants else None

    def finalize(self, job: JobState) -> dict[str, Any]:
        """Score every row of the run at once and write results.json into the run folder fixed at creation."""
        rows = self.load_rows(job.job_id)
        sent = self.sent(job.job_id)
        ordered = [
            rows.get(b) or {"business_id": b, "name": name, "error": "no result"} for b, name, _ in sent["restaurants"]
        ]
        labels = tuple(sent["policy"]["verdicts"])
        ground_truth = sent["ground_truth"]
        if ground_truth is None:
            print(f"warning: no ground truth at {sent['ground_truth_path']}; metrics are null", file=sys.stderr)
        scored = score_rows(ordered, ground_truth, labels)
        scored_any = scored["accuracy"] is not None
        results = {
            "run_id": self.policy,
            "job_id": job.job_id,
            "task_id": self.policy,
            "policy_id": self.policy,
            "gt_task_id": self.policy if ground_truth is not None else None,
            "domain": self.domain,
            "method": "direct",
            "model": self.model,
            "mode": job.mode,
            "k": self.k,
            "n": len(ordered),
            "skip": self.skip,
            "verdicts": list(labels),
            "timestamp": format_ts(job.created_at),
            "accuracy": scored["accuracy"],
            "correct": scored["correct"] if scored_any else None,  # upstream's readers print both or neither
            "total": scored["total"] if scored_any else None,
            "n_failed": scored["n_failed"],
            "auprc": scored["auprc"],
            "results": scored["rows"],
        }
        path = self.ctx.ws.root / self.run_dir / "results.json"
        atomic_write_json(path, results)
        return {
            "results": str(path),
            "accuracy": scored["accuracy"],
            "correct": scored["correct"],
            "total": scored["total"],
            "n_failed": scored["n_failed"],
            "ordinal_auprc": scored["auprc"]["ordinal_auprc"],
        }

    def summary(self, job: JobState) -> str:
        out = job.outputs
        acc = "n/a" if out.get("accuracy") is None else f"{out['accuracy']:.3f}"
        auprc = "n/a" if out.get("ordinal_auprc") is None else f"{out['ordinal_auprc']:.3f}"
        return (
            f"run_baseline {self.policy}: accuracy {acc} ({out.get('correct')}/{out.get('total')}), "
            f"ordinal AUPRC {auprc}, {out.get('n_failed')} failed -> {out.get('results')}"
        )
