"""`SinkNode`: stores frames (files, databases); a sink sends nothing on."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["SinkNode"]


class SinkNode(Node):
    """Persists frames; implement `process(data)`, and `flush()` if writes are batched.

    The runner calls `flush()` after a batch of frames went through `process()` and acknowledges the batch only
    once `flush()` returned: a frame acknowledged is on disk, a frame not acknowledged comes again.
    """

    node_type: ClassVar[str] = "sink"
    #: Topics to read besides those linked to this node.
    input_topics: list[str]

    def process(self, data: Any) -> None:
        """Store `data`; `self.current_frame` holds its id, timestamp and meta."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make what `process()` stored durable (commit, fsync); raise if that failed."""
