"""A job's cron entries: how its fetch command is run, where its entries live, and giving lost ones back.

The table itself (reading and editing a crontab line by line) is cron.py; this module knows jobs and batches.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addm_integration.errors import BadInput
from addm_integration.schedule.cron import SCHEDULE, CronTable, cron_supported, fetch_command
from addm_integration.store import credentials
from addm_integration.store.context import Context
from ledger.events import CronInstalled, Event
from ledger.reducer import JobState, State


@dataclass(frozen=True)
class CronSpec:
    """How the fetch command of a job's batches is run by cron; kept in the job's params for later batches."""

    tabfile: str | None
    python: str
    module: str
    args: tuple[str, ...]

    def table(self) -> CronTable:
        return CronTable(Path(self.tabfile) if self.tabfile else None)

    def args_at(self, root: Path) -> tuple[str, ...]:
        """The arguments with ``--root`` naming ``root``: where the workspace is now, also after a move."""
        args = list(self.args)
        if "--root" in args[:-1]:
            args[args.index("--root") + 1] = str(root)
        return tuple(args)

    def to_params(self) -> dict[str, Any]:
        return {"tabfile": self.tabfile, "python": self.python, "module": self.module, "args": list(self.args)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> CronSpec | None:
        if not params:
            return None
        return cls(params["tabfile"], params["python"], params["module"], tuple(params["args"]))


def check_cron_prerequisites(ctx: Context, spec: CronSpec | None) -> None:
    """Everything a cron run will need, checked before anything is uploaded (README.md, "What cron does")."""
    if spec is None or not cron_supported():
        return
    spec.table().check_available()
    if not credentials.env_file_has_key(ctx.ws.root):
        raise BadInput(
            f"cron runs will not find OPENAI_API_KEY: cron has a bare environment and {ctx.ws.env_file} has no "
            f"key; write OPENAI_API_KEY=... there (chmod 600), or use --no-cron or --wait"
        )


def install_cron(ctx: Context, spec: CronSpec | None, batch_id: str) -> list[Event]:
    """The batch's entry (where there is cron), or on Windows the command to run by hand; the event to record."""
    if spec is None:
        return []
    root = ctx.ws.root
    command = fetch_command(root, spec.python, spec.module, spec.args_at(root), batch_id, log_path(ctx, batch_id))
    if not cron_supported():
        print(
            f"warning: cron is not available on this system; no entry installed. Run by hand until done:\n{command}",
            file=sys.stderr,
        )
        return []
    ctx.ws.logs_dir.mkdir(parents=True, exist_ok=True)
    spec.table().install(batch_id, command, root)
    return [CronInstalled(batch_id, SCHEDULE)]


def log_path(ctx: Context, batch_id: str) -> Path:
    return ctx.ws.logs_dir / f"{batch_id}.log"


def job_cron_table(job: JobState) -> CronTable | None:
    """The table a job's entries live in; None when it installs none (--no-cron, or no cron on this system)."""
    spec = CronSpec.from_params(job.params.get("cron"))
    return spec.table() if spec is not None and cron_supported() else None


def cron_tables(state: State, tabfile: str | None) -> dict[str | None, CronTable]:
    """Every cron table a job of this workspace used, plus the one asked for (the user's crontab by default)."""
    tables: dict[str | None, CronTable] = {}
    for job in state.jobs.values():
        spec = CronSpec.from_params(job.params.get("cron"))
        if spec is not None:
            tables[spec.tabfile] = spec.table()
    if tabfile is not None or CronTable().available():
        tables.setdefault(tabfile, CronTable(Path(tabfile) if tabfile else None))
    return tables


def resume_cron(
    ctx: Context, job_id: str, *, also_removed_by_user: bool = False, state: State | None = None
) -> list[str]:
    """Give each unsettled batch of the job its entry back where it has none: removed by hand, a crash between
    creating the batch and installing its entry, a crontab write that failed.

    Any run of the job calls this, so the next one heals what the last one could not finish. An entry the user took
    out with ``addm-ledger cron --remove`` comes back only from the submit command (``also_removed_by_user``).
    Returns the batches whose entry was installed now. ``state``: the job's current state, when at hand.
    """
    state = state or ctx.job_state(job_id)
    job = state.jobs[job_id]
    spec = CronSpec.from_params(job.params.get("cron"))
    if spec is None or not cron_supported() or job.abandoned:
        return []
    wanted = [b for b in state.batches_of(job_id) if not b.settled and (also_removed_by_user or not b.cron_by_user)]
    if not wanted:
        return []
    present = {e.batch_id for e in spec.table().entries() if e.owner(ctx.ws.root) == "ours"}
    missing = [b.batch_id for b in wanted if b.batch_id not in present]
    for batch_id in missing:
        ctx.record(*install_cron(ctx, spec, batch_id))
    ctx.record(*(CronInstalled(b.batch_id, SCHEDULE) for b in wanted if b.batch_id in present and not b.cron))
    return missing
