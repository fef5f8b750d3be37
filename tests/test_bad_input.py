"""Bad input: one line naming the file and line or field, exit 2, nothing written and nothing sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import KEY, MODULES, Workspace, submit_args


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
    before = _tree(ws.root)
    result = ws.run("extract", "--task", "G1a", *submit_args(ws), env=env)
    _refused(ws, result, "OPENAI_API_KEY", ".env")
    assert _tree(ws.root) == before


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
    before = _tree(ws.root)
    _refused(ws, ws.run("extract", "--task", "G1a"), "OPENAI_API_KEY")
    assert _tree(ws.root) == before


@pytest.mark.parametrize("tool", ["extract", "ledger"])
def test_a_missing_root_is_refused_by_name_and_nothing_is_created(ws: Workspace, tool: str) -> None:
    typo = ws.root.parent / "wss"
    args = ("status",) if tool == "ledger" else ("--task", "G1a")
    result = _run_at(ws, typo, tool, *args)
    _refused(ws, result, str(typo), "--root")
    assert not typo.exists()
    from_env = _run_at(ws, None, tool, *args, ADDM_ROOT=str(typo))
    _refused(ws, from_env, f"ADDM_ROOT={typo}")
    assert not typo.exists()


def _run_at(ws: Workspace, root: Path | None, tool: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", MODULES[tool], *(["--root", str(root)] if root else []), *args]
    return subprocess.run(argv, env=ws.env(**env), capture_output=True, text=True, timeout=120, cwd=ws.root)


@pytest.mark.parametrize("mode", [(), ("--dry-run",), ("--llm-mode", "24hrbatch", "--no-cron")])
@pytest.mark.parametrize("what", ["restaurant", "review"])
def test_a_duplicate_in_the_dataset_is_bad_input_naming_the_file_and_both_lines(
    ws: Workspace, mode: tuple[str, ...], what: str
) -> None:
    dataset = ws.root / "data" / "context" / "yelp" / "dataset_K25.jsonl"
    lines = dataset.read_bytes().splitlines()
    if what == "restaurant":
        lines.insert(4, lines[1])  # line 2 again as line 5
        needle = "business_id"
    else:
        record = orjson.loads(lines[4])
        record["reviews"][3]["review_id"] = orjson.loads(lines[1])["reviews"][0]["review_id"]
        lines[4] = orjson.dumps(record)
        needle = "review_id"
    dataset.write_bytes(b"\n".join(lines) + b"\n")
    before = _tree(ws.root)
    tool, args = ("baseline", ("--policy", "G1_allergy_V2")) if what == "restaurant" else ("extract", ("--task", "G1a"))
    _refused(ws, ws.run(tool, *args, *mode), str(dataset), needle, "line 5", "line 2")
    assert _tree(ws.root) == before


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and every directory under ``root``: an empty directory made counts too."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def _not_json(root: Path) -> str:
    task = root / "data" / "tasks" / "yelp" / "G1a.json"
    task.write_text('{"task_id": "G1a",')
    return str(task)


_BAD_INPUT = {
    "a missing task": (("extract", "--task", "G9z"), lambda root: "G9z.json"),
    "a task that is not JSON": (("extract", "--task", "G1a"), _not_json),
    "a missing topic": (("extract", "--topic", "G9_nothing"), lambda root: "G9_nothing.json"),
    "a missing policy": (("baseline", "--policy", "G9_nothing_V1"), lambda root: "G9_nothing_V1"),
}


@pytest.mark.parametrize("batch", [False, True], ids=["ondemand", "24hrbatch"])
@pytest.mark.parametrize("case", _BAD_INPUT)
def test_bad_input_creates_nothing_in_the_workspace_not_even_a_lock(ws: Workspace, case: str, batch: bool) -> None:
    (tool, *args), spoil = _BAD_INPUT[case]
    needle = spoil(ws.root)
    before = _tree(ws.root)
    _refused(ws, ws.run(tool, *args, *(submit_args(ws) if batch else ())), needle)
    assert _tree(ws.root) == before
    assert ws.cron_lines() == {}


@pytest.mark.parametrize(
    "flag", [["--wait"], ["--no-cron"], ["--crontab-file", "/dev/null"], ["--max-attempts", "2"], ["--batch-id", "b"]]
)
def test_a_batch_only_flag_in_ondemand_mode_is_refused_not_ignored(ws: Workspace, flag: list[str]) -> None:
    result = ws.run("extract", "--task", "G1a", "--llm-mode", "ondemand", *flag)
    _refused(ws, result, flag[0], "24hrbatch")
    assert not (ws.root / "data" / "ledger").exists()


@pytest.mark.parametrize("flag", [("--max-batch-requests", "50001"), ("--max-batch-bytes", "200000001")])
def test_a_split_limit_above_the_services_is_refused_before_anything_is_uploaded(
    ws: Workspace, flag: tuple[str, str]
) -> None:
    before = _tree(ws.root)
    _refused(ws, ws.run("extract", "--task", "G1a", *submit_args(ws), *flag), flag[0], "limit")
    assert _tree(ws.root) == before
