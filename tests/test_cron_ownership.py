"""Several workspaces on one account and one crontab: each entry belongs to the workspace its ``--root`` names.

No command of one workspace reports, removes or rewrites another's entry, or proposes to cancel its batches,
while that workspace exists; entries of a deleted workspace are reported from any workspace and removed by the
fix; a moved workspace rewrites its own; a deleted ``data/logs/`` does not stop a fetch; a lost entry comes back
from the next run of its job; ``addm-ledger cron`` lists and removes this workspace's entries.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from conftest import KEY, Workspace
from crontab import CronTab
from fake_openai import FakeOpenAI
from gen_data import generate

from ledger.events import CronRemoved
from ledger.log import Ledger

TASK = ("--task", "G1a")


def _ws(root: Path, server: FakeOpenAI) -> Workspace:
    generate(root, n_restaurants=2, seed=7)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    return Workspace(root, server)


def _submit(ws: Workspace, tab: Path, *extra: str) -> list[str]:
    before = set(ws.server.batch_ids())
    done = ws.run("extract", *TASK, "--llm-mode", "24hrbatch", "--crontab-file", str(tab), *extra)
    assert done.returncode == 0, done.stderr
    return [b for b in ws.server.batch_ids() if b not in before]


def _doctor(ws: Workspace, tab: Path, *args: str) -> tuple[int, list[dict]]:
    done = ws.run("ledger", "doctor", "--crontab-file", str(tab), "--json", *args)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, orjson.loads(done.stdout)


def _lines(tab: Path) -> dict[str, str]:
    """batch id -> its line, read with python-crontab (independent of the code under test)."""
    if not tab.exists():
        return {}
    return {j.comment.removeprefix("ADDM_BATCH_"): str(j) for j in CronTab(tabfile=str(tab)) if j.comment}


def _command(tab: Path, batch_id: str) -> str:
    (command,) = (j.command for j in CronTab(tabfile=str(tab)) if j.comment == f"ADDM_BATCH_{batch_id}")
    return command


def _sh(command: str, ws: Workspace) -> None:
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=ws.env(), timeout=60)
    assert done.returncode == 0, (command, done.stderr)


def test_three_workspaces_on_one_table_see_and_touch_only_their_own(tmp_path: Path, server: FakeOpenAI) -> None:
    tab = tmp_path / "shared.tab"
    tab.write_bytes(b"MAILTO = me\n# mine\n")
    a, b, c = (_ws(tmp_path / name, server) for name in "abc")
    (batch_a,) = _submit(a, tab)
    (batch_b,) = _submit(b, tab)
    (batch_c,) = _submit(c, tab)
    lines = _lines(tab)
    assert set(lines) == {batch_a, batch_b, batch_c}

    for ws in (a, b, c):
        assert _doctor(ws, tab) == (0, [])  # remote too: the others' running batches are not orphans of ours
    assert _doctor(a, tab, "--fix") == (0, [])
    for ws, own in ((a, batch_a), (c, batch_c)):
        listed = orjson.loads(ws.run("ledger", "cron", "--crontab-file", str(tab), "--json").stdout)
        assert [(r["batch_id"], r["owner"]) for r in listed] == [(own, "ours")]
    assert _lines(tab) == lines and tab.read_bytes().startswith(b"MAILTO = me\n# mine\n")

    refused = a.run("ledger", "cron", "--crontab-file", str(tab), "--remove", batch_b)
    assert refused.returncode == 2 and _lines(tab) == lines
    refused = a.run("ledger", "doctor", "--cancel", batch_b)
    assert refused.returncode == 2 and "another workspace" in refused.stderr


def test_entries_of_a_deleted_workspace_are_reported_anywhere_and_removed_by_the_fix(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    tab = tmp_path / "shared.tab"
    a, b = _ws(tmp_path / "a", server), _ws(tmp_path / "b", server)
    (batch_a,) = _submit(a, tab)
    (batch_b,) = _submit(b, tab)
    subprocess.run(["rm", "-rf", str(b.root)], check=True)

    code, (finding,) = _doctor(a, tab)
    assert (code, finding["kind"], finding["subject"]) == (3, "orphan-cron-entry", batch_b)
    assert str(b.root) in finding["detail"]
    listing = a.run("ledger", "cron", "--crontab-file", str(tab)).stdout
    assert "no longer exist" in listing and batch_b in listing and batch_a in listing
    assert all(len(line) <= 80 for line in listing.splitlines() if str(tmp_path) not in line)
    _sh(finding["fix"], a)
    assert set(_lines(tab)) == {batch_a}
    assert _doctor(a, tab) == (0, [])


@pytest.mark.parametrize("fixed_by", ["doctor", "submit"])
def test_a_moved_workspace_rewrites_its_entries_and_its_batch_is_fetched(
    tmp_path: Path, server: FakeOpenAI, fixed_by: str
) -> None:
    tab = tmp_path / "shared.tab"
    old = _ws(tmp_path / "old", server)
    (batch,) = _submit(old, tab)
    moved = Workspace(tmp_path / "new", server)
    old.root.rename(moved.root)
    assert f"cd {old.root} " in _lines(tab)[batch]

    code, (finding,) = _doctor(moved, tab)
    assert (code, finding["kind"], finding["subject"]) == (3, "moved-cron-entry", batch)
    if fixed_by == "doctor":
        _sh(finding["fix"], moved)
    else:
        assert _submit(moved, tab) == []  # the same submit command, run in the new place
    line = _lines(tab)[batch]
    assert f"cd {moved.root} " in line and str(old.root) not in line
    assert _doctor(moved, tab) == (0, [])
    server.set_batch_outcome(batch, "completed")
    assert moved.run_cron_line(_command(tab, batch)).returncode == 0
    assert _lines(tab) == {} and moved.cache.exists()


def test_a_deleted_logs_folder_does_not_stop_the_fetch(tmp_path: Path, server: FakeOpenAI) -> None:
    tab = tmp_path / "shared.tab"
    ws = _ws(tmp_path / "ws", server)
    (batch,) = _submit(ws, tab)
    subprocess.run(["rm", "-rf", str(ws.root / "data" / "logs")], check=True)
    server.set_batch_outcome(batch, "completed")
    run = ws.run_cron_line(_command(tab, batch))
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert "reviews judged" in (ws.root / "data" / "logs" / f"{batch}.log").read_text()
    assert _lines(tab) == {}


def test_an_entry_removed_by_hand_comes_back_from_any_run_of_its_job(tmp_path: Path, server: FakeOpenAI) -> None:
    tab = tmp_path / "shared.tab"
    ws = _ws(tmp_path / "ws", server)
    first, second = _submit(ws, tab, "--max-batch-requests", "30")
    kept = _lines(tab)
    tab.write_text(kept[first] + "\n")  # the user deletes the second line with crontab -e

    assert ws.run_cron_line(_command(tab, first)).returncode == 0  # the first batch's cron run, still running
    assert _lines(tab) == kept

    tab.write_text(kept[first] + "\n")
    again = _submit(ws, tab, "--max-batch-requests", "30")  # the same submit command
    assert again == [] and _lines(tab) == kept

    tab.write_text(kept[first] + "\n")
    _, (finding,) = _doctor(ws, tab)
    assert (finding["kind"], finding["subject"]) == ("missing-cron-entry", second)
    _sh(finding["fix"], ws)
    assert _lines(tab) == kept


def test_cron_remove_takes_entries_out_for_good_and_the_batch_can_still_be_fetched(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    tab = tmp_path / "shared.tab"
    tab.write_bytes(b"# keep\n")
    ws = _ws(tmp_path / "ws", server)
    first, second = _submit(ws, tab, "--max-batch-requests", "30")
    listing = ws.run("ledger", "cron", "--crontab-file", str(tab))
    assert listing.returncode == 0 and first in listing.stdout and second in listing.stdout
    assert all(len(line) <= 80 for line in listing.stdout.splitlines() if str(tmp_path) not in line)

    removed = ws.run("ledger", "cron", "--crontab-file", str(tab), "--remove", second)
    assert removed.returncode == 0 and set(_lines(tab)) == {first}
    assert [e["type"] for e in ws.ledger_json("show", second)][-1] == "CronRemoved"
    assert ws.run_cron_line(_command(tab, first)).returncode == 0
    assert set(_lines(tab)) == {first}  # no run puts back what the user took out
    assert _doctor(ws, tab) == (0, [])

    server.set_batch_outcome(second, "completed")
    fetched = ws.run("extract", *TASK, "--llm-mode", "24hrbatch", "--batch-id", second)
    assert fetched.returncode == 0 and "completed" in fetched.stdout

    assert ws.run("ledger", "cron", "--crontab-file", str(tab), "--remove-all").returncode == 0
    assert _lines(tab) == {} and tab.read_bytes() == b"# keep\n"
    assert "none" in ws.run("ledger", "cron", "--crontab-file", str(tab)).stdout


def test_cron_and_doctor_have_help(tmp_path: Path) -> None:
    for command in ("cron", "doctor"):
        done = subprocess.run(
            [sys.executable, "-m", "addm_integration.ledger", command, "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0 and "--crontab-file" in done.stdout
        assert all(len(line) <= 80 for line in done.stdout.splitlines())


def test_a_cron_removal_the_previous_release_recorded_reads_as_not_by_the_user(tmp_path: Path) -> None:
    head = orjson.dumps(
        {"seq": 1, "ts": "2026-01-01T00:00:00.000000Z", "type": "CronRemoved", "v": 1, "data": {"batch_id": "b1"}}
    )[:-1]
    (tmp_path / "events.jsonl").write_bytes(head + b',"crc":"%08x"}\n' % zlib.crc32(head))
    (record,) = list(Ledger(tmp_path).records())
    assert record.event == CronRemoved("b1", by_user=False)


def test_an_entry_a_failing_crontab_write_left_out_comes_back_with_the_next_run(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    """``crontab -`` refusing the table (here a stand-in ``crontab`` first on PATH, never the real one)."""
    bin_dir, table = tmp_path / "bin", tmp_path / "user.tab"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(
        "#!/bin/sh\n"
        f'T={table}\nif [ "$1" = -l ]; then [ -f "$T" ] && exec cat "$T"; echo "no crontab for you" >&2; exit 1; fi\n'
        'if [ -f "$T.fail" ]; then echo "crontab: cannot write the table" >&2; exit 1; fi\n'
        'cat > "$T"\n'
    )
    fake.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    assert shutil.which("crontab", path=path) == str(fake)
    ws = _ws(tmp_path / "ws", server)
    Path(f"{table}.fail").touch()
    failed = ws.run("extract", *TASK, "--llm-mode", "24hrbatch", env=ws.env(PATH=path))
    assert failed.returncode == 75 and "cannot write the table" in failed.stderr
    assert "Traceback" not in failed.stderr and not table.exists()
    (batch,) = server.batch_ids()

    Path(f"{table}.fail").unlink()
    again = ws.run("extract", *TASK, "--llm-mode", "24hrbatch", env=ws.env(PATH=path))
    assert again.returncode == 0, again.stderr
    assert server.batch_ids() == [batch] and set(_lines(table)) == {batch}


def test_an_abandoned_job_gets_no_entry_back(tmp_path: Path, server: FakeOpenAI) -> None:
    tab = tmp_path / "shared.tab"
    ws = _ws(tmp_path / "ws", server)
    assert len(_submit(ws, tab)) == 1
    (job,) = ws.ledger_json("status")
    assert ws.run("ledger", "abandon", job["job_id"]).returncode == 0
    assert _lines(tab) == {}
    assert _doctor(ws, tab, "--offline") == (0, [])  # its running batch needs no entry: nobody will apply it
