"""Bad input: one line naming the file and line or field, exit 2, nothing written and nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import KEY, Workspace, submit_args


def _refused(ws: Workspace, result, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert KEY not in result.stderr
    assert ws.server.stats()["requests"] == 0


def test_broken_dataset_line_is_named_and_nothing_is_sent(ws: Workspace) -> None:
    dataset = ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl"
    lines = dataset.read_text().splitlines()
    lines[2] = lines[2][:50]
    dataset.write_text("\n".join(lines) + "\n")
    result = ws.run("extract", "--task", "G1a", *submit_args(ws))
    _refused(ws, result, str(dataset), "line 3")
    assert not (ws.root / "data" / "ledger" / "events.jsonl").exists()
    assert ws.cron_lines() == {}


def test_task_without_fields_is_named(ws: Workspace) -> None:
    task = ws.root / "data" / "tasks" / "yelp" / "G1a.json"
    task.write_text('{"task_id": "G1a", "description": "x"}')
    _refused(ws, ws.run("extract", "--task", "G1a", *submit_args(ws)), str(task), "fields")


def test_missing_task_file_is_named(ws: Workspace) -> None:
    _refused(ws, ws.run("extract", "--task", "G9z", *submit_args(ws)), "G9z.json", "not found")


def test_env_file_readable_by_others_is_refused(ws: Workspace) -> None:
    (ws.root / ".env").chmod(0o644)
    _refused(ws, ws.run("extract", "--task", "G1a", *submit_args(ws)), ".env", "chmod 600")


def test_cron_submit_without_key_in_env_file_refuses_before_uploading(ws: Workspace) -> None:
    (ws.root / ".env").write_text(f"OPENAI_BASE_URL={ws.server.base_url}\n")
    env = ws.env(OPENAI_API_KEY=KEY)  # the submitting shell has the key, cron will not
    result = ws.run("extract", "--task", "G1a", *submit_args(ws), env=env)
    _refused(ws, result, "OPENAI_API_KEY", ".env")
    assert not (ws.root / "data" / "ledger" / "events.jsonl").exists()


def test_no_crontab_command_is_said_before_uploading(ws: Workspace, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = ws.run("extract", "--task", "G1a", "--llm-mode", "24hrbatch", env=ws.env(PATH=str(empty)))
    _refused(ws, result, "crontab", "--crontab-file", "--no-cron", "--wait")


def test_unknown_batch_id_is_refused(ws: Workspace) -> None:
    _refused(ws, ws.run("extract", "--task", "G1a", "--batch-id", "batch_nope"), "batch_nope")


@pytest.mark.parametrize("flag", [["--k", "30"], ["--limit", "-1"], ["--max-attempts", "x"], ["--replay"]])
def test_bad_flags_exit_2(ws: Workspace, flag: list[str]) -> None:
    result = ws.run("extract", "--task", "G1a", *flag)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ws.server.stats()["requests"] == 0


def test_ondemand_without_a_key_is_refused_before_anything_is_written(ws: Workspace) -> None:
    (ws.root / ".env").write_text(f"OPENAI_BASE_URL={ws.server.base_url}\n")
    (ws.root / ".env").chmod(0o600)
    _refused(ws, ws.run("extract", "--task", "G1a"), "OPENAI_API_KEY")
    ledger = ws.root / "data" / "ledger"
    assert not (ledger / "events.jsonl").exists() and not (ledger / "runs").exists()
