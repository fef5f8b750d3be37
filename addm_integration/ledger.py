"""``addm-ledger``: the generic ledger reading, plus what only this application knows (cron entries, prices)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from addm_integration.app import abandon, cronlist, doctor
from addm_integration.engine import prices
from addm_integration.errors import AddmError, translate
from addm_integration.provider import openai_api
from addm_integration.schedule.entries import job_cron_table
from addm_integration.store.context import Context
from addm_integration.store.workspace import ROOT_ENV
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
            entries = {entry.batch_id for entry in table.entries()}
        except Exception:  # an unreadable crontab must not hide the status of every job: the ledger's view stays
            return row
        for batch in row["batches"]:  # the entry as it really is in the table, whatever the ledger last recorded
            batch["cron"] = batch["batch_id"] in entries
        row["cron"] = any(b["cron"] for b in row["batches"])
    return row


def _doctor_flags(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Problems of the workspace (cron entries, orphan batches, ledger tail, leftovers), each with the exact "
        "command that fixes it, and cron entries of workspaces that no longer exist. Nothing of another "
        "workspace that still exists is reported or touched. Exit 0: no problems; 3: problems found; "
        "1: ledger corrupt."
    )
    p.epilog = (
        "Examples:\n  $ addm-ledger doctor\n  $ addm-ledger doctor --fix\n"
        "  $ addm-ledger doctor --crontab-file ws/crontab --offline\n\n"
        "Exit codes: 0 no problem found, 3 problems found (each printed with its fix), 1 ledger corrupt, "
        "2 bad input."
    )
    p.add_argument("--fix", action="store_true", help="apply the fixes that cannot lose anything")
    p.add_argument("--offline", action="store_true", help="do not ask the server for orphan batches")
    p.add_argument("--cancel", metavar="BATCH_ID", help="cancel an orphan batch on the server")


def _doctor(args: Any, ledger: Ledger) -> int:
    return _in_workspace("doctor", doctor.run, args, ledger)


def _cron(args: Any, ledger: Ledger) -> int:
    return _in_workspace("cron", cronlist.run, args, ledger)


def _in_workspace(name: str, command: Callable[[Any, Context], int], args: Any, ledger: Ledger) -> int:
    """Run an application command on the ledger's workspace; its failures as one line and their exit code."""
    args.crontab_file = args.crontab_file or os.environ.get("ADDM_CRONTAB")
    root = ledger.dir.parent.parent
    ctx = Context.open(root, connect=openai_api.connector(root))
    try:
        return command(args, ctx)
    except AddmError as exc:
        print(f"addm-ledger {name}: {exc}", file=sys.stderr)
        return exc.exit_code


def _abandon(args: Any, ledger: Ledger) -> int:
    args.job_id = cli.resolve_id(ledger, args.job_id, "job")  # a short id as status prints it
    try:
        root = ledger.dir.parent.parent
        return abandon.run(args, Context.open(root, connect=openai_api.connector(root)))
    except AddmError as exc:
        print(f"addm-ledger abandon: {exc}", file=sys.stderr)
        return exc.exit_code


def _alive(ledger: Ledger, job: JobState) -> bool:
    return Context.open(ledger.dir.parent.parent).run_alive(job.key)


def _target(job: JobState) -> str | None:
    """The task (extract), the policy (run_baseline) or the topics (topic mode) the job judges by."""
    params = job.params.get("pipeline", {})
    return params.get("task") or params.get("policy") or ",".join(params.get("topics", ())) or None


CRONTAB_FILE: cli.Option = (
    "--crontab-file",
    {
        "metavar": "FILE",
        "help": "the tab file the tool's cron entries are in, instead of your crontab (env ADDM_CRONTAB)",
    },
)


def main(argv: Sequence[str] | None = None) -> int:
    hooks = cli.Hooks(
        root_env=ROOT_ENV,
        target=_target,
        names={"run_baseline": "baseline"},
        item_ids="one request: review::<task>::<business>::<review> or sample::<policy>::<business>",
        item_example="'review::G1a::BIZ::REVIEW'",
        options=(CRONTAB_FILE,),
        exit_codes={3: "doctor found problems"},
        status_fields=_status_fields,
        commands={
            "doctor": (_doctor_flags, _doctor),
            "cron": (cronlist.configure, _cron),
            "abandon": (abandon.configure, _abandon),
        },
        alive=_alive,
        helps={
            "doctor": "problems of this workspace, each with the command that fixes it (exit 3 if any)",
            "cron": "this workspace's cron entries, and those of workspaces that are gone; remove them",
            "abandon": "give a job up: entries removed, batches cancelled with --cancel, results kept",
        },
        translate=translate,
    )
    return cli.main(argv, prog="addm-ledger", hooks=hooks)


if __name__ == "__main__":
    sys.exit(main())
