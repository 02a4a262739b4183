"""The same-host channel: realtime frames without Redis entries while every reader is on the producer's host.

Checked once a second from the registrations in Redis: the channel may be used when the publisher's links are
all realtime, it is the only live producer replica of its source, and every replica of every target registered
from this host as able to read a channel. The producer then names its channel in Redis and keeps writing stream
entries until every target has joined the channel; only then do frames go through it alone (so a frame never
waits in a channel nobody reads). Any change back: stream entries again. Both sides wrap the Redis publisher
and subscription (composition, not subclasses) and share their numbering and skip accounting with them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

import redis

from edgeflow.broker import Delivery, ForwardingSubscription, Publisher
from edgeflow.errors import FrameError
from edgeflow.frame import Buffer, Frame, decode, encode

from ._channel import INLINE_SEGMENT, ChannelReader, ChannelWriter
from ._pool import SLOT_HEADER, align64, fresh, slot_info, text

if TYPE_CHECKING:
    from edgeflow.brokers.redis import RedisPublisher, RedisSubscription
    from edgeflow.links import Link

    from .plane import SharedMemoryPlane, ShmReader

__all__ = ["REGISTRATION_TTL", "ChannelPublisher", "ChannelSubscription"]

log = logging.getLogger("edgeflow.shm")

REGISTRATION_TTL = 30.0  # a reader that stopped refreshing for this long no longer counts
_REFRESH_EVERY = 10.0
_DECIDE_EVERY = 1.0
_WRITER_TTL = 5.0  # a producer replica that stopped refreshing for this long no longer counts
_CHANNEL_TTL = 3  # seconds the channel's name stays in Redis unless its producer refreshes it
_CHANNEL_CHECK_EVERY = 0.5


class ChannelPublisher(Publisher):
    """The Redis publisher of one source, and its channel while every reader takes frames from it."""

    def __init__(self, plane: SharedMemoryPlane, inner: RedisPublisher) -> None:
        self.plane = plane
        self.inner = inner
        self.broker = inner.broker
        self.durable = inner.durable
        self.channel: ChannelWriter | None = None
        self.local = False
        self.channel_dropped = 0
        self._wid = secrets.token_hex(6)
        self._decide_at = 0.0
        self._join_check_at = 0.0
        self._targets = sorted({ln.target for ln in inner.links})
        self._eligible = True  # until the channel file can't be made

    # What the channel shares with the Redis publisher: the topic, its links and the numbering of frames.
    @property
    def source(self) -> str:
        """The topic."""
        return self.inner.source

    @property
    def links(self) -> list[Link]:
        """The links out of the topic."""
        return self.inner.links

    @property
    def seq(self) -> int:
        """The number of the last frame sent, on either path."""
        return self.inner.seq

    def _channel_allowed(self) -> bool:
        """Read the registrations: may this source use its channel now?"""
        plane, source = self.plane, self.source
        client: Any = plane.broker.client
        wall = time.time()
        pipe = client.pipeline(transaction=False)
        pipe.hset(plane.writers_key(source), self._wid, wall)
        pipe.expire(plane.writers_key(source), int(_WRITER_TTL * 4))
        pipe.hgetall(plane.writers_key(source))
        pipe.hgetall(plane.readers_key(source))
        pipe.hgetall(plane.fast_key(source))
        _, _, writers, readers, fast = pipe.execute()
        live_writers = [w for w, t in writers.items() if fresh(t, wall, _WRITER_TTL)]
        if len(live_writers) != 1:
            return False
        live = {text(f) for f, t in readers.items() if fresh(t, wall, REGISTRATION_TTL)}
        replicas: dict[str, list[bool]] = {}  # "target|host" -> can each live replica read the channel?
        for field, value in fast.items():
            stamp, _, able = text(value).partition("|")
            if fresh(stamp, wall, REGISTRATION_TTL):
                replicas.setdefault(text(field).rpartition("|")[0], []).append(able == "1")
        for target in self._targets:
            here = f"{target}|{plane.host}"
            mine = {f for f in live if f.rpartition("|")[0] == target}
            if mine != {here} or not replicas.get(here) or not all(replicas[here]):
                return False
        return True

    def _decide(self, now: float) -> None:
        self._decide_at = now + _DECIDE_EVERY
        try:
            allowed = self._channel_allowed()
        except redis.RedisError:
            return  # the next publish reports the outage; keep the current mode until Redis answers
        if not allowed:
            if self.channel is not None:
                self.plane.forget_decision(self.source)  # a reader elsewhere may need payloads inline now
                self._retire()
            return
        if self.channel is None:
            self.plane.sweep_once()  # what crashed processes left, as before a first segment
            try:
                self.channel = ChannelWriter(self.plane.broker.namespace)
            except OSError as exc:
                log.warning("%s: no channel file (%s): frames go through Redis entries", self.source, exc)
                self._eligible = False
                return
        with contextlib.suppress(redis.RedisError):
            name = f"{self.plane.host}|{self.channel.name}"
            self.plane.broker.client.set(self.plane.channel_key(self.source), name, ex=_CHANNEL_TTL)

    def _retire(self) -> None:
        """Stop using the channel and stop naming it: readers go back to stream entries."""
        assert self.channel is not None
        if self.local:
            self.channel.end()
            self.local = False
            log.info("%s: frames go through Redis entries again", self.source)
        with contextlib.suppress(redis.RedisError):
            self.plane.broker.client.delete(self.plane.channel_key(self.source))
        self.channel.close()
        self.channel = None

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        if self._eligible:
            now = time.monotonic()
            if now >= self._decide_at:
                self._decide(now)
            if self.channel is not None and not self.local and now >= self._join_check_at:
                self._join_check_at = now + 0.01
                if self.channel.joined(self._targets):
                    self.channel.begin(self.seq + 1, self.inner.rt_depth, self.inner.writer)
                    self.local = True
                    log.info("%s: every reader is on this host: frames go through channel %s", self.source,
                             self.channel.name)  # fmt: skip
        if not self.local:
            try:
                self.inner.publish(frame, encoded)
            finally:
                self.dropped = self.channel_dropped + self.inner.dropped
            return
        header, payload = encoded or encode(frame)
        assert self.channel is not None
        if self.channel.put_inline(self.seq + 1, header, payload):
            self.inner.seq += 1  # a small frame: in the channel itself, no slot to lock on either side
            return
        placed = self.plane.local_write(self, header, payload)
        self.inner.seq += 1
        if placed is None:
            # Every slot is held by a reader (more readers than slots): newest wins, this one is dropped.
            if not self.channel_dropped:
                log.warning("%s: every shared-memory slot is being read; frames are dropped (counted) until one "
                            "is free: raise shm_slots", self.source)  # fmt: skip
            self.channel_dropped += 1
            self.dropped = self.channel_dropped + self.inner.dropped
            return
        self.channel.put(self.seq, *placed)

    def close(self) -> None:
        if self.channel is not None:
            if self.local:
                # Readers take the newest frame before the channel closes, as they would find it in a stream.
                deadline = time.monotonic() + 0.25
                while not self.channel.caught_up(self._targets, self.seq) and time.monotonic() < deadline:
                    time.sleep(0.002)
            self._retire()
        with contextlib.suppress(redis.RedisError):
            self.plane.broker.client.hdel(self.plane.writers_key(self.source), self._wid)
        self.inner.close()
        self.dropped = self.channel_dropped + self.inner.dropped


class ChannelSubscription(ForwardingSubscription):
    """The Redis subscription of one target replica, and the channel of its source while that one is open.

    Its slot locks (the Redis reader's files) live from one read to the next; frames skipped in the channel are
    counted with those Redis counts.
    """

    def __init__(
        self,
        plane: SharedMemoryPlane,
        inner: RedisSubscription,
        reader: ShmReader,
        links: list[Link],
        consumer: str,
        fast: bool,
    ) -> None:
        super().__init__(inner)
        self.inner: RedisSubscription = inner
        self.plane = plane
        self.reader = reader  # the payload reader of `inner`: the channel's slot locks live with its own
        self.consumer = consumer
        self.links = links
        self.fast = fast
        self.channel: ChannelReader | None = None
        self._read_before = False
        self._in_channel = False
        self._seen: int | None = None  # the newest sequence number this group took, once known
        self._seen_known = False
        self._next_refresh = time.monotonic() + _REFRESH_EVERY
        self._next_check = 0.0
        self._host: str | None = None  # registered as a reader of another host (set when mapping is refused)

    def _read(self, timeout: float) -> list[Delivery]:
        self.reader.release()  # the frames of the previous read are done: their slots may be written again
        now = time.monotonic()
        if self.reader.refused is not None and self._host is None:
            # This host's segments can't be mapped here: register as a reader elsewhere, so that producers put the
            # payloads inline (within a second), and leave any channel.
            self._host = f"{self.plane.host}:uid{os.getuid()}"
            self.fast = False
            if self.channel is not None:
                self._leave_channel()
            self._next_refresh = 0.0
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_EVERY
            self.plane.register_reader(self.links, self.consumer, self.fast, self._host)
        if self.fast:
            if now >= self._next_check:
                self._next_check = now + _CHANNEL_CHECK_EVERY
                self._check_channel()
            if self.channel is not None:
                if self.channel.in_use():
                    self._in_channel = True
                    got = self._read_channel(timeout)
                    if got is not None:
                        return got
                if self._in_channel:
                    self._stop_using()
                # Not in use yet (or any more): read stream entries, briefly, and look at the channel again.
                timeout = min(timeout, 0.02)
            elif self._next_check - now < timeout:
                timeout = max(0.001, self._next_check - now)  # don't sit in Redis while a channel may open
        got = self.inner.read(timeout)
        self._read_before = self._read_before or bool(got)
        return got

    def _check_channel(self) -> None:
        """Follow the channel the producer names in Redis: open a new one, leave one that is gone."""
        try:
            raw = self.plane.broker.client.get(self.plane.channel_key(self.links[0].topic))
        except redis.RedisError:
            return  # the Redis read reports the outage
        name = None
        if raw:
            host, _, chan = text(raw).partition("|")
            name = chan if host == self.plane.host else None
        if self.channel is not None and (self.channel.name != name or not self.channel.owner_alive()):
            self._leave_channel()
        if self.channel is None and name is not None:
            try:
                self.channel = ChannelReader(name, self.links[0].target)
            except FileNotFoundError:
                pass  # its producer just stopped: the name expires, or the next producer names its own
            except (OSError, ValueError) as exc:
                # Say so in Redis: the producer goes back to stream entries within a second.
                log.warning("%s: can't open channel %s (%s): reading stream entries", self.links[0].target, name, exc)
                self.fast = False
                with contextlib.suppress(redis.RedisError):
                    self.plane.register_reader(self.links, self.consumer, False)

    def _seen_key(self) -> str:
        return self.inner.seen_key(self.links[0].topic)

    def _stop_using(self) -> None:
        """The producer went back to stream entries: count what this group left in the channel."""
        assert self.channel is not None
        self._in_channel = False
        skipped, cursor = self.channel.abandon()
        self.local_skipped += skipped
        if cursor:
            # Stream entries carry on the same sequence numbers: Redis counts the group's gaps from here.
            with contextlib.suppress(redis.RedisError):
                self.plane.broker.scripts.raise_seen(keys=[self._seen_key()], args=[self.channel.writer(), cursor])
        self._seen, self._seen_known = None, False

    def _leave_channel(self) -> None:
        assert self.channel is not None
        if self._in_channel:
            self._stop_using()
        self.channel.close()
        self.channel = None

    def _seen_in_redis(self, chan: ChannelReader) -> int | None:
        """The newest sequence number of this producer that the group took through stream entries, if any."""
        self.inner.flush()  # this replica's own notes first
        try:
            raw = self.plane.broker.client.hget(self._seen_key(), chan.writer())
        except redis.RedisError:
            return None
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None  # not a number we wrote: count from the channel's first frame instead

    def _read_channel(self, timeout: float) -> list[Delivery] | None:
        """The group's next frame from the channel; [] when none came in `timeout`; None once it is out of use."""
        chan = self.channel
        assert chan is not None
        deadline = time.monotonic() + timeout
        while True:
            tick = chan.tick()
            if not chan.in_use():
                return None
            if not self._seen_known:
                self._seen = self._seen_in_redis(chan) if self._read_before else None
                self._seen_known = True
            got = chan.claim(self._seen)
            if got is not None:
                seq, seg, slot, skipped = got
                self._read_before = True
                self._seen = seq
                self.local_skipped += skipped
                d = self._take(chan, seq, seg, slot)
                if d is not None:
                    return [d]
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            chan.wait(tick, min(left, _CHANNEL_CHECK_EVERY))
            if time.monotonic() >= self._next_check:
                return []  # let read() look at the registrations and the channel's name

    def _take(self, chan: ChannelReader, seq: int, seg: int, slot: int) -> Delivery | None:
        """Lock the slot and decode its frame (views of the slot); None when it was written again first."""
        if seg == INLINE_SEGMENT:
            got = chan.take_inline(seq)
            if got is None:
                self.local_skipped += 1
                return None
            return self._delivery(chan, seq, *got)
        files = self.reader.files
        name, seg_stride = chan.segment(seg)
        try:
            view = self.plane.mapping(name)
            off = slot * seg_stride
            if not files.acquire(name, off):
                self.local_skipped += 1
                return None
        except OSError:
            self.local_skipped += 1  # the producer closed the segment: it is leaving the channel too
            return None
        _, n, hlen, at_seq = slot_info(view, off)
        if at_seq != seq:
            files.release_last()
            self.local_skipped += 1
            return None
        start = off + SLOT_HEADER
        got = self._delivery(chan, seq, view[start + align64(n) : start + align64(n) + hlen], view[start : start + n])
        if got is None:
            files.release_last()
        return got

    def _delivery(self, chan: ChannelReader, seq: int, header: Buffer, payload: Buffer) -> Delivery | None:
        """The frame `seq` decoded; None (counted as rejected) when it is not a valid frame."""
        try:
            frame = decode(header, payload)
        except FrameError as exc:
            self.local_rejected += 1
            log.warning("%s: rejected a bad frame %d from %r: %s", self.links[0].target, seq, self.links[0].source,
                        exc)  # fmt: skip
            return None
        return Delivery(self.links[0].source, frame, b"", "realtime", 1, 1, {"channel": chan.name})

    def close(self) -> None:
        if self.channel is not None:
            self._leave_channel()
        with contextlib.suppress(redis.RedisError):
            for ln in self.links:
                field = f"{ln.target}|{self.plane.host}|{self.consumer}"
                self.plane.broker.client.hdel(self.plane.fast_key(ln.topic), field)
        super().close()
