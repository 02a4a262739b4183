"""`FusionNode`: gets one frame per input, matched by timestamp within `slop` seconds."""

from __future__ import annotations

from typing import Any, ClassVar

from ..frame import Frame
from .base import Node

__all__ = ["FusionNode"]


class FusionNode(Node):
    """Fuses several topics; implement `process(frames)`, one `Frame` per input in link order."""

    node_type: ClassVar[str] = "fusion"
    #: Largest spread of timestamps, in seconds, within one matched set.
    slop: float = 0.1
    #: Frames kept per input while waiting for a match; older ones are dropped and counted.
    queue_size: int = 30
    #: Inputs, when not given by links: source node names, in the order `process` receives them.
    input_topics: list[str]

    def process(self, frames: list[Frame]) -> Any:
        """Return the fused result (data, or `(data, meta)`), or None to send nothing."""
        raise NotImplementedError
