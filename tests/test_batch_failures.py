"""Every way a batch can end, and every way a run can be interrupted: nothing lost, nothing applied twice,
no entry left polling, no batch paid twice."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

from addm_integration.addm.custom_id import ReviewId
from addm_integration.engine.advance import input_lines
from ledger.events import FilesStored
from ledger.log import Ledger

TASK = ("--task", "G1a")


def _review_ids(ws: Workspace) -> list[str]:
    out = []
    for line in (ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        out += [ReviewId("G1a", record["business_id"], r["review_id"]).encode() for r in record["reviews"]]
    return out


def _submit(ws: Workspace, *extra: str) -> str:
    result = ws.run("extract", *TASK, *submit_args(ws, *extra))
    assert result.returncode == 0, result.stderr
    (batch_id,) = ws.batches()
    return batch_id


def _cron(ws: Workspace, batch_id: str) -> subprocess.CompletedProcess[str]:
    """Run the batch's entry exactly as cron would, and return what it wrote to its log this time."""
    log = ws.root / "data" / "logs" / f"{batch_id}.log"
    before = log.read_text() if log.exists() else ""
    result = ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch_id}"])
    result.stdout = log.read_text()[len(before) :]
    return result


def _cached(ws: Workspace) -> set[str]:
    if not ws.cache.exists():
        return set()
    return set(orjson.loads(ws.cache.read_bytes()).get("G1a", {}))


def _rid(cid: str) -> str:
    return cid.rsplit("::", 1)[1]


def _rerecord(ws: Workspace, batch_id: str, output: Path) -> None:
    """Record an edited output file as the one the server sent (a stored file is checked before it is applied)."""
    data = output.read_bytes()
    meta = {"file_id": "file-edited", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    Ledger(ws.root / "data" / "ledger").append([FilesStored(batch_id, {"output": meta})])


def _job(ws: Workspace) -> dict:
    (job,) = ws.ledger_json("status")
    return job


def test_error_lines_are_read_retryable_ones_requeued_others_reported(ws: Workspace) -> None:
    ids = _review_ids(ws)
    first = _submit(ws)
    ws.server.set_batch_outcome(first, "completed", fail={ids[0]: 500, ids[1]: 400, ids[2]: "garbage", ids[3]: "omit"})
    run = _cron(ws, first)
    assert run.returncode == 0
    assert "4 failed" in run.stdout and "requeued 3" in run.stdout
    assert _cached(ws) == {_rid(c) for c in ids[4:]}

    (second,) = ws.batches()  # the first entry is gone, the requeue has its own
    assert second != first
    requeued = [
        orjson.loads(line)["custom_id"] for line in (ws.root / "data" / "batches" / second / "input.jsonl").open()
    ]
    assert sorted(requeued) == sorted([ids[0], ids[2], ids[3]])
    assert _job(ws)["state"] == "running"

    ws.server.set_batch_outcome(second, "completed")
    assert "reviews judged" in _cron(ws, second).stdout
    assert _cached(ws) == {_rid(c) for c in ids[1:2]} ^ {_rid(c) for c in ids}
    job = _job(ws)
    assert (job["state"], job["failed"], job["cron"]) == ("finalized", 1, False)
    attempts = {e["custom_id"]: e["attempt"] for e in ws.ledger_json("audit", ids[0])}
    assert attempts == {ids[0]: 2}


def test_requeue_stops_at_max_attempts_and_the_job_finalizes_once(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws, "--max-attempts", "2")
    for attempt in (1, 2):
        ws.server.set_batch_outcome(batch, "completed", fail={ids[0]: 503})
        assert _cron(ws, batch).returncode == 0
        if attempt == 1:
            (batch,) = ws.batches()
    assert ws.batches() == []
    assert len(ws.server.batch_ids()) == 2
    job = _job(ws)
    assert (job["state"], job["failed"]) == ("finalized", 1)
    timeline = ws.ledger_json("show", job["job_id"])
    assert [e["type"] for e in timeline].count("JobFinalized") == 1


def test_completed_without_output_file_fails_every_item_and_removes_the_entry(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed", fail=dict.fromkeys(ids, 400))
    run = _cron(ws, batch)
    assert f"0 applied, {len(ids)} failed" in run.stdout and "nothing got through" in run.stdout
    assert ws.batches() == [] and not _cached(ws)
    assert _job(ws)["state"] == "nothing got through"


def test_expired_batch_keeps_its_partial_output_and_requeues_the_rest(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "expired", complete_fraction=0.5)
    run = _cron(ws, batch)
    half = len(ids) // 2
    assert f"expired: {half} applied, {len(ids) - half} failed" in run.stdout
    assert len(_cached(ws)) == half
    (second,) = ws.batches()
    ws.server.set_batch_outcome(second, "completed")
    _cron(ws, second)
    assert _cached(ws) == {_rid(c) for c in ids}


def test_cancelled_batch_applies_what_ran_and_does_not_requeue(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "cancelled", complete_fraction=0.25)
    run = _cron(ws, batch)
    assert "cancelled" in run.stdout and "requeued" not in run.stdout
    assert len(_cached(ws)) == len(ids) // 4
    assert ws.batches() == []
    job = _job(ws)
    assert (job["state"], job["failed"]) == ("finalized", len(ids) - len(ids) // 4)


def test_failed_validation_is_reported_and_the_same_submit_later_sends_what_is_missing(ws: Workspace) -> None:
    batch = _submit(ws)
    errors = [{"code": "invalid_json_line", "message": "Line 1 is not valid JSON."}]
    ws.server.set_batch_outcome(batch, "failed", errors=errors)
    run = _cron(ws, batch)
    assert "invalid_json_line" in run.stdout and "run the same command after fixing the cause" in run.stdout
    assert ws.batches() == [] and _job(ws)["state"] == "nothing got through"

    again = _submit(ws)
    assert again != batch
    ws.server.set_batch_outcome(again, "completed")
    _cron(ws, again)
    assert _cached(ws) == {_rid(c) for c in _review_ids(ws)}


def test_transient_status_error_exits_75_with_one_line_and_the_next_run_carries_on(ws: Workspace) -> None:
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed")
    ws.server.fail_next("GET /v1/batches", count=3, status=503)
    failed = ws.run("extract", *TASK, "--batch-id", batch)
    assert failed.returncode == 75
    assert failed.stderr.count("\n") == 1 and "next run retries" in failed.stderr
    assert not _cached(ws)
    assert ws.run("extract", *TASK, "--batch-id", batch).returncode == 0
    assert len(_cached(ws)) == len(_review_ids(ws))


def test_transient_failure_of_an_upload_then_rerun_creates_exactly_one_batch(ws: Workspace) -> None:
    ws.server.fail_next("POST /v1/files", count=1, status="drop")
    failed = ws.run("extract", *TASK, *submit_args(ws))
    assert failed.returncode == 75, failed.stderr
    assert ws.server.batch_ids() == []
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    assert len(ws.server.batch_ids()) == 1 and len(ws.cron_lines()) == 1


def test_two_runs_on_one_batch_one_works_the_other_exits_silently_at_once(ws: Workspace) -> None:
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed")
    ws.server.hold_next("GET /v1/batches/", seconds=4)
    argv = [sys.executable, "-m", "addm_integration.extract", "--root", str(ws.root), *TASK, "--batch-id", batch]
    first = subprocess.Popen(argv, env=ws.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while ws.server.stats()["by_endpoint"].get("GET /v1/batches/{id}", 0) == 0:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    started = time.monotonic()
    second = ws.run("extract", *TASK, "--batch-id", batch)
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert time.monotonic() - started < 3  # it did not wait for the first (the first holds for 4 s)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "applied" in out
    assert len(ws.ledger_json("audit", "--batch", batch)) == len(_review_ids(ws))


def test_replay_reapplies_stored_files_without_any_request(ws: Workspace) -> None:
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed")
    _cron(ws, batch)
    cache = ws.cache.read_bytes()
    ws.cache.unlink()
    ws.server.reset_stats()
    replay = ws.run("extract", *TASK, "--batch-id", batch, "--replay")
    assert replay.returncode == 0, replay.stderr
    assert ws.server.stats()["requests"] == 0
    assert orjson.loads(ws.cache.read_bytes()) == orjson.loads(cache)
    kinds = [e["kind"] for e in ws.ledger_json("audit", _review_ids(ws)[0])]
    assert kinds == ["apply", "replay"]


def test_stray_entry_without_its_ledger_record_is_removed_once_the_job_is_done(ws: Workspace) -> None:
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed")
    command = ws.cron_lines()[f"ADDM_BATCH_{batch}"]
    _cron(ws, batch)
    # An entry of this batch that the ledger does not know (a crash between writing the tab and recording it).
    ws.tab.write_text(f"*/5 * * * * {command} # ADDM_BATCH_{batch}\n")
    ws.server.reset_stats()
    assert ws.run_cron_line(command).returncode == 0
    assert ws.cron_lines() == {} and ws.server.stats()["requests"] == 0


def test_concurrent_crontab_edits_lose_no_entry(tmp_path: Path) -> None:
    tab = tmp_path / "tab"
    code = (
        "import sys; from pathlib import Path; from addm_integration.schedule.cron import CronTable; "
        "CronTable(Path(sys.argv[1])).install(sys.argv[2], 'true', Path('/'))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tab), f"b{i}"]) for i in range(12)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    from addm_integration.schedule.cron import CronTable

    assert sorted(e.batch_id for e in CronTable(tab).entries()) == sorted(f"b{i}" for i in range(12))


@pytest.mark.parametrize("secret_place", ["env", "dotenv"])
def test_the_key_appears_in_no_file_the_tool_wrote(ws: Workspace, secret_place: str) -> None:
    env = ws.env(OPENAI_API_KEY=KEY) if secret_place == "env" else None
    ids = _review_ids(ws)
    ws.server.fail_next("POST /v1/files", count=1, status=401)
    assert ws.run("extract", *TASK, *submit_args(ws), env=env).returncode == 2
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed", fail={ids[0]: 401, ids[1]: 500})
    _cron(ws, batch)
    for path, data in ws.files().items():
        if path != ".env":
            assert KEY.encode() not in data, path


@pytest.mark.parametrize(
    ("endpoint", "status", "count", "phase"),
    [
        ("POST /v1/files", 429, 1, "submit"),
        ("POST /v1/batches", 503, 1, "submit"),
        ("POST /v1/batches", "drop", 1, "submit"),
        ("GET /v1/batches", "drop", 3, "fetch"),
        ("GET /v1/files/", 500, 3, "fetch"),
    ],
)
def test_transient_fault_at_each_endpoint_exits_75_and_loses_nothing(
    ws: Workspace, endpoint: str, status: int | str, count: int, phase: str
) -> None:
    if phase == "submit":
        ws.server.fail_next(endpoint, count=count, status=status)
        failed = ws.run("extract", *TASK, *submit_args(ws))
        batch = _submit(ws)
    else:
        batch = _submit(ws)
        ws.server.set_batch_outcome(batch, "completed")
        ws.server.fail_next(endpoint, count=count, status=status)
        failed = ws.run("extract", *TASK, "--batch-id", batch)
    assert failed.returncode == 75, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "retries" in failed.stderr
    assert KEY not in failed.stderr
    if phase == "submit":
        ws.server.set_batch_outcome(batch, "completed")
    assert _cron(ws, batch).returncode == 0
    assert len(ws.server.batch_ids()) == 1
    assert _cached(ws) == {_rid(c) for c in _review_ids(ws)}
    assert ws.cron_lines() == {}


def test_on_windows_submit_warns_installs_nothing_and_prints_the_command(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from addm_integration import extract

    # Windows cannot run here: stand in for its platform check, everything else is real.
    monkeypatch.setattr("addm_integration.schedule.entries.cron_supported", lambda: False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", ws.server.base_url)
    assert extract.main(["--root", str(ws.root), *TASK, *submit_args(ws)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--batch-id" in err
    assert not ws.tab.exists() and len(ws.server.batch_ids()) == 1


def test_a_job_split_into_many_batches_finalizes_once_after_the_last(ws: Workspace) -> None:
    ids = _review_ids(ws)
    result = ws.run("extract", *TASK, *submit_args(ws, "--max-batch-requests", "40"))
    assert result.returncode == 0, result.stderr
    batches = ws.server.batch_ids()
    assert len(batches) == -(-len(ids) // 40) == len(ws.cron_lines())
    (job,) = ws.ledger_json("status")
    assert [b["batch_id"] for b in job["batches"]] == batches
    for n, batch in enumerate(batches):
        ws.server.set_batch_outcome(batch, "completed")
        run = _cron(ws, batch)
        assert ("reviews judged" in run.stdout) == (n == len(batches) - 1)
        assert _job(ws)["state"] == ("finalized" if n == len(batches) - 1 else "running")
    assert _cached(ws) == {_rid(c) for c in ids} and ws.cron_lines() == {}
    assert [e["type"] for e in ws.ledger_json("show", job["job_id"])].count("JobFinalized") == 1


def test_result_lines_of_no_submitted_request_are_counted_not_applied(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws)
    ws.server.set_batch_outcome(batch, "completed")
    crashed = ws.run("extract", *TASK, "--batch-id", batch, env=ws.env(ADDM_FAILPOINT="after-download-error"))
    assert crashed.returncode == -9
    output = ws.root / "data" / "batches" / batch / "output.jsonl"
    first = orjson.loads(output.read_bytes().splitlines()[0])
    strangers = [{**first, "custom_id": "review::G1a::nobody::nothing"}, {**first, "custom_id": 42}, first]
    with output.open("ab") as f:
        f.write(b"".join(orjson.dumps(s) + b"\n" for s in strangers))
    _rerecord(ws, batch, output)
    run = _cron(ws, batch)
    assert f"{len(ids)} applied, 0 failed, 3 result lines matched no submitted request" in run.stdout
    assert len(ws.ledger_json("audit", "--batch", batch)) == len(ids)


def test_a_line_of_another_batch_in_place_of_a_missing_one_is_caught(ws: Workspace) -> None:
    """As many lines as requests, every id of this job, yet not this batch's set: the recorded fingerprint differs."""
    result = ws.run("extract", *TASK, *submit_args(ws, "--max-batch-requests", "40"))
    assert result.returncode == 0, result.stderr
    first, second = ws.server.batch_ids()[:2]
    ws.server.set_batch_outcome(first, "completed")
    crashed = ws.run("extract", *TASK, "--batch-id", first, env=ws.env(ADDM_FAILPOINT="after-download-error"))
    assert crashed.returncode == -9
    output = ws.root / "data" / "batches" / first / "output.jsonl"
    lines = output.read_bytes().splitlines()
    lost = orjson.loads(lines[0])["custom_id"]
    stranger = next(c for c, _ in input_lines(ws.root / "data" / "batches" / second / "input.jsonl"))
    output.write_bytes(b"\n".join([orjson.dumps({**orjson.loads(lines[0]), "custom_id": stranger}), *lines[1:]]))
    _rerecord(ws, first, output)
    run = _cron(ws, first)
    assert "39 applied, 1 failed, 1 result lines matched no submitted request" in run.stdout
    assert f"requeued 1 retryable failures of {first}" in run.stdout
    assert _rid(stranger) not in _cached(ws) and _rid(lost) not in _cached(ws)


def test_a_batch_is_applied_from_the_job_snapshot_without_the_dataset(ws: Workspace) -> None:
    ids = _review_ids(ws)
    batch = _submit(ws)
    dataset = ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl"
    records = [orjson.loads(line) for line in dataset.read_bytes().splitlines()]
    dataset.unlink()
    ws.server.set_batch_outcome(batch, "completed")
    run = _cron(ws, batch)
    assert f"{len(ids)} applied, 0 failed" in run.stdout, run.stdout + run.stderr
    cache = orjson.loads(ws.cache.read_bytes())["G1a"]
    for record in records:
        for review in record["reviews"]:
            judged = cache[review["review_id"]]
            assert (judged["date"], judged["stars"], judged["useful"]) == (
                review["date"],
                review["stars"],
                review["useful"],
            )
