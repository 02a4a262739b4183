"""The shared-memory data plane: payloads in /dev/shm on the same host, inline in Redis for readers elsewhere.

Redis stays the control plane: the stream entry keeps the header, the acknowledgements and the skip counts,
and gains `m`, a reference `host|segment|slot|generation|length`. A reader on the same host (same host id)
maps the slot read-only and decodes views of it: no copy. How the producer knows whether to also put the
payload inline: every reader registers `(target group, its host id)` under the source when it subscribes
and refreshes it while it reads; the producer looks at the live registrations once a second and inlines
the payload (`d`, as the plain broker does) only while a target group is unregistered or has a replica on
another host. The reader picks the copy from the host id in the entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from edgeflow.broker import Delivery, Publisher, Subscription
from edgeflow.brokers.redis import RedisBroker
from edgeflow.errors import BackpressureError, BrokerError, FrameError
from edgeflow.frame import Buffer, encode

from ._pool import (
    SLOT_HEADER,
    ReaderFiles,
    Segment,
    host_id,
    map_readonly,
    size_class,
    slot_generation,
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


class StaleFrameError(FrameError):
    """Raised when a frame's slot was written again before its reader got to it (counted as skipped)."""


class SharedMemoryDataPlane:
    """Mixin for a RedisBroker subclass: large payloads through shared memory, chosen per entry by host id.

    Args (keyword, besides the broker's own):
        shm_min_bytes: payloads smaller than this stay inline (the entry costs more than the copy saves).
        shm_slots: slots per source and size class (at least a realtime link's depth + 32); bounds the durable
            backlog held in shared memory (the producer waits when they are all unacknowledged).
        shm_max_bytes: the most one segment may take; a link that would need more goes inline.
    """

    frees_payloads = True

    def __init__(
        self,
        *args: Any,
        shm_min_bytes: int = 65_536,
        shm_slots: int = 8,
        shm_max_bytes: int = 256 << 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
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
        nslots = min(max(least, backlog + 32), self.shm_max_bytes // stride(cap))
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
        now_gen, length = slot_generation(view, off)
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

    def register_reader(self, links: Sequence[Link]) -> None:
        """Tell producers that a replica of these links' target reads on this host."""
        pipe = self.client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for ln in links:
            pipe.hset(self._readers_key(ln.source), f"{ln.target}|{self.host}", time.time())
            pipe.expire(self._readers_key(ln.source), int(_REGISTRATION_TTL * 4))
        pipe.execute()

    def publisher(self, source: str, links: Sequence[Link]) -> Publisher:
        """The broker's own publisher, remembered so that a full pool can trim."""
        pub: Publisher = super().publisher(source, links)  # type: ignore[misc]
        self._publishers[source] = pub
        return pub

    def subscribe(self, links: Sequence[Link], consumer: str) -> Subscription:
        """Register this host as a reader of `links`, then subscribe; locks are let go at each read."""
        self.register_reader(links)
        inner: Subscription = super().subscribe(links, consumer)  # type: ignore[misc]
        return _ShmSubscription(self, inner, list(links))

    def close(self) -> None:
        """Remove this process's segments, then close the connections."""
        with self._seg_lock:
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()
            self._segments_by_name.clear()
        self._maps.clear()
        super().close()  # type: ignore[misc]


class _ShmSubscription(Subscription):
    """Wraps a Redis subscription: slot locks live from one read to the next; stale frames count as skipped."""

    def __init__(self, broker: SharedMemoryDataPlane, inner: Subscription, links: list[Link]) -> None:
        self.broker = broker
        self.inner = inner
        self.links = links
        self.stale = 0
        self.lost_here = 0
        self.dead_extra = 0
        self._next_refresh = time.monotonic() + _REFRESH_EVERY

    @property  # type: ignore[override]
    def skipped(self) -> int:
        return self.inner.skipped + self.stale

    @property  # type: ignore[override]
    def rejected(self) -> int:
        return self.inner.rejected - self.stale - self.lost_here

    @property  # type: ignore[override]
    def lost(self) -> int:
        return int(getattr(self.inner, "lost", 0)) + self.lost_here

    @property  # type: ignore[override]
    def dead(self) -> int:
        return int(getattr(self.inner, "dead", 0)) + self.dead_extra

    def read(self, timeout: float) -> list[Delivery]:
        files = self.broker._files()
        files.release()  # the frames of the previous read are done: their slots may be written again
        if time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + _REFRESH_EVERY
            self.broker.register_reader(self.links)
        files.active = True
        try:
            return self.inner.read(timeout)
        finally:
            files.active = False
            self.stale += files.stale
            self.lost_here += files.lost
            files.stale = files.lost = 0

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
        self.broker._files().close_files()
        self.inner.close()


class ShmBroker(SharedMemoryDataPlane, RedisBroker):
    """RedisBroker with the shared-memory data plane: `ShmBroker(url, shm_slots=64, shm_min_bytes=65536)`."""

    name = "shm"
