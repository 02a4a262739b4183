"""The built-in sinks' hook implementations: a built-in plugin, registered like any other."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from .files import FileSink
from .sqlite import SQLiteSink


@hookimpl
def register_sinks(register: Any) -> None:
    """Register the built-in sinks: `sqlite` and `file`."""
    register("sqlite", SQLiteSink)
    register("file", FileSink)
