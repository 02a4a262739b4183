"""`McapSink`: frames into MCAP files, chunked and compressed (zstd or lz4), rotated by size.

`path="run.mcap"` writes `run.mcap`, then `run-0001.mcap`, `run-0002.mcap`, ... as each reaches
`rotate_bytes`; a restart never overwrites a file, it starts the next one. A commit ends the chunk being built,
fsyncs the file and records its committed length in `.run.mcap.commit`. Killed mid-file, the sink's next start
cuts that file back to its last commit and rewrites it as a complete MCAP file (summary and index included);
the frames after the commit were never acknowledged and come again, and those committed but not yet
acknowledged are dropped when they come again (`dedupe_window`: the sink remembers the frames of the file it
recovers and of the last files of the series, which an earlier process may have committed and not acknowledged).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, ClassVar

from edgeflow.errors import ConfigurationError
from edgeflow.frame import Frame
from edgeflow.sinks import BatchSink, RecentFrames
from edgeflow.sinks.base import lock_path

from .messages import ARRAY_SCHEMA, IMAGE_SCHEMA, IMAGE_SCHEMA_NAME, INFO_SCHEMA, Kind, encode_data, to_ns
from .recording import McapRecording, is_complete, series

__all__ = ["McapSink"]

_LIBRARY = "edgeflow-mcap/0.1.0"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class McapSink(BatchSink):
    """Records frames into MCAP: images as sensor_msgs/msg/Image, JSON as JSON channels, other arrays exactly.

    Example: `@app.node(name="rec", type="sink", path="run.mcap") class Rec(McapSink): pass`
    """

    suffixes: ClassVar[tuple[str, ...]] = (".mcap",)
    #: "zstd", "lz4" or "none".
    compression: str = "zstd"
    #: Bytes of messages per chunk before it is compressed and written (a commit also ends a chunk).
    chunk_size: int = 8 << 20
    #: Start the next file after this many bytes.
    rotate_bytes: int = 1 << 30
    #: Identities of the last frames stored, remembered to drop frames delivered again.
    dedupe_window: int = 20_000

    _lock: int | None = None

    def open(self) -> None:
        """Lock the series, recover a file a crash left open, and start the next file."""
        from mcap.writer import CompressionType

        compressions = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if self.compression not in compressions:
            raise ConfigurationError(f"sink {self.name!r}: compression must be one of {sorted(compressions)}")
        self._compression = compressions[self.compression]
        base = Path(self.path)
        if base.suffix != ".mcap":
            raise ConfigurationError(f"sink {self.name!r}: path must end in .mcap, got {self.path!r}")
        base.parent.mkdir(parents=True, exist_ok=True)
        self._base = base
        self._marker = base.with_name(f".{base.name}.commit")
        if self._lock is None:
            self._lock = lock_path(base.with_name(f".{base.name}.lock"), self.name)
        fresh = not hasattr(self, "_recent")
        if fresh:
            self._recent = RecentFrames(self.dedupe_window)
        self._recover()
        if fresh:
            # Frames committed by an earlier process and not acknowledged before it died come again; those of a
            # file that process had already finished are remembered here (the file it left open, by _recover).
            for file in series(self._base)[-3:]:
                if is_complete(file):
                    self._remember(file)
        self._file: IO[bytes] | None = None
        self._writer: Any = None
        self.stats.extra.setdefault("duplicates", 0)

    # Files ----------------------------------------------------------------------------------------------
    def _next_name(self) -> Path:
        files = series(self._base)
        if not files:
            return self._base
        last = files[-1]
        n = 0 if last == self._base else int(last.stem.rsplit("-", 1)[1])
        return self._base.with_name(f"{self._base.stem}-{n + 1:04d}.mcap")

    def _mark(self, file: Path, length: int) -> None:
        tmp = self._marker.with_name(self._marker.name + ".new")
        with tmp.open("w") as f:
            f.write(json.dumps({"file": file.name, "length": length}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._marker)
        _fsync_dir(self._marker.parent)

    def _recover(self) -> None:
        try:
            doc = json.loads(self._marker.read_text())
            file, length = self._base.with_name(str(doc["file"])), int(doc["length"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"sink {self.name!r}: {str(self._marker)!r} is corrupted: {exc}") from exc
        if file.exists() and not is_complete(file):
            os.truncate(file, min(length, file.stat().st_size))
            kept = self._rewrite(file)
            self.logger.warning("sink %r: %s was left open by a crash: kept the %d frame(s) of its last commit and "
                                "closed it; what came after comes again", self.name, file, kept)  # fmt: skip
        self._marker.unlink(missing_ok=True)
        _fsync_dir(self._marker.parent)

    def _remember(self, file: Path) -> None:
        """Add the frames of a finished file to the frames recently stored (the dedupe window)."""
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message
        from mcap.stream_reader import StreamReader

        info_channels: set[int] = set()
        with file.open("rb") as src, contextlib.suppress(McapError, EOFError, ValueError):
            for record in StreamReader(src).records:
                if isinstance(record, Channel) and record.metadata.get("edgeflow.kind") == "info":
                    info_channels.add(record.id)
                elif isinstance(record, Message) and record.channel_id in info_channels:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        info = json.loads(record.data)
                        self._recent.add((info["source"], int(info["frame_id"]), float(info["timestamp"])))

    def _rewrite(self, file: Path) -> int:
        """Rewrite the records of a cut file into a complete MCAP file in its place; return its frames."""
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader
        from mcap.writer import Writer

        tmp = file.with_name(file.name + ".recovering")
        frames = 0
        with file.open("rb") as src, tmp.open("wb") as dst:
            writer = Writer(dst, chunk_size=self.chunk_size, compression=self._compression)
            writer.start(library=_LIBRARY)
            schemas: dict[int, int] = {}
            channels: dict[int, int] = {}
            info_channels: set[int] = set()
            with contextlib.suppress(McapError, EOFError, ValueError):
                for record in StreamReader(src).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
                    elif isinstance(record, Channel):
                        channels[record.id] = writer.register_channel(
                            record.topic, record.message_encoding, schemas.get(record.schema_id, 0),
                            dict(record.metadata),
                        )  # fmt: skip
                        if record.metadata.get("edgeflow.kind") == "info":
                            info_channels.add(record.id)
                    elif isinstance(record, Message) and record.channel_id in channels:
                        writer.add_message(channels[record.channel_id], record.log_time, record.data,
                                           record.publish_time, record.sequence)  # fmt: skip
                        if record.channel_id in info_channels:
                            frames += 1
                            with contextlib.suppress(ValueError, KeyError, TypeError):
                                info = json.loads(record.data)
                                self._recent.add((info["source"], int(info["frame_id"]), float(info["timestamp"])))
            writer.finish()
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, file)
        return frames

    def _start_file(self) -> None:
        from mcap.writer import Writer

        name = self._next_name()
        f = name.open("xb")
        writer = Writer(f, chunk_size=self.chunk_size, compression=self._compression)
        writer.start(library=_LIBRARY)
        f.flush()
        self._file, self._writer, self._name = f, writer, name
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, Kind], int] = {}
        self._uncommitted: list[tuple[str, int, float]] = []
        self._mark(name, f.tell())

    def _schema(self, which: str) -> int:
        if which not in self._schemas:
            name, encoding, data = {
                "image": (IMAGE_SCHEMA_NAME, "ros2msg", IMAGE_SCHEMA),
                "array": ("edgeflow.Array", "jsonschema", ARRAY_SCHEMA),
                "info": ("edgeflow.FrameInfo", "jsonschema", INFO_SCHEMA),
            }[which]
            self._schemas[which] = self._writer.register_schema(name, encoding, data)
        return self._schemas[which]

    def _channel(self, source: str, kind: Kind) -> int:
        key = (source, kind)
        found = self._channels.get(key)
        if found is not None:
            return found
        if kind.name == "info":
            topic, encoding, schema = f"/{source}/edgeflow", "json", self._schema("info")
        elif kind.name == "image":
            topic, encoding, schema = f"/{source}", "cdr", self._schema("image")
        elif kind.name == "array":
            topic, encoding, schema = f"/{source}", "json", self._schema("array")
        elif kind.name == "bytes":
            topic, encoding, schema = f"/{source}", "edgeflow.bytes", 0
        else:
            topic, encoding, schema = f"/{source}", "json", 0
        channel: int = self._writer.register_channel(topic, encoding, schema, kind.metadata(source))
        self._channels[key] = channel
        return channel

    # The sink ---------------------------------------------------------------------------------------------
    def write(self, source: str, frame: Frame) -> int:
        """Add the frame's identity and its data to the current chunk."""
        key = (source, frame.frame_id, float(frame.timestamp))
        if key in self._recent:
            self.stats.extra["duplicates"] = self.stats.extra.get("duplicates", 0) + 1
            return 0
        kind, body = encode_data(source, frame.data, frame.timestamp)
        info = json.dumps({"source": source, "frame_id": frame.frame_id, "timestamp": float(frame.timestamp),
                           "meta": frame.meta or {}}, separators=(",", ":"), allow_nan=False).encode()  # fmt: skip
        if self._writer is None:
            self._start_file()
        ns = to_ns(frame.timestamp)
        seq = frame.frame_id & 0xFFFFFFFF
        self._writer.add_message(self._channel(source, Kind("info")), ns, info, ns, seq)
        self._writer.add_message(self._channel(source, kind), ns, body, ns, seq)
        self._recent.add(key)
        self._uncommitted.append(key)
        return len(body) + len(info)

    def commit(self) -> None:
        """End the chunk, fsync, record the committed length; rotate when the file is big enough."""
        if self._writer is None or self._file is None:
            return
        self._writer.flush()
        os.fsync(self._file.fileno())
        length = self._file.tell()
        self._mark(self._name, length)
        self._uncommitted = []
        if length >= self.rotate_bytes:
            self._finish()

    def _finish(self) -> None:
        assert self._writer is not None and self._file is not None
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._writer = self._file = None
        self._marker.unlink(missing_ok=True)
        _fsync_dir(self._marker.parent)

    def rollback(self) -> None:
        """Close the file where it is, then recover it to its last commit, as after a crash."""
        for key in self._uncommitted:
            self._recent.discard(key)
        self._uncommitted = []
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._writer = self._file = None
        self._recover()

    def shut(self) -> None:
        """Commit and finish the file (summary, index), then let go of the lock."""
        try:
            if self._writer is not None:
                self.commit()
                if self._writer is not None:
                    self._finish()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    @classmethod
    def open_recording(cls, path: str) -> McapRecording:
        """Open the files this sink wrote at `path` (and its rotated siblings), for replay."""
        return McapRecording(path)
