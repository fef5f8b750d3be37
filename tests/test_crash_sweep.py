"""kill -9 at every ledger append of the whole batch flow, before it and after it: every case converges.

The flow: submit; the first batch expires half done, so its fetch applies what arrived and requeues the rest
into a second batch (with its own entry); the second completes, its fetch finalizes the job. Each case runs the
flow in-process up to one stage, runs that stage as a real process killed with SIGKILL at one append
(``ADDM_FAILPOINT=append-<n>-before|after``), then does what a user and cron would: the submit command again when
the submit was killed, otherwise every entry of the tab file once. At that point the table must hold exactly one
entry per unsettled batch, each running in this workspace; then the flow goes on to the end and the result must
be the one an uninterrupted run gives, every item applied once, one finalize, no entry left.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import KEY, Workspace
from fake_openai import FakeOpenAI
from gen_data import generate

from addm_integration import extract
from addm_integration.schedule.cron import CronTable
from ledger.events import JobFinalized
from ledger.log import Ledger
from ledger.reducer import fold

STAGES = ("submit", "first-fetch", "second-fetch")
USER_LINES = b"MAILTO = me@example.org\n# the user's own, kept byte for byte\n\t@reboot  true\n"


def _fresh(root: Path, server: FakeOpenAI) -> Workspace:
    generate(root, n_restaurants=1, seed=5)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    ws = Workspace(root, server)
    ws.tab.write_bytes(USER_LINES)
    return ws


def _args(ws: Workspace, batch_id: str | None = None) -> list[str]:
    common = ["--root", str(ws.root), "--task", "G1a", "--llm-mode", "24hrbatch", "--max-attempts", "2"]
    return [*common, "--batch-id", batch_id] if batch_id else [*common, "--crontab-file", str(ws.tab)]


def _state(ws: Workspace):
    return fold(Ledger(ws.root / "data" / "ledger").records())


def _batches(ws: Workspace) -> list[str]:
    return [b for job in _state(ws).jobs.values() for b in job.batches]


def _entries(ws: Workspace) -> dict[str, Path | None]:
    return {e.batch_id: e.root for e in CronTable(ws.tab).entries()}


def _end_batch(ws: Workspace, batch_id: str) -> None:
    """The first batch expires with half of its requests done; any later one completes."""
    first = _batches(ws)[0] == batch_id
    with contextlib.suppress(ValueError):  # already terminal: a killed run saw it end
        ws.server.set_batch_outcome(
            batch_id, "expired" if first else "completed", complete_fraction=0.5 if first else 1
        )


def _fetch(ws: Workspace, batch_id: str) -> None:
    _end_batch(ws, batch_id)
    assert extract.main(_args(ws, batch_id)) == 0


def _stage(ws: Workspace, stage: str) -> list[str]:
    """The command line of a stage (the next batch's fetch, as its cron entry runs it)."""
    if stage == "submit":
        return _args(ws)
    batch_id = _batches(ws)[STAGES.index(stage) - 1]
    _end_batch(ws, batch_id)
    return _args(ws, batch_id)


def _run_to_end(ws: Workspace) -> None:
    for _ in range(5):
        entries = _entries(ws)
        if not entries:
            return
        for batch_id in entries:
            _fetch(ws, batch_id)
    raise AssertionError(f"entries never went away: {_entries(ws)}")


def _result(ws: Workspace) -> dict:
    return orjson.loads(ws.cache.read_bytes())


def _check_entries(ws: Workspace) -> None:
    state = _state(ws)
    unsettled = {b.batch_id for b in state.batches.values() if not b.settled}
    entries = _entries(ws)
    assert set(entries) == unsettled, "every unsettled batch has its entry, and nothing else has one"
    assert all(root == ws.root for root in entries.values())


def _killed(ws: Workspace, argv: list[str], point: str) -> bool:
    env = ws.env(ADDM_FAILPOINT=point)
    done = subprocess.run([sys.executable, "-m", "addm_integration.extract", *argv], env=env, capture_output=True)
    assert done.returncode in (0, -9), done.stderr
    return done.returncode == -9


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_every_append_of_the_flow_converges_with_the_right_entries(
    tmp_path: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ADDM_FAILPOINT", "ADDM_CRONTAB", "ADDM_ROOT"):
        monkeypatch.delenv(name, raising=False)
    ws = _fresh(tmp_path / "ws", server)
    for earlier in STAGES[: STAGES.index(stage)]:
        assert extract.main(_stage(ws, earlier)) == 0
    snapshot = tmp_path / "snapshot"  # the workspace where the stage starts, restored at the same path each case
    shutil.copytree(ws.root, snapshot, symlinks=True)
    assert extract.main(_stage(ws, stage)) == 0  # the uninterrupted run, for reference
    _run_to_end(ws)
    expected, n_items = _result(ws), _state(ws).jobs[_job_id(ws)].n_items
    assert len(_batches(ws)) == 2  # the flow did requeue
    sent_by_stage = 2 - STAGES.index(stage) if stage != "second-fetch" else 0

    kills = 0
    for n in range(1, 40):
        for when in ("before", "after"):
            shutil.rmtree(ws.root)
            shutil.copytree(snapshot, ws.root, symlinks=True)
            on_server = len(server.batch_ids())
            if not _killed(ws, _stage(ws, stage), f"append-{n}-{when}"):
                break
            kills += 1
            if stage == "submit":
                assert extract.main(_args(ws)) == 0
            else:
                for batch_id in _entries(ws):
                    _fetch(ws, batch_id)
            _check_entries(ws)
            _run_to_end(ws)
            job = _state(ws).jobs[_job_id(ws)]
            assert (job.finalized, job.applied, dict(job.failures)) == (True, n_items, {}), (n, when)
            assert _result(ws) == expected, (n, when)
            records = Ledger(ws.root / "data" / "ledger").records()
            assert sum(isinstance(r.event, JobFinalized) for r in records) == 1
            assert ws.tab.read_bytes() == USER_LINES  # our lines gone, the user's untouched
            assert len(server.batch_ids()) - on_server == sent_by_stage, (n, when)  # nothing sent twice
        else:
            continue
        break
    assert kills == 2 * {"submit": 5, "first-fetch": 10, "second-fetch": 6}[stage], kills


def _job_id(ws: Workspace) -> str:
    (job_id,) = _state(ws).jobs
    return job_id
