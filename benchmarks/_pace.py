"""Sender-side helpers shared by the raw and peer cases: a pacer and the timestamped test payload."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._harness import CpuClock

__all__ = ["TS", "Pacer", "SendLoop", "payload", "stamp"]

TS = struct.Struct("<d")


class Pacer:
    """Waits on an absolute schedule at `rate`/s (no drift); free-running when `rate` is None."""

    def __init__(self, rate: float | None) -> None:
        self.period = 1.0 / rate if rate else 0.0
        self.next = time.perf_counter()

    def wait(self) -> None:
        """Sleep until the next slot; after falling behind by more than a slot, start again from now."""
        if not self.period:
            return
        self.next += self.period
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -self.period:
            self.next = time.perf_counter()


def payload(size: int) -> np.ndarray:
    """A writable uint8 buffer of `size` bytes whose first 8 bytes will carry the send time."""
    return np.full(size, 7, dtype=np.uint8)


def stamp(buf: np.ndarray) -> float:
    """Write the current time into the first 8 bytes of `buf` and return it."""
    now = time.time()
    TS.pack_into(buf, 0, now)
    return now


class SendLoop:
    """A sender's loop, bounded by count and by time, paced at `rate`, with its CPU clocked."""

    def __init__(self, rate: float | None, duration: float, max_frames: int) -> None:
        self.pacer = Pacer(rate)
        self.duration = duration
        self.max_frames = max_frames
        self.clock = CpuClock()
        self.sent = 0

    def __iter__(self) -> Iterator[int]:
        self.clock.start()
        end = time.perf_counter() + self.duration
        while self.sent < self.max_frames and time.perf_counter() < end:
            yield self.sent
            self.sent += 1
            self.pacer.wait()

    def result(self) -> dict[str, Any]:
        """What the sender reports: how many it sent and its CPU %."""
        return {"sent": self.sent, "cpu_pct": self.clock.stop()}
