"""`SQLiteSink`: every frame in one SQLite file, one table per source node, on the standard library.

Each table (named after its source node) has the columns `frame_id`, `ts` (the frame's timestamp), `meta`
(JSON), `kind` ("array", "bytes" or "json"), `dtype` and `shape` (arrays), and `payload` (a BLOB: an array's
raw memory, the bytes, or the JSON data). An index on `ts`, WAL mode, and a UNIQUE constraint on
(`frame_id`, `ts`): a frame delivered again (after a crash, before its acknowledgement) is stored once. The
identity is the id *and* the timestamp, since a restarted producer may count from 0 again.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..errors import DiskFullError, FrameError, SinkError, UnstorableFrameError
from ..frame import Frame
from ._data import dumps, rebuild, split
from .base import BatchSink

__all__ = ["SQLiteRecording", "SQLiteSink"]

_COLUMNS = ("frame_id", "ts", "meta", "kind", "dtype", "shape", "payload")
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
# SQLITE_FULL: "database or disk is full".
_SQLITE_FULL = 13


def quote(name: str) -> str:
    """Quote an SQL identifier (a source name from the network is never trusted to be plain)."""
    if "\x00" in name:
        raise UnstorableFrameError(f"a source name can't hold a NUL character: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _signed(frame_id: int) -> int:
    # SQLite integers are signed 64-bit: ids from 2**63 are stored as their two's complement (negative).
    return frame_id - _U64 if frame_id > _I64_MAX else frame_id


class SQLiteSink(BatchSink):
    """Stores frames in the SQLite file `path`: one table per source, deduplicated, committed in batches.

    Example: `@app.node(name="store", type="sink", path="frames.db") class Store(SQLiteSink): pass`
    """

    suffixes: ClassVar[tuple[str, ...]] = (".db", ".sqlite", ".sqlite3")
    #: SQLite's `synchronous`: FULL fsyncs the log at every commit (a power cut loses no acknowledged frame).
    synchronous: str = "FULL"
    #: Seconds a writer waits for another process's lock on the same file.
    busy_timeout: float = 10.0

    _db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (or create) the database in WAL mode."""
        path = Path(self.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            db = sqlite3.connect(str(path), isolation_level=None, timeout=self.busy_timeout)
            if fresh:
                db.execute("PRAGMA page_size=65536")  # frames are big: fewer overflow pages per blob
            db.execute("PRAGMA journal_mode=WAL")
            if str(self.synchronous).upper() not in ("FULL", "NORMAL", "EXTRA"):
                raise SinkError(f"sink {self.name!r}: synchronous must be FULL, NORMAL or EXTRA", path=self.path)
            db.execute(f"PRAGMA synchronous={str(self.synchronous).upper()}")
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from exc
        self._db = db
        self._tables: set[str] = set()
        self._limit = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) if hasattr(db, "getlimit") else 1_000_000_000
        self._in_tx = False
        self.stats.extra.setdefault("duplicates", 0)

    def _table(self, source: str) -> str:
        table = quote(source)
        if source not in self._tables:
            assert self._db is not None
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (frame_id INTEGER NOT NULL, ts REAL NOT NULL, meta TEXT NOT NULL, "
                "kind TEXT NOT NULL, dtype TEXT, shape TEXT, payload BLOB NOT NULL, UNIQUE (frame_id, ts))"
            )
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {quote(source + '.ts')} ON {table} (ts)")
            self._tables.add(source)
        return table

    def write(self, source: str, frame: Frame) -> int:
        """Insert the frame into its source's table, unless it is there already."""
        stored = split(frame.data)
        meta = dumps(frame.meta or {}, "meta").decode()
        size = len(stored.payload)
        if size > self._limit:
            raise UnstorableFrameError(
                f"sink {self.name!r}: frame {frame.frame_id} from {source!r} holds {size:,} bytes, over SQLite's "
                f"limit of {self._limit:,} per blob; store such frames with FileSink or McapSink",
                node=self.name,
                path=self.path,
            )
        if len(source) > 255:
            raise UnstorableFrameError(f"sink {self.name!r}: source name of {len(source)} characters is too long")
        db = self._db
        assert db is not None
        try:
            if not self._in_tx:
                db.execute("BEGIN IMMEDIATE")
                self._in_tx = True
            cur = db.execute(
                f"INSERT OR IGNORE INTO {self._table(source)} VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_signed(frame.frame_id), float(frame.timestamp), meta, stored.kind, stored.dtype,
                 json.dumps(stored.shape) if stored.shape is not None else None, stored.payload),
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise self._error(exc, "write to") from exc
        if cur.rowcount == 0:
            self.stats.extra["duplicates"] = self.stats.extra.get("duplicates", 0) + 1
            return 0
        return size + len(meta) + 40

    def commit(self) -> None:
        """COMMIT the batch (with synchronous=FULL, SQLite fsyncs its log)."""
        if not self._in_tx:
            return
        assert self._db is not None
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc, "commit to") from exc
        self._in_tx = False

    def rollback(self) -> None:
        """ROLLBACK the batch."""
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._in_tx = False

    def shut(self) -> None:
        """Commit and close."""
        if self._db is None:
            return
        try:
            self.commit()
        finally:
            self._db.close()
            self._db = None

    def _error(self, exc: sqlite3.Error, what: str) -> SinkError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == _SQLITE_FULL or "disk is full" in str(exc):
            return DiskFullError(
                f"sink {self.name!r}: the disk is full writing {self.path!r} ({exc}); free space there or point "
                "`path` elsewhere",
                node=self.name,
                path=self.path,
            )
        return SinkError(f"sink {self.name!r}: can't {what} {self.path!r}: {exc}", node=self.name, path=self.path)

    @classmethod
    def open_recording(cls, path: str) -> SQLiteRecording:
        """Open a database this sink wrote, read-only."""
        return SQLiteRecording(path)


class SQLiteRecording:
    """The frames of a SQLiteSink database, merged across sources in timestamp order."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise FrameError(f"no SQLite recording at {path!r}")
        self.path = path
        try:
            self.db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
            names = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        except sqlite3.Error as exc:
            raise FrameError(f"{path!r} is not a SQLite database: {exc}") from exc
        self._sources = [n for n in names if self._ours(n)]

    def _ours(self, table: str) -> bool:
        cols = tuple(r[1] for r in self.db.execute(f"PRAGMA table_info({quote(table)})"))
        return cols == _COLUMNS

    def sources(self) -> list[str]:
        """The tables SQLiteSink wrote: one per source."""
        return list(self._sources)

    def _rows(self, source: str) -> Iterator[tuple[float, int, str, Frame]]:
        cur = self.db.execute(f"SELECT rowid, {', '.join(_COLUMNS)} FROM {quote(source)} ORDER BY ts, rowid")
        for rowid, fid, ts, meta, kind, dtype, shape, payload in cur:
            try:
                data = rebuild(kind, dtype, json.loads(shape) if shape else None, payload)
                frame = Frame(fid % _U64, float(ts), json.loads(meta), data)
            except ValueError as exc:
                raise FrameError(f"{self.path!r}: row {rowid} of {source!r} is corrupted: {exc}") from exc
            yield float(ts), rowid, source, frame

    def frames(self, sources: set[str] | None = None) -> Iterator[tuple[str, Frame]]:
        """Every frame, oldest first across the sources."""
        chosen = [s for s in self._sources if sources is None or s in sources]
        merged: Iterator[Any] = heapq.merge(*(self._rows(s) for s in chosen), key=lambda r: (r[0], r[2], r[1]))
        for _, _, source, frame in merged:
            yield source, frame

    def close(self) -> None:
        """Close the database."""
        self.db.close()
