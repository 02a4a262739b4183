"""`ProducerNode`: makes frames (cameras, sensors), paced by `fps`."""

from __future__ import annotations

from typing import Any, ClassVar, Final

from .base import Node

__all__ = ["IDLE", "ProducerNode"]


class _Idle:
    """The type of `IDLE`; one instance, so `out is IDLE` is the test."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


#: Returned by `produce()` when nothing is ready yet: the runner neither sends nor counts, and calls again.
IDLE: Final = _Idle()


class ProducerNode(Node):
    """Produces data; implement `produce()`. The runner calls it `fps` times a second, without drift."""

    node_type: ClassVar[str] = "producer"
    #: Frames per second; None runs as fast as `produce()` returns.
    fps: float | None = None

    def produce(self) -> Any:
        """Return the next ndarray, bytes, JSON data or `Frame`; `IDLE` when nothing is ready; None ends the stream.

        A producer that waits for input (a socket, a ROS 2 topic) should wait with a bounded timeout and return
        `IDLE` when it runs out, so that the runner can stop it promptly.
        """
        raise NotImplementedError
