"""Watching a topic without taking part: XREAD from now on, with no consumer group, so nothing is held, nothing
acknowledged, and a watcher killed mid-read leaves nothing behind that could hold a producer back."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from ...broker import Delivery, Subscription
from ...errors import FrameError
from ...frame import decode
from ..dataplane import Missing
from .errors import translate

if TYPE_CHECKING:
    from .broker import RedisBroker

__all__ = ["TailSubscription"]

log = logging.getLogger("edgeflow.broker")


class TailSubscription(Subscription):
    """Reads the frames of one topic as they are written, from its realtime stream, or its durable one if it has
    no other; frames written while it was busy (pushed out of a realtime stream) count as skipped."""

    def __init__(self, broker: RedisBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.keys = [broker.stream_key(topic, "realtime"), broker.stream_key(topic, "durable")]
        self.key: str | None = None
        self._last = b"$"
        self._next_look = 0.0
        self._seq: dict[bytes, int] = {}
        self.payloads = broker.data_plane.reader(None)  # copies: a watcher holds nothing of the producer's
        self._watching_at = 0.0
        self._me = f"{id(self):x}"

    def _watch(self) -> None:
        """Tell a producer serving its readers in memory that someone reads the stream entries (for 15 s)."""
        self._watching_at = time.monotonic()
        key = self.broker.local.watchers_key(self.topic)
        try:
            pipe = self.broker.client.pipeline(transaction=False)
            pipe.hset(key, self._me, time.time() + 15)
            pipe.expire(key, 60)
            pipe.execute()
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc

    def _pick(self) -> str | None:
        if self.key is None and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + 0.5
            client: Any = self.broker.client
            for key in self.keys:  # both carry the same frames when both exist: the realtime one is lighter
                if client.exists(key):
                    self.key = key
                    break
        return self.key

    def read(self, timeout: float) -> list[Delivery]:
        if time.monotonic() - self._watching_at >= 5.0:
            self._watch()
        key = self._pick()
        if key is None:
            time.sleep(min(timeout, 0.5))
            return []
        try:
            got = self.broker.client.xread({key: self._last}, count=64, block=max(1, int(timeout * 1000)))
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc
        out: list[Delivery] = []
        for _, entries in got or []:
            if not entries:
                continue
            self._last = entries[-1][0]
            payloads = self.payloads.resolve([fields for _, fields in entries])
            for (entry_id, fields), payload in zip(entries, payloads, strict=True):
                writer, seq = fields.get(b"w"), fields.get(b"q")
                if writer is not None and seq is not None and seq.isdigit():
                    last = self._seq.get(writer)
                    if last is not None and int(seq) > last + 1:
                        self.skipped += int(seq) - last - 1
                    self._seq[writer] = max(int(seq), last or 0)
                if isinstance(payload, Missing):
                    self.skipped += 1
                    continue
                try:
                    frame = decode(fields[b"h"], payload)
                except (FrameError, KeyError) as exc:
                    self.rejected += 1
                    log.warning("watching %s: rejected entry %s: %s", self.topic, entry_id.decode(), exc)
                    continue
                out.append(Delivery(self.topic, frame, entry_id, "realtime", 1, 1, {}))
        return out

    def close(self) -> None:
        self.payloads.close()
        try:
            self.broker.client.hdel(self.broker.local.watchers_key(self.topic), self._me)
        except redis.RedisError:
            pass
