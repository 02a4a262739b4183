"""`BatchSink`: what the built-in sinks share: batched writes, a flush policy, errors that name the path.

A sink writes each frame as it comes (`write`) and makes a batch durable at once (`commit`: an fsync, a SQLite
commit) when the batch is big or old enough. The runner acknowledges a durable frame only after the commit
that covers it, so a sink killed mid-batch loses nothing: what was not committed was not acknowledged, and comes
again. A sink that can't write drops its uncommitted batch (`rollback`) and counts it (`rollbacks`), so that
the runner acknowledges none of it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..errors import ConfigurationError, DiskFullError, SinkError, UnstorableFrameError
from ..frame import Frame
from ..nodes import SinkNode

__all__ = ["BatchSink", "Identity", "RecentFrames", "Recording", "lock_path", "os_error"]

#: A frame's identity: its source, frame id and timestamp. A restarted producer may count from 0 again, so the
#: id alone is not enough.
Identity = tuple[str, int, float]
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class Recording(Protocol):
    """What a sink wrote, read back in order: for `edgeflow replay`."""

    def sources(self) -> list[str]:
        """Return the source nodes whose frames the recording holds."""

    def frames(self, sources: set[str] | None = None) -> Iterator[tuple[str, Frame]]:
        """Yield (source, frame) as recorded; arrays are rebuilt with their dtype and shape, bit for bit."""

    def close(self) -> None:
        """Release the files."""


def os_error(exc: OSError, what: str, path: str | os.PathLike[str], node: str | None = None) -> SinkError:
    """Translate an OSError: a full disk (ENOSPC, EDQUOT, EFBIG) is a DiskFullError, anything else a SinkError."""
    if exc.errno in _FULL_ERRNOS:
        return DiskFullError(
            f"sink {node!r}: the disk is full writing {str(path)!r} ({exc.strerror}); free space there or point "
            "`path` elsewhere",
            node=node,
            path=str(path),
        )
    return SinkError(f"sink {node!r}: can't {what} {str(path)!r}: {exc}", node=node, path=str(path))


def lock_path(path: Path, node: str) -> int:
    """Take an exclusive lock on `path` (a lock file) for this process; ConfigurationError if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(
            f"sink {node!r}: {str(path)!r} is locked by another writer; give each process or replica its own path "
            "(for example path=f'run-{os.getpid()}.mcap'), or use SQLiteSink, whose writers may share a file"
        ) from None
    return fd


class RecentFrames:
    """The identities of the last `size` frames stored, to drop redeliveries of frames committed but not yet
    acknowledged when the sink stopped. Bounded: older identities are forgotten."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._order: deque[Identity] = deque()
        self._set: set[Identity] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, key: Identity) -> None:
        """Remember `key`, forgetting the oldest beyond the bound."""
        if key in self._set:
            return
        self._order.append(key)
        self._set.add(key)
        while len(self._order) > self.size:
            self._set.discard(self._order.popleft())

    def discard(self, key: Identity) -> None:
        """Forget `key` (its write was rolled back)."""
        self._set.discard(key)


class BatchSink(SinkNode):
    """A sink that batches writes; set its options as `@app.node(..., type="sink", path=..., flush_seconds=...)`.

    Subclasses implement `open`, `write`, `commit`, `rollback` and `shut`; the flush policy, the bookkeeping
    and the errors are here.
    """

    #: Where the sink writes: a file or a folder, depending on the sink.
    path: str = ""
    #: Commit when this many bytes were written since the last commit ...
    flush_bytes: int = 64 << 20
    #: ... or this many frames ...
    flush_frames: int = 5_000
    #: ... or when the oldest uncommitted frame is this old (seconds).
    flush_seconds: float = 1.0
    #: Largest frame this sink stores; a bigger one is dead-lettered (None: the sink's own limit).
    max_frame_bytes: int | None = None
    #: Output suffixes this sink writes (`edgeflow record -o run.db` picks the sink by them).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: True when the sink writes a folder (`edgeflow record -o run/`).
    writes_folder: ClassVar[bool] = False

    _opened = False
    _pending_frames = 0
    _pending_bytes = 0
    _pending_since = 0.0

    # What subclasses implement --------------------------------------------------------------------------
    def open(self) -> None:
        """Open the storage at `self.path`, recovering from a crash (drop what was written but not committed)."""
        raise NotImplementedError

    def write(self, source: str, frame: Frame) -> int:
        """Store one frame (not yet durable); return the bytes written, 0 for a redelivered frame already stored.

        Raise UnstorableFrameError, before writing anything, for a frame this sink can't store.
        """
        raise NotImplementedError

    def commit(self) -> None:
        """Make everything written so far durable."""
        raise NotImplementedError

    def rollback(self) -> None:
        """Drop what was written since the last commit, after a failure; the next write starts clean."""
        raise NotImplementedError

    def shut(self) -> None:
        """Commit what is pending and close the storage cleanly."""
        raise NotImplementedError

    @classmethod
    def open_recording(cls, path: str) -> Recording:
        """Open what this sink wrote at `path`, for replay."""
        raise ConfigurationError(f"{cls.__name__} can't be replayed")

    # The node's methods ---------------------------------------------------------------------------------
    def configure(self) -> None:
        """Check the options and open the storage; subclasses that override this call super().configure()."""
        if not self.path or not isinstance(self.path, (str, os.PathLike)):
            raise ConfigurationError(
                f"sink {self.name!r} needs a path: @app.node(name={self.name!r}, type='sink', path='frames.db')"
            )
        self.path = os.fspath(self.path)
        for opt in ("flush_bytes", "flush_frames"):
            value = getattr(self, opt)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"sink {self.name!r}: {opt} must be an int >= 1, got {value!r}")
        if not isinstance(self.flush_seconds, (int, float)) or not 0 < self.flush_seconds <= 3600:
            raise ConfigurationError(f"sink {self.name!r}: flush_seconds must be 0 to 3600, got {self.flush_seconds!r}")
        self._ensure_open()

    def _ensure_open(self) -> None:
        if self._opened:
            return
        try:
            self.open()
        except OSError as exc:
            raise os_error(exc, "open", self.path, self.name) from exc
        self._opened = True

    def process(self, data: Any) -> None:
        """Write the current frame; it becomes durable with the next commit."""
        frame = self.current_frame
        if frame is None:
            frame = Frame(0, time.time(), {}, data)
        self._ensure_open()
        size = self.frame_bytes(frame.data)
        limit = self.max_frame_bytes
        if limit is not None and size > limit:
            raise UnstorableFrameError(
                f"sink {self.name!r}: frame {frame.frame_id} from {self.current_source!r} holds {size:,} bytes, "
                f"over this sink's max_frame_bytes={limit:,}; raise it, or store such frames elsewhere",
                node=self.name,
                path=self.path,
            )
        try:
            written = self.write(self.current_source or "unknown", frame)
        except UnstorableFrameError:
            raise
        except OSError as exc:
            self._roll_back()
            raise os_error(exc, "write", self.path, self.name) from exc
        except SinkError:
            self._roll_back()
            raise
        if written:
            if not self._pending_frames:
                self._pending_since = time.monotonic()
            self._pending_frames += 1
            self._pending_bytes += written

    def flush_due(self) -> bool:
        """True when the batch is big or old enough to commit."""
        if not self._pending_frames:
            return False
        return (
            self._pending_bytes >= self.flush_bytes
            or self._pending_frames >= self.flush_frames
            or time.monotonic() - self._pending_since >= self.flush_seconds
        )

    def flush(self) -> None:
        """Commit the batch; on failure drop it (it comes again) and raise."""
        if not self._opened or not self._pending_frames:
            return
        try:
            self.commit()
        except OSError as exc:
            self._roll_back()
            raise os_error(exc, "commit to", self.path, self.name) from exc
        except Exception:
            self._roll_back()
            raise
        self._pending_frames = self._pending_bytes = 0

    def close(self) -> None:
        """Commit what is pending and close."""
        if not self._opened:
            return
        self._opened = False
        try:
            self.shut()
        except OSError as exc:
            raise os_error(exc, "close", self.path, self.name) from exc

    def _roll_back(self) -> None:
        self._pending_frames = self._pending_bytes = 0
        self.rollbacks += 1
        try:
            self.rollback()
        except Exception as exc:  # the sink is in doubt: open it again, with its crash recovery, on next use
            self.logger.error("sink %r: rollback failed (%s); reopening the storage", self.name, exc)
            self._opened = False

    # Helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def frame_bytes(data: Any) -> int:
        """The size of a frame's payload as stored (JSON data: 0, its size is known once encoded)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            return len(data)
        nbytes = getattr(data, "nbytes", None)
        return int(nbytes) if isinstance(nbytes, int) else 0
