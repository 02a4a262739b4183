"""`ConsumerNode`: processes each frame of its inputs (filters, AI inference); replicas share the work."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["ConsumerNode", "SinkNode"]


class ConsumerNode(Node):
    """Processes frames; implement `process(data)`."""

    node_type: ClassVar[str] = "consumer"
    #: Extra source nodes to read besides those linked to this node.
    input_topics: list[str]

    def process(self, data: Any) -> Any:
        """Return the result to send on (data, or `(data, meta)`), or None to send nothing."""
        raise NotImplementedError


class SinkNode(Node):
    """Persists frames (files, databases); implement `process(data)`. A sink sends nothing on."""

    node_type: ClassVar[str] = "sink"
    input_topics: list[str]

    def process(self, data: Any) -> None:
        """Store `data`; `self.current_frame` holds its id, timestamp and meta."""
        raise NotImplementedError
