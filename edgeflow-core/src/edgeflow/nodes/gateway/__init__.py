"""`GatewayNode`: receives frames straight from the nodes over TCP and hands them to its interfaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..base import Node
from .interfaces import GatewayInterface

if TYPE_CHECKING:
    from ...frame import Frame
    from ...stats import StatsAggregator

__all__ = ["GatewayInterface", "GatewayNode"]


class GatewayNode(Node):
    """Exposes the pipeline to the outside; add interfaces (such as WebInterface) in `configure()`."""

    node_type: ClassVar[str] = "gateway"
    interfaces: list[GatewayInterface]
    #: The topics (source node names) linked into this gateway, in link order.
    topics: list[str]
    #: The app's graph (nodes and links), for interfaces that show it.
    graph: dict[str, Any]
    #: Live statistics of every node, gathered from the control plane.
    aggregator: StatsAggregator

    def add_interface(self, interface: GatewayInterface) -> GatewayInterface:
        """Attach `interface`; it starts with the gateway and gets every frame."""
        if not isinstance(interface, GatewayInterface):
            raise TypeError(f"gateway {self.name!r}: add_interface() takes a GatewayInterface, got {interface!r}")
        if not hasattr(self, "interfaces"):
            self.interfaces = []
        interface.bind(self)
        self.interfaces.append(interface)
        return interface

    def on_frame(self, topic: str, frame: Frame) -> None:
        """Handle a frame from `topic`; the default hands it to every interface."""
        for interface in getattr(self, "interfaces", ()):
            interface.on_frame(topic, frame)

    def is_receiving(self, within: float = 5.0) -> bool:
        """Return True when a frame arrived in the last `within` seconds."""
        return self.stats.seconds_since_input() <= within

    def broker_ok(self) -> bool:
        """Return True when the broker answers."""
        return self.broker.ping()
