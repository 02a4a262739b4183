"""`ProducerNode`: makes frames (cameras, sensors), paced by `fps`."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["ProducerNode"]


class ProducerNode(Node):
    """Produces data; implement `produce()`. The runner calls it `fps` times a second, without drift."""

    node_type: ClassVar[str] = "producer"
    #: Frames per second; None runs as fast as `produce()` returns.
    fps: float | None = None

    def produce(self) -> Any:
        """Return the next ndarray, bytes, JSON data or `Frame`; return None to end the stream."""
        raise NotImplementedError
