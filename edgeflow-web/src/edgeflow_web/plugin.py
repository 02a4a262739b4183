"""Hook implementations of the web plugin; FastAPI and uvicorn are imported only when a gateway starts serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_interfaces(register: Callable[[str, type[Any]], None]) -> None:
    """Register `WebInterface` under the name "web"."""
    from edgeflow_web import WebInterface

    register("web", WebInterface)
