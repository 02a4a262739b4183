"""A gateway on the producer's host takes frames from a channel in shared memory instead of a second TCP copy.

The gateway's feed registers `(gateway, host id)` under the source in Redis and refreshes it every second. A
producer that sees a fresh registration from its own host, and is the only live producer replica of the source,
opens a channel for that gateway (its own slots, apart from the consumers' channel) and names it in Redis.
Frames keep going over TCP until the gateway has joined the channel; from then on they go through it alone.
When the registration lapses (the gateway stopped, or moved to another host), the producer counts the frames
the gateway left unread, closes the channel and goes back to TCP.

The gateway's interfaces keep frames after `on_frame` returns (the newest frame for viewers, a writer's slot),
so a frame from the channel pins its slot with a shared lock for as long as any view of it lives: the lock is
let go when the last view is freed, and the producer writes other slots meanwhile (or drops the frame,
counted, when every slot is pinned). No frame the gateway holds is ever overwritten under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from edgeflow.broker import Delivery, GatewayPath, Subscription
from edgeflow.errors import FrameError
from edgeflow.frame import Buffer, Frame, decode

from ._channel import INLINE_SEGMENT, ChannelReader, ChannelWriter
from ._pool import SLOT_HEADER, _lock, align64, fresh, open_shm, slot_info, unlock

if TYPE_CHECKING:
    from edgeflow.links import Link

    from .plane import SharedMemoryPlane

__all__ = ["FEED_TTL", "GatewayChannel", "GatewayFeed"]

log = logging.getLogger("edgeflow.shm")

FEED_TTL = 5.0  # a gateway that stopped refreshing its registration for this long is gone: back to TCP
_FEED_REFRESH = 1.0
_DECIDE_EVERY = 1.0
_WRITER_TTL = 5.0
_CHANNEL_TTL = 3
_CHANNEL_CHECK_EVERY = 0.5


class GatewayChannel(GatewayPath):
    """The producer's side: frames for one gateway through a channel while that gateway reads on this host."""

    def __init__(self, plane: SharedMemoryPlane, source: str, link: Link) -> None:
        self.plane = plane
        self.topic = source
        self.gateway = link.target
        self.source = f"{source}>{link.target}"  # names this path's own segment: the consumers' slots stay theirs
        self.links = [link]
        self.channel: ChannelWriter | None = None
        self.local = False
        self.seq = 0
        self.dropped = 0
        self._wid = secrets.token_hex(6)
        self._decide_at = 0.0
        self._join_check_at = 0.0
        self._eligible = True

    def _allowed(self) -> bool:
        plane = self.plane
        wall = time.time()
        writers = plane.gateway_writers_key(self.topic, self.gateway)
        pipe: Any = plane.broker.client.pipeline(transaction=False)
        pipe.hset(writers, self._wid, wall)
        pipe.expire(writers, int(_WRITER_TTL * 4))
        pipe.hgetall(writers)
        pipe.hget(plane.feed_key(self.topic), f"{self.gateway}|{plane.host}")
        _, _, live, stamp = pipe.execute()
        if sum(1 for t in live.values() if fresh(t, wall, _WRITER_TTL)) != 1:
            return False  # several producer replicas: the gateway would have to follow several channels
        return fresh(stamp, wall, FEED_TTL)

    def _decide(self, now: float) -> None:
        self._decide_at = now + _DECIDE_EVERY
        try:
            allowed = self._allowed()
        except redis.RedisError:
            return  # keep the current way until Redis answers
        if not allowed:
            if self.channel is not None:
                self._retire()
            return
        if self.channel is None:
            self.plane.sweep_once()
            try:
                self.channel = ChannelWriter(self.plane.broker.namespace)
            except OSError as exc:
                log.warning("%s: no channel file for gateway %r (%s): frames go over TCP", self.topic, self.gateway,
                            exc)  # fmt: skip
                self._eligible = False
                return
        with contextlib.suppress(redis.RedisError):
            name = f"{self.plane.host}|{self.channel.name}"
            self.plane.broker.client.set(self.plane.gateway_channel_key(self.topic, self.gateway), name,
                                         ex=_CHANNEL_TTL)  # fmt: skip

    def _retire(self) -> None:
        assert self.channel is not None
        if self.local:
            unread = self.channel.unread(self.gateway, self.seq)
            self.dropped += unread
            self.channel.end()
            self.local = False
            log.info("%s: gateway %r no longer reads on this host (%d frames left unread, counted): frames go over "
                     "TCP again", self.topic, self.gateway, unread)  # fmt: skip
        with contextlib.suppress(redis.RedisError):
            self.plane.broker.client.delete(self.plane.gateway_channel_key(self.topic, self.gateway))
        self.channel.close()
        self.channel = None

    def send(self, frame: Frame, encoded: tuple[bytes, Buffer]) -> bool:
        if not self._eligible:
            return False
        now = time.monotonic()
        if now >= self._decide_at:
            self._decide(now)
        if self.channel is not None and not self.local and now >= self._join_check_at:
            self._join_check_at = now + 0.01
            if self.channel.joined([self.gateway]):
                self.channel.begin(self.seq + 1, 1, self._wid)
                self.local = True
                log.info("%s: gateway %r reads on this host: frames go to it through channel %s", self.topic,
                         self.gateway, self.channel.name)  # fmt: skip
        if not self.local:
            return False
        assert self.channel is not None
        header, payload = encoded
        if self.channel.put_inline(self.seq + 1, header, payload):
            self.seq += 1  # small: copied out by the gateway, nothing to pin
            return True
        placed = self.plane.local_write(self, header, payload)
        self.seq += 1
        if placed is None:
            if not self.dropped:
                log.warning("%s: every shared-memory slot for gateway %r is held by frames it keeps; frames "
                            "are dropped (counted) until one is let go: raise shm_slots", self.topic,
                            self.gateway)  # fmt: skip
            self.dropped += 1
            return True
        self.channel.put(self.seq, *placed)
        return True

    def close(self) -> None:
        if self.channel is not None:
            if self.local:
                deadline = time.monotonic() + 0.25  # the gateway takes the newest frame before the channel goes
                while not self.channel.caught_up([self.gateway], self.seq) and time.monotonic() < deadline:
                    time.sleep(0.002)
            self._retire()
        with contextlib.suppress(redis.RedisError):
            self.plane.broker.client.hdel(self.plane.gateway_writers_key(self.topic, self.gateway), self._wid)


class _Pins:
    """Shared locks on the slots of frames the gateway still holds; each is let go when its last view is freed.

    Finalizers run on whichever thread frees the last view, so the table is locked; a slot pinned twice (it
    can't be written in between, so only by the same frame's bytes) is unlocked when both are gone.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._counts: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def pin(self, name: str, off: int) -> tuple[int, int] | None:
        with self._lock:
            if self._closed:
                return None
            fd = self._fds.get(name)
            if fd is None:
                if len(self._fds) >= 64:
                    self._close_idle()
                fd = self._fds[name] = open_shm(name, os.O_RDONLY)
            key = (fd, off)
            if key not in self._counts and not _lock(fd, fcntl.F_RDLCK, off):
                return None
            self._counts[key] = self._counts.get(key, 0) + 1
            return key

    def unpin(self, key: tuple[int, int]) -> None:
        with self._lock:
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
                return
            self._counts.pop(key, None)
            if not self._closed:
                unlock(*key)

    def held(self) -> int:
        with self._lock:
            return len(self._counts)

    def _close_idle(self) -> None:
        busy = {fd for fd, _ in self._counts}
        for name, fd in list(self._fds.items()):
            if fd not in busy:
                with contextlib.suppress(OSError):
                    os.close(fd)
                del self._fds[name]

    def close(self) -> None:
        """Close the files (their locks go with them); finalizers that run later do nothing."""
        with self._lock:
            self._closed = True
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()
            self._counts.clear()


class GatewayFeed(Subscription):
    """The gateway's side: one link's frames from the channel of its producer on this host; TCP brings the rest."""

    def __init__(self, plane: SharedMemoryPlane, link: Link, consumer: str) -> None:
        self.plane = plane
        self.link = link
        self.consumer = consumer
        self.channel: ChannelReader | None = None
        self.pins = _Pins()
        self._field = f"{link.target}|{plane.host}"
        self._next_refresh = 0.0
        self._next_check = 0.0
        self._closed = False
        self._refresh(time.monotonic())  # registered before the gateway says it is ready

    def _refresh(self, now: float) -> None:
        self._next_refresh = now + _FEED_REFRESH
        key = self.plane.feed_key(self.link.topic)
        with contextlib.suppress(redis.RedisError):
            pipe: Any = self.plane.broker.client.pipeline(transaction=False)
            pipe.hset(key, self._field, time.time())
            pipe.expire(key, int(FEED_TTL * 4))
            pipe.execute()

    def _check(self, now: float) -> None:
        self._next_check = now + _CHANNEL_CHECK_EVERY
        try:
            raw = self.plane.broker.client.get(self.plane.gateway_channel_key(self.link.topic, self.link.target))
        except redis.RedisError:
            return
        name = None
        if raw:
            host, _, chan = raw.decode(errors="replace").partition("|")
            name = chan if host == self.plane.host else None
        if self.channel is not None and (self.channel.name != name or not self.channel.owner_alive()):
            self.channel.close()
            self.channel = None
        if self.channel is None and name is not None:
            try:
                self.channel = ChannelReader(name, self.link.target)
            except FileNotFoundError:
                pass  # its producer just stopped
            except (OSError, ValueError) as exc:
                log.warning("gateway %r: can't open channel %s of %r (%s): frames come over TCP", self.link.target,
                            name, self.link.topic, exc)  # fmt: skip

    def read(self, timeout: float) -> list[Delivery]:
        now = time.monotonic()
        deadline = now + timeout
        if now >= self._next_refresh:
            self._refresh(now)
        if now >= self._next_check:
            self._check(now)
        chan = self.channel
        if chan is None or not chan.in_use():
            time.sleep(max(0.0, min(deadline, self._next_check) - time.monotonic()))
            return []
        while True:
            tick = chan.tick()
            got = chan.claim(None)
            if got is not None:
                seq, seg, slot, skipped = got
                self.skipped += skipped
                d = self._take(chan, seq, seg, slot)
                if d is not None:
                    return [d]
                continue
            left = min(deadline, self._next_check, self._next_refresh) - time.monotonic()
            if left <= 0 or not chan.in_use():
                return []
            chan.wait(tick, left)

    def _take(self, chan: ChannelReader, seq: int, seg: int, slot: int) -> Delivery | None:
        if seg == INLINE_SEGMENT:
            got = chan.take_inline(seq)
            if got is None:
                self.skipped += 1
                return None
            try:
                frame = decode(*got)
            except FrameError as exc:
                self._reject(seq, exc)
                return None
            return Delivery(self.link.source, frame, b"", "realtime", 1, 1, {"channel": chan.name})
        name, seg_stride = chan.segment(seg)
        off = slot * seg_stride
        try:
            view = self.plane.mapping(name)
            key = self.pins.pin(name, off)
        except OSError:
            key = None
        if key is None:
            self.skipped += 1  # being written again, or its producer closed the segment
            return None
        pinned = True
        try:
            _, n, hlen, at_seq = slot_info(view, off)
            if at_seq != seq:
                self.skipped += 1
                return None
            start = off + SLOT_HEADER
            # The views of the frame lead back to this one array: its finalizer lets the slot go.
            anchor = np.frombuffer(view, np.uint8, count=n, offset=start)
            header = bytes(view[start + align64(n) : start + align64(n) + hlen])
            frame = decode(header, memoryview(anchor))
            weakref.finalize(anchor, self.pins.unpin, key)
            pinned = False
        except (FrameError, ValueError) as exc:
            self._reject(seq, exc)
            return None
        finally:
            if pinned:
                self.pins.unpin(key)
        return Delivery(self.link.source, frame, b"", "realtime", 1, 1, {"channel": chan.name})

    def _reject(self, seq: int, exc: Exception) -> None:
        self.rejected += 1
        log.warning("gateway %r: rejected a bad frame %d from %r: %s", self.link.target, seq, self.link.topic, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        with contextlib.suppress(redis.RedisError):
            self.plane.broker.client.hdel(self.plane.feed_key(self.link.topic), self._field)
        self.pins.close()
