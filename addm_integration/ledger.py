"""``addm-ledger``: the generic ledger reading, plus what only this application knows (cron entries, prices)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from addm_integration import prices
from addm_integration.submit import CronSpec
from ledger import cli
from ledger.reducer import JobState, State


def _status_fields(state: State, job: JobState, row: dict[str, Any]) -> dict[str, Any]:
    """Cost so far at the price of the job's mode, what ondemand would have cost, and the cron entries really there."""
    model = job.params.get("pipeline", {}).get("model", "")
    spent = prices.cost(model, job.usage, job.mode)
    live = prices.cost(model, job.usage, "ondemand")
    row["model"] = model
    row["cost_usd"] = spent
    row["saved_usd"] = None if spent is None or live is None else live - spent
    spec = CronSpec.from_params(job.params.get("cron"))
    if spec is not None and row["batches"]:
        try:
            entries = spec.table().entries()
        except Exception:  # an unreadable crontab must not hide the status of every job
            entries = None
        for batch in row["batches"]:
            batch["cron_entry"] = None if entries is None else batch["batch_id"] in entries
        row["cron"] = any(b["cron_entry"] for b in row["batches"]) if entries is not None else row["cron"]
    return row


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, prog="addm-ledger", hooks=cli.Hooks(status_fields=_status_fields))


if __name__ == "__main__":
    sys.exit(main())
