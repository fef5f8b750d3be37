"""The append-only event log: one JSON record per line, checksummed, appended under a lock and fsynced.

A line is ``{"seq": n, "ts": "...Z", "step": [i, m], "type": "...", "v": 1, "data": {...}, "crc": "8 hex"}``
where ``crc`` is the CRC-32 of the line's own bytes up to the ``,"crc"`` that closes it, and ``step`` says the
record is the i-th of the m records one append wrote. The checksum is over the bytes as written, so checking it
needs no re-encoding and a person can still read the file with ``jq``.

A step is visible whole or not at all. A crash (or a short write) can keep a prefix of a step's bytes: whole
records and a torn one. Readers read up to the size they saw when they started and fold only complete steps;
an unfinished tail is a write in progress, or (when no writer holds the lock) a torn step, which they warn about.
The next writer moves a torn step to ``events.jsonl.broken`` and cuts it off before appending, so no complete
step is ever lost and no part of a torn one is ever folded. A bad record anywhere else is corruption: reading
stops with the file, line and sequence number. Records without ``step`` (older ledgers) are steps of one.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
from filelock import FileLock, Timeout

from ledger.events import Event, SchemaError, from_payload, to_payload

LOG_NAME = "events.jsonl"
_CRC_SUFFIX_LEN = len(b',"crc":"00000000"}')


class LedgerCorrupt(Exception):
    """A record other than the last one is unreadable: the ledger cannot be trusted past it."""

    def __init__(self, path: Path, line: int, seq: int | None, why: str) -> None:
        where = f"{path}: line {line}" + (f" (seq {seq})" if seq is not None else "")
        super().__init__(f"{where}: {why}")
        self.path, self.line, self.seq, self.why = path, line, seq, why


class LedgerBusy(Exception):
    """Another process held the ledger lock for longer than we are willing to wait."""


class LedgerWriteFailed(Exception):
    """An append failed (disk full, I/O error); the log was cut back to where it was, nothing of the step kept."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"{path}: could not append ({exc.strerror or exc}); nothing of this step was recorded")
        self.path, self.errno = path, exc.errno


@dataclass(frozen=True)
class Record:
    seq: int
    ts: datetime
    event: Event


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    """The inverse of ``format_ts`` (fromisoformat: strptime was the largest cost of reading a record)."""
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None or len(text) != 27:
        raise ValueError(f"not a UTC timestamp with microseconds: {text!r}")
    return ts


Step = tuple[int, int]  # (position of the record in its append, 1-based; number of records of that append)
_WHOLE: Step = (1, 1)


def encode_record(seq: int, ts: datetime, event: Event, step: Step = _WHOLE) -> bytes:
    type_name, version, data = to_payload(event)
    body = orjson.dumps({"seq": seq, "ts": format_ts(ts), "step": step, "type": type_name, "v": version, "data": data})
    head = body[:-1]
    return head + b',"crc":"%08x"}\n' % zlib.crc32(head)


_LARGE = 1 << 16
_BAD = (ValueError, orjson.JSONDecodeError, KeyError, TypeError)  # what a torn or damaged line raises


def decode_line(line: bytes) -> Record:
    """Parse one line (without its newline); raises ValueError or SchemaError saying what is wrong."""
    return decode_framed(line)[0]


def decode_framed(line: bytes) -> tuple[Record, Step]:
    """The record of one line and its place in its step."""
    return _decode_large(line) if len(line) > _LARGE else _decode(line)


@functools.lru_cache(maxsize=4)
def _decode_large(line: bytes) -> tuple[Record, Step]:
    """One run reads the same large record (a batch's 50,000 applied ids) several times: decode it once.

    Keyed by the line's bytes, so a hit is the same record byte for byte; records are immutable, so sharing is safe.
    """
    return _decode(line)


Buffer = bytes | mmap.mmap
Cut = Callable[[Buffer, int, int], bytes]  # (buffer, start, end of the checked head) -> the bytes to parse


def _decode(line: Buffer, start: int = 0, end: int | None = None, cut: Cut | None = None) -> tuple[Record, Step]:
    """The record in ``line[start:end]`` (a newline at its end ignored), read without copying it whole.

    ``cut`` takes out of the checked bytes what the caller does not need before they are parsed.
    """
    end = len(line) if end is None else end
    if line[end - 1 : end] == b"\n":
        end -= 1
    if end - start <= _CRC_SUFFIX_LEN or line[end - 2 : end] != b'"}':
        raise ValueError("not a complete record")
    head_end = end - _CRC_SUFFIX_LEN
    suffix = line[head_end:end]
    if not suffix.startswith(b',"crc":"'):
        raise ValueError("no checksum")
    try:
        crc = int(suffix[8:16], 16)
    except ValueError:
        raise ValueError("malformed checksum") from None
    if cut is None:
        head = line[start:head_end]
        if zlib.crc32(head) != crc:
            raise ValueError("checksum mismatch")
    else:
        with memoryview(line) as view:  # a multi-megabyte record in a mapping: checked in place, not copied
            if zlib.crc32(view[start:head_end]) != crc:
                raise ValueError("checksum mismatch")
        head = cut(line, start, head_end)
    obj = orjson.loads(head + b"}")
    record = Record(obj["seq"], parse_ts(obj["ts"]), from_payload(obj["type"], obj["v"], obj["data"]))
    step = obj.get("step", [1, 1])
    if type(step) is not list or len(step) != 2 or not all(type(n) is int for n in step) or not 1 <= step[0] <= step[1]:
        raise SchemaError(f"malformed step framing {step!r}")
    return record, (step[0], step[1])


class Ledger:
    """The log of one workspace. Appends are atomic per call; reads see every complete record."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = utcnow, lock_timeout: float = 60):
        self.dir = Path(directory)
        self.path = self.dir / LOG_NAME
        self.clock = clock
        self._lock = FileLock(str(self.dir / "ledger.lock"), timeout=lock_timeout)

    # -- writing -------------------------------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[Record]:
        """Append all events of one step in one write and one fsync, or none of them."""
        if not events:
            return []
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                return self._append_locked(events)
        except Timeout:
            raise LedgerBusy(f"{self.path}: another process holds the ledger lock") from None

    def repair(self) -> None:
        """Set a torn final step aside now, under the lock, without appending anything."""
        if not self.path.exists():
            return
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                self._repair_tail(fd)
            finally:
                os.close(fd)

    def _append_locked(self, events: Sequence[Event]) -> list[Record]:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            last_seq = self._repair_tail(fd)
            start = os.fstat(fd).st_size
            ts = self.clock()
            records = [Record(last_seq + i + 1, ts, e) for i, e in enumerate(events)]
            m = len(records)
            data = b"".join(encode_record(r.seq, r.ts, r.event, (i, m)) for i, r in enumerate(records, 1))
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                _cut_back(fd, start)
                raise LedgerWriteFailed(self.path, exc) from None
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)
        return records

    def _repair_tail(self, fd: int) -> int:
        """Return the last good sequence number, moving a torn final step aside first.

        Torn: bytes after the last newline, a last line that does not decode, and the records of a step whose last
        record never made it (a crash or a failed write kept only its prefix).
        """
        size = os.fstat(fd).st_size
        end = _after_last_newline(fd, size)
        cut = end if end < size else None
        last_seq = 0
        while end > 0:
            start, line = _line_before(fd, end)
            try:
                record, (i, m) = decode_framed(line)
            except (SchemaError, *_BAD):
                cut = end = start
                continue
            if i == m:
                last_seq = record.seq
                break
            for _ in range(i - 1):  # back to the step's first record
                start, _ = _line_before(fd, start)
            cut = end = start
        if cut is not None:
            torn = os.pread(fd, size - cut, cut)
            with open(str(self.path) + ".broken", "ab") as broken:
                broken.write(torn if torn.endswith(b"\n") else torn + b"\n")
                broken.flush()
                os.fsync(broken.fileno())
            os.ftruncate(fd, cut)
            os.fsync(fd)
            print(
                f"warning: {self.path}: moved a torn final step ({len(torn)} bytes) to {self.path}.broken",
                file=sys.stderr,
            )
        return last_seq

    # -- reading -------------------------------------------------------------------------------------------

    def records(self, *, start: int = 0, on_torn: Callable[[str], None] | None = None) -> Iterator[Record]:
        """Every record of a complete step from byte offset ``start``; a torn final step is skipped and reported."""
        return (record for record, _, _ in self.scan(start=start, on_torn=on_torn))

    def scan(
        self, *, start: int = 0, on_torn: Callable[[str], None] | None = None
    ) -> Iterator[tuple[Record, int, int]]:
        """(record, byte offset, length with newline) of every record of a complete step from ``start`` on.

        Reads up to the size the file had when the scan began: what is appended meanwhile is for the next read.
        """
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            yield from self._parse(f, start, end, on_torn or _warn)

    def read_at(self, offset: int, length: int, *, cut: Cut | None = None) -> Record:
        """One record by its position (from an index); its checksum is checked like any other read.

        ``cut`` narrows the checked bytes before they are parsed (see ``_decode``): the record is then read from
        a mapping of the file, so a multi-megabyte record is checked without a copy of it.
        """
        with open(self.path, "rb") as f:
            try:
                if cut is not None:
                    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                        return _decode(mapped, offset, offset + length, cut)[0]
                raw = os.pread(f.fileno(), length, offset)
                return decode_line(raw.rstrip(b"\n"))
            except (SchemaError, *_BAD) as exc:
                line = _line_number(f, offset)  # counted only now: a failure may cost a pass over the file
                raise LedgerCorrupt(self.path, line, _guess_seq(os.pread(f.fileno(), 40, offset)), str(exc)) from None

    def line_of(self, seq: int) -> int:
        """The line number of record ``seq``, for a message: one pass over the file, paid only on a failure."""
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if _guess_seq(raw[:40]) == seq:
                    return number
        return 0

    def verify(self) -> tuple[int, str | None]:
        """Count the sound records; return (count, warning about a torn tail or None). Raises LedgerCorrupt."""
        torn: list[str] = []
        count = sum(1 for _ in self.records(on_torn=torn.append))
        return count, (torn[0] if torn else None)

    def _parse(
        self, f: BinaryIO, start: int, end: int, on_torn: Callable[[str], None]
    ) -> Iterator[tuple[Record, int, int]]:
        """Records of complete steps in [start, end); line numbers in messages count from the file's start."""
        bad: tuple[int, bytes, Exception] | None = None  # a bad line: a torn tail if nothing follows it
        step: list[tuple[Record, int, int]] = []  # the step being read, yielded once its last record is read
        prev_seq = 0
        offset = start

        def corrupt(at: int, raw: bytes, why: str, seq: int | None = None) -> LedgerCorrupt:
            line = _line_number(f, at)
            return LedgerCorrupt(self.path, line, seq if seq is not None else _guess_seq(raw), why)

        for raw in bounded_lines(f, start, end):
            if bad is not None:  # a bad record followed by more lines: that is corruption, not a tear
                raise corrupt(bad[0], bad[1], str(bad[2]))
            if not raw.endswith(b"\n"):
                bad = (offset, raw, ValueError("no newline"))
                continue
            try:
                record, (i, m) = decode_framed(raw[:-1])
            except SchemaError as exc:
                raise corrupt(offset, raw, str(exc)) from None
            except _BAD as exc:
                bad = (offset, raw, exc)
                continue
            if prev_seq and record.seq != prev_seq + 1:
                raise corrupt(offset, raw, f"sequence jumps from {prev_seq} to {record.seq}", record.seq)
            prev_seq = record.seq
            if i == 1:
                step = []  # a step left unfinished before this one (an older writer appended after it) is ignored
            elif len(step) != i - 1 or (step and m != step[0][2]):
                raise corrupt(offset, raw, f"record {i} of a {m}-record step out of place", record.seq)
            step.append((record, offset, m))
            offset += len(raw)
            if i == m:
                ends = [r[1] for r in step[1:]] + [offset]
                yield from ((r, at, nxt - at) for (r, at, _), nxt in zip(step, ends, strict=True))
                step = []
        if (bad is not None or step) and on_torn is not ignore_torn and self._torn(end):
            at = step[0][1] if step else bad[0]  # type: ignore[index]
            why = f"torn final record ({bad[2]})" if bad is not None and not step else "torn final step"
            on_torn(f"{self.path}: line {_line_number(f, at)}: {why}; it is set aside at the next write")

    def _torn(self, end: int) -> bool:
        """Whether an unfinished tail at ``end`` was left by a crash, not by a write still in progress.

        Under the lock no writer is active: a log that has not grown since the read began holds a torn step.
        """
        try:
            with self._lock.acquire(timeout=self._lock.timeout):
                return self.path.stat().st_size == end
        except (Timeout, OSError):
            return False  # held all that time (a writer at work) or not lockable here: not ours to call torn


def _line_number(f: BinaryIO, offset: int) -> int:
    f.seek(0)
    newlines = 0
    while offset > 0:
        chunk = f.read(min(1 << 20, offset))
        if not chunk:
            break
        newlines += chunk.count(b"\n")
        offset -= len(chunk)
    return newlines + 1


def ignore_torn(message: str) -> None:
    """For a reader that has no use for the warning (the index): it also spares the look at the lock."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _guess_seq(raw: bytes) -> int | None:
    try:
        return int(orjson.loads(raw).get("seq"))
    except Exception:
        head = raw[:40]
        if head.startswith(b'{"seq":'):
            digits = head[7:].split(b",", 1)[0]
            if digits.isdigit():
                return int(digits)
        return None


def bounded_lines(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The lines between two offsets, read no further than ``end`` whatever is appended meanwhile."""
    f.seek(start)
    remaining = end - start
    while remaining > 0:
        line = f.readline(remaining)
        if not line:
            return
        remaining -= len(line)
        yield line


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just past the file's last newline (0 when it has none)."""
    pos, chunk = size, 1 << 16
    while pos > 0:
        read = min(chunk, pos)
        pos -= read
        idx = os.pread(fd, read, pos).rfind(b"\n")
        if idx >= 0:
            return pos + idx + 1
        chunk *= 2
    return 0


def _line_before(fd: int, end: int) -> tuple[int, bytes]:
    """(offset, bytes without the newline) of the line whose newline is the byte before ``end``."""
    pos, chunk = end - 1, 1 << 16
    buf = b""
    while pos > 0:
        read = min(chunk, pos)
        pos -= read
        buf = os.pread(fd, read, pos) + buf
        idx = buf.rfind(b"\n")
        if idx >= 0:
            return pos + idx + 1, buf[idx + 1 :]
        chunk *= 2
    return 0, buf


def _cut_back(fd: int, size: int) -> None:
    """Undo a failed append; if even that fails, the step framing lets the next writer cut the prefix."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def fsync_dir(directory: Path) -> None:
    """Make a file's creation or rename in ``directory`` durable, not only its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
