"""Hook implementations of the mcap plugin: registers the `mcap` sink."""

from __future__ import annotations

from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_sinks(register: Any) -> None:
    """Register McapSink as `mcap` (imported here so that loading the plugin stays cheap)."""
    from .sink import McapSink

    register("mcap", McapSink)
