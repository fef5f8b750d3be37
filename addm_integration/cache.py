"""The judgment cache, ``{task_id: {review_id: judgment}}``, merged into without being parsed.

A full multi-topic cache holds over a million judgments; parsing and re-serialising all of them on every apply
is what made upstream slow. The file is plain JSON (any reader loads it), written in a layout of one entry per
line inside one block per task::

    {
    "G1a":{
    "<review_id>":{...judgment...},
    "<review_id>":{...judgment...}
    }
    }

so that a merge is a streamed copy: blocks of other tasks are copied by the kernel, the merged task's lines are
copied except those being replaced, and the new entries follow. Every merge writes a temporary file, fsyncs it and
renames it over the old one: a crash leaves the old cache or the new one, never a truncated file. A cache in any
other layout (written by another tool) is read in full once and rewritten in this one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock

from addm_integration.errors import BadInput
from ledger.log import fsync_dir

_OPEN = b"{\n"
_CLOSE = b"}\n"
_CHUNK = 1 << 20


def _entry(key: str, value: Any) -> bytes:
    return orjson.dumps(key) + b":" + orjson.dumps(value)


def _block(task: str, entries: Mapping[str, Any]) -> bytes:
    body = b",\n".join(_entry(k, v) for k, v in entries.items())
    return orjson.dumps(task) + b":{\n" + body + b"\n}"


def _lines(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    f.seek(start)
    remaining = end - start
    while remaining > 0:
        line = f.readline(remaining)
        if not line:
            return
        remaining -= len(line)
        yield line


def _copy(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    """Copy bytes [start, end) of ``src`` to the end of ``dst`` inside the kernel (no pass through Python)."""
    dst.flush()
    while start < end:
        start += os.copy_file_range(src.fileno(), dst.fileno(), end - start, start)
    dst.seek(0, os.SEEK_END)


class JudgmentCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = orjson.loads(self.path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"{self.path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise BadInput(f"{self.path}: expected a JSON object of task -> review_id -> judgment")
        return data

    def present(self, task: str, review_ids: Iterable[str]) -> set[str]:
        """Which of ``review_ids`` have a judgment under ``task``, read off the keys alone in a streamed pass.

        Memory follows the question, not the cache: a million cached judgments are scanned, never held.
        """
        wanted = {_token(r): r for r in review_ids}
        located = self._locate(task)
        if located is None:
            stored = self.read().get(task, {})
            return {r for r in wanted.values() if r in stored}
        if not located or not wanted:
            return set()
        with open(self.path, "rb") as f:
            return {wanted[k] for k in _block_keys(f, *located) if k in wanted}

    def _locate(self, task: str) -> tuple[int, int] | tuple[()] | None:
        """(first entry byte, end of last entry line) of the task's block; () if absent; None if not our layout."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size == 0:
            return ()
        with open(self.path, "rb") as f:
            head = f.read(len(_OPEN))
            f.seek(size - 3)
            if head != _OPEN or f.read(3) != b"\n" + _CLOSE:
                return None
            header = b"\n" + orjson.dumps(task) + b":{\n"
            start = _find(f, header, 1, size)
            if start < 0:
                return ()
            body = start + len(header)
            return body, _find(f, b"\n}", body - 1, size) + 1

    def merge(self, task: str, entries: Mapping[str, Any]) -> None:
        """Store ``entries`` under ``task``, replacing entries of the same review, atomically.

        Under a lock: two jobs (of different tasks, so not sharing a job lock) applying at the same time must not
        each rename their copy over the other's.
        """
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock", timeout=600):
            self._merge_locked(task, entries)

    def _merge_locked(self, task: str, entries: Mapping[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                if self._splice(task, entries, out) is False:
                    out.seek(0)
                    out.truncate()
                    data = self.read()
                    data.setdefault(task, {}).update(entries)
                    out.write(_OPEN + b",\n".join(_block(t, e) for t, e in data.items() if e) + b"\n" + _CLOSE)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)

    def _splice(self, task: str, entries: Mapping[str, Any], out: BinaryIO) -> bool:
        """Write old cache + entries to ``out`` by streaming; False when the old file is not in our layout."""
        located = self._locate(task)
        if located is None:
            return False
        size = self.path.stat().st_size if self.path.exists() else 0
        new = b",\n".join(_entry(k, v) for k, v in entries.items())
        if size == 0:
            out.write(_OPEN + _block(task, entries) + b"\n" + _CLOSE)
            return True
        with open(self.path, "rb") as old:
            if not located:  # a new task: its block goes before the closing brace
                _copy(old, out, 0, size - 3)
                out.write(b",\n" + _block(task, entries) + b"\n" + _CLOSE)
                return True
            body, end = located
            replaced = {_token(k) for k in entries}
            if replaced.isdisjoint(_block_keys(old, body, end)):  # the usual case: only new reviews
                _copy(old, out, 0, end - 1)
                out.write(b",\n" + new + b"\n")
            else:
                _copy(old, out, 0, body)
                sep = b""
                for line in _lines(old, body, end):
                    entry = line[:-2] if line.endswith(b",\n") else line[:-1]
                    if _key(entry) not in replaced:
                        out.write(sep + entry)
                        sep = b",\n"
                out.write(sep + new + b"\n")
            _copy(old, out, end, size)
        return True


_PLAIN_KEY = re.compile(rb'\n("[^"\n\\]*":)')
_KEY = re.compile(rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*":')


def _token(key: str) -> bytes:
    """A key as it opens its entry line, quotes and colon included.

    The concatenation also gives an exact-size object: orjson's own result keeps a spare buffer of kilobytes,
    which for a set of 60,000 keys is hundreds of megabytes.
    """
    return orjson.dumps(key) + b":"


def _block_keys(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """Every entry key of a block as its token (quotes and colon included), a chunk of whole lines at a time."""
    f.seek(start)
    pos = start
    while pos < end:
        chunk = f.read(min(_CHUNK, end - pos))
        if pos + len(chunk) < end:
            chunk = chunk[: chunk.rfind(b"\n") + 1] or chunk + f.readline()
        f.seek(pos + len(chunk))
        pos += len(chunk)
        found = _PLAIN_KEY.findall(b"\n" + chunk)
        if len(found) == chunk.count(b"\n"):  # every key plain (no backslash): the regular expression saw them all
            yield from found
        else:
            yield from (_key(line) for line in chunk.split(b"\n") if line)


def _key(line: bytes) -> bytes:
    """The key of an entry line as its JSON token, quotes and colon included."""
    end = line.find(b'":', 1)
    if line[end - 1 : end] == b"\\":  # an escaped quote inside the key: take the exact token
        return _KEY.match(line).group(0)  # type: ignore[union-attr]
    return line[: end + 2]


def _find(f: BinaryIO, needle: bytes, start: int, end: int) -> int:
    """Offset of ``needle`` in ``f`` between ``start`` and ``end``, reading a chunk at a time; -1 if absent."""
    pos = start
    while pos < end:
        f.seek(pos)
        chunk = f.read(min(_CHUNK + len(needle), end - pos))
        found = chunk.find(needle)
        if found >= 0:
            return pos + found
        if len(chunk) < len(needle):
            return -1
        pos += len(chunk) - len(needle) + 1
    return -1
