"""`FileSink`: frames in a folder as JSON Lines, images as PNG (or JPEG) files beside them; on the standard library.

    path/
      COMMIT                                 the segment and length of frames.jsonl covered by the last commit
      20261201T102600Z-000001/frames.jsonl   one line per frame: source, frame_id, ts, meta, kind, and the data
      20261201T102600Z-000001/camera/00000000000000000012-1764585960123456000.png

A line carries JSON data itself, small bytes and arrays inline (base64, with dtype and shape), and names the
file of an image (PNG, lossless, or JPEG if asked: lossy), of a bigger array (.npy) or bytes (.bin). Segments
rotate by size and by age. A commit fsyncs the new files, their folders and the lines, then the COMMIT file
(written aside and renamed). On start, what a crash left beyond the last commit is removed: those frames were
never acknowledged and come again. Frames committed but not acknowledged when the sink stopped come again too:
the identities of the last frames stored (`dedupe_window`) drop them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from ..errors import ConfigurationError, FrameError, UnstorableFrameError
from ..frame import Frame
from ..jpeg import decode_jpeg, encode_jpeg, is_image
from ._data import dumps, rebuild, split
from .base import BatchSink, RecentFrames, lock_path
from .png import is_png_image, png_bytes, read_png

__all__ = ["FileRecording", "FileSink"]

_LINES = "frames.jsonl"
_COMMIT = "COMMIT"
_SEGMENT = re.compile(r"^\d{8}T\d{6}Z-(\d{6})$")
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_FILE = 1 << 30


def _ns(ts: float) -> int:
    num, den = float(ts).as_integer_ratio()
    return (num * 1_000_000_000 + den // 2) // den


def _seq(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _segments(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if p.is_dir() and _SEGMENT.match(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: _seq(p.name))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tail_lines(path: Path, count: int) -> list[bytes]:
    """The last `count` complete lines of a file, read from its end."""
    with path.open("rb") as f:
        end = f.seek(0, io.SEEK_END)
        pos, buf = end, b""
        while pos > 0 and buf.count(b"\n") <= count:
            step = min(1 << 20, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
    lines = buf.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first one is cut
    return [ln for ln in lines if ln.strip()][-count:]


class FileSink(BatchSink):
    """Stores frames in the folder `path` as JSON Lines plus image files; rotates by size and age.

    Example: `@app.node(name="store", type="sink", path="recording/") class Store(FileSink): pass`
    """

    writes_folder: ClassVar[bool] = True
    #: "png" (lossless, the default) or "jpeg" (lossy, smaller; `jpeg_quality`).
    image_format: str = "png"
    jpeg_quality: int = 90
    #: zlib level of PNG files: 1 is fast, 9 small.
    png_level: int = 1
    #: Bytes and arrays up to this size go inline in the line (base64); bigger ones to a file of their own.
    inline_bytes: int = 4096
    #: Start a new segment after this many bytes ...
    rotate_bytes: int = 1 << 30
    #: ... or this many seconds.
    rotate_seconds: float = 3600.0
    #: Identities of the last frames stored, remembered to drop frames delivered again.
    dedupe_window: int = 20_000

    _lock: int | None = None

    def open(self) -> None:
        """Lock the folder, remove what a crash left beyond the last commit, and remember the last frames."""
        if self.image_format not in ("png", "jpeg"):
            raise ConfigurationError(f"sink {self.name!r}: image_format must be 'png' or 'jpeg'")
        root = Path(self.path)
        root.mkdir(parents=True, exist_ok=True)
        self._root = root
        if self._lock is None:  # opened again after a failed rollback: the lock is ours already
            self._lock = lock_path(root / ".lock", self.name)
        if not hasattr(self, "_recent"):
            self._recent = RecentFrames(self.dedupe_window)
        self._recover()
        self._segment: Path | None = None
        self._lines: IO[bytes] | None = None
        self._fresh: list[Path] = []  # files written since the last commit
        self._dirs: set[Path] = set()  # folders that got new entries since the last commit
        self._uncommitted: list[tuple[str, int, float]] = []
        self._closing: list[IO[bytes]] = []  # lines of segments rotated away since the last commit
        self._touched: list[Path] = []  # segments written since the last commit
        self.stats.extra.setdefault("duplicates", 0)

    def _read_commit(self) -> tuple[str, int] | None:
        try:
            doc = json.loads((self._root / _COMMIT).read_text())
            return str(doc["segment"]), int(doc["length"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"sink {self.name!r}: {str(self._root / _COMMIT)!r} is corrupted: {exc}") from exc

    def _recover(self) -> None:
        committed = self._read_commit()
        segments = _segments(self._root)
        self._committed = committed
        if committed is None:
            if segments:
                # A sink that stopped before its first commit: nothing of these was acknowledged, all of it comes
                # again, and kept it would be stored twice.
                self.logger.warning("sink %r: %s holds segments written before any commit (%s); removed, their "
                                    "frames come again", self.name, self._root,
                                    ", ".join(seg.name for seg in segments))  # fmt: skip
                for seg in segments:
                    shutil.rmtree(seg)
            return
        name, length = committed
        for seg in segments:
            if _seq(seg.name) > _seq(name):  # written after the last commit: never acknowledged, they come again
                shutil.rmtree(seg)
        lines = self._root / name / _LINES
        if lines.exists() and lines.stat().st_size > length:
            with lines.open("rb") as f:
                f.seek(length)
                tail = f.read()
            for raw in tail.split(b"\n"):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    file = json.loads(raw).get("file")
                    if file:
                        (self._root / name / file).unlink(missing_ok=True)
            os.truncate(lines, length)
        remaining = self.dedupe_window
        for seg in reversed([s for s in _segments(self._root) if _seq(s.name) <= _seq(name)]):
            if remaining <= 0 or not (seg / _LINES).exists():
                break
            got = _tail_lines(seg / _LINES, remaining)
            for raw in reversed(got):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    line = json.loads(raw)
                    self._recent.add((str(line["source"]), int(line["frame_id"]), float(line["ts"])))
            remaining -= len(got)

    def _start_segment(self) -> Path:
        existing = _segments(self._root)
        seq = _seq(existing[-1].name) + 1 if existing else 1
        seg = self._root / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{seq:06d}"
        seg.mkdir()
        self._dirs.update((seg, self._root))
        self._segment = seg
        self._touched.append(seg)
        self._lines = (seg / _LINES).open("ab")
        self._segment_bytes = 0
        self._segment_started = time.monotonic()
        return seg

    def _payload(self, source: str, frame: Frame) -> tuple[dict[str, Any], bytes | None, str | None]:
        """The line's fields for the data, and the file to write (its bytes and extension), if any."""
        data = frame.data
        if isinstance(data, np.ndarray) and data.size and data.nbytes > self.inline_bytes:
            desc = {"kind": "array", "dtype": data.dtype.str, "shape": list(data.shape)}
            if self.image_format == "jpeg" and is_image(data):
                return {**desc, "format": "jpeg"}, encode_jpeg(data, self.jpeg_quality, fast=False), "jpg"
            if is_png_image(data):
                return {**desc, "format": "png"}, png_bytes(data, self.png_level), "png"
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(data), allow_pickle=False)
            return {**desc, "format": "npy"}, buf.getvalue(), "npy"
        stored = split(data)
        if stored.kind == "json":
            return {"kind": "json", "data": data}, None, None
        if len(stored.payload) > self.inline_bytes:
            return {"kind": "bytes", "format": "bin"}, bytes(stored.payload), "bin"
        fields: dict[str, Any] = {"kind": stored.kind, "b64": base64.b64encode(stored.payload).decode()}
        if stored.kind == "array":
            fields.update(dtype=stored.dtype, shape=stored.shape)
        return fields, None, None

    def write(self, source: str, frame: Frame) -> int:
        """Write the frame's file (if any) and its line; 0 for a frame already stored."""
        if not _SOURCE.match(source) or source in (".", ".."):
            raise UnstorableFrameError(f"sink {self.name!r}: source name {source!r} can't name a folder",
                                       node=self.name, path=self.path)  # fmt: skip
        key = (source, frame.frame_id, float(frame.timestamp))
        if key in self._recent:
            self.stats.extra["duplicates"] = self.stats.extra.get("duplicates", 0) + 1
            return 0
        fields, blob, ext = self._payload(source, frame)
        if self._segment is not None and (
            self._segment_bytes >= self.rotate_bytes or time.monotonic() - self._segment_started >= self.rotate_seconds
        ):
            self._rotate()
        seg = self._segment or self._start_segment()
        line: dict[str, Any] = {"source": source, "frame_id": frame.frame_id, "ts": float(frame.timestamp),
                                "meta": frame.meta or {}}  # fmt: skip
        target: Path | None = None
        if blob is not None:
            rel = f"{source}/{frame.frame_id:020d}-{_ns(frame.timestamp)}.{ext}"
            line["file"] = rel
            target = seg / rel
        line.update(fields)
        raw = dumps(line, f"frame {frame.frame_id} from {source!r}") + b"\n"
        if target is not None and blob is not None:
            if not target.parent.exists():
                target.parent.mkdir()
                self._dirs.add(seg)
            try:
                with target.open("wb") as f:
                    f.write(blob)
            except OSError:
                target.unlink(missing_ok=True)
                raise
            self._fresh.append(target)
            self._dirs.add(target.parent)
        assert self._lines is not None
        self._lines.write(raw)
        self._recent.add(key)
        self._uncommitted.append(key)
        size = len(raw) + (len(blob) if blob is not None else 0)
        self._segment_bytes += size
        return size

    def _rotate(self) -> None:
        """Leave the segment for a new one; its lines are fsynced with the next commit."""
        assert self._lines is not None
        self._lines.flush()
        self._closing.append(self._lines)
        self._lines, self._segment = None, None

    def commit(self) -> None:
        """fsync the new files, their folders and the lines, then record the commit (write aside, rename)."""
        if self._lines is None or self._segment is None:
            return
        self._lines.flush()
        for done in self._closing:
            os.fsync(done.fileno())
        for path in self._fresh:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(folder)
        os.fsync(self._lines.fileno())
        length = self._lines.tell()
        tmp = self._root / (_COMMIT + ".new")
        with tmp.open("w") as f:
            f.write(json.dumps({"segment": self._segment.name, "length": length}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._root / _COMMIT)
        _fsync_dir(self._root)
        self._committed = (self._segment.name, length)
        for done in self._closing:
            done.close()
        self._fresh, self._dirs, self._uncommitted, self._closing = [], set(), [], []
        self._touched = [self._segment]

    def rollback(self) -> None:
        """Remove the files and lines written since the last commit; the next frame starts a new segment."""
        for key in self._uncommitted:
            self._recent.discard(key)
        for path in self._fresh:
            path.unlink(missing_ok=True)
        for lines in [*self._closing, *([self._lines] if self._lines is not None else [])]:
            with contextlib.suppress(OSError):
                lines.close()  # flushing into a full disk may fail again: the truncation below fixes it
        committed = self._committed
        for seg in self._touched:
            if committed is not None and seg.name == committed[0]:
                os.truncate(seg / _LINES, committed[1])
            elif committed is None or _seq(seg.name) > _seq(committed[0]):
                shutil.rmtree(seg, ignore_errors=True)
        self._lines, self._segment = None, None
        self._fresh, self._dirs, self._uncommitted, self._closing, self._touched = [], set(), [], [], []

    def shut(self) -> None:
        """Commit, close the lines and let go of the lock."""
        try:
            self.commit()
        finally:
            for lines in [*self._closing, *([self._lines] if self._lines is not None else [])]:
                lines.close()
            self._lines, self._closing = None, []
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    @classmethod
    def open_recording(cls, path: str) -> FileRecording:
        """Open a folder this sink wrote."""
        return FileRecording(path)


class FileRecording:
    """The frames of a FileSink folder, segment by segment, in the order they were stored."""

    def __init__(self, path: str) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise FrameError(f"no FileSink recording at {path!r}: not a folder")
        self.segments = [s for s in _segments(self.root) if (s / _LINES).exists()]
        commit = self.root / _COMMIT
        self.limit: tuple[str, int] | None = None
        if commit.exists():
            doc = json.loads(commit.read_text())
            self.limit = (str(doc["segment"]), int(doc["length"]))

    def _lines(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for seg in self.segments:
            end: int | None = None
            if self.limit is not None:
                if _seq(seg.name) > _seq(self.limit[0]):
                    break  # never committed
                end = self.limit[1] if seg.name == self.limit[0] else None
            pos = 0
            with (seg / _LINES).open("rb") as f:
                for n, raw in enumerate(f):
                    pos += len(raw)
                    if (end is not None and pos > end) or not raw.endswith(b"\n"):
                        break  # beyond the commit, or a line cut short
                    try:
                        yield seg, json.loads(raw)
                    except ValueError as exc:
                        raise FrameError(f"{str(seg / _LINES)!r} line {n + 1} is corrupted: {exc}") from exc

    def sources(self) -> list[str]:
        """The sources the lines name."""
        return sorted({str(line["source"]) for _, line in self._lines()})

    def frames(self, sources: set[str] | None = None) -> Iterator[tuple[str, Frame]]:
        """Every frame, in the order stored."""
        for seg, line in self._lines():
            source = str(line["source"])
            if sources is not None and source not in sources:
                continue
            yield source, Frame(int(line["frame_id"]), float(line["ts"]), dict(line["meta"]), self._data(seg, line))

    def _data(self, seg: Path, line: dict[str, Any]) -> Any:
        kind = line["kind"]
        if kind == "json":
            return line["data"]
        if "b64" in line:
            return rebuild(kind, line.get("dtype"), line.get("shape"), base64.b64decode(line["b64"]))
        file = (seg / str(line["file"])).resolve()
        if seg.resolve() not in file.parents:
            raise FrameError(f"{str(seg / _LINES)!r} names a file outside its segment: {line['file']!r}")
        if file.stat().st_size > _MAX_FILE:
            raise FrameError(f"{str(file)!r} is over {_MAX_FILE:,} bytes")
        blob = file.read_bytes()
        fmt = line.get("format")
        if fmt == "bin":
            return blob
        if fmt == "png":
            return read_png(blob, str(line["dtype"]), list(line["shape"]))
        if fmt == "jpeg":
            shape = list(line["shape"])
            return decode_jpeg(blob, 1 if len(shape) == 2 else int(shape[2])).reshape(shape)
        if fmt == "npy":
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
            return rebuild("array", arr.dtype.str, [int(n) for n in arr.shape], memoryview(arr).cast("B"))
        raise FrameError(f"{str(seg / _LINES)!r}: unknown file format {fmt!r}")

    def close(self) -> None:
        """Nothing is held open between reads."""
