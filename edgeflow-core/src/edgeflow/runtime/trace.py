"""Stamping one node's frames with their hop times (`edgeflow.tracing`); EDGEFLOW_TRACE=0 turns it off.

On the hot path of every frame: a stamp is one clock read and 6 bytes added to the frame's packed trace; nothing
is unpacked until a sampled trace is reported.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from ..tracing import (
    END,
    MADE,
    MAX_STAMPS,
    READ,
    RECEIVED,
    STAMP,
    START,
    UNKNOWN_NODE,
    WRITTEN,
    TraceSampler,
    enabled,
    rate_limit,
)

if TYPE_CHECKING:
    from ..app import EdgeApp
    from ..frame import Frame
    from .stats import NodeStats

__all__ = ["Tracer"]

_I32 = 2**31 - 1
_FULL = MAX_STAMPS * STAMP.size
_pack = STAMP.pack
_pack2 = struct.Struct("<BBiBBi").pack


class Tracer:
    """Adds this node's stamps to the frames it handles; where a path ends (a gateway, a sink) it samples them.

    One tracer per node replica, used by its worker thread only (the gateway's intake threads hold its lock).
    """

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
        self._started = 0.0
        # A producer starts a trace at most every `period` seconds (EDGEFLOW_TRACE_RATE), on average.
        self.period = 1.0 / rate_limit()
        self._next = 0.0

    def written(self, frame: Frame) -> None:
        """Stamp a frame going out (a producer's frames start their trace here, made at their timestamp)."""
        if not self.on:
            return
        trace = frame.trace
        now = time.time()
        if trace is None:
            # Only whole paths are traced: an untraced input stays untraced, and producers trace at most their rate.
            if not self.starts or now < self._next:
                return
            due = self._next + self.period
            self._next = due if due > now - self.period else now
        us = int((now - frame.timestamp) * 1e6)
        if not -_I32 <= us <= _I32:
            us = _I32 if us > 0 else -_I32
        if trace is None:
            i = self.index
            frame.trace = _pack2(i, MADE, 0, i, WRITTEN, us)
        elif len(trace) < _FULL:
            frame.trace = trace + _pack(self.index, WRITTEN, us)

    def read(self, frame: Frame, t: float) -> None:
        """Stamp a frame read from the broker at `t`."""
        trace = frame.trace
        if trace is not None and self.on and len(trace) < _FULL:
            us = int((t - frame.timestamp) * 1e6)
            frame.trace = trace + _pack(self.index, READ, us if -_I32 <= us <= _I32 else (_I32 if us > 0 else -_I32))

    def start(self) -> None:
        """Note the start of `process()` (stamped with its end, in one go)."""
        self._started = time.time()

    def end(self, frame: Frame, source: str | None) -> None:
        """Stamp the start and end of `process()`; a sink's trace ends here and is offered to the sampler."""
        trace = frame.trace
        if trace is None or not self.on or len(trace) >= _FULL - STAMP.size:
            return
        ts = frame.timestamp
        a, b = int((self._started - ts) * 1e6), int((time.time() - ts) * 1e6)
        if not (-_I32 <= a <= _I32 and -_I32 <= b <= _I32):
            a, b = (max(-_I32, min(_I32, v)) for v in (a, b))
        i = self.index
        frame.trace = trace = trace + _pack2(i, START, a, i, END, b)
        if self.sampler is not None:
            self.sampler.add(source or "", trace)

    def received(self, frame: Frame, source: str) -> None:
        """Stamp a frame the gateway received from `source`, and offer its finished trace to the sampler."""
        trace = frame.trace
        if trace is not None and self.on and len(trace) < _FULL:
            us = int((time.time() - frame.timestamp) * 1e6)
            us = us if -_I32 <= us <= _I32 else (_I32 if us > 0 else -_I32)
            frame.trace = trace = trace + _pack(self.index, RECEIVED, us)
            if self.sampler is not None:
                self.sampler.add(source, trace)
