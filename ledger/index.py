"""A derived index over the log, so that a run reads only the records it needs however long the history grows.

The log stays the only truth; the index (SQLite, beside it) is a cache that can always be rebuilt from it. It
maps every record to the jobs and batches it concerns (``refs``), every applied item to the records that applied
it (``items``, brought up to date by the audit that asks), and every record to its byte position (``records``).
Each read first catches the index up with the records appended since it last looked, which between two cron runs
is a handful, then reads the records it needs by position, each checked against its own checksum.

If the log no longer matches what the index saw (its last indexed record is gone or different, as after a
restore from a backup), the index is rebuilt from the start; so it is when the index file itself is damaged
(not a database, a malformed page): it is deleted and built again from the log.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from typing import Any, ParamSpec, TypeVar

import orjson

from ledger.events import ItemsApplied, JobCreated
from ledger.log import Cut, Ledger, LedgerCorrupt, Record, ignore_torn

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, offset INTEGER NOT NULL, length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refs (ref TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (ref, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (custom_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (custom_id, seq))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, job_id TEXT NOT NULL);
"""


def key_ref(key: str) -> str:
    return f"key:{key}"


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """A damaged file, not a busy one ("database is locked" is an OperationalError too, and is not damage)."""
    return not isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc) or "no such" in str(exc)


def _rebuilt_if_damaged(method: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
        index = args[0]
        assert isinstance(index, Index)
        index.discard()
        return method(*args, **kwargs)

    return wrapper


class Index:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.path = ledger.dir / INDEX_NAME

    def _connect(self) -> sqlite3.Connection:
        self.ledger.dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        # A rollback journal, not WAL: a run that only reads leaves every file as it was.
        db.execute("PRAGMA synchronous=NORMAL")  # a lost index tail is re-read from the log, never lost
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            db.executescript(_SCHEMA)
        return db

    def discard(self) -> None:
        """Delete the index (and its journal); the next read builds it again from the log."""
        for path in (self.path, self.path.with_name(self.path.name + "-journal")):
            path.unlink(missing_ok=True)

    # -- keeping up ----------------------------------------------------------------------------------------

    @_rebuilt_if_damaged
    def catch_up(self, *, items: bool = False) -> None:
        """Index every record appended since the last look; rebuild when the log is not the one indexed.

        Applied items are indexed only when asked (by ``applications``): a run that applies 50,000 items does not
        pay for 50,000 index rows, the first audit after it does.
        """
        with closing(self._connect()) as db:
            size = self._log_size()
            if self._resume_offset(db, reset=False) == size and (not items or self._items_from(db) == size):
                return  # nothing new: no write, so a run that changes nothing leaves the index untouched too
            db.execute("BEGIN IMMEDIATE")
            try:
                start = self._resume_offset(db)
                self._index(db, self.ledger.scan(start=start, on_torn=ignore_torn))
                if items:
                    self._index_items(db, self._resume_offset(db))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _items_from(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'items_from'").fetchone()
        return int(row[0]) if row else 0

    def _index_items(self, db: sqlite3.Connection, end: int) -> None:
        """Index the applied items of the records between the last items pass and ``end``."""
        rows = []
        for record, offset, _ in self.ledger.scan(start=self._items_from(db), on_torn=ignore_torn):
            if offset >= end:
                break
            if isinstance(record.event, ItemsApplied):
                rows.extend((c, record.seq) for c in record.event.custom_ids)
        db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?)", rows)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('items_from', ?)", (str(end),))

    def _log_size(self) -> int:
        try:
            return self.ledger.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _resume_offset(self, db: sqlite3.Connection, *, reset: bool = True) -> int:
        """Where the log goes on past what is indexed; -1 (with ``reset`` False) when the index must be rebuilt."""
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA_VERSION:
            return self._reset(db) if reset else -1
        row = db.execute("SELECT seq, offset, length FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0
        seq, offset, length = row
        try:
            if self.ledger.read_at(offset, length).seq == seq:
                return offset + length
        except (LedgerCorrupt, OSError):
            pass
        return self._reset(db) if reset else -1

    def _reset(self, db: sqlite3.Connection) -> int:
        for table in ("meta", "records", "refs", "items", "batches"):
            db.execute(f"DELETE FROM {table}")
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return 0

    def _index(self, db: sqlite3.Connection, scanned: Iterable[tuple[Record, int, int]]) -> None:
        batch_jobs: dict[str, str] = {}
        records, refs = [], []
        for record, offset, length in scanned:
            event = record.event
            records.append((record.seq, offset, length))
            job_id = getattr(event, "job_id", None)
            batch_id = getattr(event, "batch_id", None)
            if job_id and batch_id:
                batch_jobs[batch_id] = job_id
            elif batch_id and not job_id:
                job_id = batch_jobs.get(batch_id) or self._job_of(db, batch_id)
            refs.extend((r, record.seq) for r in {job_id, batch_id} if r)
            if isinstance(event, JobCreated):
                refs.append((key_ref(event.key), record.seq))
        db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", records)
        db.executemany("INSERT OR IGNORE INTO refs VALUES (?, ?)", refs)
        db.executemany("INSERT OR IGNORE INTO batches VALUES (?, ?)", batch_jobs.items())

    @staticmethod
    def _job_of(db: sqlite3.Connection, batch_id: str) -> str | None:
        row = db.execute("SELECT job_id FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return row[0] if row else None

    # -- reading -------------------------------------------------------------------------------------------

    @_rebuilt_if_damaged
    def _records(
        self, query: str, args: tuple[str | int, ...], *, items: bool = False, cut: Cut | None = None
    ) -> list[Record]:
        if not self.ledger.path.exists():  # nothing recorded yet: a reading creates no index
            return []
        self.catch_up(items=items)
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT r.offset, r.length FROM records r JOIN ({query}) q ON q.seq = r.seq ORDER BY r.seq", args
            ).fetchall()
        return [self.ledger.read_at(offset, length, cut=cut) for offset, length in rows]

    def records_of(self, ref: str, after: int = 0) -> list[Record]:
        """Every record of a job (its batches' included), of a batch, or of a job key, in log order; with
        ``after``, only those of a later seq: what a state folded up to that seq lacks."""
        return self._records("SELECT seq FROM refs WHERE ref = ? AND seq > ?", (ref, after))

    def applications(self, custom_id: str) -> list[Record]:
        """The ItemsApplied records that name ``custom_id``, each narrowed to that one id.

        Each record is read and checked against its checksum, but its list of ids (50,000 of them in a full batch)
        is not parsed: the index already says it holds ``custom_id``. So an audit costs the same whatever the
        size of the applications it finds.
        """
        only = orjson.dumps(custom_id)

        def narrowed(line: Any, start: int, end: int) -> bytes:
            # Before the list only job_id and batch_id, after it only attempt, kind and usage: neither can hold
            # these bytes unescaped, so the first and the last occurrence bound the list.
            first, last = line.find(b'"custom_ids":[', start, end), line.rfind(b'],"attempt":', start, end)
            if first < 0 or last < first:  # not the layout this version writes: parse it all
                return line[start:end]
            return line[start : first + len(b'"custom_ids":[')] + only + line[last:end]

        return self._records("SELECT seq FROM items WHERE custom_id = ?", (custom_id,), items=True, cut=narrowed)

    @_rebuilt_if_damaged
    def job_of(self, batch_id: str) -> str | None:
        if not self.ledger.path.exists():
            return None
        self.catch_up()
        with closing(self._connect()) as db:
            return self._job_of(db, batch_id)

    def ids(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """(job ids, batch ids) of the log that start with ``prefix``, each sorted; a range read of the index."""
        self.catch_up()
        bounds = (prefix, prefix + "\U0010ffff")
        with closing(self._connect()) as db:
            batches = {
                r[0] for r in db.execute("SELECT batch_id FROM batches WHERE batch_id >= ? AND batch_id < ?", bounds)
            }
            refs = {r[0] for r in db.execute("SELECT DISTINCT ref FROM refs WHERE ref >= ? AND ref < ?", bounds)}
        jobs = {r for r in refs - batches if not r.startswith("key:")}
        return sorted(jobs), sorted(batches)

    def job_ids(self, key: str) -> Iterator[str]:
        for record in self.records_of(key_ref(key)):
            yield record.event.job_id  # type: ignore[union-attr]
