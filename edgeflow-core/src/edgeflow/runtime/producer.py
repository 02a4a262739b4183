"""The producer's loop: `produce()` at `fps`, on an absolute schedule so that the rate does not drift."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import FrameError, NodeError
from ..frame import Frame
from ..nodes import IDLE, ProducerNode
from .workers import Worker, describe

__all__ = ["ProducerWorker"]

_SENDABLE = (np.ndarray, bytes, bytearray, memoryview, dict, list, str, int, float)


class ProducerWorker(Worker):
    """Calls `produce()` at `fps` (or as fast as it returns) and sends what it returns."""

    def run(self) -> None:
        node = self.build()
        assert isinstance(node, ProducerNode)
        self.outputs.open()
        fps = getattr(node, "fps", None)
        period = 1.0 / float(fps) if fps else 0.0
        stop = self.ctx.stop
        seq = 0
        next_t = time.monotonic()
        produce: Callable[[], Any] = node.produce
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                out = produce()
            except Exception as exc:
                self.stats.failed += 1
                self.errors(f"node {self.spec.name!r}: produce() raised on frame {seq}: {describe(exc)}", exc)
                out = IDLE
            if out is None:
                self.logger.info(
                    "node %r: produce() returned None, the stream ended after %d frames", self.spec.name, seq
                )
                break
            if out is IDLE and not period:
                continue  # an event source found nothing yet: it waited inside produce() already
            if out is not IDLE:
                try:
                    frame = self._frame(out, seq)
                    if self.emit(frame):
                        seq += 1
                        self.stats.proc_ms.append((time.perf_counter() - t0) * 1000.0)
                except (FrameError, NodeError) as exc:
                    self.stats.failed += 1
                    self.errors(f"node {self.spec.name!r}: frame {seq} not sent: {exc}")
            self.sync_counters_soon()
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -period:
                    next_t = time.monotonic()  # fell behind by more than a frame: don't burst to catch up

    def _frame(self, out: Any, seq: int) -> Frame:
        if isinstance(out, Frame):
            return out
        if isinstance(out, _SENDABLE) and not isinstance(out, bool):
            return Frame(seq, time.time(), {}, out)
        raise NodeError(
            f"produce() returned {type(out).__name__}; return a numpy ndarray, bytes, JSON data or a Frame",
            node=self.spec.name,
        )
