"""The publisher and subscription of DualRedisBroker: RedisBroker's streams with payloads on the data plane."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from edgeflow.broker import Delivery
from edgeflow.brokers.redis import RedisPublisher, RedisSubscription
from edgeflow.errors import BrokerError, FrameError
from edgeflow.frame import Buffer, Frame, decode, encode

if TYPE_CHECKING:
    from edgeflow.linker import Link

    from .broker import DualRedisBroker

log = logging.getLogger("edgeflow.broker.dualredis")

# A realtime payload whose entry newer frames pushed out of the stream lives a little longer, so that a reader
# that took the entry just before it went still finds the payload (it fetches it within the same read(), so
# within milliseconds): 0.5 s, and at most 32 frames more. The data Redis then holds (depth + 32) payloads at
# most however fast the producer runs, and 0.5 s of frames at camera rates (30 fps VGA: 14 MB). A reader stalled
# longer finds the payload gone and counts the frame as skipped, as realtime links do with stale frames.
_GRACE_MS = 500
_GRACE_FRAMES = 32
# Stands in for a frame whose payload is still to be fetched from the data plane.
_UNRESOLVED = Frame(-1, 0.0)


def payload_kind(realtime: bool, durable: bool) -> str:
    """Return the kind of payload key for links of these qos: `rt`, `dur` or `mix` (both)."""
    if realtime and durable:
        return "mix"
    return "dur" if durable else "rt"


class Placed:
    """A payload already written to the data plane; it stands in for the payload on the way to the stream entry."""

    __slots__ = ("ref", "size")

    def __init__(self, ref: str, size: int) -> None:
        self.ref = ref
        self.size = size

    def __len__(self) -> int:
        return self.size


class DualPublisher(RedisPublisher):
    """Writes a frame's payload to the data plane, then its reference to the streams: one round trip per plane."""

    def __init__(self, broker: DualRedisBroker, source: str, links: Sequence[Link]) -> None:
        super().__init__(broker, source, links)
        self.dual = broker
        self.kind = payload_kind(self.rt_key is not None, self.dur_key is not None)
        # This publisher's realtime payloads still referenced by the stream (MAXLEN rt_depth), then those in grace.
        self._window: deque[str] = deque()
        self._grace: deque[str] = deque()
        # The frame whose stream write failed, and where its payload went: the runner retries with the same tuple.
        self._retry: tuple[tuple[bytes, Buffer], str] | None = None

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        if self.dur_key is not None and self._dur_len >= self.dur_cap:
            self._wait_for_room()  # before the payload is written, so a producer held back does not rewrite it
        header, payload = encoded or encode(frame)
        if len(payload) < self.dual.inline_threshold:
            super().publish(frame, (header, payload))
            return
        expire: list[str] = []
        drop: list[str] = []
        if self._retry is not None and encoded is not None and self._retry[0] is encoded:
            ref = self._retry[1]  # same frame again: overwrite its payload rather than leave an orphan behind
        else:
            ref = self.dual.new_ref(self.kind)
            if self.kind == "rt":
                self._window.append(ref)
                while len(self._window) > self.rt_depth:
                    expire.append(self._window.popleft())
                self._grace.extend(expire)
                while len(self._grace) > _GRACE_FRAMES:
                    drop.append(self._grace.popleft())
        self.dual.store(ref, payload, self.dual.ttl_ms(self.kind), expire, _GRACE_MS, drop)
        if encoded is not None:
            self._retry = (encoded, ref)
        super().publish(frame, (header, cast(Buffer, Placed(ref, len(payload)))))
        self._retry = None


class DualSubscription(RedisSubscription):
    """Reads like RedisBroker's subscription, then fetches the payloads of the whole batch with one MGET."""

    def __init__(self, broker: DualRedisBroker, links: list[Link], consumer: str) -> None:
        self.dual = broker
        #: Durable frames whose payload the data plane no longer had: acknowledged, counted in `rejected` too.
        self.lost = 0
        self._collect: list[Delivery] | None = None
        # Deliveries read while the data plane was down, resolved and handed out once it answers again.
        self._held: list[Delivery] = []
        self._lost_logged_at = float("-inf")
        self._lost_unlogged = 0
        super().__init__(broker, links, consumer)

    def _decode(self, key: str, entry_id: bytes, fields: dict[bytes, Any], attempts: int) -> Delivery | None:
        ref = fields.get(b"r")
        if ref is None:
            return super()._decode(key, entry_id, fields, attempts)
        source, qos, _ = self._streams[key]
        if not source:  # a replayed dead letter names its source, and its payload lives in the letter's copy
            source = fields.get(b"s", b"").decode()
        fetch = self.dual.dead_copy(ref) if key == self.broker.replay_key(self.group) else ref
        d = Delivery(source, _UNRESOLVED, entry_id, qos, attempts, self.max_attempts if qos == "durable" else 1,
                     {"key": key, "ref": ref, "fetch": fetch, "h": fields.get(b"h", b"")})  # fmt: skip
        if self._collect is not None:
            self._collect.append(d)
            return d
        self._resolve([d])  # takeover path: a few frames, rarely
        return d if d.frame is not _UNRESOLVED else None

    def read(self, timeout: float) -> list[Delivery]:
        if self._held:
            held = self._held
            self._resolve([d for d in held if d.frame is _UNRESOLVED])  # raises while the data plane is down
            self._held = []
            return [d for d in held if d.frame is not _UNRESOLVED]
        self._collect = []
        try:
            out = super().read(timeout)
        finally:
            pending, self._collect = self._collect, None
        if not pending:
            return out
        try:
            self._resolve(pending)
        except BrokerError:
            # Keep durable frames in hand (they are ours in the group) and resolve them when the data Redis is
            # back; realtime frames are stale by then, so they go, counted as skipped.
            stale = {id(d) for d in pending if d.qos == "realtime"}
            self.skipped += len(stale)
            self._held = [d for d in out if id(d) not in stale]
            raise
        return [d for d in out if d.frame is not _UNRESOLVED]

    def _claim(self) -> list[Delivery]:
        # Frames in our own hand must not be claimed back; and while the data Redis is down a takeover would only
        # count one more delivery per frame, pushing good frames towards the dead-letter stream.
        if self._held or (self.dual.data_down and not self.dual.data_answers()):
            return []
        collect, self._collect = self._collect, None
        try:
            return super()._claim()
        finally:
            self._collect = collect

    def _resolve(self, deliveries: Sequence[Delivery]) -> None:
        """Fetch and decode the payloads of `deliveries`; those that fail keep the placeholder frame."""
        if not deliveries:
            return
        payloads = self.dual.fetch([d.extra["fetch"] for d in deliveries])
        for d, payload in zip(deliveries, payloads, strict=True):
            if payload is None:
                self._missing(d)
                continue
            try:
                d.frame = decode(d.extra["h"], payload)
            except FrameError as exc:
                self.rejected += 1
                log.warning("%s: rejected a bad frame from %r (entry %s): %s", self.group, d.source, d.entry_id, exc)
                self._ack_later(d)

    def _missing(self, d: Delivery) -> None:
        if d.qos == "realtime":
            # Its TTL ran out before this reader came: a stale frame, skipped as realtime links do.
            self.skipped += 1
            log.debug("%s: realtime payload %r expired before it was read; skipped", self.group, d.extra["ref"])
            return
        self.lost += 1
        self.rejected += 1
        self._ack_later(d)  # it can never be read: left pending, it would block trimming and the producer
        self._lost_unlogged += 1
        now = time.monotonic()
        if now - self._lost_logged_at < 1.0:
            return
        more = f" ({self._lost_unlogged - 1} more since the last report)" if self._lost_unlogged > 1 else ""
        log.error(
            "%s: durable frame %s from %r is LOST: its payload %s is gone from the data-plane Redis at %s (restarted "
            "without persistence, evicted under maxmemory, or older than durable_ttl=%gs); acknowledged and counted "
            "as rejected%s. Run the data Redis with appendonly yes and maxmemory-policy noeviction",
            self.group, _frame_id(d.extra["h"]), d.source, d.extra["ref"].decode(errors="replace"),
            self.dual.data_display_url, self.dual.durable_ttl, more,
        )  # fmt: skip
        self._lost_logged_at, self._lost_unlogged = now, 0

    def _ack_later(self, d: Delivery) -> None:
        if d.qos == "durable":
            self._pending_acks.setdefault(d.extra["key"], []).append(d.entry_id)

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        ref = delivery.extra.get("ref")
        if ref is not None:
            # The entry's payload is freed once the entry is trimmed; the letter keeps a copy for durable_ttl.
            self.dual.keep_for_dead_letter(ref)
        super().dead_letter(delivery, error)


def _frame_id(header: bytes) -> int | str:
    try:
        from edgeflow.frame import peek

        return peek(header)[0]
    except Exception:
        return "?"
