"""Hook implementations of the ros2 plugin: registers the `ros2` gateway interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_interfaces(register: Callable[[str, type[Any]], None]) -> None:
    """Register `Ros2Interface` under the name "ros2" (Cyclone DDS is imported only when it starts)."""
    from .interface import Ros2Interface

    register("ros2", Ros2Interface)
