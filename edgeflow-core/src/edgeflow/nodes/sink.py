"""`SinkNode`: stores frames (files, databases); a sink sends nothing on."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["SinkNode"]


class SinkNode(Node):
    """Persists frames; implement `process(data)`, and `flush()` if writes are batched.

    The runner calls `flush()` when `flush_due()` says so (by default after every read) and acknowledges the
    frames processed since the previous flush only once `flush()` returned: a frame acknowledged is on disk, a
    frame not acknowledged comes again. Until then it holds their acknowledgements, across reads.
    """

    node_type: ClassVar[str] = "sink"
    #: Topics to read besides those linked to this node.
    input_topics: list[str]
    #: Counts the times the sink dropped writes not yet flushed (a failed write or commit): the runner then
    #: acknowledges none of the frames processed before it since the last flush, and they come again.
    rollbacks: int = 0

    def process(self, data: Any) -> None:
        """Store `data`; `self.current_frame` holds its id, timestamp and meta."""
        raise NotImplementedError

    def flush_due(self) -> bool:
        """Return True when `flush()` should run now; the runner asks after every read, also an empty one."""
        return True

    def flush(self) -> bool | None:
        """Make what `process()` stored durable (commit, fsync); raise (or return False) if that failed."""
        return None
