"""What the engine says and raises is true of every pipeline: a retry hint in the pipeline's own terms, and a
damaged stored file told apart from a corrupt ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import KEY, Workspace

from addm_integration import run_baseline
from addm_integration.engine.advance import check_stored
from addm_integration.errors import Corrupt, DamagedFile


def test_an_ondemand_run_with_failures_says_what_the_same_command_does_for_run_baseline(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", ws.server.base_url)
    command = ["--root", str(ws.root), "--policy", "G1_allergy_V2", "--concurrency", "1"]
    ws.server.fail_next("POST /v1/chat/completions", count=2, status=400)
    assert run_baseline.main(command) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "2 requests failed (HTTP 400" in said
    assert "the same command asks again for the restaurants that failed and fills them in" in said
    assert "review" not in said  # nothing of extract's terms
    ws.server.reset_stats()
    assert run_baseline.main(command) == 0  # and it does what the hint says
    assert ws.server.stats()["by_endpoint"] == {"POST /v1/chat/completions": 2}


def test_a_stored_file_that_changed_is_a_damaged_file_not_a_corrupt_ledger(tmp_path: Path) -> None:
    stored = tmp_path / "output.jsonl"
    stored.write_bytes(b"{}\n")
    with pytest.raises(DamagedFile) as caught:
        check_stored(stored, {"bytes": 3, "sha256": "0" * 64}, "batch_x")
    assert not isinstance(caught.value, Corrupt) and caught.value.exit_code == 1
    assert f"{stored}: no longer matches its FilesStored record of batch batch_x" in str(caught.value)
