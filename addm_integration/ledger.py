"""``addm-ledger``: the generic ledger reading, plus what only this application knows (cron entries, prices)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from addm_integration import abandon, doctor, prices
from addm_integration.context import Context
from addm_integration.errors import AddmError
from addm_integration.submit import job_cron_table
from ledger import cli
from ledger.log import Ledger
from ledger.reducer import JobState, State


def _status_fields(state: State, job: JobState, row: dict[str, Any]) -> dict[str, Any]:
    """Cost so far at the price of the job's mode, what ondemand would have cost, and the cron entries really there."""
    model = job.params.get("pipeline", {}).get("model", "")
    spent = prices.cost(model, job.usage, job.mode)
    live = prices.cost(model, job.usage, "ondemand")
    row["model"] = model
    row["cost_usd"] = spent
    row["saved_usd"] = None if spent is None or live is None else live - spent
    table = job_cron_table(job)
    if table is not None and row["batches"]:
        try:
            entries = table.entries()
        except Exception:  # an unreadable crontab must not hide the status of every job
            entries = None
        for batch in row["batches"]:
            batch["cron_entry"] = None if entries is None else batch["batch_id"] in entries
        row["cron"] = any(b["cron_entry"] for b in row["batches"]) if entries is not None else row["cron"]
    return row


def _doctor_flags(p: argparse.ArgumentParser) -> None:
    p.description = "Problems of the workspace (cron entries, orphans, ledger tail), each with its fix."
    p.add_argument("--crontab-file", help="also inspect this tab file (env ADDM_CRONTAB; default: your crontab)")
    p.add_argument("--fix", action="store_true", help="apply the fixes that cannot lose anything")
    p.add_argument("--offline", action="store_true", help="do not ask the server for orphan batches")
    p.add_argument("--cancel", metavar="BATCH_ID", help="cancel an orphan batch on the server")
    p.add_argument("--json", action="store_true")


def _doctor(args: Any, ledger: Ledger) -> int:
    args.crontab_file = args.crontab_file or os.environ.get("ADDM_CRONTAB")
    ctx = Context.open(ledger.dir.parent.parent)
    try:
        return doctor.run(args, ctx)
    except AddmError as exc:
        print(f"addm-ledger doctor: {exc}", file=sys.stderr)
        return exc.exit_code


def _abandon(args: Any, ledger: Ledger) -> int:
    try:
        return abandon.run(args, Context.open(ledger.dir.parent.parent))
    except AddmError as exc:
        print(f"addm-ledger abandon: {exc}", file=sys.stderr)
        return exc.exit_code


def _alive(ledger: Ledger, job: JobState) -> bool:
    return Context.open(ledger.dir.parent.parent).run_alive(job.key)


def main(argv: Sequence[str] | None = None) -> int:
    hooks = cli.Hooks(
        status_fields=_status_fields,
        commands={"doctor": (_doctor_flags, _doctor), "abandon": (abandon.configure, _abandon)},
        alive=_alive,
        helps={"abandon": "give a job up: entries removed, batches cancelled with --cancel, results kept"},
    )
    return cli.main(argv, prog="addm-ledger", hooks=hooks)


if __name__ == "__main__":
    sys.exit(main())
