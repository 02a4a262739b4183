"""The shared-memory data plane: payloads in /dev/shm on the same host, inline in Redis for readers elsewhere.

Redis stays the control plane: the stream entry keeps the header, the acknowledgements and the skip counts,
and gains `m`, a reference `host|segment|slot|generation|length`. A reader on the same host (same host id)
maps the slot read-only and decodes views of it: no copy. How the producer knows whether to also put the
payload inline: every reader registers `(target group, its host id)` under the source when it subscribes
and refreshes it while it reads; the producer looks at the live registrations once a second and inlines
the payload (`d`, as the plain broker does) only while a target group is unregistered or has a replica on
another host. The reader picks the copy from the host id in the entry.

Realtime links whose readers are all on the producer's host go one step further: frames go through a channel
file and a futex, with no stream entry at all (`local.py`). A gateway on the producer's host takes its frames
from a channel of its own too, instead of over TCP (`gateway.py`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edgeflow.broker import GatewayPath, Publisher, Subscription
from edgeflow.brokers.dataplane import DataPlane, Fields, Missing, PayloadReader, Placer
from edgeflow.errors import BackpressureError
from edgeflow.frame import Buffer

from ._channel import RING, futex_available
from ._pool import (
    SHM_DIR,
    SLOT_HEADER,
    ReaderFiles,
    Segment,
    align64,
    fresh,
    host_id,
    map_readonly,
    size_class,
    slot_info,
    stride,
    text,
)  # fmt: skip
from ._pool import sweep as sweep_segments
from .gateway import GatewayChannel, GatewayFeed
from .local import REGISTRATION_TTL, ChannelPublisher, ChannelSubscription

if TYPE_CHECKING:
    from edgeflow.brokers.redis import RedisPublisher, RedisSubscription
    from edgeflow.links import Link

__all__ = ["SharedMemoryPlane", "ShmReader"]

log = logging.getLogger("edgeflow.shm")

_DECIDE_EVERY = 1.0
_MAX_MAPPINGS = 64


class SharedMemoryPlane(DataPlane):
    """Large payloads through shared memory, chosen per entry by host id; readers elsewhere get them inline.

    Args:
        shm_min_bytes: payloads smaller than this stay inline (the entry costs more than the copy saves).
        shm_slots: slots per source and size class (at least a realtime link's depth + 8); bounds the durable
            backlog held in shared memory (the producer waits when they are all unacknowledged).
        shm_max_bytes: the most one segment may take; a link that would need more goes inline.
        shm_local: let realtime links whose readers all run on this host skip Redis entries (the channel of
            `local.py`); False keeps a stream entry per frame, e.g. to watch the streams with redis-cli.
        shm_gateway: let a gateway on the producer's host take frames from a channel instead of TCP
            (`gateway.py`); needs shm_local.
    """

    name = "shm"
    frees_payloads = True

    def __init__(
        self,
        *,
        shm_min_bytes: int = 65_536,
        shm_slots: int = 8,
        shm_max_bytes: int = 256 << 20,
        shm_local: bool = True,
        shm_gateway: bool = True,
    ) -> None:
        self.shm_local = bool(shm_local) and futex_available()
        self.shm_gateway = self.shm_local and bool(shm_gateway)
        self.shm_min_bytes = int(shm_min_bytes)
        self.shm_slots = int(shm_slots)
        self.shm_max_bytes = int(shm_max_bytes)
        self.host = host_id()
        self.inline_fallbacks = 0
        self._segments: dict[tuple[str, int], Segment] = {}
        self._segments_by_name: dict[str, Segment] = {}
        self._seg_lock = threading.Lock()
        self._maps: dict[str, memoryview] = {}
        self._decisions: dict[str, tuple[float, bool]] = {}
        self._swept = False

    def describe(self) -> str:
        """Say where payloads live, for the log."""
        return f"payloads of {self.shm_min_bytes} bytes and more in shared memory on host {self.host}"

    def sweep_once(self) -> None:
        """Remove the segments and channels that dead processes left behind, once per process."""
        if not self._swept:
            sweep_segments()  # any app's: the names say whose they were, and apps come and go
            self._swept = True

    def close(self) -> None:
        """Remove this process's segments."""
        with self._seg_lock:
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()
            self._segments_by_name.clear()
        self._maps.clear()

    # Keys (on a Redis Cluster each carries its topic's hash tag: one slot with the topic's streams) ----------
    def readers_key(self, source: str) -> str:
        """The hash of the hosts whose readers take `source`'s frames."""
        return self.broker.key("shm", "readers", self.broker.tag(source))

    def fast_key(self, source: str) -> str:
        """The hash of the replicas that read `source`, and whether each can take frames from a channel."""
        return self.broker.key("shm", "fast", self.broker.tag(source))

    def writers_key(self, source: str) -> str:
        """The hash of the live producer replicas of `source`."""
        return self.broker.key("shm", "writers", self.broker.tag(source))

    def feed_key(self, source: str) -> str:
        """The hash of the gateways that read `source`'s frames, with their host ids (gateway.py)."""
        return self.broker.key("shm", "gwfeed", self.broker.tag(source))

    def gateway_writers_key(self, source: str, gateway: str) -> str:
        """The hash of the live producer replicas of `source` that could send to `gateway` through a channel."""
        return self.broker.key("shm", "gwwriters", self.broker.tag(source), gateway)

    def gateway_channel_key(self, source: str, gateway: str) -> str:
        """The Redis key naming the channel through which `source` currently sends to `gateway`."""
        return self.broker.key("shm", "gwchannel", self.broker.tag(source), gateway)

    def channel_key(self, source: str) -> str:
        """The Redis key naming the channel through which `source` currently sends (absent: none)."""
        return self.broker.key("shm", "channel", self.broker.tag(source))

    # Writing ---------------------------------------------------------------------------------------------
    def segment_for(self, n: int, source: str, links: Sequence[Link]) -> Segment | None:
        """The segment of `source` for an n-byte payload's size class, made on first use; None if there's no room."""
        cap = size_class(n)
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
                self.sweep_once()
                try:
                    seg = Segment(self.broker.namespace, cap, nslots)
                except OSError as exc:
                    log.warning("no shared memory for %d slots of %d bytes (%s): payloads go inline", nslots, cap, exc)
                    self.shm_max_bytes = min(self.shm_max_bytes, nslots * cap - 1)
                    return None
                self._segments[(source, cap)] = seg
                self._segments_by_name[seg.name] = seg
            return self._segments[(source, cap)]

    def inline_needed(self, source: str, links: Sequence[Link]) -> bool:
        """True while a target group is unregistered or has a replica on another host (cached for a second)."""
        if not links:
            return True
        now = time.monotonic()
        cached = self._decisions.get(source)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            regs = self.broker.client.hgetall(self.readers_key(source))
        except Exception:
            regs = {}
        wall = time.time()
        hosts: dict[str, set[str]] = {}
        for field, stamp in regs.items():
            if not fresh(stamp, wall, REGISTRATION_TTL):
                continue
            group, _, host = text(field).rpartition("|")
            hosts.setdefault(group, set()).add(host)
        needed = any(hosts.get(ln.target, {"?"}) != {self.host} for ln in links)
        self._decisions[source] = (now + _DECIDE_EVERY, needed)
        return needed

    def forget_decision(self, source: str) -> None:
        """Look at the registrations of `source` again at its next frame (a reader elsewhere may need them inline)."""
        self._decisions.pop(source, None)

    def placer(self, publisher: RedisPublisher) -> Placer:
        """A placer that writes large payloads once into this source's segment."""
        return _ShmPlacer(self, publisher)

    def local_write(
        self, pub: ChannelPublisher | GatewayChannel, header: bytes, payload: Buffer
    ) -> tuple[int, int] | None:
        """Write a frame for the channel: payload and header in a slot; (segment index, slot) or None if full."""
        n = len(payload)
        seg = self.segment_for(align64(n) + len(header), pub.source, pub.links)
        assert pub.channel is not None
        if seg is None:
            return None
        idx = pub.channel.segment_index(seg.name, seg.stride)
        if idx is None:
            return None
        mv = payload if isinstance(payload, memoryview) else memoryview(payload)
        got = seg.write(mv, header, pub.seq + 1)
        return None if got is None else (idx, got[0])

    def release(self, entries: Sequence[Fields]) -> None:
        """Free the slots of durable entries that every group acknowledged."""
        for fields in entries:
            ref = fields.get(b"m")
            if ref is None:
                continue
            try:
                host, name, off, _, _ = text(ref).split("|")
                slot = int(off)
            except ValueError:
                continue  # not a reference this plane wrote (someone else can write the stream): nothing to free
            seg = self._segments_by_name.get(name)
            if host == self.host and seg is not None:
                seg.release(slot // seg.stride)

    # Reading ---------------------------------------------------------------------------------------------
    def mapping(self, name: str) -> memoryview:
        """The read-only mapping of segment `name` (at most 64 kept; older ones go once no frame views them)."""
        view = self._maps.get(name)
        if view is None:
            if len(self._maps) >= _MAX_MAPPINGS:
                self._maps.pop(next(iter(self._maps)))
            view = self._maps[name] = map_readonly(name)
        return view

    def reader(self, subscription: RedisSubscription | None) -> PayloadReader:
        """A reader with its own files and slot locks; a one-off read (no subscription) copies and lets go."""
        return ShmReader(self, copy=subscription is None)

    def dead_letter_fields(self, fields: Fields, payload: Buffer, target: str, keep: int) -> dict[str, Any]:
        """A dead letter outlives the slot: its payload goes inline, copied."""
        return {"d": bytes(payload)}

    # Wiring ----------------------------------------------------------------------------------------------
    def register_reader(
        self, links: Sequence[Link], consumer: str = "", fast: bool = False, host: str | None = None
    ) -> None:
        """Tell producers that replica `consumer` of these links' target reads on this host, and whether it can
        take frames from a channel (`fast`): one replica that can't keeps its sources on stream entries.

        `host`: register as reading from another host (a reader that can't map this host's segments)."""
        host = host or self.host
        pipe = self.broker.client.pipeline(transaction=False)
        now = time.time()
        for ln in links:
            pipe.hset(self.readers_key(ln.topic), f"{ln.target}|{host}", now)
            pipe.expire(self.readers_key(ln.topic), int(REGISTRATION_TTL * 4))
            pipe.hset(self.fast_key(ln.topic), f"{ln.target}|{host}|{consumer}", f"{now}|{int(fast)}")
            pipe.expire(self.fast_key(ln.topic), int(REGISTRATION_TTL * 4))
        pipe.execute()

    def publisher(self, publisher: RedisPublisher) -> Publisher:
        """Wrap a realtime publisher with the channel path for readers on this host; durable ones stay as they are."""
        links = publisher.links
        if self.shm_local and links and all(ln.qos == "realtime" and ln.depth <= RING // 2 for ln in links):
            return ChannelPublisher(self, publisher)
        return publisher

    def gateway_path(self, source: str, link: Link) -> GatewayPath | None:
        """Frames for a gateway on this host go through a channel of their own instead of TCP (gateway.py)."""
        return GatewayChannel(self, source, link) if self.shm_gateway else None

    def gateway_feed(self, link: Link, consumer: str) -> Subscription | None:
        """The gateway's end: `link`'s frames from a producer's channel on this host."""
        return GatewayFeed(self, link, consumer) if self.shm_gateway else None

    def subscription(self, make: Callable[[], RedisSubscription], links: Sequence[Link], consumer: str) -> Subscription:
        """Register this host as a reader of `links`, then subscribe; the channel is read when it is open."""
        fast = self.shm_local and len(links) == 1 and links[0].qos == "realtime" and links[0].depth <= RING // 2
        self.register_reader(links, consumer, fast)
        inner = make()
        reader = inner.payloads
        assert isinstance(reader, ShmReader)
        return ChannelSubscription(self, inner, reader, list(links), consumer, fast)


class _ShmPlacer(Placer):
    def __init__(self, plane: SharedMemoryPlane, publisher: RedisPublisher) -> None:
        self.plane = plane
        self.publisher = publisher

    def place(self, header: bytes, payload: Buffer) -> dict[str, Any]:
        plane, pub = self.plane, self.publisher
        n = len(payload)
        links = pub.links
        if n < plane.shm_min_bytes or any(ln.options.get("shm") is False for ln in links):
            return {"d": payload}
        seg = plane.segment_for(n, pub.source, links)
        if seg is None:
            return {"d": payload}
        mv = payload if isinstance(payload, memoryview) else memoryview(payload)
        got = seg.write(mv)
        if got is None and pub.durable:
            pub.trim()  # frees the slots of entries every group acknowledged
            got = seg.write(mv)
        if got is None:
            if pub.durable:
                raise BackpressureError(
                    f"the shared-memory pool of {pub.source!r} is full ({seg.nslots} slots of {seg.capacity} "
                    "bytes hold unacknowledged frames); the producer waits, or raise shm_slots",
                    url=plane.broker.display_url,
                )
            plane.inline_fallbacks += 1  # every slot is being read: this frame goes through Redis
            return {"d": payload}
        slot, gen = got
        if pub.durable:
            seg.hold(slot)
        fields: dict[str, Any] = {"d": payload} if plane.inline_needed(pub.source, links) else {}
        fields["m"] = f"{plane.host}|{seg.name}|{slot * seg.stride}|{gen}|{n}"
        return fields


def _permission_advice(name: str, exc: OSError) -> str:
    """Say why a segment can't be mapped, and what to do."""
    try:
        owner: object = os.stat(SHM_DIR / name).st_uid
    except OSError:
        owner = "another user"
    return (
        f"can't map the shared-memory segment {name}: {exc.strerror} (it belongs to uid {owner}, this reader runs as "
        f"uid {os.getuid()}): run the producer and its readers as the same user"
    )


class ShmReader(PayloadReader):
    """Maps same-host payloads read-only under a shared slot lock, held until the next read (no copy)."""

    def __init__(self, plane: SharedMemoryPlane, *, copy: bool = False) -> None:
        self.plane = plane
        self.copy = copy
        self.files = ReaderFiles()
        #: Set when this host's segments can't be mapped here (another user's files): payloads are taken inline,
        #: and the subscription registers as a reader elsewhere so that producers put them inline.
        self.refused: str | None = None

    def resolve(self, entries: Sequence[Fields]) -> list[Buffer | Missing]:
        return [self._one(fields) for fields in entries]

    def _one(self, fields: Fields) -> Buffer | Missing:
        ref = fields.get(b"m")
        if ref is None:
            payload: Buffer = fields.get(b"d", b"")
            return payload
        try:
            host, name, off_s, gen_s, n_s = ref.decode().split("|")
            off, gen, n = int(off_s), int(gen_s), int(n_s)
        except (UnicodeDecodeError, ValueError):
            return Missing("rejected", f"corrupted shared-memory reference {ref!r}")
        plane, files = self.plane, self.files
        if host != plane.host or self.refused is not None:
            if b"d" in fields:
                inline: Buffer = fields[b"d"]
                return inline
            why = (
                self.refused
                or f"the payload is in the shared memory of host {host}, and this reader runs on {plane.host}"
            )
            return Missing("lost", f"{why}; it was written before this reader registered (frames from then on carry "
                           "it inline)")  # fmt: skip
        try:
            view = plane.mapping(name)
            if not files.acquire(name, off):
                return Missing("skipped", f"slot at {off} of {name} is being written again")
        except PermissionError as exc:
            self.refused = _permission_advice(name, exc)
            log.error("%s; this reader takes payloads inline from now on", self.refused)
            return Missing("lost", self.refused)
        except OSError as exc:
            return Missing("lost", f"shared-memory segment {name} is gone (its producer stopped): {exc}")
        now_gen, length, _, _ = slot_info(view, off)
        if now_gen != gen or length != n:
            files.release_last()
            return Missing("skipped", f"slot at {off} of {name} was written again before it was read")
        data = view[off + SLOT_HEADER : off + SLOT_HEADER + n]
        if self.copy:
            out = bytes(data)
            files.release_last()
            return out
        return data

    def release(self) -> None:
        self.files.release()

    def close(self) -> None:
        self.files.close_files()
