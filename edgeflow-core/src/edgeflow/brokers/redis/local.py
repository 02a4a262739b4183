"""In-process links: a realtime frame whose readers all run in the producer's process is handed over in memory.

Per (topic, encoding, target group) a newest-wins mailbox of the link's `depth` frames: the reader decodes the
producer's encoding into read-only views of the producer's memory (no copy, no broker round trip); replicas
of the group in the process share its frames; frames pushed out unread are counted as skipped. Redis keeps the
control plane: every reader registers in it, and a producer hands a group its frames in memory only while every
live replica of that group is one of its own process's (checked once a second); a reader elsewhere, or a
`edgeflow topic` watcher, brings the stream entries back. Durable links keep their log in the broker: their
promise is that a crash loses nothing.

An unthrottled producer holds the GIL; a waiting reader would get it only at the interpreter's switch interval
(5 ms). After handing a frame to a waiting reader the producer yields once, so the reader runs now.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import redis

from ...broker import Delivery, ForwardingSubscription, Publisher, Subscription
from ...errors import FrameError
from ...frame import Buffer, Frame, decode, encode

if TYPE_CHECKING:
    from ...links import Link
    from .broker import RedisBroker

__all__ = ["LocalHub"]

_DECIDE_EVERY = 1.0
_REGISTER_EVERY = 10.0
_REGISTRATION_TTL = 30.0
_MIXED_POLL = 0.02  # a reader with links in memory and links on Redis looks at both this often
_HANDBACK = 0.0002  # the longest a producer waits for a reader it woke to come back for more


class _Box:
    """The mailbox of one group: the newest `depth` frames, as the producer encoded them."""

    __slots__ = ("depth", "frames", "handback", "lock", "skipped", "waiters")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.frames: deque[tuple[bytes, Buffer]] = deque()
        self.lock = threading.Lock()
        self.skipped = 0  # pushed out unread since a reader last took a frame
        self.waiters: set[threading.Event] = set()
        #: Set by a reader when it comes back for more after a frame: its producer may be waiting for that.
        self.handback: threading.Event | None = None


class LocalHub:
    """The mailboxes of one broker object, shared by the publishers and subscriptions of this process."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        #: False: every link goes through the broker, as between processes (a broker option, and for tests).
        self.enabled = True
        #: The nodes this process runs, when the runner said (`Broker.running_here`); None: any may be here.
        self.nodes_here: set[str] | None = None
        self._lock = threading.Lock()
        self._boxes: dict[tuple[str, str, str], _Box] = {}
        self._readers: dict[tuple[str, str, str], set[str]] = {}  # (topic, variant, group) -> local consumers
        self._local: set[tuple[str, str, str]] = set()  # groups their producer currently serves in memory
        self._producing: dict[tuple[str, str, str], int] = {}  # groups whose producer runs here: how many publishers

    def box(self, key: tuple[str, str, str], depth: int) -> _Box:
        """The mailbox of `key`, made on first use."""
        with self._lock:
            box = self._boxes.get(key)
            if box is None:
                box = self._boxes[key] = _Box(depth)
            box.depth = max(box.depth, depth)
            return box

    def existing_box(self, key: tuple[str, str, str]) -> _Box | None:
        """The mailbox of `key` if a reader or producer made it."""
        return self._boxes.get(key)

    def readers_key(self, topic: str, group: str) -> str:
        """The hash where every reader of `topic` in `group` registers (consumer -> expiry)."""
        return self.broker.key("readers", topic, group)

    def watchers_key(self, topic: str) -> str:
        """The hash where watchers of `topic` from outside every group register (`edgeflow topic hz|echo`)."""
        return self.broker.key("watchers", topic)

    # Wiring ----------------------------------------------------------------------------------------------
    def publisher(self, inner: Publisher, source: str, links: Sequence[Link]) -> Publisher:
        """Wrap the publisher of a topic whose links are all realtime; others stay as they are."""
        if self._may_serve(links) and any(self._here(ln.target) for ln in links):
            return LocalPublisher(self, inner, source, links)
        return inner

    def subscription(self, inner: Subscription, links: Sequence[Link], consumer: str) -> Subscription:
        """Wrap a subscription whose links are all realtime (it may be served in memory); others stay."""
        if self._may_serve(links) and any(self._here(ln.source) for ln in links):
            return LocalSubscription(self, inner, list(links), consumer)
        return inner

    def _may_serve(self, links: Sequence[Link]) -> bool:
        return self.enabled and bool(links) and all(ln.qos == "realtime" for ln in links)

    def _here(self, node: str) -> bool:
        return self.nodes_here is None or node in self.nodes_here

    def joined(self, key: tuple[str, str, str], consumer: str) -> None:
        with self._lock:
            self._readers.setdefault(key, set()).add(consumer)

    def left(self, key: tuple[str, str, str], consumer: str) -> None:
        with self._lock:
            self._readers.get(key, set()).discard(consumer)

    def local_readers(self, key: tuple[str, str, str]) -> set[str]:
        """The consumers of `key` in this process."""
        with self._lock:
            return set(self._readers.get(key, ()))

    def serve(self, key: tuple[str, str, str], local: bool) -> None:
        """Set whether the producer of `key` hands its frames over in memory (its readers read the box then)."""
        with self._lock:
            if local:
                self._local.add(key)
            else:
                self._local.discard(key)

    def producing(self, key: tuple[str, str, str], change: int = 0) -> bool:
        """True while a producer of `key` runs in this process (`change` counts one in, +1, or out, -1)."""
        with self._lock:
            count = self._producing.get(key, 0) + change
            if count > 0:
                self._producing[key] = count
            else:
                self._producing.pop(key, None)
            return count > 0

    def here(self, keys: Sequence[tuple[str, str, str]]) -> bool:
        """True if a producer of any of `keys` runs in this process or serves it in memory (read without the lock:
        a producer that starts meanwhile is seen at the next read)."""
        producing, local = self._producing, self._local
        return any(key in producing or key in local for key in keys)

    def served(self, key: tuple[str, str, str]) -> bool:
        """True while the producer of `key` hands its frames over in memory."""
        return key in self._local


def _later(stamp: bytes, wall: float) -> bool:
    """True when a registration's expiry `stamp` is after `wall`; one that is not a number (Redis is reachable by
    others) is no registration."""
    try:
        return float(stamp) > wall
    except ValueError:
        return False


class LocalPublisher(Publisher):
    """The broker's publisher of one topic, and the mailboxes of the groups whose readers are all in this process."""

    def __init__(self, hub: LocalHub, inner: Publisher, source: str, links: Sequence[Link]) -> None:
        self.hub = hub
        self.inner = inner
        self.source = source
        self.durable = inner.durable
        variant = links[0].variant
        self._groups = {ln.target: (source, variant, ln.target) for ln in links}
        for key in self._groups.values():
            hub.producing(key, +1)
        self._depth = {ln.target: ln.depth for ln in links}
        self._local: list[_Box] = []  # the boxes of the groups served in memory
        self._fresh: list[tuple[str, str, str]] = []  # served in memory after this frame went through Redis
        self._redis = True  # some group (or a watcher) still reads stream entries
        self._decide_at = 0.0
        self.local_dropped = 0
        self._turn = threading.Event()

    def _decide(self, now: float) -> None:
        self._decide_at = now + _DECIDE_EVERY
        hub = self.hub
        try:
            pipe = hub.broker.client.pipeline(transaction=False)
            for target in self._groups:
                pipe.hgetall(hub.readers_key(self.source, target))
            pipe.hgetall(hub.watchers_key(self.source))
            *registered, watchers = pipe.execute()
        except redis.RedisError:
            return  # the next publish through Redis reports the outage; keep the current mode meanwhile
        wall = time.time()
        boxes, remote = [], False
        for (target, key), regs in zip(self._groups.items(), registered, strict=True):
            live = {c.decode(errors="replace") for c, t in regs.items() if _later(t, wall)}
            mine = hub.local_readers(key)
            local = bool(mine) and live <= mine
            if local and not hub.served(key):
                # A reader may be waiting on Redis right now: this frame still goes there and wakes it, and
                # the switch happens after it is written, so the reader reads what Redis holds before the box.
                self._fresh.append(key)
            elif local:
                boxes.append(hub.box(key, self._depth[target]))
            else:
                hub.serve(key, False)
                remote = True
        self._local = boxes
        self._redis = remote or any(_later(t, wall) for t in watchers.values())

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        now = time.monotonic()
        if now >= self._decide_at:
            self._decide(now)
        boxes = self._local  # the groups switching to memory now get this frame through Redis, and not twice
        if self._redis or not boxes or self._fresh:
            try:
                self.inner.publish(frame, encoded)
            finally:
                self.dropped = self.inner.dropped + self.local_dropped
                self._switch()
            self._wake_pollers()
        if not boxes:
            return
        header, payload = encoded or encode(frame)
        data = frame.data
        if isinstance(data, np.ndarray) and data.flags.writeable:
            # Its readers view this memory: the producer may not write into it again (it sends a new array).
            data.flags.writeable = False
        woken = False
        turn = self._turn
        turn.clear()
        for box in boxes:
            with box.lock:
                if len(box.frames) >= box.depth:
                    box.frames.popleft()
                    box.skipped += 1  # every reader of the box subscribed before this frame was sent
                box.frames.append((header, payload))
                waiters = list(box.waiters)
                if waiters:
                    box.handback = turn
            for event in waiters:
                event.set()
                woken = True
        if woken:
            # Let the reader that waited run now, not at the next switch interval: wait (the GIL released) until
            # it comes back for more, at most _HANDBACK. A yield instead (time.sleep(0)) hands the GIL over
            # through the interpreter's switch protocol: 11,000 hand-offs/s against 14,500 with this wait, in a
            # bare two-thread hand-off with 8 and 9 µs of work on either side on the development VM.
            turn.wait(_HANDBACK)

    def _wake_pollers(self) -> None:
        """Wake this process's readers that poll Redis for this topic (they wait on their boxes meanwhile)."""
        for key in self._groups.values():
            box = self.hub.existing_box(key)
            if box is not None and box.waiters:
                with box.lock:
                    waiters = list(box.waiters)
                for event in waiters:
                    event.set()

    def _switch(self) -> None:
        """Serve the groups decided for in memory from the next frame on (this one went through Redis)."""
        if not self._fresh:
            return
        fresh, self._fresh = self._fresh, []
        boxes = [self.hub.box(key, self._depth[key[2]]) for key in fresh]
        for key in fresh:
            self.hub.serve(key, True)
        self._local = [*self._local, *boxes]

    def close(self) -> None:
        for key in self._groups.values():
            self.hub.serve(key, False)
            self.hub.producing(key, -1)
        self.inner.close()
        self.dropped = self.inner.dropped + self.local_dropped


class LocalSubscription(ForwardingSubscription):
    """The broker's subscription of one target replica, reading the mailboxes of the links served in memory."""

    def __init__(self, hub: LocalHub, inner: Subscription, links: list[Link], consumer: str) -> None:
        super().__init__(inner)
        self.hub = hub
        self.links = links
        self.consumer = consumer
        self._keys = [(ln.topic, ln.variant, ln.target) for ln in links]
        self._boxes = [hub.box(key, ln.depth) for key, ln in zip(self._keys, links, strict=True)]
        self._sources = [ln.source for ln in links]
        self._next = 0
        self._event = threading.Event()
        self._took_from: _Box | None = None
        self._registered_at = 0.0
        self._served = [False] * len(links)
        self._drain = False
        for key in self._keys:
            hub.joined(key, consumer)
        self._register()

    def _register(self) -> None:
        self._registered_at = time.monotonic()
        expiry = time.time() + _REGISTRATION_TTL
        with contextlib.suppress(redis.RedisError):
            pipe = self.hub.broker.client.pipeline(transaction=False)
            for topic, _, group in self._keys:
                key = self.hub.readers_key(topic, group)
                pipe.hset(key, self.consumer, expiry)
                pipe.expire(key, int(_REGISTRATION_TTL * 4))
            pipe.execute()

    def _take(self) -> Delivery | None:
        """The oldest frame of the next served mailbox that has one (round robin over the links)."""
        n = len(self._boxes)
        for k in range(n):
            i = (self._next + k) % n
            box = self._boxes[i]  # served or not: frames handed over before a switch to Redis are read first
            with box.lock:
                if not box.frames:
                    continue
                header, payload = box.frames.popleft()
                self.local_skipped += box.skipped
                box.skipped = 0
            self._next = (i + 1) % n
            self._took_from = box
            view = payload.toreadonly() if isinstance(payload, memoryview) else payload
            try:
                frame = decode(header, view)
            except FrameError:
                self.local_rejected += 1
                continue
            return Delivery(self._sources[i], frame, b"", "realtime", 1, 1, {"local": True})
        return None

    def _read(self, timeout: float) -> list[Delivery]:
        took = self._took_from
        if took is not None:
            # The frame taken last is done: a producer waiting for this reader to come back goes on.
            self._took_from = None
            handback, took.handback = took.handback, None
            if handback is not None:
                handback.set()
        now = time.monotonic()
        if now - self._registered_at >= _REGISTER_EVERY:
            self._register()
        if not self._drain and not self.hub.here(self._keys) and not any(b.frames for b in self._boxes):
            # No producer of these links runs in this process: the broker's own read, with nothing around it.
            self._served = [False] * len(self._keys)  # a producer that comes (back) here switches anew
            return self.inner.read(timeout)
        deadline = now + timeout
        while True:
            served = [self.hub.served(key) for key in self._keys]
            if any(s and not was for s, was in zip(served, self._served, strict=True)):
                self._drain = True  # entries written to Redis before the switch come first: none left unread
            self._served = served
            if self._drain:
                polled = self.inner.read(0)
                if polled:
                    return polled
                self._drain = False
            got = self._take()
            if got is not None:
                return [got]
            left = deadline - time.monotonic()
            if not self.hub.here(self._keys):
                return self.inner.read(max(0.0, left))
            wait = min(left, _DECIDE_EVERY)
            if not all(served):
                # Some links still come through Redis: look there (without blocking), then wait on the boxes. A
                # read that blocked on Redis would miss frames its producer, here, hands over in memory after a
                # switch until it timed out (and Redis times blocked reads out only every 100 ms).
                polled = self.inner.read(0)
                if polled:
                    return polled
                wait = min(left, _MIXED_POLL)
            if left <= 0:
                return []
            self._event.clear()
            for box in self._boxes:
                with box.lock:
                    box.waiters.add(self._event)
            try:
                if not any(b.frames for b in self._boxes):  # checked as a waiter: no wake-up is lost
                    self._event.wait(wait)
            finally:
                for box in self._boxes:
                    with box.lock:
                        box.waiters.discard(self._event)

    def owns(self, delivery: Delivery) -> bool:
        return bool(delivery.extra.get("local"))

    def close(self) -> None:
        for key in self._keys:
            self.hub.left(key, self.consumer)
        with contextlib.suppress(redis.RedisError):
            pipe = self.hub.broker.client.pipeline(transaction=False)
            for topic, _, group in self._keys:
                pipe.hdel(self.hub.readers_key(topic, group), self.consumer)
            pipe.execute()
        super().close()
