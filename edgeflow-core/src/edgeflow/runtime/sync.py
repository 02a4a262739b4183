"""Approximate-time matching of frames from several topics (the idea of ROS message_filters)."""

from __future__ import annotations

import bisect
import time

from ..frame import Frame

__all__ = ["Synchronizer"]


class Synchronizer:
    """Matches one frame per topic whose timestamps lie within `slop` seconds; bounded per topic.

    Frames that can never be part of a match are dropped and counted in `dropped`: those older than the
    newest head by more than `slop`, those older than a match already made on their topic, and the oldest
    when a topic's queue is full.
    """

    def __init__(self, topics: list[str], slop: float, queue_size: int = 30) -> None:
        if not topics:
            raise ValueError("a synchronizer needs at least one topic")
        if slop < 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.topics = list(topics)
        self.slop = float(slop)
        self.queue_size = queue_size
        self.dropped = 0
        #: Frames whose stamp was far older than a match already made on their topic: the baseline moved.
        self.clock_jumps = 0
        #: How far behind a topic's last match a frame may be and still be late, not a clock jump.
        self.window = max(1.0, 10 * self.slop)
        self._queues: dict[str, list[Frame]] = {t: [] for t in self.topics}
        self._keys: dict[str, list[float]] = {t: [] for t in self.topics}
        self._last: dict[str, float] = {}

    def pending(self) -> int:
        """Return how many frames wait for a match."""
        return sum(len(q) for q in self._queues.values())

    def _pop(self, topic: str, index: int = 0) -> Frame:
        self._keys[topic].pop(index)
        return self._queues[topic].pop(index)

    def add(self, topic: str, frame: Frame) -> list[list[Frame]]:
        """Add `frame` from `topic`; return the matches it completes, each in topic order."""
        if topic not in self._queues:
            raise KeyError(f"unknown topic {topic!r}; expected one of {self.topics}")
        ts = frame.timestamp
        if ts > time.time() + self.window:
            # Stamped in the future beyond any clock drift: it would be every other topic's pivot, and they would
            # all be dropped as stale behind it. It is the bogus one: dropped, counted.
            self.dropped += 1
            self.clock_jumps += 1
            return []
        last = self._last.get(topic, float("-inf"))
        if ts <= last:
            if last - ts <= self.window:
                self.dropped += 1
                return []
            # Much older than a match made on its topic: that topic's clock jumped (or one stamp was bogus).
            # Timestamps are data: start the topic afresh instead of dropping everything it sends from now on.
            self.clock_jumps += 1
            self._last.pop(topic)
            self.dropped += len(self._queues[topic])
            self._queues[topic].clear()
            self._keys[topic].clear()
        keys = self._keys[topic]
        i = bisect.bisect_right(keys, ts)
        keys.insert(i, ts)
        self._queues[topic].insert(i, frame)
        if len(keys) > self.queue_size:
            self._pop(topic)
            self.dropped += 1
        return self._match()

    def _match(self) -> list[list[Frame]]:
        out: list[list[Frame]] = []
        while all(self._keys[t] for t in self.topics):
            pivot = max(self._keys[t][0] for t in self.topics)
            stale = False
            for t in self.topics:
                while self._keys[t] and self._keys[t][0] < pivot - self.slop:
                    self._pop(t)
                    self.dropped += 1
                    stale = True
            if stale:
                continue
            # Every head is now within slop of the pivot; prefer, per topic, the frame nearest the pivot.
            picks = []
            for t in self.topics:
                keys = self._keys[t]
                j = bisect.bisect_right(keys, pivot + self.slop)
                best = 0
                for k in range(1, j):
                    if abs(keys[k] - pivot) < abs(keys[best] - pivot):
                        best = k
                picks.append(best)
            chosen = [self._keys[t][k] for t, k in zip(self.topics, picks, strict=True)]
            if max(chosen) - min(chosen) > self.slop:
                picks = [0] * len(self.topics)
            match = []
            for t, k in zip(self.topics, picks, strict=True):
                for _ in range(k):
                    self._pop(t)
                    self.dropped += 1
                frame = self._pop(t)
                self._last[t] = frame.timestamp
                match.append(frame)
            out.append(match)
        return out
