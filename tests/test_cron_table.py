"""The crontab is the user's: every line the tool did not write stays byte for byte and in its place.

A corpus of awkward tables goes through installs and removals, in a tab file and through Debian's real
``crontab`` command on a throwaway user's table (never root's): the tool runs as that user in a forked child that
drops to the user's uid, so its ``crontab -l`` / ``crontab -`` edit that user's table. These tests need root and
the ``cron`` package; they skip elsewhere, but fail under CI (``CI=true``), where both are set up.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import KEY
from fake_openai import FakeOpenAI
from gen_data import generate

from addm_integration.schedule.cron import CronTable, render

CORPUS = (
    b"# my own jobs: keep these comments where they are\n"
    b"   # an indented comment\n"
    b"\n"
    b"MAILTO = me@example.org\n"
    b"PATH=/usr/local/bin:/usr/bin:/bin\n"
    b"NOTE = spaced   env\n"
    b" \t\n"
    b"@reboot\t/usr/bin/true   --twice\n"
    b"#30 5 * * * /bin/false\n"
    b"0 3 * * *\tdate +\\%Y-\\%m-\\%d >> /tmp/never 2>&1\n"
    b'15 */2 * * * echo "na\xc3\xafve caf\xc3\xa9 \xe2\x9c\x93" # a trailing comment\n'
    b"#*/5 * * * * true # ADDM_BATCH_batch_disabled_by_hand\n"
    b"\n"
    b"\n"
)
ROOT = Path("/nonexistent-workspace")


def _edits(table: CronTable) -> list[bytes]:
    """Install two entries, replace one, remove both: what the table reads after each step."""
    seen = []
    for step in (
        lambda: table.install("batch_one", "echo one 50%", ROOT),
        lambda: table.install("batch_two", "cd '/a b' && echo two", ROOT),
        lambda: table.install("batch_one", "echo one again", ROOT),
        lambda: table.remove("batch_one", ROOT),
        lambda: table.remove("batch_two", ROOT),
    ):
        step()
        seen.append(table._read())
    return seen


def _expected(start: bytes) -> list[bytes]:
    base = start if start.endswith(b"\n") or not start else start + b"\n"
    one, one_again = render("batch_one", "echo one 50%"), render("batch_one", "echo one again")
    two = render("batch_two", "cd '/a b' && echo two")
    return [
        base + f"{one}\n".encode(),
        base + f"{one}\n{two}\n".encode(),
        base + f"{one_again}\n{two}\n".encode(),  # replaced in its place
        base + f"{two}\n".encode(),
        base,
    ]


@pytest.mark.parametrize("ending", ["newline", "no-final-newline", "empty"])
def test_tab_file_edits_change_only_our_own_lines(tmp_path: Path, ending: str) -> None:
    start = {"newline": CORPUS, "no-final-newline": CORPUS.rstrip(b"\n"), "empty": b""}[ending]
    tab = tmp_path / "tab"
    tab.write_bytes(start)
    assert _edits(CronTable(tab)) == _expected(start)
    assert render("batch_one", "echo one 50%").endswith("echo one 50\\% # ADDM_BATCH_batch_one")  # cron's %


def test_the_crontab_lock_depends_on_neither_tmpdir_nor_the_current_directory(tmp_path: Path) -> None:
    code = "from addm_integration.schedule.cron import CronTable; print(CronTable()._lock().lock_file)"
    paths = set()
    for n, tmpdir in enumerate(("/tmp", str(tmp_path))):
        cwd = tmp_path / f"cwd{n}"
        cwd.mkdir()
        env = {**os.environ, "TMPDIR": tmpdir}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        paths.add(done.stdout.strip())
    assert len(paths) == 1, paths


# ---- the real crontab, on a throwaway user's table ----------------------------------------------------------


def _need_real_crontab() -> None:
    missing = [why for ok, why in ((os.geteuid() == 0, "root"), (shutil.which("crontab"), "crontab")) if not ok]
    missing += [] if shutil.which("useradd") else ["useradd"]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the real-crontab tests; missing: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    """A throwaway user (one per test worker) with an empty crontab, left without one afterwards."""
    _need_real_crontab()
    name = f"addm-cron-{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
    yield pwd.getpwnam(name)
    subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)


def as_user(pw: pwd.struct_passwd, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child running as ``pw``: its ``crontab`` calls edit that user's table only.

    A fork, not a new interpreter, so the user needs no access to this checkout; the result comes back as JSON.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.environ.update(HOME=pw.pw_dir, LOGNAME=pw.pw_name, USER=pw.pw_name)
            out = {"ok": fn(*args)}
        except BaseException:
            out = {"error": traceback.format_exc()}
        with os.fdopen(write, "wb") as f:
            f.write(orjson.dumps(out, default=lambda b: b.decode("latin-1")))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = orjson.loads(f.read() or b'{"error": "the child died"}')
    os.waitpid(pid, 0)
    assert "error" not in out, out["error"]
    return out["ok"]


def user_table(pw: pwd.struct_passwd) -> bytes:
    done = subprocess.run(["crontab", "-u", pw.pw_name, "-l"], capture_output=True)
    return done.stdout if done.returncode == 0 else b""


def set_user_table(pw: pwd.struct_passwd, data: bytes) -> None:
    subprocess.run(["crontab", "-u", pw.pw_name, "-"], input=data, check=True, capture_output=True)


def _edits_as_latin1() -> list[str]:
    return [b.decode("latin-1") for b in _edits(CronTable())]


def test_real_crontab_edits_change_only_our_own_lines(user: pwd.struct_passwd) -> None:
    roots_table = subprocess.run(["crontab", "-l"], capture_output=True).stdout
    set_user_table(user, CORPUS)
    assert user_table(user) == CORPUS
    seen = [s.encode("latin-1") for s in as_user(user, _edits_as_latin1)]
    assert seen == _expected(CORPUS)
    assert user_table(user) == CORPUS
    assert subprocess.run(["crontab", "-l"], capture_output=True).stdout == roots_table  # never touched


def _commands(argvs: list[tuple[str, list[str]]]) -> list[tuple[int, str]]:
    """Run commands of the tool in this process (the forked child): exit code and stdout of each."""
    from addm_integration import extract, ledger

    out = []
    for tool, argv in argvs:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = (extract.main if tool == "extract" else ledger.main)(argv)
        out.append((code, buffer.getvalue()))
    return out


def _warm_up(root: Path, server: FakeOpenAI) -> None:
    """The same commands once here, on a tab file, so that every module they load lazily is loaded before the
    fork: the throwaway user cannot read this interpreter's files."""
    generate(root, n_restaurants=1, seed=3)
    (root / ".env").write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
    (root / ".env").chmod(0o600)
    a = ["--root", str(root)]
    submit = [*a, "--task", "G1a", "--llm-mode", "24hrbatch", "--crontab-file", str(root / "tab")]
    assert _commands([("extract", submit)])[0][0] == 0
    (batch,) = server.batch_ids()
    server.set_batch_outcome(batch, "completed")
    checks = [[*a, "doctor", "--json"], [*a, "doctor", "--fix"], [*a, "cron", "--json"], [*a, "cron"]]
    _commands([("ledger", c) for c in checks] + [("extract", [*submit, "--batch-id", batch])])
    server.reset_stats()
    shutil.rmtree(root)


def test_two_workspaces_on_a_real_crontab_keep_to_their_own_entries(
    user: pwd.struct_passwd, server: FakeOpenAI
) -> None:
    base = Path(tempfile.mkdtemp(prefix="addm-cron-", dir="/tmp"))
    try:
        _warm_up(base / "warm-up", server)
        warm = set(server.batch_ids())
        base.chmod(0o755)
        roots = [base / "a", base / "b"]
        for root in roots:
            generate(root, n_restaurants=1, seed=3)
            (root / ".env").write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
            (root / ".env").chmod(0o600)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(base)], check=True)
        set_user_table(user, CORPUS)
        submit = ["--task", "G1a", "--llm-mode", "24hrbatch"]
        results = as_user(user, _commands, [("extract", ["--root", str(r), *submit]) for r in roots])
        assert [code for code, _ in results] == [0, 0]
        batch_a, batch_b = (b for b in server.batch_ids() if b not in warm)
        both = user_table(user)
        assert both.startswith(CORPUS) and batch_a.encode() in both and batch_b.encode() in both

        a = ["--root", str(roots[0])]
        checks = [(*a, "doctor", "--json"), (*a, "doctor", "--fix"), (*a, "cron", "--json")]
        (doctor, _), (fixed, _), (_, listed) = as_user(user, _commands, [("ledger", list(c)) for c in checks])
        assert (doctor, fixed) == (0, 0) and user_table(user) == both
        assert [e["batch_id"] for e in orjson.loads(listed)] == [batch_a]

        shutil.rmtree(roots[1])
        ((code, said),) = as_user(user, _commands, [("ledger", [*a, "doctor", "--fix", "--offline"])])
        assert code == 0 and f"fixed orphan-cron-entry: {batch_b}" in said
        assert user_table(user).startswith(CORPUS) and batch_b.encode() not in user_table(user)

        server.set_batch_outcome(batch_a, "completed")
        ((code, said),) = as_user(user, _commands, [("extract", [*a, *submit, "--batch-id", batch_a])])
        assert code == 0 and "completed" in said
        assert user_table(user) == CORPUS
    finally:
        shutil.rmtree(base, ignore_errors=True)
