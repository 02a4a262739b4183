"""Stamping one node's frames with their hop times (`edgeflow.tracing`); EDGEFLOW_TRACE=0 turns it off."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..tracing import END, MADE, MAX_STAMPS, READ, RECEIVED, START, UNKNOWN_NODE, WRITTEN, TraceSampler, enabled

if TYPE_CHECKING:
    from ..app import EdgeApp
    from ..frame import Frame
    from .stats import NodeStats

__all__ = ["Tracer"]


class Tracer:
    """Adds this node's stamps to the frames it handles; where a path ends (a gateway, a sink) it samples them."""

    def __init__(self, app: EdgeApp, name: str, stats: NodeStats) -> None:
        self.on = enabled()
        names = list(app.nodes)
        index = names.index(name) if name in names else UNKNOWN_NODE
        self.index = min(index, UNKNOWN_NODE)
        spec = app.nodes.get(name)
        self.starts = spec is not None and spec.type == "producer"
        self.sampler: TraceSampler | None = None
        if self.on and spec is not None and spec.type in ("gateway", "sink"):
            self.sampler = stats.traces = TraceSampler(names)

    def _stamp(self, frame: Frame, kind: int, t: float) -> None:
        trace = frame.trace
        if trace is not None and len(trace) < MAX_STAMPS:
            trace.append((self.index, kind, t))

    def written(self, frame: Frame) -> None:
        """Stamp a frame going out (a producer's frames start their trace here, made at their timestamp)."""
        if not self.on:
            return
        if frame.trace is None:
            if not self.starts:
                return  # only whole paths are traced: an untraced input stays untraced
            frame.trace = [(self.index, MADE, frame.timestamp)]
        self._stamp(frame, WRITTEN, time.time())

    def read(self, frame: Frame, t: float) -> None:
        """Stamp a frame read from the broker at `t`."""
        if self.on:
            self._stamp(frame, READ, t)

    def start(self, frame: Frame) -> None:
        """Stamp the start of `process()` on `frame`."""
        if self.on:
            self._stamp(frame, START, time.time())

    def end(self, frame: Frame, source: str | None) -> None:
        """Stamp the end of `process()`; a sink's trace ends here and is offered to the sampler."""
        if self.on:
            self._stamp(frame, END, time.time())
            if self.sampler is not None:
                self.sampler.add(source or "", frame.trace)

    def received(self, frame: Frame, source: str) -> None:
        """Stamp a frame the gateway received from `source`, and offer its finished trace to the sampler."""
        if self.on:
            self._stamp(frame, RECEIVED, time.time())
            if self.sampler is not None:
                self.sampler.add(source, frame.trace)
