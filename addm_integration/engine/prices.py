"""Prices per model and what a job costs: one table, the batch price half the ondemand one.

USD per million tokens (input, cached input, output), standard tier. Override or extend it with a JSON file named
by ``ADDM_PRICES`` (``{"model": [input, output]}``); a model not in the table is reported with unknown cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from addm_integration.engine import plan
from addm_integration.engine.pipeline import Pipeline
from addm_integration.errors import BadInput

PRICES: dict[str, tuple[float, float]] = {
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
}
BATCH_DISCOUNT = 0.5
# What a dry run assumes an answer costs, for lack of the answer: judgments are short, verdicts longer.
ASSUMED_OUTPUT_TOKENS = {"extract": 150, "run_baseline": 800}


def table() -> dict[str, tuple[float, float]]:
    path = os.environ.get("ADDM_PRICES")
    if not path:
        return PRICES
    if not Path(path).is_file():
        raise BadInput(f"{path} (ADDM_PRICES): price file not found")
    try:
        extra = orjson.loads(Path(path).read_bytes())
        return {**PRICES, **{str(m): (float(p[0]), float(p[1])) for m, p in extra.items()}}
    except (OSError, orjson.JSONDecodeError, TypeError, ValueError, IndexError, AttributeError):
        raise BadInput(f"{path} (ADDM_PRICES): expected a JSON object of model -> [input, output] USD per 1M") from None


def cost(model: str, usage: Mapping[str, int], mode: str) -> float | None:
    """USD for the tokens in ``usage`` (prompt_tokens, completion_tokens), or None for an unknown model."""
    price = table().get(model)
    if price is None:
        return None
    usd = (usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]) / 1e6
    return usd * (BATCH_DISCOUNT if mode == "24hrbatch" else 1.0)


def dry_run(pipeline: Pipeline, limits: plan.Limits, request_line: Callable[[str, Mapping[str, Any]], bytes]) -> str:
    """What a run would send and cost, computed from the very request lines it would send, split by the rule a
    submit splits by, each model at its own price; nothing is written."""
    batches = 0
    count: dict[str, int] = {}
    size: dict[str, int] = {}
    for number, _, line, model in plan.split(plan.batch_lines(pipeline.work(None), request_line), limits):
        count[model] = count.get(model, 0) + 1
        size[model] = size.get(model, 0) + len(line)
        batches = max(batches, number + 1)
    assumed = ASSUMED_OUTPUT_TOKENS.get(pipeline.name, 300)
    # about 4 bytes a token: the request line is mostly the prompt
    usage = {m: {"prompt_tokens": size[m] // 4, "completion_tokens": count[m] * assumed} for m in count}
    live, batch = _total(usage, "ondemand"), _total(usage, "24hrbatch")
    money = (
        "cost unknown for this model"
        if live is None or batch is None
        else f"ondemand ${live:.4f}, 24hrbatch ${batch:.4f}"
    )
    tokens_in = sum(u["prompt_tokens"] for u in usage.values())
    tokens_out = sum(u["completion_tokens"] for u in usage.values())
    return (
        f"dry run, nothing sent: {sum(count.values())} requests, {sum(size.values()):,} bytes, {batches} batch(es) "
        f"of at most {limits.max_requests:,} requests / {limits.max_bytes:,} bytes; about {tokens_in:,} input and "
        f"{tokens_out:,} output tokens ({', '.join(usage) or pipeline.model}): {money}"
    )


def _total(usage: Mapping[str, Mapping[str, int]], mode: str) -> float | None:
    """USD for the tokens of every model, or None when one of them has no price."""
    costs = [cost(model, tokens, mode) for model, tokens in usage.items()]
    return sum(c for c in costs if c is not None) if None not in costs else None
