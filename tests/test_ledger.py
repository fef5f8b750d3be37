"""The ledger: framed, checksummed records; a torn tail set aside, corruption anywhere else stops the reader."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import events
from ledger.events import (
    BatchCreated,
    BatchPolled,
    BatchSettled,
    CronInstalled,
    CronRemoved,
    FileUploaded,
    ItemsApplied,
    ItemsFailed,
    JobCreated,
    JobFinalized,
    PartPlanned,
    SchemaError,
    from_payload,
)
from ledger.index import Index
from ledger.log import Ledger, LedgerCorrupt, Record
from ledger.reducer import apply, fold

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _clock():
    ticks = iter(range(10**9))
    return lambda: T0 + timedelta(seconds=next(ticks))


def _job_events(n_items: int = 3) -> list:
    ids = tuple(f"c{i}" for i in range(n_items))
    return [
        JobCreated("j1", "extract", "24hrbatch", "key", {"x": 1}, n_items),
        PartPlanned("j1", "j1-000", n_items, 100, 1, "/tmp/in.jsonl", "m"),
        FileUploaded("j1", "j1-000", "file-1"),
        BatchCreated("j1", "j1-000", "b1"),
        ItemsApplied("j1", "b1", ids[:-1], 1, "apply", {"prompt_tokens": 10}),
        ItemsFailed("j1", "b1", ((ids[-1], "HTTP 500", True),), 1),
        BatchSettled("b1", "completed", n_items - 1, 1),
        JobFinalized("j1", {"done": True}),
    ]


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger", clock=_clock())


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", "--root", str(root), *args], capture_output=True, text=True, timeout=60
    )


def test_records_round_trip_with_gapless_sequence(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.append(_job_events()[:3])
    ledger.append(_job_events()[3:])
    records = list(ledger.records())
    assert [r.seq for r in records] == list(range(1, 9))
    assert [r.event for r in records] == _job_events()
    line = orjson.loads(ledger.path.read_bytes().splitlines()[0])
    assert list(line) == ["seq", "ts", "step", "type", "v", "data", "crc"] and line["step"] == [1, 3]


def test_fold_gives_job_and_batch_state(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.append(_job_events())
    state = fold(ledger.records())
    job, batch = state.jobs["j1"], state.batches["b1"]
    assert (job.applied, len(job.failures), job.finalized, dict(job.usage)) == (2, 1, True, {"prompt_tokens": 10})
    assert (batch.applied, batch.failed, batch.retryable, batch.settled) == (2, 1, ("c2",), True)


def test_torn_final_record_is_ignored_then_set_aside_at_next_write(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.append(_job_events()[:4])
    with open(ledger.path, "ab") as f:
        f.write(b'{"seq":5,"ts":"2026-01-01T00:00:0')
    warnings: list[str] = []
    assert len(list(ledger.records(on_torn=warnings.append))) == 4
    assert warnings and "torn" in warnings[0]
    ledger.append(_job_events()[4:5])
    assert [r.seq for r in ledger.records()] == [1, 2, 3, 4, 5]
    assert (tmp_path / "ledger" / "events.jsonl.broken").read_bytes().startswith(b'{"seq":5')


def test_verify_passes_with_a_torn_tail_and_fails_on_a_bad_middle_record(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "data" / "ledger", clock=_clock())
    ledger.append(_job_events())
    with open(ledger.path, "ab") as f:
        f.write(b'{"seq":9')
    torn = _cli(tmp_path, "verify")
    assert torn.returncode == 0 and "torn" in torn.stderr

    lines = ledger.path.read_bytes().splitlines(keepends=True)[:-1]
    lines[3] = lines[3].replace(b'"b1"', b'"b2"')  # checksum no longer matches
    ledger.path.write_bytes(b"".join(lines))
    bad = _cli(tmp_path, "verify")
    assert bad.returncode == 1
    assert "line 4" in bad.stderr and "seq 4" in bad.stderr and str(ledger.path) in bad.stderr
    with pytest.raises(LedgerCorrupt):
        list(ledger.records())


def test_record_from_a_newer_version_is_refused_not_misread(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.append(_job_events()[:1])
    raw = ledger.path.read_bytes().replace(b'"v":1', b'"v":2')
    head = raw[: raw.rindex(b',"crc"')]
    ledger.path.write_bytes(head + b',"crc":"%08x"}\n' % zlib.crc32(head))
    with pytest.raises(LedgerCorrupt, match="newer version"):
        list(ledger.records())
    with pytest.raises(SchemaError):
        from_payload("JobCreated", 2, {})


@given(st.integers(min_value=0, max_value=8))
def test_folding_any_prefix_gives_a_valid_state_and_folding_is_deterministic(cut: int) -> None:
    records = [Record(i + 1, T0, e) for i, e in enumerate(_job_events())]
    state = fold(records[:cut])
    assert state.last_seq == cut
    assert fold(records[:cut]) == state
    # Folding the rest onto the prefix state is the same as folding the whole log.
    rest = state
    for record in records[cut:]:
        rest = apply(rest, record)
    assert rest == fold(records)


_WRITER = """
import sys
from pathlib import Path
from ledger.events import CronInstalled
from ledger.log import Ledger
ledger = Ledger(Path(sys.argv[1]))
name = sys.argv[2]
for i in range(100000):
    (record,) = ledger.append([CronInstalled(f"{name}-{i}", "*/5 * * * *")])
    print(f"{record.seq} {name}-{i}", flush=True)
"""


def test_writers_killed_at_random_instants_lose_no_acknowledged_record(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    rng = random.Random(5)
    acknowledged: dict[int, str] = {}
    for round_ in range(6):
        procs = [
            subprocess.Popen([sys.executable, "-c", _WRITER, str(directory), f"w{round_}.{n}"], stdout=subprocess.PIPE)
            for n in range(4)
        ]
        first = procs[0].stdout.readline()  # a loaded machine may start the writers late: kill once one is writing
        time.sleep(rng.uniform(0.3, 0.8))  # not waiting for time to pass: choosing a random instant to kill at
        for proc in procs:
            proc.kill()
        for n, proc in enumerate(procs):
            out, _ = proc.communicate()
            for line in ((first if n == 0 else b"") + out).decode().splitlines():
                seq, batch_id = line.split()
                acknowledged[int(seq)] = batch_id
    Ledger(directory).append([CronInstalled("final", "x")])  # the next write sets any torn tail aside
    records = list(Ledger(directory).records(on_torn=lambda m: pytest.fail(m)))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    by_seq = {r.seq: r.event.batch_id for r in records}
    assert acknowledged and all(by_seq[seq] == batch_id for seq, batch_id in acknowledged.items())
    assert Ledger(directory).verify() == (len(records), None)


def test_a_part_planned_before_fingerprints_reads_as_one_without(tmp_path: Path) -> None:
    """A v1 PartPlanned, as the previous release wrote it: read as v2 with no fingerprint (apply reads the input)."""
    data = {"job_id": "j1", "idem_key": "j1-000", "n_items": 3, "n_bytes": 100, "attempt": 1, "input_path": "/in"}
    head = orjson.dumps({"seq": 1, "ts": "2026-01-01T00:00:00.000000Z", "type": "PartPlanned", "v": 1, "data": data})
    head = head[:-1]
    (tmp_path / "events.jsonl").write_bytes(head + b',"crc":"%08x"}\n' % zlib.crc32(head))
    (record,) = list(Ledger(tmp_path).records())
    assert record.event == PartPlanned("j1", "j1-000", 3, 100, 1, "/in", ids_digest=None)


def test_older_versions_are_upcast_when_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _ledger(tmp_path)
    ledger.append([BatchSettled("b1", "completed", 3, 1)])

    @dataclasses.dataclass(frozen=True)
    class BatchSettledV2:  # a later schema: counts renamed
        VERSION = 2
        batch_id: str
        status: str
        applied: int
        failed: int
        n_unroutable: int = 0
        reason: str = ""

    monkeypatch.setitem(events.EVENT_TYPES, "BatchSettled", BatchSettledV2)
    monkeypatch.setitem(
        events.UPCASTERS,
        ("BatchSettled", 1),
        lambda d: {
            **{k: v for k, v in d.items() if k not in ("n_applied", "n_failed")},
            "applied": d["n_applied"],
            "failed": d["n_failed"],
        },
    )
    (record,) = list(ledger.records())
    assert record.event == BatchSettledV2("b1", "completed", 3, 1)


JOBS = st.sampled_from(["j1", "j2", "j3"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(JOBS, st.integers(0, 5)), min_size=1, max_size=40))
def test_folding_a_jobs_indexed_records_equals_folding_the_whole_log(steps: list[tuple[str, int]]) -> None:
    """What a run reads (its job's records, through the index) gives the state the whole log gives."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp), clock=_clock())
        created: set[str] = set()
        for job_id, kind in steps:
            batch = f"{job_id}-b"
            if job_id not in created:
                created.add(job_id)
                ledger.append(
                    [
                        JobCreated(job_id, "extract", "24hrbatch", f"key-{job_id}", {}, 5),
                        PartPlanned(job_id, f"{job_id}-p", 5, 10, 1, "/in", "m"),
                        BatchCreated(job_id, f"{job_id}-p", batch),
                    ]
                )
            event = [
                CronInstalled(batch, "*/5"),
                BatchPolled(batch, "in_progress", {"total": 5, "completed": kind}),
                ItemsApplied(job_id, batch, (f"c{kind}",), 1),
                ItemsFailed(job_id, batch, ((f"c{kind}", "HTTP 500", True),), 1),
                BatchSettled(batch, "completed", 1, 1),
                CronRemoved(batch),
            ][kind]
            ledger.append([event])
            if kind == 1:
                Index(ledger).catch_up()  # sometimes indexed as it goes, sometimes in one catch-up
        whole = fold(ledger.records())
        for job_id in created:
            scoped = fold(Index(ledger).records_of(job_id))
            assert scoped.jobs[job_id] == whole.jobs[job_id]
            assert scoped.batches[f"{job_id}-b"] == whole.batches[f"{job_id}-b"]
        assert [r.event.job_id for r in Index(ledger).records_of("key:key-j1")] == (["j1"] if "j1" in created else [])


def test_a_run_that_meets_a_damaged_record_of_its_job_stops_with_one_line(tmp_path: Path) -> None:
    from addm_integration.errors import Corrupt
    from addm_integration.store.context import Context

    root = tmp_path / "ws"
    ctx = Context.open(root)
    ctx.record(*_job_events()[:4])
    ctx.record(*_job_events()[4:])
    lines = ctx.ledger.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"file-1", b"file-2")  # FileUploaded, seq 3: its checksum no longer matches
    ctx.ledger.path.write_bytes(b"".join(lines))
    with pytest.raises(Corrupt) as caught:
        ctx.job_state("j1")
    message = str(caught.value)
    assert str(ctx.ledger.path) in message and "line 3" in message and "seq 3" in message
    assert "\n" not in message
