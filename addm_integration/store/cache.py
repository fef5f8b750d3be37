"""The judgment cache, ``{task_id: {review_id: judgment}}``, merged into without being parsed.

A full multi-topic cache holds over a million judgments; parsing and re-serialising all of them on every apply
is what made upstream slow. The file is plain JSON (any reader loads it), written in a layout of one block per
task, and inside it lines that each hold a run of up to 10,000 entries (one JSON encoding of one merge's slice)::

    {
    "G1a":{
    "<review_id>":{...judgment...},"<review_id>":{...judgment...},...,
    "<review_id>":{...judgment...}
    }
    }

so that a merge is a streamed copy: blocks of other tasks are copied by the kernel, the merged task's lines are
copied (only a line holding a replaced entry is parsed and written again), and the new entries follow. Every merge
writes a temporary file, fsyncs it and renames it over the old one: a crash leaves the old cache or the new one,
never a truncated file. A merge into several tasks at once (topic mode's raw runs, votes and metadata) is one
such copy, so its blocks change together or not at all. A cache in any other layout (written by another tool) is
read in full once and rewritten in this one.

Which keys the cache holds is kept beside it, in ``.cache.json.keys``: one line per entry, ending with the stamp
(size, mtime, checksum of the tail) of the cache it describes. Checking 50,000 new keys against a million stored
ones then streams that short list instead of parsing every line of the cache; a list whose stamp does not match (a
crash between the two writes, an edit by another tool) is not trusted, and is rebuilt from the cache by the next
merge.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock

from addm_integration.errors import BadInput
from addm_integration.store.workspace import atomic_file
from ledger.log import bounded_lines

_OPEN = b"{\n"
_CLOSE = b"}\n"
_RUN = 10_000  # entries per line: one orjson call each, and a line stays a few MB to parse when one is replaced
_TAIL = 1 << 16  # bytes of the cache's end that its stamp checksums
_CHUNK = 8 << 20  # bytes read at a time when looking for a block
_HEAD = 4096  # bytes read for a block's opening line: its task id and the brace
FINGERPRINT = "_term_hash"  # in a judgment: the fingerprint of the task definition it answered
_MARK = b'"' + FINGERPRINT.encode() + b'":"'


def _runs(entries: Mapping[str, Any]) -> list[bytes | memoryview]:
    """The entries as lines of up to ``_RUN`` entries, each line one encoding of a dict without its braces.

    Pieces to write one after the other, not joined: the entries of a large merge are encoded once and copied
    no more.
    """
    if len(entries) <= _RUN:
        return [memoryview(orjson.dumps(entries if type(entries) is dict else dict(entries)))[1:-1]]
    items = iter(entries.items())
    parts: list[bytes | memoryview] = []
    for _ in range(0, len(entries), _RUN):
        parts += [b",\n", memoryview(orjson.dumps(dict(islice(items, _RUN))))[1:-1]]
    return parts[1:]


def _block(task: str, runs: list[bytes | memoryview]) -> list[bytes | memoryview]:
    return [orjson.dumps(task) + b":{\n", *runs, b"\n}"]


def _whole(blocks: Iterable[tuple[str, list[bytes | memoryview]]]) -> list[bytes | memoryview]:
    """A whole cache of these blocks (task, encoded entries), in pieces to write."""
    parts: list[bytes | memoryview] = []
    for task, runs in blocks:
        parts += [b",\n", *_block(task, runs)]
    return [_OPEN, *parts[1:], b"\n", _CLOSE]


def _encode(blocks: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, list[bytes | memoryview]], dict[str, bytes]]:
    """Each block's entries as lines to write, and its key lines for the key list."""
    runs = {task: _runs(entries) for task, entries in blocks.items()}
    return runs, {task: _key_lines(orjson.dumps(task), entries) for task, entries in blocks.items()}


def _run_entries(line: bytes) -> dict[str, Any]:
    """The entries of one line of a block."""
    return orjson.loads(b"{" + (line[:-2] if line.endswith(b",\n") else line[:-1]) + b"}")


def _key_lines(task: bytes, keys: Iterable[str]) -> bytes:
    """Lines ``<task>\t<key>\n`` of the key list, for many keys out of one JSON encoding.

    A JSON token never holds a raw tab or newline, so a line is unambiguous; and a quote inside a string is always
    escaped, so ``","`` in an encoded array of strings only ever separates two of them.
    """
    keys = list(keys)
    if not keys:
        return b""
    inner = orjson.dumps(keys)[2:-2]
    return task + b'\t"' + inner.replace(b'","', b'"\n' + task + b'\t"') + b'"\n'


@contextmanager
def _meanwhile(work: Callable[[], None]) -> Iterator[None]:
    """Run ``work`` in a thread while the block runs; its error, if any, is raised once both are done.

    For the copy of a large cache and its fsync, which run in the kernel without the interpreter's lock: the
    entries are encoded and their keys checked at the same time, instead of after.
    """
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


# copy_file_range refusing the pair of files (another file system, an old kernel, a FUSE mount): copy in Python.
_NO_RANGE_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF})


def _copy(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    """Copy bytes [start, end) of ``src`` to the end of ``dst``, inside the kernel where it can (Linux).

    Elsewhere (macOS has no ``copy_file_range``), or when the kernel refuses, the same bytes go through Python.
    """
    dst.flush()
    in_kernel = getattr(os, "copy_file_range", None)
    while start < end:
        copied = 0
        if in_kernel is not None:
            try:
                copied = in_kernel(src.fileno(), dst.fileno(), end - start, start)
            except OSError as exc:
                if exc.errno not in _NO_RANGE_COPY:
                    raise
            if not copied:
                in_kernel = None
                continue
        else:
            chunk = os.pread(src.fileno(), min(_CHUNK, end - start), start)
            if not chunk:
                raise OSError(errno.EIO, f"{src.name} ended while being copied")
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst.fileno(), view) :]
            copied = len(chunk)
        start += copied
    dst.seek(0, os.SEEK_END)


class JudgmentCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys_path = path.with_name(f".{path.name}.keys")
        self._seen: tuple[tuple[int, int, int], dict[str, tuple[int, int]] | None] | None = None

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

    def entries(self, task: str) -> Iterator[dict[str, Any]]:
        """The entries of ``task``, a line of up to 10,000 at a time: a pass over a large block in bounded memory."""
        located = self._locate(task)
        if located is None:
            stored = self.read().get(task, {})
            if stored:
                yield stored
            return
        if not located:
            return
        with open(self.path, "rb") as f:
            for line in bounded_lines(f, *located):
                yield _run_entries(line)

    def present(self, task: str, review_ids: Iterable[str], fingerprint: str | None = None) -> set[str]:
        """Which of ``review_ids`` have a judgment under ``task``, read off the keys alone in a streamed pass.

        With ``fingerprint``, a judgment that records another one (it answered another definition of the task) is
        not counted; one that records none (written before fingerprints were) is. Memory follows the question, not
        the cache: a million cached judgments are scanned, never held.
        """
        found = self._present(task, review_ids)
        return found - self._stale(task, found, fingerprint) if found and fingerprint is not None else found

    def _present(self, task: str, review_ids: Iterable[str]) -> set[str]:
        wanted = set(review_ids)
        if not wanted or not self.path.exists():
            return set()
        if self._keys_current():
            token = orjson.dumps(task)
            ordered = list(wanted)
            lines = dict(zip(_key_lines(token, ordered).splitlines(keepends=True), ordered, strict=True))
            with open(self.keys_path, "rb") as f:
                return {lines[line] for line in lines.keys() & f}
        located = self._locate(task)
        if located is None:
            stored = self.read().get(task, {})
            return {r for r in wanted if r in stored}
        if not located:
            return set()
        with open(self.path, "rb") as f:
            return wanted.intersection(_block_keys(f, *located))

    def _stale(self, task: str, keys: set[str], fingerprint: str) -> set[str]:
        """Those of ``keys`` whose judgment records a fingerprint other than ``fingerprint``.

        A line of entries all recording ``fingerprint`` (the usual case) is told by counting, without parsing it.
        """
        located = self._locate(task)
        if located is None:
            stored = self.read().get(task, {})
            return {k for k in keys if _recorded(stored.get(k)) not in (None, fingerprint)}
        if not located:
            return set()
        current = _MARK + fingerprint.encode() + b'"'
        stale: set[str] = set()
        with open(self.path, "rb") as f:
            for line in bounded_lines(f, *located):
                if line.count(_MARK) != line.count(current):
                    entries = _run_entries(line)
                    stale.update(k for k in keys & entries.keys() if _recorded(entries[k]) not in (None, fingerprint))
        return stale

    def _stamp(self) -> bytes:
        """Size, mtime and a checksum of the cache's tail: a copy that keeps them (a backup restored) keeps its list."""
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            tail = os.pread(f.fileno(), _TAIL, max(0, st.st_size - _TAIL))
        return b"#%d %d %08x\n" % (st.st_size, st.st_mtime_ns, zlib.crc32(tail))

    def _keys_current(self) -> bool:
        """Whether the key list describes the cache as it is now (its last line is the cache's stamp)."""
        try:
            stamp = self._stamp()
            with open(self.keys_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - len(stamp)))
                return f.read() == stamp
        except FileNotFoundError:
            return False

    def _locate(self, task: str) -> tuple[int, int] | tuple[()] | None:
        """(first entry byte, end of last entry line) of the task's block; () if absent; None if not our layout."""
        layout = self._layout()
        return None if layout is None else layout.get(task, ())

    def _layout(self) -> dict[str, tuple[int, int]] | None:
        """Every block's (first entry byte, end of last entry line), in file order; None if not our layout.

        One pass: a line of entries starts with a key's quote, so a newline followed by ``}`` only ever closes a
        block, and what follows it says whether another block does (``,``) or the file ends. Kept while the file
        is the same one (inode, size, mtime): a merge right after a read does not look again.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._seen is not None and self._seen[0] == seen:
            return self._seen[1]
        layout = self._scan_layout(st.st_size)
        self._seen = (seen, layout)
        return layout

    def _scan_layout(self, size: int) -> dict[str, tuple[int, int]] | None:
        if size == 0:
            return {}
        layout: dict[str, tuple[int, int]] = {}
        with open(self.path, "rb") as f:
            fd = f.fileno()
            if os.pread(fd, len(_OPEN), 0) != _OPEN or os.pread(fd, 3, size - 3) != b"\n" + _CLOSE:
                return None
            pos = len(_OPEN)
            while True:
                head = os.pread(fd, _HEAD, pos)
                line = head[: head.find(b"\n")]
                if b"\n" not in head or not line.startswith(b'"') or not line.endswith(b":{"):
                    return None
                try:
                    task = orjson.loads(line[:-2])
                except orjson.JSONDecodeError:
                    return None
                body = pos + len(line) + 1
                close = _find(fd, b"\n}", body - 1, size)
                if type(task) is not str or task in layout or close < 0:
                    return None
                layout[task] = (body, close + 1)
                if close + 2 + len(_CLOSE) + 1 == size:  # "\n}" and the file's closing "\n}\n"
                    return layout
                if os.pread(fd, 2, close + 2) != b",\n":
                    return None
                pos = close + 4

    def merge(self, task: str, entries: Mapping[str, Any]) -> None:
        """Store ``entries`` under ``task``, replacing entries of the same review, atomically."""
        self.merge_many({task: entries})

    def merge_many(self, blocks: Mapping[str, Mapping[str, Any]]) -> None:
        """Store each block's entries under its task, replacing entries of the same key, in one atomic rewrite.

        One rewrite, not one per block: the cost of a merge is the copy of the old cache, whatever the number of
        blocks; and a crash leaves every block as it was or every block merged, never some of them. Under a lock:
        two jobs (of different tasks, so not sharing a job lock) applying at the same time must not each rename
        their copy over the other's.
        """
        blocks = {task: entries for task, entries in blocks.items() if entries}
        if not blocks:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock", timeout=600):
            self._merge_locked(blocks)

    def _merge_locked(self, blocks: Mapping[str, Mapping[str, Any]]) -> None:
        first = not self.path.exists() or self.path.stat().st_size == 0
        listed = not first and self._keys_current()
        with atomic_file(self.path) as out:
            keys = self._splice(blocks, out, listed)
            if keys is None:
                out.seek(0)
                out.truncate()
                data = self.read()
                for task, entries in blocks.items():
                    data.setdefault(task, {}).update(entries)
                out.writelines(_whole((t, _runs(e)) for t, e in data.items() if e))
        if keys is not None and listed:
            self._list_keys(keys)
        elif keys is not None and first:
            self._write_keys(keys)
        else:
            self._write_keys(self._scan_keys())

    def _splice(self, blocks: Mapping[str, Mapping[str, Any]], out: BinaryIO, listed: bool) -> list[bytes] | None:
        """Write old cache + entries to ``out`` by streaming; the entries' key lines, or None when the old file is
        not in our layout.

        The old file is copied once, front to back: up to each merged block's end, where its new entries go (a
        line holding a replaced entry is written again without it), and new blocks before the closing brace. The
        copy up to the first of them, most of the file, runs in the kernel and goes to disk while the entries are
        encoded and their keys checked.
        """
        layout = self._layout()
        if layout is None:
            return None
        if not layout:
            runs, keys = _encode(blocks)
            out.writelines(_whole(runs.items()))
            return list(keys.values())
        size = self.path.stat().st_size
        present = sorted((layout[task], task) for task in blocks if task in layout)  # in file order
        with open(self.path, "rb") as old:
            pos = present[0][0][1] - 1 if present else size - len(_CLOSE) - 1

            def copy_prefix(upto: int = pos) -> None:
                _copy(old, out, 0, upto)  # the usual case, only new keys, keeps all of this
                os.fsync(out.fileno())

            with _meanwhile(copy_prefix):
                runs, keys = _encode(blocks)
                replacing = self._replacing(blocks, {t: keys[t] for _, t in present}, old, layout, listed)
            if present and present[0][1] in replacing:  # only old bytes written yet: offsets are the old file's
                body = present[0][0][0]
                out.truncate(body)
                out.seek(body)
                pos = body
            for (body, end), task in present:
                if task not in replacing:
                    _copy(old, out, pos, end - 1)
                    out.writelines([b",\n", *runs[task], b"\n"])
                else:
                    _copy(old, out, pos, body)
                    entries = blocks[task]
                    for line in bounded_lines(old, body, end):
                        run = _run_entries(line)
                        if entries.keys().isdisjoint(run):
                            out.write(line if line.endswith(b",\n") else line[:-1] + b",\n")
                        elif kept := {k: v for k, v in run.items() if k not in entries}:
                            out.write(orjson.dumps(kept)[1:-1] + b",\n")
                    out.writelines([*runs[task], b"\n"])
                pos = end
            added = [(task, runs[task]) for task in blocks if task not in layout]
            if added:  # new blocks go before the closing brace
                _copy(old, out, pos, size - len(_CLOSE) - 1)
                out.writelines([b",\n", *_whole(added)[1:]])
            else:
                _copy(old, out, pos, size)
        return list(keys.values())

    def _replacing(
        self,
        blocks: Mapping[str, Mapping[str, Any]],
        keys: Mapping[str, bytes],
        old: BinaryIO,
        layout: Mapping[str, tuple[int, int]],
        listed: bool,
    ) -> set[str]:
        """Those of the blocks already in the file (their key lines in ``keys``) that hold one of their new keys.

        One pass over the key list when it is current; over the blocks' keys in the cache itself when not.
        """
        if not keys:
            return set()
        if not listed:
            return {t for t in keys if not blocks[t].keys().isdisjoint(_block_keys(old, *layout[t]))}
        wanted: dict[bytes, str] = {}
        for task, lines in keys.items():
            wanted.update(dict.fromkeys(lines.splitlines(keepends=True), task))
        with open(self.keys_path, "rb") as f:
            return {wanted[line] for line in wanted.keys() & f}

    def _list_keys(self, keys: Iterable[bytes]) -> None:
        """Add the merged keys and the new cache's stamp to the key list (a crash midway leaves it stale, not wrong).

        No fsync: the list is trusted only when it ends with the cache's stamp, which one write puts after its keys.
        """
        with open(self.keys_path, "ab") as f:
            f.write(b"".join(keys) + self._stamp())

    def _write_keys(self, lines: Iterable[bytes]) -> None:
        with atomic_file(self.keys_path, durable=False) as out:
            out.writelines(lines)
            out.write(self._stamp())

    def _scan_keys(self) -> Iterator[bytes]:
        """Every key line of the cache, read from the file itself (tokens re-encoded, so that they compare)."""
        with open(self.path, "rb") as cache:
            task = b""
            for line in cache:
                if line.endswith(b":{\n"):  # a block's opening line (a line of entries ends with a value)
                    task = orjson.dumps(orjson.loads(line[:-3]))
                elif line.startswith(b'"'):
                    yield _key_lines(task, _run_entries(line))


def _find(fd: int, needle: bytes, start: int, end: int) -> int:
    """Offset of ``needle`` (a newline and what follows it) between ``start`` and ``end``; -1 if absent.

    Read a chunk at a time, so memory stays small. Lines of runs are long: finding their newlines (memchr) and
    comparing there is many times faster than a search for the whole needle, which wins only among short lines.
    """
    pos = start
    while pos < end:
        size = min(_CHUNK, end - pos)
        chunk = os.pread(fd, size + len(needle) - 1, pos)
        found = chunk.find(b"\n", 0, size)
        for _ in range(64):
            if found < 0 or chunk.startswith(needle, found):
                break
            found = chunk.find(b"\n", found + 1, size)
        else:  # short lines (a cache written one entry per line): one search for the whole needle
            found = chunk.find(needle, found, size + len(needle) - 1)
        if found >= 0:
            return pos + found
        pos += size
    return -1


def _block_keys(f: BinaryIO, start: int, end: int) -> Iterator[str]:
    """Every entry key of a block, one line of entries at a time."""
    for line in bounded_lines(f, start, end):
        yield from _run_entries(line)


def _recorded(judgment: Any) -> Any:
    return judgment.get(FINGERPRINT) if isinstance(judgment, dict) else None
