"""Reading McapSink's files back, in the order they were written, for `edgeflow replay`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeflow.errors import FrameError
from edgeflow.frame import Frame

from .messages import decode_data

__all__ = ["McapRecording", "is_complete", "series"]

_MAGIC = b"\x89MCAP0\r\n"


def series(base: Path) -> list[Path]:
    """`run.mcap` and its rotated siblings `run-0001.mcap`, ..., in order."""
    pattern = re.compile(rf"^{re.escape(base.stem)}-(\d{{4,}})\.mcap$")
    rotated = sorted(
        (p for p in base.parent.glob(f"{base.stem}-*.mcap") if pattern.match(p.name)),
        key=lambda p: int(p.stem.rsplit("-", 1)[1]),
    )
    return ([base] if base.exists() else []) + rotated


def is_complete(path: Path) -> bool:
    """True when the file ends with MCAP's closing magic (a finished file, with its summary)."""
    size = path.stat().st_size
    if size < 2 * len(_MAGIC):
        return False
    with path.open("rb") as f:
        f.seek(size - len(_MAGIC))
        return f.read() == _MAGIC


class McapRecording:
    """The frames of an McapSink series, file after file, each file in the order written."""

    def __init__(self, path: str) -> None:
        self.files = series(Path(path))
        if not self.files:
            raise FrameError(f"no MCAP recording at {path!r}")

    def _messages(self) -> Iterator[tuple[dict[str, str], bytes]]:
        from mcap.exceptions import EndOfFile
        from mcap.reader import NonSeekingReader

        for file in self.files:
            complete = is_complete(file)
            with file.open("rb") as f:
                # File order (not log-time order): each frame's identity comes right before its data.
                try:
                    for _, channel, message in NonSeekingReader(f).iter_messages(log_time_order=False):
                        yield dict(channel.metadata), message.data
                except EndOfFile:
                    if complete:
                        raise FrameError(f"{str(file)!r} is cut short") from None
                    # A file still being written (or left open by a crash): read up to where it is.

    def sources(self) -> list[str]:
        """The sources whose channels the files hold."""
        from mcap.reader import make_reader

        found: set[str] = set()
        for file in self.files:
            summary = None
            if is_complete(file):
                with file.open("rb") as f:
                    summary = make_reader(f).get_summary()
            if summary is None:  # no summary: a file still being written
                found.update(m["edgeflow.source"] for m, _ in McapRecording(str(file))._messages()
                             if "edgeflow.source" in m)  # fmt: skip
                continue
            found.update(c.metadata["edgeflow.source"] for c in summary.channels.values()
                         if "edgeflow.source" in c.metadata)  # fmt: skip
        return sorted(found)

    def frames(self, sources: set[str] | None = None) -> Iterator[tuple[str, Frame]]:
        """Every frame, with its original id, timestamp and meta; arrays bit for bit."""
        info: dict[str, dict[str, Any]] = {}
        for meta, data in self._messages():
            source = meta.get("edgeflow.source")
            kind = meta.get("edgeflow.kind")
            if source is None or kind is None or (sources is not None and source not in sources):
                continue
            if kind == "info":
                try:
                    info[source] = json.loads(data)
                except ValueError as exc:
                    raise FrameError(f"a corrupted frame identity on /{source}/edgeflow: {exc}") from exc
                continue
            ident = info.pop(source, None)
            if ident is None:
                raise FrameError(f"a message on /{source} without its frame identity before it")
            yield source, Frame(int(ident["frame_id"]), float(ident["timestamp"]), dict(ident.get("meta") or {}),
                                decode_data(kind, data, meta))  # fmt: skip

    def close(self) -> None:
        """Files are opened per pass."""
