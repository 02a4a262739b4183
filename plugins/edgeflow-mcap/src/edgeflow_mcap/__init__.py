"""EdgeFlow's MCAP sink: `McapSink` records frames into MCAP files; `McapRecording` reads them back."""

from __future__ import annotations

from .recording import McapRecording
from .sink import McapSink

__all__ = ["McapRecording", "McapSink"]
