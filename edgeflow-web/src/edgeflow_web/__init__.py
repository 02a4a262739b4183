"""EdgeFlow web plugin: the gateway's `WebInterface` (MJPEG streams, a live dashboard and an HTTP API)."""

from __future__ import annotations

from .interface import WebInterface

__all__ = ["WebInterface"]
