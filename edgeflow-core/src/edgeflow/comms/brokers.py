"""Brokers under the seed's import path; those that ship as plugins resolve through the broker lookup."""

from __future__ import annotations

from typing import Any

from ..brokers.redis import RedisBroker
from ..errors import PluginError
from ..plugins import get_broker

__all__ = ["DualRedisBroker", "RedisBroker"]  # noqa: F822 - DualRedisBroker resolves on first access

#: The seed's class names of brokers that plugins provide, and the names they are registered under.
_PLUGIN_BROKERS = {"DualRedisBroker": "dualredis", "ShmBroker": "shm"}


def __getattr__(name: str) -> Any:
    registered = _PLUGIN_BROKERS.get(name)
    if registered is not None:
        try:
            return get_broker(registered)
        except PluginError as exc:
            raise ImportError(f"{name} is the broker named {registered!r}, from a plugin: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
