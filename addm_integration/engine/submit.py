"""24hrbatch submit: stage the work as batch-sized parts, send each part once, install its cron entry.

Each step is recorded right after it happens, and the intent (the staged part with its idempotency key) before
anything is sent. A run that stopped anywhere is continued by running the same command again: parts already
sent are not sent twice, and a part whose batch may have been created unseen is looked up by its key first.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from addm_integration import failpoints
from addm_integration.engine import pacing
from addm_integration.engine.context import Context, create_job
from addm_integration.engine.pipeline import Pipeline, WorkItem, job_key
from addm_integration.errors import BadInput
from addm_integration.provider import openai_api
from addm_integration.schedule.cron import SCHEDULE, CronTable, cron_supported, fetch_command
from addm_integration.store import credentials
from addm_integration.store.ownership import ensure_workspace_id
from addm_integration.store.workspace import atomic_file
from ledger.events import BatchCreated, CronInstalled, Event, FileUploaded, PartPlanned, SendStarted, ServiceReached
from ledger.reducer import JobState, PartState, State

if TYPE_CHECKING:
    from openai import OpenAI

MAX_REQUESTS = 50_000
MAX_BYTES = 200_000_000
MODE = "24hrbatch"


@dataclass(frozen=True)
class Limits:
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES


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


def batch_lines(items: Iterable[WorkItem]) -> Iterator[tuple[str, bytes, str]]:
    """(custom_id, request line, model) of each item: the model decides which part the line may go in."""
    for item in items:
        line = {"custom_id": item.custom_id, "method": "POST", "url": openai_api.ENDPOINT, "body": item.body}
        yield item.custom_id, orjson.dumps(line) + b"\n", str(item.body.get("model", ""))


def ids_digest(custom_ids: Iterable[str]) -> str:
    """A fingerprint of a set of custom_ids, recorded with each part.

    Results that name exactly the submitted set are known complete from it, without reading the batch's input
    (up to 200 MB) again; only a batch with something missing or foreign needs that read.
    """
    return hashlib.blake2b(orjson.dumps(sorted(custom_ids)), digest_size=16).hexdigest()


class _StagedPart:
    """One staged input file being written; fsynced on close so the plan never names a half-written file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.ids: list[str] = []
        self.size = 0

    def fits(self, line: bytes, limits: Limits) -> bool:
        return len(self.ids) < limits.max_requests and self.size + len(line) <= limits.max_bytes

    def write(self, custom_id: str, line: bytes) -> None:
        self.file.write(line)
        self.ids.append(custom_id)
        self.size += len(line)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def staging_for(ctx: Context, key: str) -> Path:
    """The staged inputs of one job identity: only runs holding that identity's job lock write or sweep here."""
    return ctx.ws.staging_dir / hashlib.sha256(key.encode()).hexdigest()[:16]


def unsent_inputs(state_of: Callable[[str], JobState], job_ids: Iterable[str]) -> set[str]:
    """The staged inputs that planned parts still need (those with no batch yet)."""
    return {p.input_path for j in job_ids for p in state_of(j).parts.values() if p.batch_id is None}


def sweep_staging(ctx: Context, key: str) -> None:
    """Remove this identity's staged inputs that no part still to be sent names: what a run killed between
    staging and recording left (up to 200 MB each), or between recording a batch and removing its input."""
    folder = staging_for(ctx, key)
    staged = list(folder.glob("*.jsonl")) if folder.exists() else []
    if staged:
        needed = unsent_inputs(lambda j: ctx.job_state(j).jobs[j], ctx.index.job_ids(key))
        for path in staged:
            if str(path) not in needed:
                path.unlink(missing_ok=True)


def plan_parts(
    ctx: Context,
    job_id: str,
    key: str,
    lines: Iterable[tuple[str, bytes, str]],
    limits: Limits,
    *,
    first_index: int,
    attempt: int,
    source_batch: str | None = None,
) -> list[PartPlanned]:
    """Write (custom_id, request line, model) triples as staged JSONL parts; nothing is sent.

    The one split rule: a part holds one model's lines (the service fails a batch of mixed models) within the
    request and byte limits. Duplicate custom_ids and requests larger than a whole batch are refused here, before
    anything is uploaded.
    Called under the job lock of ``key``, which makes sweeping that identity's leftovers first safe.
    """
    sweep_staging(ctx, key)
    staging = staging_for(ctx, key)
    staging.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    staged: list[_StagedPart] = []
    models: list[str] = []
    filling: dict[str, _StagedPart] = {}
    try:
        for custom_id, line, model in lines:
            if custom_id in seen:
                raise BadInput(f"duplicate custom_id {custom_id!r} in the work list; nothing was sent")
            seen.add(custom_id)
            if len(line) > limits.max_bytes:
                raise BadInput(
                    f"request {custom_id!r} is {len(line):,} bytes, over the batch limit of "
                    f"{limits.max_bytes:,}; nothing was sent"
                )
            part = filling.get(model)
            if part is None or not part.fits(line, limits):
                if part is not None:
                    part.close()
                idem = f"{job_id}-{first_index + len(staged):03d}-{secrets.token_hex(4)}"
                part = filling[model] = _StagedPart(staging / f"{idem}.jsonl")
                staged.append(part)
                models.append(model)
            part.write(custom_id, line)
        for part in filling.values():
            part.close()
    except BaseException:
        for part in staged:
            part.file.close()
            part.path.unlink(missing_ok=True)
        raise
    return [
        PartPlanned(job_id, p.path.stem, len(p.ids), p.size, attempt, str(p.path), m, source_batch, ids_digest(p.ids))
        for p, m in zip(staged, models, strict=True)
    ]


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


def send_part(ctx: Context, api: OpenAI, creds: credentials.Credentials, job: JobState, part: PartState) -> str:
    """Upload and create the batch of one staged part (or adopt the one a crashed run created); return its id."""
    file_id = part.file_id
    existing = None
    not_before = job.created_at.timestamp() - 300
    if file_id is None:
        filename = f"addm-{part.idem_key}.jsonl"
        file_id = openai_api.find_file(api, creds, filename, part.n_bytes, not_before) if part.tried else None
        if file_id is None:
            ctx.record(SendStarted(job.job_id, part.idem_key))
            failpoints.hit("before-upload")
            file_id = openai_api.upload(api, creds, Path(part.input_path), filename)
            failpoints.hit("after-upload")
        # The job follows the URL its first upload reached, not the one it was created under: a first try without
        # network must not pin the job to a URL the user then fixes.
        pin = [] if job.params.get("base_url") else [ServiceReached(job.job_id, creds.base_url)]
        ctx.record(FileUploaded(job.job_id, part.idem_key, file_id), *pin)
    else:  # a previous run uploaded and may have created the batch before it stopped
        existing = openai_api.find_batch(api, creds, part.idem_key, not_before)
    if existing is None:
        metadata = {
            openai_api.JOB_METADATA_KEY: job.job_id,
            openai_api.IDEM_METADATA_KEY: part.idem_key,
            openai_api.WORKSPACE_METADATA_KEY: ensure_workspace_id(ctx.ws),
        }
        batch = openai_api.create_batch(api, creds, file_id, metadata)
        failpoints.hit("after-create")
    else:
        batch = existing
    keep_input(ctx, part, batch.id)
    ctx.record(BatchCreated(job.job_id, part.idem_key, batch.id, adopted=existing is not None))
    Path(part.input_path).unlink(missing_ok=True)
    return batch.id


def keep_input(ctx: Context, part: PartState, batch_id: str) -> None:
    """Keep the batch's input beside its results (replay and requeue read it there), before the batch is recorded.

    A hard link, not a move: the staged file stays valid for a run that crashed before recording the batch. Where
    the two folders are on different file systems (or links are refused), an atomic copy.
    """
    target = ctx.ws.batch_dir(batch_id) / "input.jsonl"
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(part.input_path, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        with open(part.input_path, "rb") as src, atomic_file(target) as out:
            shutil.copyfileobj(src, out, 1 << 20)


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


def send_pending_parts(ctx: Context, job_id: str) -> list[str]:
    """Send the job's planned parts that have no batch yet and fit in the queue now; return the new batch ids.

    What does not fit waits: a later run of the job (a cron run of any of its batches) sends it.
    """
    state = ctx.job_state(job_id)
    job = state.jobs[job_id]
    if all(p.batch_id is not None for p in job.parts.values()):
        return []
    pending = pacing.admit(ctx.state(), job, job.params.get("max_enqueued_tokens"))
    if not pending:
        return []
    creds = credentials.resolve(ctx.ws.root, base_url=job.params.get("base_url"))
    api = openai_api.client(creds)
    spec = CronSpec.from_params(job.params.get("cron"))
    sent = []
    with ctx.refusal_recorded(job_id):
        for part in pending:
            batch_id = send_part(ctx, api, creds, ctx.job_state(job_id).jobs[job_id], part)
            failpoints.hit("before-cron")
            ctx.record(*install_cron(ctx, spec, batch_id))
            failpoints.hit("after-cron")
            sent.append(batch_id)
    return sent


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


def submit(ctx: Context, pipeline: Pipeline, params: Mapping[str, Any], limits: Limits) -> tuple[str | None, str]:
    """Create the job and send its parts, or continue the open job of the same identity; never pay twice.

    Returns the job id (None when there was nothing to send) and the line to print.
    """
    key = job_key(ctx, pipeline)
    with ctx.job_lock(key, timeout=60):
        job = ctx.open_job(key, MODE)
        if job is not None:
            return job.job_id, _continue(ctx, pipeline, job, limits)
        creds = credentials.resolve(ctx.ws.root)
        openai_api.require_key(creds)
        spec = CronSpec.from_params(params.get("cron"))
        check_cron_prerequisites(ctx, spec)
        job_id, created = create_job(ctx, pipeline, key, MODE, dict(params))
        lines = batch_lines(pipeline.work(job_id))
        parts = plan_parts(ctx, job_id, key, lines, limits, first_index=0, attempt=1)
        if not parts:
            return None, pipeline.nothing_to_do()
        n = sum(p.n_items for p in parts)
        failpoints.hit("after-stage")
        ctx.record(replace(created, n_items=n), *parts)
        batches = send_pending_parts(ctx, job_id)
        how = "cron polls every 5 minutes" if spec else f"poll with --batch-id {batches[0]}" if batches else ""
        wait = pacing.waiting(ctx.job_state(job_id).jobs[job_id])
        room = f"; {wait} more part(s) wait for room under --max-enqueued-tokens, sent as batches end" if wait else ""
        return job_id, f"submitted {n} requests as {', '.join(batches)} (job {job_id}); {how}{room}"


def _continue(ctx: Context, pipeline: Pipeline, job: JobState, limits: Limits) -> str:
    """The same submit again: send what is unsent, and once every batch has ended, ask again for what is missing.

    A job whose batches all ended without a result (failed validation, every item failed) was left open for this.
    """
    from addm_integration.engine.advance import job_complete  # fetch builds on this module, not the other way round

    asked = 0
    if job_complete(ctx.job_state(job.job_id), job):
        lines = batch_lines(pipeline.work(job.job_id))
        parts = plan_parts(ctx, job.job_id, job.key, lines, limits, first_index=len(job.parts), attempt=1)
        ctx.record(*parts)
        asked = sum(p.n_items for p in parts)
    sent = send_pending_parts(ctx, job.job_id)
    reinstalled = resume_cron(ctx, job.job_id, also_removed_by_user=True)
    state = ctx.job_state(job.job_id)
    running = [b.batch_id for b in state.batches_of(job.job_id) if not b.settled]
    if asked:
        return f"job {job.job_id}: submitted the {asked} requests it still lacked as {', '.join(sent)}"
    note = f"; sent now: {', '.join(sent)}" if sent else ""
    note += f"; cron entry installed again: {', '.join(reinstalled)}" if reinstalled else ""
    return (
        f"job {job.job_id} was already submitted ({len(running)} batch(es) running: "
        f"{', '.join(running) or 'none'}){note}; nothing was sent twice"
    )
