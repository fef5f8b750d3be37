"""The engine against the in-process provider: a fault at every provider call of a run, then the same command
again, ends with every item applied once and nothing paid twice.

In-process and deterministic (no server, no subprocess, no wait), so the sweep covers each call of a run; the
end-to-end and kill -9 tests keep the real SDK over HTTP and real processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fake_provider import Crash, End, FakeProvider
from gen_data import generate

from addm_integration.addm.extract import Extract
from addm_integration.addm.run_baseline import Baseline
from addm_integration.engine import advance, ondemand, submit
from addm_integration.engine.plan import Limits
from addm_integration.errors import AddmError
from addm_integration.provider.openai_api import MAX_BYTES
from addm_integration.store.context import Context
from ledger.events import ItemsApplied
from ledger.index import Index

# The faults a call can meet; ``lost_reply`` (done, then no answer) and ``crash_after`` are the ones that pay
# twice when an engine takes no answer for not done.
SWEPT = ("server_error", "lost_reply", "unauthorized", "crash", "crash_after")
N_ITEMS = 25  # the reviews of the first restaurant


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "ws"
    generate(root, n_restaurants=2, seed=11)
    return root


@pytest.fixture
def root(dataset: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh workspace with the shared synthetic data, in memory where the system has a tmpfs: a run fsyncs
    every record, and on a shared disk those waits, not the engine, would be most of the test's time."""
    memory = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=memory)) if memory.is_dir() and os.access(memory, os.W_OK) else tmp_path
    try:
        yield Path(shutil.copytree(dataset, base / "ws"))
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def _ctx(root: Path, fake: FakeProvider) -> Context:
    return Context.open(root, connect=lambda url: fake)


def _extract(ctx: Context) -> Extract:
    return Extract(ctx, "G1a", limit=1)


def _wanted(root: Path) -> set[str]:
    return set(_extract(Context.open(root))._from_dataset())


def _cached(root: Path) -> set[str]:
    path = Context.open(root).ws.cache("yelp")
    return set(orjson.loads(path.read_bytes()).get("G1a", {})) if path.exists() else set()


def _applied(ctx: Context) -> Counter[str]:
    """How many times each item was applied (a replay is not an apply)."""
    return Counter(
        cid
        for r in ctx.ledger.records()
        if isinstance(r.event, ItemsApplied) and r.event.kind == "apply"
        for cid in r.event.custom_ids
    )


def _converged(root: Path, ctx: Context, fake: FakeProvider) -> None:
    applied = _applied(ctx)
    assert _cached(root) == _wanted(root), "an item was lost"
    assert len(applied) == N_ITEMS and set(applied.values()) == {1}, f"applied twice: {applied.most_common(2)}"
    assert all(job.finalized or not job.open for job in ctx.state().jobs.values())


# -- ondemand ----------------------------------------------------------------------------------------------------


def _ondemand(ctx: Context) -> str | None:
    try:
        return ondemand.execute(ctx, _extract(ctx), concurrency=1)
    except (AddmError, Crash):
        return None


@pytest.mark.parametrize("fault", SWEPT)
@pytest.mark.parametrize("call", range(1, N_ITEMS + 1, 8))
def test_ondemand_a_fault_at_any_call_is_made_good_by_the_same_command(root: Path, call: int, fault: str) -> None:
    fake = FakeProvider()
    fake.fail_call(call, fault)
    ctx = _ctx(root, fake)
    _ondemand(ctx)
    assert _ondemand(ctx) is not None  # the second run finishes the work
    _converged(root, ctx, fake)
    asked = Counter(fake.chats)
    again = {cid for cid, n in asked.items() if n > 1}
    assert len(again) <= 1, f"answered items asked again: {again}"  # only a call whose answer was lost
    assert _ondemand(ctx) is not None and Counter(fake.chats) == asked  # a third run asks for nothing


# -- 24hrbatch -----------------------------------------------------------------------------------------------------

LIMITS = Limits(max_requests=13, max_bytes=MAX_BYTES)  # two parts: a fault can strike between them
PARAMS = {"max_attempts": 3, "limits": {"max_requests": 13, "max_bytes": MAX_BYTES}, "cron": None}
# The calls of a clean run: submit (upload, create) x 2; then cron runs (retrieve, download) x 2.
CLEAN_RUN = ["upload", "create", "upload", "create", "retrieve", "download", "retrieve", "download"]


def _submit(ctx: Context) -> str | None:
    try:
        return submit.submit(ctx, _extract(ctx), PARAMS, LIMITS)[1]
    except (AddmError, Crash):
        return None


def _cron_runs(ctx: Context, rounds: int = 4) -> None:
    """What cron does every five minutes: run each batch of the workspace that is not done with."""
    for _ in range(rounds):
        state = ctx.state()
        for batch in state.batches.values():
            if not batch.settled or not state.jobs[batch.job_id].finalized:
                with contextlib.suppress(AddmError, Crash):
                    advance.advance(ctx, Extract, batch.batch_id)


def _batch_run(root: Path, fake: FakeProvider) -> Context:
    """The user's submit, again if it failed (what its error line says to do), then cron until the job is done."""
    ctx = _ctx(root, fake)
    if _submit(ctx) is None:
        _submit(ctx)
    _cron_runs(ctx)
    return ctx


def test_a_clean_batch_run_makes_exactly_the_calls_it_needs(root: Path) -> None:
    fake = FakeProvider(checks=1)
    _converged(root, _batch_run(root, fake), fake)
    assert fake.calls == CLEAN_RUN
    assert len(fake.batches) == 2 and len(fake.paid()) == N_ITEMS


@pytest.mark.parametrize("fault", ("server_error", "lost_reply", "unauthorized", "crash_after"))
@pytest.mark.parametrize("call", range(1, len(CLEAN_RUN) + 1))
def test_24hrbatch_a_fault_at_any_call_is_made_good_by_the_next_run(root: Path, call: int, fault: str) -> None:
    fake = FakeProvider(checks=1)
    fake.fail_call(call, fault)
    ctx = _batch_run(root, fake)
    _converged(root, ctx, fake)
    assert len(fake.paid()) == N_ITEMS, "a request was sent in a second batch"


def test_an_expired_batch_keeps_what_ran_and_its_requeue_sends_only_the_rest(root: Path) -> None:
    fake = FakeProvider(checks=2, ends=[End("expired", done=5)])
    ctx = _batch_run(root, fake)
    _converged(root, ctx, fake)
    assert len(fake.batches) == 3 and sorted(fake.paid()) == sorted(set(fake.paid()))  # 13 + 12, then 8 again
    assert len(fake.input_ids(list(fake.batches)[2])) == 13 - 5


def test_a_part_refused_for_the_token_limit_is_sent_again_and_nothing_runs_twice(root: Path) -> None:
    fake = FakeProvider(checks=2)
    ctx = _ctx(root, fake)
    _submit(ctx)
    first = fake.files[fake.batches["batch_fake0002"].input_file_id].data
    fake.token_limit = len(first) // 4 + 10  # room for the first part only while it runs
    _cron_runs(ctx, rounds=6)
    _converged(root, ctx, fake)
    assert [b.errors[0]["code"] for b in fake.batches.values() if b.status == "failed"] == ["token_limit_exceeded"]
    assert len(fake.paid()) == N_ITEMS


def test_abandon_cancel_stops_the_running_batches_and_the_same_submit_asks_only_for_the_rest(root: Path) -> None:
    from argparse import Namespace

    from addm_integration.app import abandon

    fake = FakeProvider(checks=3)
    ctx = _ctx(root, fake)
    _submit(ctx)
    first, _ = fake.batches
    for _ in range(3):  # the first batch's cron runs until it is done; the second still runs
        advance.advance(ctx, Extract, first)
    (job,) = ctx.state().jobs.values()
    assert abandon.run(Namespace(job_id=job.job_id, cancel=True), ctx) == 0
    assert [b.status for b in fake.batches.values()] == ["completed", "cancelling"]
    assert _submit(ctx) is not None  # a new job, for the 12 the first one lacked
    _cron_runs(ctx)
    assert _cached(root) == _wanted(root)
    assert set(_applied(ctx).values()) == {1}
    assert len(fake.paid()) == N_ITEMS


def test_an_ondemand_dev_run_continued_later_finalizes_into_the_folder_its_job_was_created_with(root: Path) -> None:
    """As a cron run of a batch job does: the folder of a ``--dev`` run is fixed when its job is created."""
    fake = FakeProvider()
    fake.fail_call(2, "crash")  # the first run stops as a kill would: its job stays open
    first = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for clock in (first, first + timedelta(hours=1)):
        ctx = Context.open(root, clock=lambda clock=clock: clock, connect=lambda url: fake)
        with contextlib.suppress(Crash):
            ondemand.execute(ctx, Baseline(ctx, "G1_allergy_V2", n=2, dev=True), concurrency=1)
    (job,) = ctx.state().jobs.values()
    assert job.finalized
    run_dir = root / job.params["pipeline"]["run_dir"]
    assert run_dir.name.startswith("20261201_090000_")
    assert [p for p in (root / "results" / "dev").iterdir()] == [run_dir]
    assert (run_dir / "results.json").is_file()


def test_a_state_folded_forward_equals_one_folded_afresh_and_reads_only_the_records_it_lacks(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeProvider(checks=2, ends=[End("expired", done=5)])
    ctx = _ctx(root, fake)
    _submit(ctx)
    (job_id,) = ctx.state().jobs
    ctx.job_state(job_id)
    other = _ctx(root, fake)  # another run (a cron run) records the rest of the job meanwhile
    _cron_runs(other)
    read: list[int] = []  # how many records each reading of the job's records returned
    records_of = Index.records_of
    monkeypatch.setattr(Index, "records_of", lambda *a, **k: read.append(len(got := records_of(*a, **k))) or got)
    forward = ctx.job_state(job_id)
    afresh = Context.open(root).job_state(job_id)
    assert forward == afresh and forward.jobs[job_id].finalized
    assert 0 < read[0] < read[1]  # forward: only the records the other run appended
    assert ctx.job_state(job_id) == afresh and read[2] == 0  # nothing new: nothing read
