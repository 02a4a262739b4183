"""`GatewayNode`: receives frames straight from the nodes over TCP and hands them to its interfaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ...plugins import get_interface
from ..base import Node
from .interfaces import GatewayInterface

if TYPE_CHECKING:
    from ...frame import Frame
    from ...runtime.stats import StatsAggregator
    from ...tcp import FrameServer

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
    #: The TCP intake the runner started for this gateway.
    intake: FrameServer | None = None

    def add_interface(self, interface: GatewayInterface | str, **options: Any) -> GatewayInterface:
        """Attach `interface`, or build the interface registered under that name with `options`.

        `self.add_interface(WebInterface(port=8000))` and `self.add_interface("web", port=8000)` are the same;
        the interface starts with the gateway and gets every frame.
        """
        if isinstance(interface, str):
            interface = get_interface(interface)(**options)
        elif options:
            raise TypeError(f"gateway {self.name!r}: options are for an interface named by a string, got {options}")
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

    def intake_ok(self) -> bool:
        """Return False while the TCP intake can't accept connections (liveness should fail meanwhile)."""
        return self.intake is None or self.intake.accepting
