"""`Node`: what every node class shares; the runner sets the attributes and owns the loop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..broker import Broker
    from ..frame import Frame
    from ..runtime.stats import NodeStats

__all__ = ["Node"]


class Node:
    """Base of every node; override `configure()` to set up, and the method of your node type."""

    node_type: ClassVar[str] = ""
    #: The topic this node's output is published under; its node name unless set here or in `@app.node(...)`.
    #: Links and other nodes' `input_topics` find a node by it, so it is known before the nodes start.
    output_topic: str | None = None

    name: str
    app_name: str
    device: str | None
    replicas: int
    replica: int
    logger: logging.Logger
    broker: Broker
    stats: NodeStats
    #: The frame being processed, so `process()` can read its `meta`, `frame_id` and `timestamp`.
    current_frame: Frame | None = None
    #: The source node of `current_frame`; with `frame_id` it identifies a frame, e.g. to drop redeliveries.
    current_source: str | None = None

    def configure(self) -> None:
        """Set the node up (open devices, load models); called once per replica before frames flow."""

    def close(self) -> None:
        """Release what `configure()` acquired; called once when the node stops."""

    def _bind(
        self,
        *,
        name: str,
        app_name: str,
        device: str | None,
        replicas: int,
        replica: int,
        broker: Broker,
        stats: NodeStats,
        params: dict[str, Any],
    ) -> None:
        self.name = name
        self.app_name = app_name
        self.device = device
        self.replicas = replicas
        self.replica = replica
        self.broker = broker
        self.stats = stats
        suffix = f".{replica}" if replicas > 1 else ""
        self.logger = logging.getLogger(f"edgeflow.node.{name}{suffix}")
        for key, value in params.items():
            setattr(self, key, value)
