"""`ConsumerNode`: processes each frame of its inputs (filters, AI inference); replicas share the work."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["ConsumerNode"]


class ConsumerNode(Node):
    """Processes frames; implement `process(data)`."""

    node_type: ClassVar[str] = "consumer"
    #: Topics to read besides those linked to this node (set in `configure()`, as the seed does).
    input_topics: list[str]

    def process(self, data: Any) -> Any:
        """Return the result to send on (data, or `(data, meta)`), or None to send nothing."""
        raise NotImplementedError
