"""`ProducerNode`: makes frames (cameras, sensors), paced by `fps`."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Node

__all__ = ["IDLE", "ProducerNode"]


class _Idle:
    """The type of `IDLE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


#: What `produce()` returns when it has nothing to send right now (an event source that waited in vain):
#: the runner sends nothing, counts nothing, and calls `produce()` again.
IDLE = _Idle()


class ProducerNode(Node):
    """Produces data; implement `produce()`. The runner calls it `fps` times a second, without drift."""

    node_type: ClassVar[str] = "producer"
    #: Frames per second; None runs as fast as `produce()` returns.
    fps: float | None = None

    def produce(self) -> Any:
        """Return the next ndarray, bytes, JSON data or `Frame`; `IDLE` when there is nothing yet; None to end."""
        raise NotImplementedError
