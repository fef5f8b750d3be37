"""The cron entries that poll running batches: one line per batch, ending in its ``# ADDM_BATCH_<id>`` marker.

The table is the user's. It is edited as bytes, line by line, and never parsed and rendered again as a whole:
every line the tool did not write (comments, blank lines, ``NAME = value``, tabs, ``@reboot``, disabled
entries, ``\\%``, any bytes, a missing final newline) stays byte for byte and in its place; an edit replaces,
appends or deletes exactly our own line. python-crontab is kept for that one line only: rendering it (cron's
``%`` escaping, a schedule it checks) and reading its command back. It never writes a table, because rendering a
whole table moves comments, collapses whitespace and drops lines it does not understand.

Each entry belongs to the workspace its command names with ``--root``: one workspace never edits the entry of
another that still exists. Every read-modify-write happens under one lock per table, so two jobs installing or
removing entries at the same time lose neither. A tab file is replaced atomically; the user's crontab is read and
written with the system's own ``crontab -l`` and ``crontab -``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crontab import CronItem, CronTab
from filelock import FileLock

from addm_integration.errors import BadInput, Transient
from addm_integration.store.workspace import Workspace, atomic_write

SCHEDULE = "*/5 * * * *"
MARKER_PREFIX = "ADDM_BATCH_"
_OURS = re.compile(rb"^(?![ \t]*#).*[ \t]# " + MARKER_PREFIX.encode() + rb"(\S+)[ \t]*$")


def marker(batch_id: str) -> str:
    return f"{MARKER_PREFIX}{batch_id}"


def fetch_command(root: Path, python: str, module: str, args: Sequence[str], batch_id: str, log: Path) -> str:
    """The shell line cron runs: from the root, the same pipeline and arguments plus ``--batch-id``, logged.

    The log folder is made first, so a deleted ``data/logs/`` never stops the fetch before the tool starts.
    Everything is shell-quoted here; cron's special ``%`` is escaped when the line is rendered.
    """
    argv = [python, "-m", module, *args, "--batch-id", batch_id]
    logs = shlex.quote(str(log.parent))
    return f"cd {shlex.quote(str(root))} && mkdir -p {logs} && {shlex.join(argv)} >> {shlex.quote(str(log))} 2>&1"


def render(batch_id: str, command: str) -> str:
    item = CronItem(command=command, comment=marker(batch_id))
    item.setall(SCHEDULE)
    return item.render()


def workspace_exists(root: Path) -> bool:
    """A folder with a ledger: an entry naming anything else belongs to a workspace that is gone."""
    return Workspace(root).ledger_dir.is_dir()


def same_place(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class Entry:
    """One of our lines: its batch, the line as it stands in the table, and the command ``/bin/sh`` gets."""

    batch_id: str
    line: str
    command: str

    @property
    def root(self) -> Path | None:
        """The workspace the entry belongs to: the ``--root`` of its command (or, failing that, its ``cd``)."""
        try:
            words = shlex.split(self.command)
        except ValueError:
            return None
        for flag in ("--root", "cd"):
            if flag in words[:-1]:
                return Path(words[words.index(flag) + 1])
        return None

    def owner(self, root: Path) -> str:
        """``ours`` (the workspace at ``root``), ``other`` (another that exists) or ``gone`` (no workspace there)."""
        where = self.root
        if where is None or not workspace_exists(where):
            return "gone"
        return "ours" if same_place(where, root) else "other"


def _entry(line: bytes) -> Entry | None:
    match = _OURS.match(line)
    if match is None:
        return None
    text = line.decode("utf-8", "surrogateescape")
    item = CronItem.from_line(text, cron=CronTab(tab=""))
    batch_id = match.group(1).decode("utf-8", "surrogateescape")
    return Entry(batch_id, text, item.command)


def _lines(data: bytes) -> list[bytes]:
    """The table's lines with their line ends: joined again they give back ``data`` exactly."""
    return re.findall(rb"[^\n]*\n|[^\n]+\Z", data)


def user_lock_path() -> Path:
    """The one lock of this user's crontab, wherever and however the command runs.

    It lives in the user's home as the password database names it (not ``$HOME``, ``TMPDIR`` or the current
    directory, which an interactive shell and cron set differently), so a submit from a terminal and a cron run
    always meet on the same file. Where that home cannot hold it (a service account without one), a fixed path in
    ``/tmp`` named by the uid.
    """
    import pwd

    uid = os.getuid()
    folder = Path(pwd.getpwuid(uid).pw_dir) / ".cache" / "addm-batch"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder / "crontab.lock"
    except OSError:
        pass
    return Path("/tmp") / f"addm-crontab-{uid}.lock"


@dataclass(frozen=True)
class CronTable:
    """A tab file (tests, rehearsals, ``--crontab-file``) or, with ``tabfile=None``, the user's crontab."""

    tabfile: Path | None = None

    def available(self) -> bool:
        return self.tabfile is not None or shutil.which("crontab") is not None

    def check_available(self) -> None:
        """Refuse early (before anything is uploaded) when the user's crontab cannot be edited."""
        if not self.available():
            raise BadInput(
                "no crontab command on this system (cron is not installed); use --crontab-file F, "
                "--no-cron (then poll with --batch-id), or --wait"
            )

    def _lock(self) -> FileLock:
        path = Path(str(self.tabfile) + ".lock") if self.tabfile is not None else user_lock_path()
        return FileLock(str(path), timeout=60)

    def _read(self) -> bytes:
        if self.tabfile is not None:
            return self.tabfile.read_bytes() if self.tabfile.exists() else b""
        done = subprocess.run(["crontab", "-l"], capture_output=True, timeout=60)
        if done.returncode != 0:
            if b"no crontab for" in done.stderr:
                return b""
            raise Transient(f"crontab -l failed: {_said(done.stderr)}; the next run retries")
        return done.stdout

    def _write(self, data: bytes) -> None:
        if self.tabfile is not None:
            atomic_write(self.tabfile, data)
            return
        done = subprocess.run(["crontab", "-"], input=data, capture_output=True, timeout=60)
        if done.returncode != 0:
            raise Transient(f"crontab - refused the new table: {_said(done.stderr)}; the next run retries")

    def _edit(self, batch_id: str, root: Path, new: str | None) -> bool:
        """Replace our line of ``batch_id`` in place (or append it), or delete it with ``new=None``.

        Only lines of ``root``'s workspace, or of a workspace that is gone, are ours to change. True when the
        table changed.
        """
        with self._lock():
            data = self._read()
            lines = _lines(data)
            out: list[bytes] = []
            line = None if new is None else new.encode("utf-8", "surrogateescape") + b"\n"
            for raw in lines:
                entry = _entry(raw.rstrip(b"\r\n"))
                if entry is None or entry.batch_id != batch_id or entry.owner(root) == "other":
                    out.append(raw)
                elif line is not None:
                    out.append(line)
                    line = None
            if line is not None:
                if out and not out[-1].endswith(b"\n"):
                    out[-1] += b"\n"  # cron needs every line ended; the last one had no newline
                out.append(line)
            changed = b"".join(out)
            if changed == data:
                return False
            self._write(changed)
            return True

    def install(self, batch_id: str, command: str, root: Path) -> None:
        self._edit(batch_id, root, render(batch_id, command))

    def remove(self, batch_id: str, root: Path) -> bool:
        return self._edit(batch_id, root, None)

    def command(self, batch_id: str, root: Path) -> str | None:
        """The command of a batch's entry of this workspace as cron hands it to ``/bin/sh``."""
        for entry in self.entries():
            if entry.batch_id == batch_id and entry.owner(root) != "other":
                return entry.command
        return None

    def entries(self) -> list[Entry]:
        """Every ADDM entry of the table, whichever workspace it belongs to."""
        found = (_entry(raw.rstrip(b"\r\n")) for raw in _lines(self._read()))
        return [entry for entry in found if entry is not None]


def _said(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace").strip().replace("\n", " ") or "no message"


def cron_supported() -> bool:
    return not sys.platform.startswith("win")
