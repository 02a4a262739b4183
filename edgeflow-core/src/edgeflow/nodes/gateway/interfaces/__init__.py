"""Gateway interfaces: what a gateway speaks to the outside (web, ROS 2 bridges, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ....frame import Frame
    from .. import GatewayNode

__all__ = ["GatewayInterface"]


class GatewayInterface(ABC):
    """An interface plugged into a gateway; `on_frame` is called on the intake threads and must not block.

    `bind()` runs inside the gateway's `configure()`, before the runner sets the gateway's `topics`,
    `graph` and `aggregator`; they are set before `start()`. `on_frame` may be called from several
    threads at once (one per sending node), so it must be thread-safe.
    """

    gateway: GatewayNode

    def bind(self, gateway: GatewayNode) -> None:
        """Attach the interface to its gateway."""
        self.gateway = gateway

    @abstractmethod
    def start(self) -> None:
        """Start serving (in the interface's own threads); return at once."""

    @abstractmethod
    def on_frame(self, topic: str, frame: Frame) -> None:
        """Take a frame from `topic`; never block."""

    @abstractmethod
    def stop(self, timeout: float = 3.0) -> None:
        """Stop serving within `timeout` seconds."""

    def readiness(self) -> tuple[int, str] | None:
        """Return (port, path) of an HTTP GET that answers 200 without credentials once this interface is ready.

        None (the default) when it serves no HTTP: deployers then judge the gateway by its runner's reports.
        """
        return None
