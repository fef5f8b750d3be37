"""Where every file of a workspace lives (docs/formats.md), and the one way results are written: atomically."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from ledger.log import fsync_dir

ROOT_ENV = "ADDM_ROOT"  # names the workspace root when --root is not given


@dataclass(frozen=True)
class Workspace:
    root: Path

    def dataset(self, domain: str, k: int) -> Path:
        return self.root / "data" / "context" / domain / f"dataset_K{k}.jsonl"

    def tasks_dir(self, domain: str) -> Path:
        return self.root / "data" / "tasks" / domain

    def task(self, domain: str, task_id: str) -> Path:
        return self.tasks_dir(domain) / f"{task_id}.json"

    def agenda(self, domain: str, policy_id: str, k: int) -> Path:
        return self.root / "data" / "query" / domain / f"{policy_id}_K{k}_prompt.txt"

    def policy(self, domain: str, policy_id: str) -> Path:
        return self.root / "data" / "query" / domain / f"{policy_id}.json"

    def cache(self, domain: str) -> Path:
        return self.root / "data" / "answers" / domain / "cache.json"

    def judgement_cache(self, domain: str) -> Path:
        return self.root / "data" / "answers" / domain / "judgement_cache.json"

    def ground_truth(self, domain: str, policy_id: str, k: int) -> Path:
        return self.root / "data" / "answers" / domain / f"{policy_id}_K{k}_groundtruth.json"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "data" / "ledger"

    @property
    def runs_dir(self) -> Path:
        """What a job keeps beside the ledger between its runs, one file of each kind per job, named for the job."""
        return self.ledger_dir / "runs"

    def snapshot(self, job_id: str) -> Path:
        """The inputs a job was submitted with, which its applies and its finalize use whatever the dataset became.

        Jobs submitted by earlier versions kept it under their pipeline's own name, which is found as well.
        """
        path = self.runs_dir / f"{job_id}.inputs.json"
        if not path.exists():
            for earlier in (f"{job_id}.reviews.json", f"{job_id}.baseline.json"):
                if (self.runs_dir / earlier).exists():
                    return self.runs_dir / earlier
        return path

    def rows(self, job_id: str) -> Path:
        """A run_baseline job's rows so far, one per restaurant, scored together when the job finalizes."""
        return self.runs_dir / f"{job_id}.rows.json"

    def votes(self, job_id: str) -> Path:
        """A topic job's running tally of the runs it stored."""
        return self.runs_dir / f"{job_id}.votes.json"

    def run_files(self) -> Iterator[tuple[str, Path]]:
        """(job id, path) of every file a job keeps here."""
        for path in sorted(self.runs_dir.glob("*.json")):
            yield path.name.split(".", 1)[0], path

    @property
    def staging_dir(self) -> Path:
        return self.ledger_dir / "staging"

    def batch_dir(self, batch_id: str) -> Path:
        return self.root / "data" / "batches" / batch_id

    @property
    def logs_dir(self) -> Path:
        return self.root / "data" / "logs"

    @property
    def env_file(self) -> Path:
        return self.root / ".env"


@contextmanager
def atomic_file(path: Path, *, durable: bool = True, scratch: Path | None = None) -> Iterator[BinaryIO]:
    """A file that replaces ``path`` once the block ends without error: a crash leaves the old file or the new one.

    The new file keeps the permission bits of the one it replaces (a cache shared at 0644 stays 0644); a file
    that did not exist gets what the umask gives any new file. ``durable=False`` skips the fsyncs, for a derived
    file that is checked before it is trusted (a power cut may lose it, never make it lie). ``scratch`` names the
    temporary file, for a caller that holds a lock on ``path`` and wants a crash's leftover found and reused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    tmp = scratch or path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    exclusive = os.O_EXCL if scratch is None else os.O_TRUNC
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | exclusive | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def place(source: Path, target: Path) -> None:
    """``target`` becomes a file with ``source``'s content, atomically: a hard link where the file system allows
    one (no second copy of a dataset or of a 200 MB batch input; ``source`` stays valid), else an atomic copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{secrets.token_hex(4)}.{target.name}")
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or links refused: the copy says what is really wrong, if anything
        with open(source, "rb") as src, atomic_file(target) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
