"""The researcher's cockpit: status content, dry-run figures, and every doctor finding repaired by its own fix."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from conftest import KEY, Workspace, submit_args
from openai import OpenAI

TASK = ("--task", "G1a")


def _doctor(ws: Workspace, *args: str) -> list[dict]:
    result = ws.run("ledger", "doctor", "--crontab-file", str(ws.tab), "--json", *args)
    findings = orjson.loads(result.stdout)
    assert result.returncode == (3 if findings else 0), result.stderr  # 3: problems found (1 is a corrupt ledger)
    return findings


def _run_fix(ws: Workspace, finding: dict) -> None:
    fix = subprocess.run(["/bin/sh", "-c", finding["fix"]], capture_output=True, text=True, env=ws.env(), timeout=60)
    assert fix.returncode == 0, (finding, fix.stderr)


def _finished_batch(ws: Workspace) -> str:
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{batch}"]).returncode == 0
    return batch


def test_a_healthy_workspace_has_no_findings(ws: Workspace) -> None:
    _finished_batch(ws)
    result = ws.run("ledger", "doctor", "--crontab-file", str(ws.tab))
    assert (result.returncode, result.stdout.strip()) == (0, "no problems found")


@pytest.mark.parametrize("known", [True, False])
def test_stale_cron_entry_is_found_and_removed_by_its_fix(ws: Workspace, known: bool) -> None:
    batch = _finished_batch(ws) if known else "batch_nobody_knows"
    ws.tab.write_text(f"*/5 * * * * true # ADDM_BATCH_{batch}\n*/5 * * * * keep-me # other\n")
    (finding,) = _doctor(ws)
    kind = "stale-cron-entry" if known else "orphan-cron-entry"  # a line naming no workspace: nobody's
    assert (finding["kind"], finding["subject"]) == (kind, batch)
    _run_fix(ws, finding)
    assert _doctor(ws) == []
    assert "keep-me" in ws.tab.read_text()


def test_running_batch_without_entry_gets_it_back(ws: Workspace) -> None:
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0
    (batch,) = ws.batches()
    ws.tab.write_text("")
    (finding,) = _doctor(ws)
    assert (finding["kind"], finding["subject"]) == ("missing-cron-entry", batch)
    _run_fix(ws, finding)
    assert ws.batches() == [batch]
    assert _doctor(ws) == []


def test_torn_ledger_tail_is_set_aside(ws: Workspace) -> None:
    _finished_batch(ws)
    with open(ws.root / "data" / "ledger" / "events.jsonl", "ab") as f:
        f.write(b'{"seq":99,"ts":"2026')
    (finding,) = _doctor(ws)
    assert finding["kind"] == "torn-ledger-tail"
    _run_fix(ws, finding)
    assert _doctor(ws) == []
    assert ws.run("ledger", "verify").stderr == ""


def test_leftover_download_is_removed(ws: Workspace) -> None:
    batch = _finished_batch(ws)
    part = ws.root / "data" / "batches" / batch / "output.jsonl.part"
    part.write_bytes(b"half")
    (finding,) = _doctor(ws)
    assert (finding["kind"], finding["subject"]) == ("leftover-file", str(part))
    _run_fix(ws, finding)
    assert not part.exists() and _doctor(ws) == []


def test_orphan_batch_of_an_unknown_job_is_cancelled_by_its_fix(ws: Workspace) -> None:
    _finished_batch(ws)
    api = OpenAI(api_key=KEY, base_url=ws.server.base_url)
    line = b'{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}\n'
    upload = api.files.create(file=("addm-lost.jsonl", line), purpose="batch")
    ws_id = (ws.root / "data" / "ledger" / "workspace_id").read_text().strip()
    metadata = {"addm_idem_key": "lost-000", "addm_job_id": "job_from_elsewhere", "addm_workspace": ws_id}
    orphan = api.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
    )
    (finding,) = _doctor(ws)
    assert (finding["kind"], finding["subject"], finding["safe"]) == ("orphan-batch", orphan.id, False)
    _run_fix(ws, finding)
    assert api.batches.retrieve(orphan.id).status == "cancelled"
    assert _doctor(ws) == []


def test_orphan_batch_of_a_known_job_is_adopted_by_rerunning_its_submit(ws: Workspace) -> None:
    crashed = ws.run("extract", *TASK, *submit_args(ws), env=ws.env(ADDM_FAILPOINT="after-create"))
    assert crashed.returncode == -9
    (finding,) = _doctor(ws)
    assert finding["kind"] == "orphan-batch"
    _run_fix(ws, finding)
    assert ws.batches() == [finding["subject"]] and len(ws.server.batch_ids()) == 1
    assert _doctor(ws) == []


def test_status_shows_every_column_for_jobs_in_every_state(ws: Workspace) -> None:
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)
    assert ws.run("extract", *TASK, "--limit", "1", env=env).returncode == 0  # ondemand, finalized
    assert ws.run("extract", *TASK, *submit_args(ws)).returncode == 0  # batch, running
    assert ws.run("baseline", "--policy", "G1_allergy_V2", *submit_args(ws)).returncode == 0
    running, settling = ws.server.batch_ids()
    ws.server.set_batch_outcome(settling, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{settling}"]).returncode == 0

    status = ws.ledger_json("status")
    by_pipeline = {(j["pipeline"], j["mode"]): j for j in status}
    live = by_pipeline[("extract", "ondemand")]
    batch_job = by_pipeline[("extract", "24hrbatch")]
    scored = by_pipeline[("run_baseline", "24hrbatch")]
    assert (live["state"], live["batches"], live["cron"], live["saved_usd"]) == ("finalized", [], False, 0)
    assert live["cost_usd"] > 0 and live["applied"] == live["items"]
    assert (batch_job["state"], batch_job["cron"], batch_job["applied"], batch_job["pending"]) == (
        "running",
        True,
        0,
        batch_job["items"],
    )
    assert batch_job["batches"][0]["batch_id"] == running and batch_job["batches"][0]["cron"] is True
    assert "cron_entry" not in batch_job["batches"][0]  # one field for one fact
    assert (scored["state"], scored["cron"], scored["applied"]) == ("finalized", False, 6)
    assert scored["saved_usd"] == pytest.approx(scored["cost_usd"])  # half price: saved as much as spent

    wide = ws.run("ledger", "status", "--wide")
    header = wide.stdout.splitlines()[0].split()
    assert header == [
        "JOB",
        "PIPELINE",
        "TARGET",
        "MODE",
        "MODEL",
        "STATE",
        "ITEMS",
        "SUBMITTED",
        "APPLIED",
        "FAILED",
        "PENDING",
        "CRON",
        "CREATED",
        "AGE",
        "COST",
        "SAVED",
        "NEXT",
    ]
    assert len([line for line in wide.stdout.splitlines() if line.startswith("job_")]) == 3
    assert f"  {running}  in_progress" in wide.stdout or f"  {running}  validating" in wide.stdout


def test_dry_run_figures_match_what_a_real_submit_sends(ws: Workspace) -> None:
    ws.server.reset_stats()
    dry = ws.run("extract", *TASK, "--llm-mode", "24hrbatch", "--dry-run", "--max-batch-requests", "40")
    assert dry.returncode == 0 and ws.server.stats()["requests"] == 0
    assert not (ws.root / "data" / "ledger" / "events.jsonl").exists()
    assert ws.run("extract", *TASK, *submit_args(ws, "--max-batch-requests", "40")).returncode == 0
    inputs = sorted((ws.root / "data" / "batches").glob("*/input.jsonl"))
    n_lines = sum(len(p.read_bytes().splitlines()) for p in inputs)
    n_bytes = sum(p.stat().st_size for p in inputs)
    assert f"{n_lines} requests, {n_bytes:,} bytes, {len(inputs)} batch(es)" in dry.stdout
    assert len(inputs) == -(-n_lines // 40) == len(ws.server.batch_ids())
    assert "ondemand $" in dry.stdout and "24hrbatch $" in dry.stdout


def test_snapshot_of_a_job_never_recorded_is_removed(ws: Workspace) -> None:
    _finished_batch(ws)
    kept = list((ws.root / "data" / "ledger" / "runs").glob("*.inputs.json"))
    orphan = ws.root / "data" / "ledger" / "runs" / "job_20260101_000000_abcdef.inputs.json"
    orphan.write_bytes(b"{}")  # what a submit killed between its snapshot and its JobCreated record leaves
    (finding,) = _doctor(ws)
    assert (finding["kind"], finding["subject"], finding["safe"]) == ("leftover-file", str(orphan), True)
    _run_fix(ws, finding)
    assert not orphan.exists() and _doctor(ws) == []
    assert kept and all(path.exists() for path in kept)
