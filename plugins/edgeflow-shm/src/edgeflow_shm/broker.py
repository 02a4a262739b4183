"""The shared-memory data plane: payloads in /dev/shm on the same host, inline in Redis for readers elsewhere.

Realtime links whose readers are all on the producer's host go one step further: frames go through a channel
file and a futex (`_channel`), with no stream entry at all; see ShmPublisher for when.

Redis stays the control plane: the stream entry keeps the header, the acknowledgements and the skip counts,
and gains `m`, a reference `host|segment|slot|generation|length`. A reader on the same host (same host id)
maps the slot read-only and decodes views of it: no copy. How the producer knows whether to also put the
payload inline: every reader registers `(target group, its host id)` under the source when it subscribes
and refreshes it while it reads; the producer looks at the live registrations once a second and inlines
the payload (`d`, as the plain broker does) only while a target group is unregistered or has a replica on
another host. The reader picks the copy from the host id in the entry.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from edgeflow.broker import Delivery, Publisher, Subscription
from edgeflow.brokers.redis import RedisBroker, RedisPublisher
from edgeflow.errors import BackpressureError, BrokerError, FrameError
from edgeflow.frame import Buffer, Frame, decode, encode

from ._channel import RING, ChannelReader, ChannelWriter, futex_available
from ._pool import (
    SLOT_HEADER,
    ReaderFiles,
    Segment,
    align64,
    host_id,
    map_readonly,
    size_class,
    slot_info,
    stride,
    sweep,
)

if TYPE_CHECKING:
    from edgeflow.linker import Link

__all__ = ["SharedMemoryDataPlane", "ShmBroker", "StaleFrameError"]

log = logging.getLogger("edgeflow.shm")

_REGISTRATION_TTL = 30.0  # a reader that stopped refreshing for this long no longer counts
_REFRESH_EVERY = 10.0
_DECIDE_EVERY = 1.0
_MAX_MAPPINGS = 64
_WRITER_TTL = 5.0  # a producer replica that stopped refreshing for this long no longer counts
_CHANNEL_TTL = 3  # seconds the channel's name stays in Redis unless its producer refreshes it
_CHANNEL_CHECK_EVERY = 0.5
# A group's newest sequence number seen from a writer only ever goes up (replicas leave the channel in any order).
_RAISE_SEEN = """
local hi = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > hi then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], 86400)
return 0
"""


class StaleFrameError(FrameError):
    """Raised when a frame's slot was written again before its reader got to it (counted as skipped)."""


class SharedMemoryDataPlane:
    """Mixin for a RedisBroker subclass: large payloads through shared memory, chosen per entry by host id.

    Args (keyword, besides the broker's own):
        shm_min_bytes: payloads smaller than this stay inline (the entry costs more than the copy saves).
        shm_slots: slots per source and size class (at least a realtime link's depth + 32); bounds the durable
            backlog held in shared memory (the producer waits when they are all unacknowledged).
        shm_max_bytes: the most one segment may take; a link that would need more goes inline.
        shm_local: let realtime links whose readers all run on this host skip Redis entries (the channel of
            `_channel`); False keeps a stream entry per frame, e.g. to watch the streams with redis-cli.
    """

    frees_payloads = True

    def __init__(
        self,
        *args: Any,
        shm_min_bytes: int = 65_536,
        shm_slots: int = 8,
        shm_max_bytes: int = 256 << 20,
        shm_local: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.shm_local = bool(shm_local) and futex_available()
        self.shm_min_bytes = int(shm_min_bytes)
        self.shm_slots = int(shm_slots)
        self.shm_max_bytes = int(shm_max_bytes)
        self.host = host_id()
        self._segments: dict[tuple[str, int], Segment] = {}
        self._segments_by_name: dict[str, Segment] = {}
        self._seg_lock = threading.Lock()
        self._maps: dict[str, memoryview] = {}
        self._readers = threading.local()
        self._decisions: dict[str, tuple[float, bool]] = {}
        self._publishers: dict[str, Any] = {}
        self._swept = False
        self.inline_fallbacks = 0

    # Writing -------------------------------------------------------------------------------------------
    def _segment_for(self, n: int, links: Sequence[Link]) -> Segment | None:
        """The segment of this source and size class, made on first use; None when there's no room for it."""
        cap = size_class(n)
        source = links[0].source if links else ""
        seg = self._segments.get((source, cap))
        if seg is not None:
            return seg
        # A realtime stream keeps `depth` entries and a durable one up to `max_len`: their slots must outlive
        # them, plus a reader's batch. Capped by shm_max_bytes; past it a durable producer waits (backpressure).
        depth = max((ln.depth for ln in links if ln.qos == "realtime"), default=1)
        backlog = max((ln.max_len for ln in links if ln.qos == "durable"), default=0)
        least = max(self.shm_slots, depth + 8)
        # Realtime-only sources stay at `least`: fewer slots keep the pool in the CPU's cache (32 slots of a
        # 921,600-byte frame made every copy into the pool twice as slow as 9 slots).
        nslots = min(max(least, backlog + 32) if backlog else least, self.shm_max_bytes // stride(cap))
        if nslots < least:
            return None
        with self._seg_lock:
            if (source, cap) not in self._segments:
                if not self._swept:
                    # Any app's segments whose owner died: the names say whose they were, and apps come and go.
                    sweep()
                    self._swept = True
                try:
                    seg = Segment(self.namespace, cap, nslots)  # type: ignore[attr-defined]
                except OSError as exc:
                    log.warning("no shared memory for %d slots of %d bytes (%s): payloads go inline", nslots, cap, exc)
                    self.shm_max_bytes = min(self.shm_max_bytes, nslots * cap - 1)
                    return None
                self._segments[(source, cap)] = seg
                self._segments_by_name[seg.name] = seg
            return self._segments[(source, cap)]

    def _inline_needed(self, links: Sequence[Link]) -> bool:
        """True while a target group is unregistered or has a replica on another host (cached for a second)."""
        if not links:
            return True
        source = links[0].source
        now = time.monotonic()
        cached = self._decisions.get(source)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            regs = self.client.hgetall(self._readers_key(source))  # type: ignore[attr-defined]
        except Exception:
            regs = {}
        wall = time.time()
        hosts: dict[str, set[str]] = {}
        for field, stamp in regs.items():
            if wall - float(stamp) > _REGISTRATION_TTL:
                continue
            group, _, host = field.decode().rpartition("|")
            hosts.setdefault(group, set()).add(host)
        needed = any(hosts.get(ln.target, {"?"}) != {self.host} for ln in links)
        self._decisions[source] = (now + _DECIDE_EVERY, needed)
        return needed

    def _payload_fields(self, header: bytes, payload: Buffer, links: Sequence[Link]) -> dict[str, Any]:
        """Write a large payload once into shared memory and reference it; inline it too for remote readers."""
        n = len(payload)
        if n < self.shm_min_bytes or any(ln.options.get("shm") is False for ln in links):
            return super()._payload_fields(header, payload, links)  # type: ignore[misc, no-any-return]
        seg = self._segment_for(n, links)
        if seg is None:
            return super()._payload_fields(header, payload, links)  # type: ignore[misc, no-any-return]
        durable = any(ln.qos == "durable" for ln in links)
        mv = payload if isinstance(payload, memoryview) else memoryview(payload)
        got = seg.write(mv)
        if got is None and durable and links:
            pub = self._publishers.get(links[0].source)
            if pub is not None and getattr(pub, "dur_key", None) is not None:
                pub.trim()  # frees the slots of entries every group acknowledged
                got = seg.write(mv)
        if got is None:
            if durable:
                raise BackpressureError(
                    f"the shared-memory pool of {links[0].source!r} is full ({seg.nslots} slots of {seg.capacity} "
                    "bytes hold unacknowledged frames); the producer waits, or raise shm_slots",
                    url=self.display_url,  # type: ignore[attr-defined]
                )
            self.inline_fallbacks += 1  # every slot is being read: this frame goes through Redis
            return super()._payload_fields(header, payload, links)  # type: ignore[misc, no-any-return]
        slot, gen = got
        if durable:
            seg.hold(slot)
        off = slot * seg.stride
        fields: dict[str, Any] = (
            super()._payload_fields(header, payload, links)  # type: ignore[misc]
            if self._inline_needed(links)
            else {"h": header}
        )
        fields["m"] = f"{self.host}|{seg.name}|{off}|{gen}|{n}"
        return fields

    def _payload_done(self, fields_list: Sequence[dict[bytes, Any]]) -> None:
        """Free the slots of durable entries that every group acknowledged."""
        for fields in fields_list:
            ref = fields.get(b"m")
            if ref is None:
                continue
            host, name, off, _, _ = ref.decode().split("|")
            seg = self._segments_by_name.get(name)
            if host == self.host and seg is not None:
                seg.release(int(off) // seg.stride)
        super()._payload_done(fields_list)  # type: ignore[misc]

    # Reading -------------------------------------------------------------------------------------------
    def _files(self) -> ReaderFiles:
        files: ReaderFiles | None = getattr(self._readers, "files", None)
        if files is None:
            files = self._readers.files = ReaderFiles()
        return files

    def _mapping(self, name: str) -> memoryview:
        view = self._maps.get(name)
        if view is None:
            if len(self._maps) >= _MAX_MAPPINGS:
                self._maps.pop(next(iter(self._maps)))  # unmapped once no frame views it any more
            view = self._maps[name] = map_readonly(name)
        return view

    def _payload_from_fields(self, fields: dict[bytes, Any]) -> Buffer:
        """Map a same-host payload read-only (no copy); take the inline copy for a payload from another host."""
        ref = fields.get(b"m")
        if ref is None:
            return super()._payload_from_fields(fields)  # type: ignore[misc, no-any-return]
        try:
            host, name, off_s, gen_s, n_s = ref.decode().split("|")
            off, gen, n = int(off_s), int(gen_s), int(n_s)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"corrupted shared-memory reference {ref!r}") from exc
        if host != self.host:
            if b"d" not in fields and b"r" not in fields:
                raise FrameError(
                    f"the payload is in the shared memory of host {host}, and this reader runs on {self.host}; "
                    "it was written before this reader registered (frames from then on carry it inline)"
                )
            return super()._payload_from_fields(fields)  # type: ignore[misc, no-any-return]
        files = self._files()
        try:
            view = self._mapping(name)
            if not files.acquire(name, off):
                files.stale += 1
                raise StaleFrameError(f"slot at {off} of {name} is being written again")
        except OSError as exc:
            files.lost += 1
            raise FrameError(f"shared-memory segment {name} is gone (its producer stopped): {exc}") from exc
        now_gen, length, _, _ = slot_info(view, off)
        if now_gen != gen or length != n:
            files.release_last()
            files.stale += 1
            raise StaleFrameError(f"slot at {off} of {name} was written again before it was read")
        data = view[off + SLOT_HEADER : off + SLOT_HEADER + n]
        if not files.active:
            # Read outside a subscription's read (dead letters): copy and let go of this slot at once.
            out = bytes(data)
            files.release_last()
            return out
        return data

    # Wiring ----------------------------------------------------------------------------------------------
    def _readers_key(self, source: str) -> str:
        return self.key("shm", "readers", source)  # type: ignore[attr-defined, no-any-return]

    def _fast_key(self, source: str) -> str:
        return self.key("shm", "fast", source)  # type: ignore[attr-defined, no-any-return]

    def _writers_key(self, source: str) -> str:
        return self.key("shm", "writers", source)  # type: ignore[attr-defined, no-any-return]

    def channel_key(self, source: str) -> str:
        """The Redis key naming the channel through which `source` currently sends (absent: none)."""
        return self.key("shm", "channel", source)  # type: ignore[attr-defined, no-any-return]

    def register_reader(self, links: Sequence[Link], consumer: str = "", fast: bool = False) -> None:
        """Tell producers that replica `consumer` of these links' target reads on this host, and whether it can
        take frames from a channel (`fast`): one replica that can't keeps its sources on stream entries."""
        pipe = self.client.pipeline(transaction=False)  # type: ignore[attr-defined]
        now = time.time()
        for ln in links:
            pipe.hset(self._readers_key(ln.source), f"{ln.target}|{self.host}", now)
            pipe.expire(self._readers_key(ln.source), int(_REGISTRATION_TTL * 4))
            pipe.hset(self._fast_key(ln.source), f"{ln.target}|{self.host}|{consumer}", f"{now}|{int(fast)}")
            pipe.expire(self._fast_key(ln.source), int(_REGISTRATION_TTL * 4))
        pipe.execute()

    def _local_write(self, pub: ShmPublisher, header: bytes, payload: Buffer) -> tuple[int, int] | None:
        """Write a frame for the channel: payload and header in a slot; (segment index, slot) or None if full."""
        n = len(payload)
        seg = self._segment_for(align64(n) + len(header), pub.links)
        assert pub.channel is not None
        if seg is None:
            return None
        idx = pub.channel.segment_index(seg.name, seg.stride)
        if idx is None:
            return None
        mv = payload if isinstance(payload, memoryview) else memoryview(payload)
        got = seg.write(mv, header, pub.seq + 1)
        return None if got is None else (idx, got[0])

    def publisher(self, source: str, links: Sequence[Link]) -> Publisher:
        """The broker's own publisher, remembered so that a full pool can trim."""
        pub: Publisher = super().publisher(source, links)  # type: ignore[misc]
        self._publishers[source] = pub
        return pub

    def subscribe(self, links: Sequence[Link], consumer: str) -> Subscription:
        """Register this host as a reader of `links`, then subscribe; locks are let go at each read."""
        fast = self.shm_local and len(links) == 1 and links[0].qos == "realtime" and links[0].depth <= RING // 2
        self.register_reader(links, consumer, fast)
        inner: Subscription = super().subscribe(links, consumer)  # type: ignore[misc]
        return _ShmSubscription(self, inner, list(links), consumer, fast)

    def close(self) -> None:
        """Remove this process's segments, then close the connections."""
        with self._seg_lock:
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()
            self._segments_by_name.clear()
        self._maps.clear()
        super().close()  # type: ignore[misc]


class ShmPublisher(RedisPublisher):
    """RedisPublisher that sends through the source's channel while every reader takes frames from it.

    Checked once a second from the registrations in Redis: the channel may be used when the publisher's links
    are all realtime, it is the only live producer replica of its source, and every replica of every target
    registered from this host as able to read a channel. The producer then names its channel in Redis and
    keeps writing stream entries until every target has joined the channel; only then do frames go through
    it alone (so a frame never waits in a channel nobody reads). Any change back: stream entries again.
    """

    def __init__(self, broker: RedisBroker, source: str, links: Sequence[Link]) -> None:
        super().__init__(broker, source, links)
        self.plane: SharedMemoryDataPlane = broker  # type: ignore[assignment]
        self.channel: ChannelWriter | None = None
        self.local = False
        self._wid = secrets.token_hex(6)
        self._decide_at = 0.0
        self._join_check_at = 0.0
        self._targets = sorted({ln.target for ln in self.links})
        self._eligible = (
            self.plane.shm_local
            and bool(self.links)
            and all(ln.qos == "realtime" and ln.depth <= RING // 2 for ln in self.links)
        )

    def _channel_allowed(self) -> bool:
        """Read the registrations: may this source use its channel now?"""
        client: Any = self.broker.client
        plane = self.plane
        wall = time.time()
        pipe = client.pipeline(transaction=False)
        pipe.hset(plane._writers_key(self.source), self._wid, wall)
        pipe.expire(plane._writers_key(self.source), int(_WRITER_TTL * 4))
        pipe.hgetall(plane._writers_key(self.source))
        pipe.hgetall(plane._readers_key(self.source))
        pipe.hgetall(plane._fast_key(self.source))
        _, _, writers, readers, fast = pipe.execute()
        live_writers = [w for w, t in writers.items() if wall - float(t) <= _WRITER_TTL]
        if len(live_writers) != 1:
            return False
        live = {f.decode() for f, t in readers.items() if wall - float(t) <= _REGISTRATION_TTL}
        replicas: dict[str, list[bool]] = {}  # "target|host" -> can each live replica read the channel?
        for field, value in fast.items():
            stamp, _, able = value.decode().partition("|")
            if wall - float(stamp) <= _REGISTRATION_TTL:
                replicas.setdefault(field.decode().rpartition("|")[0], []).append(able == "1")
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
                self.plane._decisions.pop(self.source, None)  # a reader elsewhere may need payloads inline now
                self._retire()
            return
        if self.channel is None:
            if not self.plane._swept:
                sweep()  # what crashed processes left, as before a first segment
                self.plane._swept = True
            try:
                self.channel = ChannelWriter(self.broker.namespace)
            except OSError as exc:
                log.warning("%s: no channel file (%s): frames go through Redis entries", self.source, exc)
                self._eligible = False
                return
        try:
            name = f"{self.plane.host}|{self.channel.name}"
            self.broker.client.set(self.plane.channel_key(self.source), name, ex=_CHANNEL_TTL)
        except redis.RedisError:
            pass

    def _retire(self) -> None:
        """Stop using the channel and stop naming it: readers go back to stream entries."""
        assert self.channel is not None
        if self.local:
            self.channel.end()
            self.local = False
            log.info("%s: frames go through Redis entries again", self.source)
        try:
            self.broker.client.delete(self.plane.channel_key(self.source))
        except redis.RedisError:
            pass
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
                    self.channel.begin(self.seq + 1, self.rt_depth, self.writer)
                    self.local = True
                    log.info("%s: every reader is on this host: frames go through channel %s", self.source,
                             self.channel.name)  # fmt: skip
        if not self.local:
            super().publish(frame, encoded)
            return
        header, payload = encoded or encode(frame)
        assert self.channel is not None
        placed = self.plane._local_write(self, header, payload)
        self.seq += 1
        if placed is None:
            # Every slot is held by a reader (more readers than slots): newest wins, this one is dropped.
            if not self.dropped:
                log.warning("%s: every shared-memory slot is being read; frames are dropped (counted) until one "
                            "is free: raise shm_slots", self.source)  # fmt: skip
            self.dropped += 1
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
        try:
            self.broker.client.hdel(self.plane._writers_key(self.source), self._wid)
        except redis.RedisError:
            pass
        super().close()


class _ShmSubscription(Subscription):
    """Wraps a Redis subscription: slot locks live from one read to the next; stale frames count as skipped."""

    def __init__(
        self, broker: SharedMemoryDataPlane, inner: Subscription, links: list[Link], consumer: str, fast: bool
    ) -> None:
        self.broker = broker
        self.consumer = consumer
        self.inner = inner
        self.links = links
        self.stale = 0
        self.lost_here = 0
        self.dead_extra = 0
        self.local_skipped = 0
        self.local_rejected = 0
        self.fast = fast
        self.channel: ChannelReader | None = None
        self._read_before = False
        self._in_channel = False
        self._seen: int | None = None  # the newest sequence number this group took, once known
        self._seen_known = False
        self._next_refresh = time.monotonic() + _REFRESH_EVERY
        self._next_check = 0.0

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.inner.skipped + self.stale + self.local_skipped

    @property
    def rejected(self) -> int:  # type: ignore[override]
        return self.inner.rejected - self.stale - self.lost_here + self.local_rejected

    @property
    def lost(self) -> int:  # type: ignore[override]
        return int(getattr(self.inner, "lost", 0)) + self.lost_here

    @property
    def dead(self) -> int:  # type: ignore[override]
        return int(getattr(self.inner, "dead", 0)) + self.dead_extra

    def read(self, timeout: float) -> list[Delivery]:
        files = self.broker._files()
        files.release()  # the frames of the previous read are done: their slots may be written again
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_EVERY
            self.broker.register_reader(self.links, self.consumer, self.fast)
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
        files.active = True
        try:
            got = self.inner.read(timeout)
            self._read_before = self._read_before or bool(got)
            return got
        finally:
            files.active = False
            self.stale += files.stale
            self.lost_here += files.lost
            files.stale = files.lost = 0

    # The channel: frames without Redis entries, while every reader of the source is on this host ---------
    def _check_channel(self) -> None:
        """Follow the channel the producer names in Redis: open a new one, leave one that is gone."""
        try:
            raw = self.broker.client.get(self.broker.channel_key(self.links[0].source))  # type: ignore[attr-defined]
        except redis.RedisError:
            return  # the Redis read reports the outage
        name = None
        if raw:
            host, _, chan = raw.decode().partition("|")
            name = chan if host == self.broker.host else None
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
                    self.broker.register_reader(self.links, self.consumer, False)

    def _seen_key(self) -> str:
        return self.inner._seen_keys[self.links[0].source]  # type: ignore[attr-defined, no-any-return]

    def _stop_using(self) -> None:
        """The producer went back to stream entries: count what this group left in the channel."""
        assert self.channel is not None
        self._in_channel = False
        skipped, cursor = self.channel.abandon()
        self.local_skipped += skipped
        if cursor:
            # Stream entries carry on the same sequence numbers: Redis counts the group's gaps from here.
            with contextlib.suppress(redis.RedisError):
                self.broker.client.eval(_RAISE_SEEN, 1, self._seen_key(), self.channel.writer(), cursor)  # type: ignore[attr-defined]
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
            raw = self.broker.client.hget(self._seen_key(), chan.writer())  # type: ignore[attr-defined]
        except redis.RedisError:
            return None
        return int(raw) if raw is not None else None

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
        files = self.broker._files()
        name, seg_stride = chan.segment(seg)
        try:
            view = self.broker._mapping(name)
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
        try:
            frame = decode(view[start + align64(n) : start + align64(n) + hlen], view[start : start + n])
        except FrameError as exc:
            files.release_last()
            self.local_rejected += 1
            log.warning("%s: rejected a bad frame %d from %r: %s", self.links[0].target, seq, self.links[0].source,
                        exc)  # fmt: skip
            return None
        return Delivery(self.links[0].source, frame, b"", "realtime", 1, 1, {"channel": chan.name})

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.ack(deliveries)

    def flush(self) -> None:
        self.inner.flush()

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        # A dead letter outlives the slot, so its payload goes inline: the Redis reader copies only h/d/r/p.
        key = delivery.extra["key"]
        client = self.broker.client  # type: ignore[attr-defined]
        group = self.links[0].target
        try:
            entries = client.xrange(key, min=delivery.entry_id, max=delivery.entry_id)
            fields = entries[0][1] if entries else {}
            if not (b"m" in fields and b"d" not in fields and b"r" not in fields):
                self.inner.dead_letter(delivery, error)
                return
            header, payload = encode(delivery.frame)
            letter = {"h": header, "d": payload, "s": delivery.source, "e": error[:2000], "a": delivery.attempts,
                      "i": delivery.entry_id}  # fmt: skip
            pipe = client.pipeline(transaction=True)
            pipe.xadd(self.broker.dead_key(group), letter, maxlen=10_000, approximate=True)  # type: ignore[attr-defined]
            pipe.xack(key, group, delivery.entry_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise BrokerError(f"Redis failed while dead-lettering a frame of {delivery.source!r}: {exc}") from exc
        self.dead_extra += 1
        log.error("%s: frame %s of %r failed %d times and went to the dead-letter stream: %s", group,
                  delivery.frame.frame_id, delivery.source, delivery.attempts, error)  # fmt: skip

    def close(self) -> None:
        if self.channel is not None:
            self._leave_channel()
        with contextlib.suppress(redis.RedisError):
            for ln in self.links:
                field = f"{ln.target}|{self.broker.host}|{self.consumer}"
                self.broker.client.hdel(self.broker._fast_key(ln.source), field)  # type: ignore[attr-defined]
        self.broker._files().close_files()
        self.inner.close()


class ShmBroker(SharedMemoryDataPlane, RedisBroker):
    """RedisBroker with the shared-memory data plane: `ShmBroker(url, shm_slots=64, shm_min_bytes=65536)`."""

    name = "shm"
    publisher_class = ShmPublisher
