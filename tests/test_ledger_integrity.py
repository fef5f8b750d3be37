"""What readers see while writers write, and what a torn or failed write leaves: whole steps or nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from addm_integration.addm.extract import Extract
from addm_integration.engine.advance import advance
from addm_integration.store.context import Context
from ledger.events import (
    BatchCreated,
    BatchSettled,
    ItemsApplied,
    ItemsFailed,
    JobCreated,
    JobFinalized,
    PartPlanned,
)
from ledger.index import Index
from ledger.log import Ledger, LedgerCorrupt
from ledger.reducer import fold

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# A writer whose appends reach the file in short writes, as the kernel may do for any large write: the window in
# which a reader meets a step half-written is as wide as a slow disk makes it.
_SLOW_WRITER = """
import os, sys
from pathlib import Path
import ledger.log
from ledger.events import BatchCreated, BatchSettled, ItemsApplied, ItemsFailed, PartPlanned
real_write = os.write
ledger.log.os.write = lambda fd, data: real_write(fd, bytes(data[: 1 << 12]))
ledger = ledger.log.Ledger(Path(sys.argv[1]))
for n in range(int(sys.argv[2])):
    b, idem = f"b{n}", f"j-{n:03d}"
    ids = tuple(f"review::G1a::biz{n:04d}::rev{i:06d}{'x' * 20}" for i in range(40_000))
    ledger.append([PartPlanned("j", idem, len(ids), 1, 1, "/in", "m"), BatchCreated("j", idem, b)])
    ledger.append([ItemsApplied("j", b, ids, 1), ItemsFailed("j", b, (("c", "HTTP 500", False),), 1),
                   BatchSettled(b, "completed", len(ids), 1)])
"""


def _finished_job(ctx: Context) -> None:
    """A job whose batch is applied and finalized: its fetch-only run reads the ledger and leaves."""
    ctx.record(
        JobCreated("j", "extract", "24hrbatch", "key", {"pipeline": {"task": "G1a"}}, 1),
        PartPlanned("j", "j-x", 1, 1, 1, "/in", "m"),
        BatchCreated("j", "j-x", "done"),
        ItemsApplied("j", "done", ("review::G1a::b::r",), 1),
        BatchSettled("done", "completed", 1, 0),
        JobFinalized("j", {}),
    )


def test_readers_during_multi_megabyte_appends_see_whole_steps_and_no_false_damage(tmp_path: Path) -> None:
    ctx = Context.open(tmp_path / "ws")
    _finished_job(ctx)
    ledger = Ledger(ctx.ledger.dir)
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(ledger.dir), "12"])
    warnings: list[str] = []
    reads = 0
    deadline = time.monotonic() + 120  # a bound on a broken test, not a wait
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            state = fold(ledger.records(on_torn=warnings.append))  # status
            assert all(b.settled for b in state.batches.values() if b.applied)  # never an apply without its settle
            Index(ledger).catch_up()
            Index(ledger).applications("review::G1a::biz0000::rev000007" + "x" * 20)  # audit
            _, torn = ledger.verify()
            if torn:
                warnings.append(torn)
            assert advance(ctx, Extract, "done") is None  # the no-op cron fetch
            reads += 1
    finally:
        writer.kill() if writer.poll() is None else None
        writer.wait()
    assert writer.returncode == 0 and reads > 3
    assert warnings == []
    state = fold(ledger.records(on_torn=warnings.append))
    assert len(state.batches) == 13 and all(b.settled for b in state.batches.values())


def _settle_step(n: int) -> list:
    ids = tuple(f"c{i}" for i in range(n))
    return [ItemsApplied("j", "b", ids[:-1], 1), ItemsFailed("j", "b", ((ids[-1], "HTTP 500", True),), 1),
            BatchSettled("b", "completed", n - 1, 1)]  # fmt: skip


def _keep_lines(ledger: Ledger, n: int) -> None:
    """What a crash in the middle of a step's write keeps: its first whole records, and nothing after them."""
    lines = ledger.path.read_bytes().splitlines(keepends=True)
    ledger.path.write_bytes(b"".join(lines[:n]))


def test_a_kept_prefix_of_a_settle_step_is_not_folded_and_the_rerun_applies_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.append([JobCreated("j", "extract", "24hrbatch", "k", {}, 5), PartPlanned("j", "p", 5, 1, 1, "/in", "m")])
    ledger.append([BatchCreated("j", "p", "b")])
    ledger.append(_settle_step(5))
    _keep_lines(ledger, 4)  # JobCreated, PartPlanned, BatchCreated, and the ItemsApplied alone
    warnings: list[str] = []
    state = fold(ledger.records(on_torn=warnings.append))
    assert (state.jobs["j"].applied, state.batches["b"].settled) == (0, False)
    assert len(warnings) == 1 and "line 4: torn final step" in warnings[0]
    ledger.append(_settle_step(5))  # the rerun settles the batch again
    state = fold(ledger.records(on_torn=pytest.fail))
    assert (state.jobs["j"].applied, state.batches["b"].applied, state.batches["b"].settled) == (4, 4, True)
    assert (tmp_path / "events.jsonl.broken").read_bytes().count(b"\n") == 1


def test_a_kept_prefix_of_a_job_creation_step_leaves_no_job_with_fewer_parts(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    created = [JobCreated("j", "extract", "24hrbatch", "k", {}, 6)]
    created += [PartPlanned("j", f"p{n}", 2, 1, 1, "/in", "m") for n in range(3)]
    ledger.append(created)
    _keep_lines(ledger, 2)
    assert fold(ledger.records(on_torn=lambda _: None)).jobs == {}
    assert Index(ledger).records_of("j") == []
    ledger.append(created)
    assert len(fold(ledger.records(on_torn=pytest.fail)).jobs["j"].parts) == 3
    assert [r.seq for r in ledger.records()] == [1, 2, 3, 4]


def test_an_append_whose_write_fails_is_cut_back_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from ledger import log

    ledger = Ledger(tmp_path)
    ledger.append(_settle_step(3)[:1])
    before = ledger.path.read_bytes()
    real_write = os.write
    calls = iter(range(10))

    def full_disk(fd: int, data: bytes) -> int:
        if next(calls):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[: len(data) // 2]))  # half of the step reached the file

    monkeypatch.setattr(log.os, "write", full_disk)
    with pytest.raises(log.LedgerWriteFailed) as caught:
        ledger.append(_settle_step(3))
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert "No space left on device" in str(caught.value) and str(ledger.path) in str(caught.value)
    monkeypatch.undo()
    assert ledger.path.read_bytes() == before


def test_audit_reads_each_application_narrowed_to_the_id_it_asks_about(tmp_path: Path) -> None:
    from ledger.cli import audit_entries

    tricky = 'review::G1a::b::],"attempt":9,"kind":"x'
    ledger = Ledger(tmp_path)
    ledger.append([ItemsApplied("j1", "b1", ("a", tricky, "z"), 2, "apply", {"prompt_tokens": 3})])
    ledger.append([ItemsApplied("j2", None, (tricky,), 1, "replay")])
    entries = audit_entries(Index(ledger).applications(tricky), custom_id=tricky, batch_id=None)
    assert [(e["custom_id"], e["job_id"], e["batch_id"], e["attempt"], e["kind"]) for e in entries] == [
        (tricky, "j1", "b1", 2, "apply"),
        (tricky, "j2", None, 1, "replay"),
    ]
    damaged = ledger.path.read_bytes().replace(b'"z"', b'"y"')
    ledger.path.write_bytes(damaged)
    with pytest.raises(LedgerCorrupt, match="line 1 \\(seq 1\\): checksum mismatch"):
        Index(ledger).applications(tricky)


def test_a_damaged_record_met_by_a_tail_read_is_named_by_its_line_in_the_file(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    created = [JobCreated("j", "extract", "24hrbatch", "k", {}, 2), PartPlanned("j", "p", 2, 1, 1, "/in", "m")]
    ledger.append(created)
    ledger.append([BatchCreated("j", "p", "b")])
    Index(ledger).catch_up()  # indexed up to line 3: the next catch-up reads from there
    ledger.append(_settle_step(3))
    lines = ledger.path.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b"HTTP 500", b"HTTP 501")  # line 5, seq 5: its checksum no longer matches
    ledger.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerCorrupt, match=r"line 5 \(seq 5\): checksum mismatch"):
        Index(ledger).catch_up()
