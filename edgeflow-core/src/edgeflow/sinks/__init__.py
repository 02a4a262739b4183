"""Built-in sinks: subclass one and set its options in the decorator; plugins add more (`register_sinks`).

@app.node(name="store", type="sink", path="frames.db")
class Store(SQLiteSink):
    pass
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigurationError
from ..plugins import get_sink, installed
from .base import BatchSink, RecentFrames, Recording
from .files import FileRecording, FileSink
from .sqlite import SQLiteRecording, SQLiteSink

__all__ = [
    "BatchSink",
    "FileRecording",
    "FileSink",
    "RecentFrames",
    "Recording",
    "SQLiteRecording",
    "SQLiteSink",
    "sink_for",
]


def sink_for(path: str) -> tuple[str, type[BatchSink]]:
    """Return the name and class of the registered sink that writes `path`'s kind: a folder (`run/`), or the
    suffix (`.db`, `.mcap`, ...); a PluginError names the pip extra of a sink that is not installed."""
    folder = path.endswith(os.sep) or path.endswith("/") or Path(path).is_dir() or not Path(path).suffix
    suffix = Path(path).suffix.lower()
    for name, cls in sorted(installed("sink").items()):
        if not (isinstance(cls, type) and issubclass(cls, BatchSink)):
            continue
        if (folder and cls.writes_folder) or (not folder and suffix in cls.suffixes):
            return name, cls
    if folder:
        raise ConfigurationError(f"no installed sink writes a folder ({path!r}); name a file such as run.db")
    name = suffix.lstrip(".")
    cls = get_sink(name)  # raises PluginError with the extra that brings it
    if not (isinstance(cls, type) and issubclass(cls, BatchSink)):
        raise ConfigurationError(f"the sink {name!r} can't record or replay {path!r}")
    return name, cls
