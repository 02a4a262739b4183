"""The seed's import path of `WebInterface`: it resolves to the gateway interface that a plugin registers as "web"."""

from __future__ import annotations

from typing import Any

from ....errors import PluginError
from ....plugins import get_interface

__all__ = ["WebInterface"]  # noqa: F822 - resolved on first access through the plugin lookup


def __getattr__(name: str) -> Any:
    if name == "WebInterface":
        try:
            return get_interface("web")
        except PluginError as exc:
            raise ImportError(f"WebInterface is the gateway interface named 'web', from a plugin: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
