"""Hook implementations of the shm plugin: registers the `shm` broker."""

from __future__ import annotations

from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_brokers(register: Any) -> None:
    """Register ShmBroker as `shm` (imported here so that loading the plugin stays cheap)."""
    from .broker import ShmBroker

    register("shm", ShmBroker)
