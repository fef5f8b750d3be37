"""The append-only event log: one JSON record per line, checksummed, appended under a lock and fsynced.

A line is ``{"seq": n, "ts": "...Z", "type": "...", "v": 1, "data": {...}, "crc": "8 hex"}`` where ``crc`` is the
CRC-32 of the line's own bytes up to the ``,"crc"`` that closes it. The checksum is over the bytes as written,
so checking it needs no re-encoding and a person can still read the file with ``jq``.

A crash mid-append can leave only the last line incomplete (one ``write`` per step, the lock serialising
writers). Readers treat such a torn final record as absent and warn; the next writer moves it to
``events.jsonl.broken`` and cuts it off before appending, so no complete record is ever lost and no torn one is
ever folded. A bad record anywhere else is corruption: reading stops with the file, line and sequence number.
"""

from __future__ import annotations

import functools
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def encode_record(seq: int, ts: datetime, event: Event) -> bytes:
    type_name, version, data = to_payload(event)
    body = orjson.dumps({"seq": seq, "ts": format_ts(ts), "type": type_name, "v": version, "data": data})
    head = body[:-1]
    return head + b',"crc":"%08x"}\n' % zlib.crc32(head)


_LARGE = 1 << 16


def decode_line(line: bytes) -> Record:
    """Parse one line (without its newline); raises ValueError or SchemaError saying what is wrong."""
    return _decode_large(line) if len(line) > _LARGE else _decode(line)


@functools.lru_cache(maxsize=4)
def _decode_large(line: bytes) -> Record:
    """One run reads the same large record (a batch's 50,000 applied ids) several times: decode it once.

    Keyed by the line's bytes, so a hit is the same record byte for byte; records are immutable, so sharing is safe.
    """
    return _decode(line)


def _decode(line: bytes) -> Record:
    if len(line) <= _CRC_SUFFIX_LEN or not line.endswith(b'"}'):
        raise ValueError("not a complete record")
    head, suffix = line[:-_CRC_SUFFIX_LEN], line[-_CRC_SUFFIX_LEN:]
    if not suffix.startswith(b',"crc":"'):
        raise ValueError("no checksum")
    try:
        crc = int(suffix[8:16], 16)
    except ValueError:
        raise ValueError("malformed checksum") from None
    if zlib.crc32(head) != crc:
        raise ValueError("checksum mismatch")
    obj = orjson.loads(head + b"}")
    return Record(obj["seq"], parse_ts(obj["ts"]), from_payload(obj["type"], obj["v"], obj["data"]))


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
        """Set a torn final record aside now, under the lock, without appending anything."""
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
            ts = self.clock()
            records = [Record(last_seq + i + 1, ts, e) for i, e in enumerate(events)]
            data = b"".join(encode_record(r.seq, r.ts, r.event) for r in records)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)
        return records

    def _repair_tail(self, fd: int) -> int:
        """Return the last good sequence number, moving a torn final record aside first."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        end, last = _last_line(fd, size)
        torn_from = None
        if end < size:  # bytes after the final newline: an interrupted write
            torn_from = end
        if last is not None:
            try:
                record = decode_line(last)
            except (ValueError, SchemaError, orjson.JSONDecodeError, KeyError, TypeError):
                torn_from = end - len(last) - 1
                record = None
        else:
            record = None
        if torn_from is not None:
            torn = os.pread(fd, size - torn_from, torn_from)
            with open(str(self.path) + ".broken", "ab") as broken:
                broken.write(torn if torn.endswith(b"\n") else torn + b"\n")
                broken.flush()
                os.fsync(broken.fileno())
            os.ftruncate(fd, torn_from)
            os.fsync(fd)
            print(
                f"warning: {self.path}: moved a torn final record ({len(torn)} bytes) to {self.path}.broken",
                file=sys.stderr,
            )
            if record is None:
                return self._repair_tail(fd)
        return record.seq if record is not None else 0

    # -- reading -------------------------------------------------------------------------------------------

    def records(self, *, start: int = 0, on_torn: Callable[[str], None] | None = None) -> Iterator[Record]:
        """Every complete record from byte offset ``start``; a torn final record is skipped and reported."""
        return (record for record, _, _ in self.scan(start=start, on_torn=on_torn))

    def scan(
        self, *, start: int = 0, on_torn: Callable[[str], None] | None = None
    ) -> Iterator[tuple[Record, int, int]]:
        """(record, byte offset, length with newline) of every complete record from ``start`` on."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(start)
            yield from self._parse(f, start, on_torn or _warn)

    def read_at(self, offset: int, length: int) -> Record:
        """One record by its position (from an index); its checksum is checked like any other read."""
        with open(self.path, "rb") as f:
            raw = os.pread(f.fileno(), length, offset)
            try:
                return decode_line(raw.rstrip(b"\n"))
            except (ValueError, SchemaError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                line = _line_number(f, offset)  # counted only now: a failure may cost a pass over the file
                raise LedgerCorrupt(self.path, line, _guess_seq(raw), str(exc)) from None

    def verify(self) -> tuple[int, str | None]:
        """Count the sound records; return (count, warning about a torn tail or None). Raises LedgerCorrupt."""
        torn: list[str] = []
        count = sum(1 for _ in self.records(on_torn=torn.append))
        return count, (torn[0] if torn else None)

    def _parse(
        self, lines: Iterable[bytes], start: int, on_torn: Callable[[str], None]
    ) -> Iterator[tuple[Record, int, int]]:
        """Line numbers count from ``start``: exact for a whole-file read (verify), relative for a tail read."""
        pending: tuple[int, bytes, Exception] | None = None
        prev_seq = 0
        offset = start
        for number, raw in enumerate(lines, 1):
            if pending is not None:  # a bad record followed by more lines: that is corruption, not a tear
                raise LedgerCorrupt(self.path, pending[0], _guess_seq(pending[1]), str(pending[2]))
            if not raw.endswith(b"\n"):
                pending = (number, raw, ValueError("no newline"))
                continue
            try:
                record = decode_line(raw[:-1])
            except SchemaError as exc:
                raise LedgerCorrupt(self.path, number, _guess_seq(raw), str(exc)) from None
            except (ValueError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                pending = (number, raw, exc)
                continue
            if prev_seq and record.seq != prev_seq + 1:
                raise LedgerCorrupt(self.path, number, record.seq, f"sequence jumps from {prev_seq} to {record.seq}")
            prev_seq = record.seq
            yield record, offset, len(raw)
            offset += len(raw)
        if pending is not None:
            on_torn(
                f"{self.path}: line {pending[0]}: torn final record ({pending[2]}); it is set aside at the next write"
            )


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


def _last_line(fd: int, size: int) -> tuple[int, bytes | None]:
    """Return (offset just past the final newline, the complete line before it without newline or None)."""
    chunk = 1 << 16
    pos = size
    buf = b""
    newline_end: int | None = None
    while pos > 0:
        read = min(chunk, pos)
        pos -= read
        buf = os.pread(fd, read, pos) + buf
        if newline_end is None:
            idx = buf.rfind(b"\n")
            if idx < 0:
                chunk *= 2
                continue
            newline_end = pos + idx + 1
            buf = buf[: idx + 1]
        body = buf[:-1]
        start = body.rfind(b"\n")
        if start >= 0:
            return newline_end, body[start + 1 :]
        chunk *= 2
    if newline_end is None:
        return 0, None
    return newline_end, buf[:-1]


def fsync_dir(directory: Path) -> None:
    """Make a file's creation or rename in ``directory`` durable, not only its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
