"""The queue that paces itself: parts wait for room under --max-enqueued-tokens, the service's own refusals
(token_limit_exceeded) are sent again by themselves, and cron runs alone take a job to its finalize."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import Workspace, submit_args
from freezegun import freeze_time

from addm_integration import ledger as ledger_cli
from ledger.events import BatchCreated, BatchPolled, BatchSettled, ItemsApplied, JobCreated, PartPlanned, Phase
from ledger.log import Ledger

TASK = ("--task", "G1a", "--limit", "1", "--max-batch-requests", "9")


def _parts_bytes(ws: Workspace) -> int:
    dry = ws.run("extract", *TASK, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    return int(dry.stdout.split(" requests, ")[1].split(" bytes")[0].replace(",", ""))


def test_a_queue_capped_at_two_parts_finishes_the_job_through_cron_runs_alone(ws: Workspace) -> None:
    clock = [1_900_000_000.0]
    ws.server._time = lambda: clock[0]
    total = _parts_bytes(ws)  # three parts of nine requests (25 reviews)
    cap = total // 4 * 2 // 3 + total // 4 // 6  # the tool's estimate (4 bytes a token) lets two parts run
    ws.server.enqueued_token_limit = total // 4 // 3  # the service, counting prompt text only, lets one run
    first = ws.run("extract", *TASK, *submit_args(ws, "--max-enqueued-tokens", str(cap)))
    assert first.returncode == 0, first.stderr
    assert "1 more part(s) wait for room" in first.stdout
    assert len(ws.batches()) == 2
    (job,) = ws.ledger_json("status")
    assert job["parts"] == {"sent": 2, "waiting": 1, "done": 0}
    assert "1 waiting for room" in ws.run("ledger", "status").stdout

    refused = runs = 0
    while ws.cron_lines() and runs < 40:
        clock[0] += ws.server.batch_delay / 2  # validated at a fifth of the delay, done at the whole
        for command in list(ws.cron_lines().values()):
            result = ws.run_cron_line(command)
            assert result.returncode == 0, result.stderr
            runs += 1
        refused = sum(
            b.obj["status"] == "failed" and b.obj["errors"]["data"][0]["code"] == "token_limit_exceeded"
            for b in ws.server._batches.values()
        )
    cache = orjson.loads(ws.cache.read_bytes())["G1a"]
    reviews = orjson.loads((ws.root / "data/context/yelp/dataset_K25.jsonl").read_bytes().splitlines()[0])["reviews"]
    assert set(cache) == {r["review_id"] for r in reviews}
    assert refused >= 1  # the service refused at least one batch, and it went through later all the same
    (job,) = ws.ledger_json("status")
    assert job["state"] == "finalized" and job["failed"] == 0
    attempts = {a["attempt"] for a in ws.ledger_json("audit", "--batch", job["batches"][-1]["batch_id"])}
    assert attempts == {1}  # a refusal for tokens costs no attempt


def test_status_shows_the_whole_job_of_several_parts_and_when_it_should_be_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parts sent, done and waiting, and an ETA at the pace parts ended so far; a refusal for tokens, which ran
    nothing, tells nothing of the pace. Frozen time: the records and the reading happen at the times given."""

    def status(*flags: str) -> str:
        assert ledger_cli.main(["--root", str(tmp_path), "status", *flags]) == 0
        return capsys.readouterr().out

    def job_line(out: str) -> str:
        (line,) = [line for line in out.splitlines() if line.startswith("  parts: ")]
        return line

    ledger = Ledger(tmp_path / "data" / "ledger")
    refused = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]
    with freeze_time("2026-12-01 09:00:00") as clock:
        params = {"pipeline": {"task": "G1a", "model": "gpt-5-nano"}, "cron": None}
        ledger.append([JobCreated("j", "extract", "24hrbatch", "k", params, 40)])
        ledger.append([PartPlanned("j", f"p{i}", 10, 4000, 1, f"/in{i}", "gpt-5-nano") for i in range(1, 5)])
        ledger.append([BatchCreated("j", f"p{i}", f"b{i}", False, "validating") for i in (1, 2)])
        clock.move_to("2026-12-01 09:30:00")
        assert job_line(status()) == "  parts: 2 sent (0 done), 2 waiting for room; job eta unknown"
        assert [job["eta"] for job in orjson.loads(status("--json"))] == [None]

        clock.move_to("2026-12-01 10:00:00")  # the first part ends after an hour
        ledger.append([BatchPolled("b1", "completed", {"total": 10, "completed": 10}, (), Phase.FINISHED)])
        ledger.append(
            [ItemsApplied("j", "b1", tuple(f"r{i}" for i in range(10)), 1), BatchSettled("b1", "done", 10, 0)]
        )
        clock.move_to("2026-12-01 10:05:00")  # the second is refused for tokens: sent again later, nothing ran
        ledger.append([BatchPolled("b2", "failed", {}, tuple(refused), Phase.FAILED)])
        ledger.append([BatchSettled("b2", "failed", 0, 0), PartPlanned("j", "p5", 10, 4000, 1, "/in5", "gpt-5-nano")])
        clock.move_to("2026-12-01 10:10:00")
        out = status()
        # one part ended in the hour since the first was sent; three are left (p3, p4 and p2's items again)
        assert job_line(out) == "  parts: 2 sent (2 done), 3 waiting for room; job eta 13:00 UTC (in 2h50m)"
        assert all(len(line) <= 80 for line in out.splitlines()), out
        assert [job["eta"] for job in orjson.loads(status("--json"))] == ["2026-12-01T13:00:00.000000Z"]


def test_the_job_line_puts_its_eta_on_a_line_of_its_own_when_both_do_not_fit_80_columns() -> None:
    from datetime import UTC, datetime

    from ledger.cli import parts_summary

    row = {"parts": {"sent": 1200, "waiting": 31000, "done": 1180}, "eta": "2026-12-09T17:05:00.000000Z"}
    lines = parts_summary(row, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), 80).splitlines()
    assert lines == [
        "  parts: 1200 sent (1180 done), 31000 waiting for room;",
        "    job eta 2026-12-09 17:05 UTC (in 8d08h)",
    ]
    assert parts_summary(row, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), None).count("\n") == 0  # --wide: one line
