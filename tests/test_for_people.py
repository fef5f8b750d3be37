"""What a person at an 80-column terminal meets: status that fits with ids whole and usable, live --wait lines,
help and --version on every command, options on either side of a subcommand, helper scripts that destroy nothing.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import demo
import gen_data
import orjson
import pytest
from conftest import KEY, MODULES, Workspace, submit_args

from addm_integration import extract, run_baseline
from addm_integration import ledger as ledger_cli
from ledger.events import Phase
from ledger.reducer import BatchState

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _on_terminal(argv: list[str], columns: int = 80) -> str:
    """Run ``argv`` with its stdout on a pseudo-terminal of ``columns`` columns; what the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return ANSI.sub("", out.decode().replace("\r\n", "\n"))


def _three_jobs(ws: Workspace) -> None:
    env = ws.env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=ws.server.base_url)
    assert ws.run("extract", "--task", "G1a", "--limit", "1", env=env).returncode == 0
    assert ws.run("extract", "--task", "G1a", *submit_args(ws)).returncode == 0
    assert ws.run("baseline", "--policy", "G1_allergy_V2", *submit_args(ws)).returncode == 0
    done = ws.server.batch_ids()[1]
    ws.server.set_batch_outcome(done, "completed")
    assert ws.run_cron_line(ws.cron_lines()[f"ADDM_BATCH_{done}"]).returncode == 0


def test_status_fits_80_columns_and_every_id_it_prints_is_whole_and_accepted_by_show(ws: Workspace) -> None:
    _three_jobs(ws)
    out = _on_terminal([sys.executable, "-m", MODULES["ledger"], "status", "--root", str(ws.root)])
    lines = out.strip("\n").splitlines()
    assert lines and all(len(line) <= 80 for line in lines), out
    status = ws.ledger_json("status")
    full = [j["job_id"] for j in status] + [b["batch_id"] for j in status for b in j["batches"]]
    printed = [line.split()[0] for line in lines[1:]]
    assert len(printed) == len(full) == 5  # one line per job, one per batch
    for short in printed:
        (match,) = [i for i in full if i.startswith(short)]  # whole: a prefix of exactly one real id
        shown = ws.run("ledger", "show", short)
        assert shown.returncode == 0 and shown.stdout.startswith(f"events of {match}:"), shown.stderr
        too_wide = [line for line in shown.stdout.splitlines() if len(line) > 80]
        assert all(len(line.split()) == 1 for line in too_wide), too_wide  # only a path longer than the screen


def test_audit_batch_and_fetch_take_a_short_batch_id(ws: Workspace) -> None:
    _three_jobs(ws)
    (job,) = [j for j in ws.ledger_json("status") if j["pipeline"] == "run_baseline"]
    batch = job["batches"][0]
    audit = ws.ledger_json("audit", "--batch", batch["short_id"])
    assert len(audit) == 6 and {a["batch_id"] for a in audit} == {batch["batch_id"]}
    fetched = ws.run("baseline", "--policy", "G1_allergy_V2", "--batch-id", batch["short_id"], "--replay")
    assert fetched.returncode == 0 and "re-applied" in fetched.stdout


def test_an_ambiguous_or_unknown_prefix_is_one_line_naming_the_choices() -> None:
    from ledger.ids import UnknownId, resolve, shortest_unique

    ids = ["job_20261201_0900_aa", "job_20261201_0900_ab", "batch_1234"]
    assert resolve("job_20261201_0900_ab", ids, "job", "ws") == "job_20261201_0900_ab"
    assert resolve("batch", ids, "job or batch", "ws") == "batch_1234"
    with pytest.raises(UnknownId, match=r"names 2 of the jobs.*give more"):
        resolve("job_2026", ids, "job", "ws")
    with pytest.raises(UnknownId, match="no job 'job_3'"):
        resolve("job_3", ids, "job", "ws")
    for ident, short in shortest_unique(ids).items():
        assert resolve(short, ids, "job or batch", "ws") == ident


def test_eta_comes_from_the_first_poll_that_saw_progress() -> None:
    created = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    polled = created + timedelta(minutes=10)
    batch = BatchState(
        "batch_1",
        "job_1",
        "k",
        486,
        1,
        created,
        status="in_progress",
        phase=Phase.RUNNING,
        counts={"completed": 60, "total": 486},
        polled_at=polled,
        progress_from=(polled, 60),
    )
    eta = batch.eta()
    assert eta is not None and eta == polled + timedelta(minutes=10) * 426 / 60


class _Lines:
    """The lines a process writes to a pipe, each waited for at most a minute (a silent --wait fails, not hangs)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc, self.fd, self.buffer = proc, proc.stdout.fileno(), b""

    def next(self) -> str:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], 60)
            chunk = os.read(self.fd, 65536) if ready else b""
            if not chunk:
                self.proc.kill()
                raise AssertionError(f"no line within a minute; so far {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode() + "\n"


def test_wait_when_piped_prints_one_line_per_change(ws: Workspace) -> None:
    clock = [1_000_000.0]
    ws.server.batch_delay = 100
    ws.server._time = lambda: clock[0]
    argv = [sys.executable, "-m", MODULES["extract"], "--root", str(ws.root), "--task", "G1a", "--limit", "2"]
    argv += [*submit_args(ws), "--wait", "--poll-interval", "0.02"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ws.env())
    out = _Lines(proc)
    lines = [out.next()]
    assert lines[0].startswith("submitted")
    for now, expect in ((1_000_030.0, "in_progress"), (1_000_050.0, "in_progress"), (1_000_070.0, "finalizing")):
        clock[0] = now
        step = len(lines)
        while not any(expect in line for line in lines[step:]):
            lines.append(out.next())
    clock[0] = 1_000_101.0
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines += (out.buffer + rest).decode().splitlines(keepends=True)
    assert "\r" not in "".join(lines)
    progress = [line for line in lines if "in_progress" in line]
    assert len(progress) == 2 and all("done; eta " in line for line in progress), lines
    assert any("reviews judged" in line for line in lines)
    assert len(lines) == len(set(lines))  # a line per change, never the same line twice


@pytest.mark.parametrize("module", [*MODULES.values(), "ledger", "addm_integration.importer"])
def test_every_command_has_version(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and re.search(r"\d+\.\d+\.\d+", result.stdout), result.stdout + result.stderr


def test_options_are_accepted_after_the_subcommand(ws: Workspace) -> None:
    _three_jobs(ws)
    bare = [sys.executable, "-m", MODULES["ledger"]]
    after = subprocess.run([*bare, "status", "--root", str(ws.root), "--json"], capture_output=True, timeout=60)
    before = subprocess.run([*bare, "--root", str(ws.root), "--json", "status"], capture_output=True, timeout=60)
    assert after.returncode == before.returncode == 0, after.stderr
    assert [j["job_id"] for j in orjson.loads(after.stdout)] == [j["job_id"] for j in orjson.loads(before.stdout)]
    assert len(orjson.loads(after.stdout)) == 3
    doctor = subprocess.run(
        [*bare, "doctor", "--offline", "--root", str(ws.root), "--crontab-file", str(ws.tab)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doctor.stdout.strip() == "no problems found", doctor.stdout + doctor.stderr


def _help(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)  # type: ignore[operator]
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("main", "argv"),
    [
        (extract.main, []),
        (run_baseline.main, []),
        (ledger_cli.main, []),
        *((ledger_cli.main, [name]) for name in ("status", "show", "audit", "verify", "doctor")),
    ],
)
def test_help_explains_every_option_with_examples_within_80_columns(
    main: object, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(main, [*argv, "--help"], capsys)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "Example" in text
    lines = text.splitlines()
    options = [i for i, line in enumerate(lines) if re.match(r"  -", line)]
    assert len(options) >= 3
    for i in options:  # its help on the same line, or (a long flag) indented on the next
        explained = re.match(r"  -\S.*?\S  +\S", lines[i]) or re.match(r" {6,}\S", lines[i + 1])
        assert explained, lines[i]
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 8, description  # a sentence, not a name


def test_selection_flags_mean_the_same_in_both_pipelines(ws: Workspace) -> None:
    for tool, flag in (("extract", "--task G1a"), ("baseline", "--policy G1_allergy_V2")):
        dry = ws.run(tool, *flag.split(), "--limit", "2", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        bad = ws.run(tool, *flag.split(), "-n", "-5", "--dry-run")
        assert bad.returncode == 2 and "must be 0 or more, got -5" in bad.stderr


def test_an_unknown_model_warns_and_a_missing_price_file_is_not_found(ws: Workspace) -> None:
    unknown = ws.run("extract", "--task", "G1a", "--model", "gpt-unheard-of", "--dry-run")
    assert unknown.returncode == 0 and "cost unknown" in unknown.stdout
    assert "no price for model 'gpt-unheard-of'" in unknown.stderr and "ADDM_PRICES" in unknown.stderr
    missing = ws.run("extract", "--task", "G1a", "--dry-run", env=ws.env(ADDM_PRICES=str(ws.root / "nope.json")))
    assert missing.returncode == 2 and "nope.json (ADDM_PRICES): price file not found" in missing.stderr


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert demo.main(["--workspace", str(tmp_path)]) == 2
    assert "not made by the demo" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_gen_data_refuses_to_overwrite_a_file_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "data" / "tasks" / "yelp" / "G1a.json"
    task.parent.mkdir(parents=True)
    task.write_text('{"my": "own task"}')
    assert gen_data.main(["--root", str(tmp_path), "--restaurants", "3"]) == 2
    assert "--force" in capsys.readouterr().err
    assert task.read_text() == '{"my": "own task"}' and not (tmp_path / "data" / "context").exists()
    assert gen_data.main(["--root", str(tmp_path), "--restaurants", "3", "--force"]) == 0
    assert task.read_text() != '{"my": "own task"}'
    assert gen_data.main(["--root", str(tmp_path), "--restaurants", "3"]) == 0  # the same files again: no harm


def test_a_missing_dataset_says_what_a_dataset_is(ws: Workspace) -> None:
    result = ws.run("extract", "--task", "G1a", "--k", "50", "--dry-run")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "dataset not found: the restaurants and their reviews" in result.stderr
    assert "docs/formats.md" in result.stderr and "synthetic" in result.stderr


def test_a_submits_message_fits_80_columns_on_a_terminal_and_stays_one_line_in_a_pipe(ws: Workspace) -> None:
    argv = [sys.executable, "-m", MODULES["extract"], "--root", str(ws.root), "--task", "G1a", *submit_args(ws)]
    on_screen = _on_terminal(argv).strip("\n").splitlines()
    assert len(on_screen) > 1 and all(len(line) <= 80 for line in on_screen), on_screen
    (batch_id,) = ws.batches()
    assert any(batch_id in line for line in on_screen)  # an id is never cut
    again = ws.run("extract", "--task", "G1a", *submit_args(ws))  # the same job, said in a pipe: one line
    assert again.returncode == 0 and len(again.stdout.strip("\n").splitlines()) == 1, again.stdout
