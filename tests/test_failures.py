"""Every failure is one line and its exit code, never a traceback: locks, full disks, other file systems,
damaged derived files, records that do not fold, platforms without copy_file_range, and our own bugs."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import KEY, Workspace, submit_args
from filelock import Timeout

from addm_integration import extract
from addm_integration.store.cache import JudgmentCache
from ledger.events import BatchSettled
from ledger.log import Ledger

TASK = ("--task", "G1a")


def _main(ws: Workspace, *args: str) -> int:
    """The command in this very process (so a test can stand in for the platform), as the user types it."""
    return extract.main(["--root", str(ws.root), *TASK, *args])


def _one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(autouse=True)
def _no_inherited_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ADDM_ROOT", "ADDM_CRONTAB", "ADDM_FAILPOINT"):
        monkeypatch.delenv(name, raising=False)


class _HeldLock:
    """A cache lock another run holds past our wait."""

    def __init__(self, path: str, timeout: float = 0) -> None:
        self.path = path

    def __enter__(self) -> None:
        raise Timeout(self.path)

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_lock_held_past_its_wait_is_transient_except_for_a_fetch_only_run(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ws.run("extract", *TASK, *submit_args(ws))
    assert result.returncode == 0, result.stderr
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "completed")
    monkeypatch.setattr("addm_integration.store.cache.FileLock", _HeldLock)
    capsys.readouterr()
    assert _main(ws, "--batch-id", batch) == 0
    assert capsys.readouterr() == ("", "")  # cron mail stays empty; the next run applies
    monkeypatch.setenv("OPENAI_BASE_URL", ws.server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert _main(ws, "--limit", "1") == 75  # ondemand: its first apply meets the held cache lock
    err = _one_line(capsys.readouterr().err)
    assert "cache.json.lock: another run holds this lock" in err and "run the same command again" in err


def test_a_full_disk_is_one_line_and_transient_and_records_nothing(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger import log

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log.os, "write", full)
    assert _main(ws, *submit_args(ws)) == 75
    err = _one_line(capsys.readouterr().err)
    assert "No space left on device" in err and "nothing of this step was recorded" in err
    assert not (ws.root / "data" / "ledger" / "events.jsonl").read_bytes()
    assert ws.server.batch_ids() == []


def test_a_batch_input_kept_on_another_file_system_is_copied(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    link = os.link

    def cross_device(src: str, dst: str) -> None:
        if not str(dst).endswith("input.jsonl"):  # only the batch's input lies on another file system
            return link(src, dst)
        raise OSError(errno.EXDEV, "Invalid cross-device link", src, None, dst)

    monkeypatch.setattr("addm_integration.store.workspace.os.link", cross_device)
    assert _main(ws, *submit_args(ws)) == 0, capsys.readouterr().err
    (batch,) = ws.batches()
    kept = ws.root / "data" / "batches" / batch / "input.jsonl"
    assert kept.read_bytes().endswith(b"\n")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch}"]).returncode == 0


def test_a_damaged_index_is_rebuilt_from_the_log(ws: Workspace) -> None:
    result = ws.run("extract", *TASK, *submit_args(ws))
    assert result.returncode == 0, result.stderr
    (batch,) = ws.batches()
    index = ws.root / "data" / "ledger" / "index.sqlite"
    index.write_bytes(b"this is not a database" * 100)
    audit = ws.run("ledger", "audit", "--batch", batch, "--json")
    assert (audit.returncode, audit.stderr, orjson.loads(audit.stdout)) == (0, "", [])
    ws.server.set_batch_outcome(batch, "completed")
    index.write_bytes(b"\0" * 4096)
    fetched = ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch}"])
    assert fetched.returncode == 0 and fetched.stderr == ""
    assert ws.ledger_json("status")[0]["state"] == "finalized"


def test_a_sound_record_that_does_not_fold_is_corruption_named_by_file_line_and_seq(ws: Workspace) -> None:
    result = ws.run("extract", *TASK, *submit_args(ws))
    assert result.returncode == 0, result.stderr
    ledger = Ledger(ws.root / "data" / "ledger")
    (settled,) = ledger.append([BatchSettled("batch_never_created", "completed", 1, 0)])
    line = ledger.path.read_bytes().count(b"\n")
    for command in ("status", "verify"):
        run = ws.run("ledger", command)
        assert run.returncode == 1, (command, run.stdout, run.stderr)
        err = _one_line(run.stderr)
        assert f"{ledger.path}: line {line} (seq {settled.seq})" in err and "batch_never_created" in err


def test_the_cache_merges_where_there_is_no_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "copy_file_range", raising=False)  # macOS, Windows
    cache = JudgmentCache(tmp_path / "cache.json")
    cache.merge("G1a", {"r1": {"n": 1}, "r2": {"n": 2}})
    cache.merge("G1b", {"r1": {"n": 3}})
    cache.merge("G1a", {"r3": {"n": 4}})
    cache.merge("G1a", {"r2": {"n": 5}})
    expected = {"G1a": {"r1": {"n": 1}, "r2": {"n": 5}, "r3": {"n": 4}}, "G1b": {"r1": {"n": 3}}}
    assert orjson.loads(cache.path.read_bytes()) == expected


def test_an_unexpected_error_is_one_line_exit_70_and_its_traceback_is_saved_without_the_key(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bug(self: object, job_id: str | None) -> None:
        raise RuntimeError(f"a bug of ours, with {KEY} in its message")

    monkeypatch.setattr(extract.Extract, "work", bug)
    assert _main(ws, "--dry-run") == 70
    err = _one_line(capsys.readouterr().err)
    (saved,) = (ws.root / "data" / "logs").glob("error-*.txt")
    assert str(saved) in err and "RuntimeError" in err and KEY not in err
    text = saved.read_text()
    assert "Traceback" in text and "a bug of ours" in text and KEY not in text


def test_a_stored_result_file_that_changed_is_refused_and_nothing_is_applied(ws: Workspace) -> None:
    result = ws.run("extract", *TASK, *submit_args(ws))
    assert result.returncode == 0, result.stderr
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "completed")
    crashed = ws.run("extract", *TASK, "--batch-id", batch, env=ws.env(ADDM_FAILPOINT="after-download-error"))
    assert crashed.returncode == -9
    output = ws.root / "data" / "batches" / batch / "output.jsonl"
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join(lines[1:]))  # one result lost by an edit
    for args in (("--batch-id", batch), ("--batch-id", batch, "--replay")):
        run = ws.run("extract", *TASK, *args)
        assert run.returncode == 1, run.stderr
        err = _one_line(run.stderr)
        assert f"{output}: no longer matches its FilesStored record of batch {batch}" in err
    assert not ws.cache.exists() and ws.ledger_json("audit", "--batch", batch) == []


def test_staged_inputs_of_a_killed_submit_are_reported_by_doctor_and_swept_by_the_rerun(ws: Workspace) -> None:
    killed = ws.run(
        "extract", *TASK, *submit_args(ws, "--max-batch-requests", "40"), env=ws.env(ADDM_FAILPOINT="after-stage")
    )
    assert killed.returncode == -9
    staging = ws.root / "data" / "ledger" / "staging"
    left = sorted(staging.glob("**/*.jsonl"))
    assert len(left) > 1
    doctor = ws.run("ledger", "doctor", "--offline", "--crontab-file", str(ws.tab))
    said = " ".join(doctor.stdout.split())  # findings wrap at 80 columns, between words only
    for path in left:
        assert f"leftover-file: {path}: staged input of an interrupted submit" in said
        assert f"fix: rm {path}" in doctor.stdout
    rerun = ws.run("extract", *TASK, *submit_args(ws, "--max-batch-requests", "40"))
    assert rerun.returncode == 0, rerun.stderr
    assert list(staging.glob("**/*.jsonl")) == [] and len(ws.batches()) == len(left)
    assert "staged input" not in ws.run("ledger", "doctor", "--offline", "--crontab-file", str(ws.tab)).stdout


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_rewrites_keep_the_files_mode_and_new_files_follow_the_umask(tmp_path: Path, umask_027: None) -> None:
    from addm_integration.store.workspace import atomic_write_json

    shared = JudgmentCache(tmp_path / "shared" / "cache.json")
    shared.merge("G1a", {"r1": {"n": 1}})
    assert stat.S_IMODE(shared.path.stat().st_mode) == 0o640  # new: 0666 under the umask, like any new file
    shared.path.chmod(0o644)  # as an upstream checkout has it
    shared.merge("G1a", {"r2": {"n": 2}})
    shared.merge("G1b", {"r1": {"n": 3}})
    assert stat.S_IMODE(shared.path.stat().st_mode) == 0o644
    results = tmp_path / "results.json"
    atomic_write_json(results, {"n": 1})
    results.chmod(0o664)
    atomic_write_json(results, {"n": 2})
    assert stat.S_IMODE(results.stat().st_mode) == 0o664 and orjson.loads(results.read_bytes()) == {"n": 2}


@pytest.mark.parametrize(
    "key", ["proj_4fQ9xZ2LmN7pR1sT8vW3yB6cD0eF5gH", "0123456789abcdef0123456789abcdef", "AIzaSyD-9tSrke72PouQMnMX7"]
)
def test_no_part_of_a_key_of_any_shape_reaches_a_message(key: str) -> None:
    from addm_integration.provider.openai_api import describe

    straddling = RuntimeError("x" * 280 + f" key={key} rejected")  # the 300-character cut falls inside the key
    masked = RuntimeError(f"Incorrect API key provided: {key[:4]}{'*' * 20}{key[-4:]}.")
    quoted = RuntimeError(f"token '{key[3:15]}' unknown")
    for exc in (straddling, masked, quoted):
        line = describe(exc, key)
        assert len(line) <= 300
        assert not any(key[i : i + 4] in line for i in range(len(key) - 3)), line


def test_ondemand_requests_keep_flowing_while_an_apply_runs(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first apply waits until every request has been answered: only possible if it does not hold the loop."""
    import asyncio
    import threading

    from addm_integration.engine import ondemand
    from addm_integration.engine.pipeline import WorkItem
    from addm_integration.provider.openai_api import OpenAIProvider
    from addm_integration.store.credentials import Credentials

    monkeypatch.setattr(ondemand, "CHUNK", 5)
    body = {"model": "gpt-5-nano", "messages": [{"role": "user", "content": "hi"}]}
    items = [WorkItem(f"c{i}", body) for i in range(40)]
    all_asked = threading.Event()
    chunks: list[int] = []

    def flush(chunk: list) -> None:
        if not chunks and not all_asked.wait(timeout=30):  # a bound on a broken run, not a wait for time
            pytest.fail("no request went out while the first apply ran")
        chunks.append(len(chunk))

    def advance(failed: bool = False) -> None:
        if ws.server.stats()["by_endpoint"].get("POST /v1/chat/completions", 0) >= len(items):
            all_asked.set()

    asyncio.run(ondemand._run(OpenAIProvider(Credentials(KEY, ws.server.base_url)), iter(items), 4, flush, advance))
    assert sum(chunks) == len(items) and len(chunks) >= 2


def test_an_ondemand_run_holds_none_of_the_work_list_its_pipeline_built(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prompt of a million-request job in memory at once would not fit: the items built are let go."""
    import weakref

    from addm_integration.engine import ondemand
    from addm_integration.engine.pipeline import Settled, WorkItem
    from addm_integration.provider import openai_api
    from addm_integration.store.context import Context

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ondemand, "CHUNK", 10)
    built: list[weakref.ref[WorkItem]] = []
    alive: list[int] = []

    class Prompts:
        name, module, model = "extract", "addm_integration.extract", "gpt-5-nano"
        unkeyed = frozenset()

        @staticmethod
        def key_before(params: dict) -> None:
            return None

        def params(self) -> dict:
            return {}

        def check(self) -> None:
            pass

        def work(self, job_id: str | None):
            for i in range(120):
                item = WorkItem(f"c{i}", {"model": self.model, "messages": [{"role": "user", "content": f"q{i}"}]})
                built.append(weakref.ref(item))
                yield item

        def apply(self, job, outcomes) -> Settled:
            alive.append(sum(ref() is not None for ref in built))
            return Settled(tuple(o.custom_id for o in outcomes))

        def finalize(self, job) -> dict:
            return {}

        def summary(self, job) -> str:
            return "done"

        def nothing_to_do(self) -> str:
            return "nothing to do"

    said = ondemand.execute(Context.open(ws.root, connect=openai_api.connector(ws.root)), Prompts(), 4)
    assert said.startswith("sent 120 requests") and len(alive) >= 2
    assert max(alive) == 0, alive
    assert not list((ws.root / "data" / "ledger" / "staging").rglob("*.jsonl"))  # the spilled list is gone


def test_place_links_where_it_can_copies_where_it_cannot_and_leaves_no_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from addm_integration.store.workspace import place

    source = tmp_path / "source.jsonl"
    source.write_bytes(b'{"a":1}\n')
    place(source, tmp_path / "linked" / "input.jsonl")
    assert (tmp_path / "linked" / "input.jsonl").stat().st_ino == source.stat().st_ino

    def cross_device(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", src, None, dst)

    monkeypatch.setattr("addm_integration.store.workspace.os.link", cross_device)
    place(source, tmp_path / "copied" / "input.jsonl")
    copied = tmp_path / "copied" / "input.jsonl"
    assert copied.read_bytes() == source.read_bytes() and copied.stat().st_ino != source.stat().st_ino
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["input.jsonl", "input.jsonl", "source.jsonl"]
