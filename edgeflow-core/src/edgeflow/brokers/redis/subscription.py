"""`RedisSubscription`: one replica of a target node reading its links as one consumer of the target's group."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from ...broker import Delivery, Subscription
from ...errors import BrokerError, FrameError
from ...frame import decode, peek
from ...names import safe
from ..dataplane import Fields, Missing
from .errors import translate
from .handover import CLAIM_CHECK, release_pending
from .slots import SlotReads

if TYPE_CHECKING:
    from ...links import Link
    from .broker import RedisBroker

__all__ = ["RedisSubscription"]

log = logging.getLogger("edgeflow.broker")

#: The dead letters of one target: 10,000 at most, and about DEAD_MAX_BYTES of payload.
DEAD_MAX_LEN = 10_000
DEAD_MAX_BYTES = 64 << 20
# Skip counts travel in batches (every 0.1 s, or 128 frames): one script call per frame would cost a third of a
# realtime read.
_NOTES_EVERY = 0.1
_NOTES_MAX = 128


class _Stream(NamedTuple):
    source: str  # the source node ("" for the replay stream: each entry names its own)
    topic: str
    qos: str


class _Entry(NamedTuple):
    key: str
    entry_id: bytes
    fields: Fields
    attempts: int


class RedisSubscription(Subscription):
    """Reads the links into one target as one consumer of its group; acknowledges, takes over, dead-letters.

    Public for data planes that wrap it: `links`, `group`, `consumer`, `payloads` (the plane's reader of this
    subscription) and `seen_key(topic)`.
    """

    def __init__(self, broker: RedisBroker, links: list[Link], consumer: str) -> None:
        self.broker = broker
        self.links = links
        self.group = links[0].target
        self.consumer = consumer
        self.skipped = 0
        self.rejected = 0
        self.dead = 0
        self.lost = 0
        self.payloads = broker.data_plane.reader(self)
        self._streams: dict[str, _Stream] = {}
        for ln in links:
            self._streams[broker.stream_key(ln.topic, ln.qos, ln.variant)] = _Stream(ln.source, ln.topic, ln.qos)
        durable = [ln for ln in links if ln.qos == "durable"]
        if durable:
            self._streams[broker.replay_key(self.group)] = _Stream("", "", "durable")
        self.max_attempts = max((ln.max_attempts for ln in durable), default=1)
        self.claim_after = min((ln.claim_after for ln in durable), default=0.0)
        self._seen_keys = {ln.topic: broker.seen_key(ln.topic, self.group) for ln in links}
        self._pending_notes: dict[str, list[Any]] = {}
        self._pending_acks: dict[str, list[bytes]] = {}
        self._held: list[_Entry] = []  # durable entries read while the data plane was down, resolved when it is back
        # The newest sequence number taken per (durable stream, writer); after a group had to be made again, the
        # first entry of each writer shows how many frames Redis lost (counted in `lost`, logged).
        self._last_seq: dict[tuple[str, bytes], int] = {}
        self._gap_check: set[tuple[str, bytes]] = set()
        self._notes_due = 0.0
        self._lost_logged = (float("-inf"), 0)
        self._next_claim = time.monotonic() + (min(self.claim_after / 2, CLAIM_CHECK) if durable else float("inf"))
        # Realtime reads take the newest frame, one at a time; durable reads take what waits, sized by payload and
        # by the time a batch takes to process (a batch that outlasts claim_after would be taken over).
        self._batch = 16 if durable else 1
        self._handed = (0.0, 0)  # when the last read returned, and how many deliveries it handed out
        self._per_frame = 0.0  # seconds a delivery takes to process, smoothed
        self.keepalive_every = self.claim_after / 3 if durable else float("inf")
        # With only realtime inputs nothing is ever acknowledged: NOACK keeps the pending lists empty.
        self._noack = not durable
        self._slots = SlotReads(self) if broker.cluster else None  # a cluster: one read per slot (slots.py)
        self._create_groups()

    def seen_key(self, topic: str) -> str:
        """The key where this group's skip accounting of `topic` lives."""
        return self._seen_keys[topic]

    def _create_groups(self) -> None:
        # A durable group made by its reader starts at the oldest entry the stream holds: frames written while the
        # group did not exist (a Redis that lost its data, a reader that came first) are delivered, not skipped.
        for key, stream in self._streams.items():
            self.broker.ensure_group_key(key, self.group, start="0" if stream.qos == "durable" else "$")

    def _group_lost(self) -> None:
        """NOGROUP: Redis restarted without its data, or a stream was deleted. Make our place again."""
        log.warning("%s: its consumer groups were gone (Redis restarted without its data?); made again at the oldest "
                    "entry each durable stream still holds", self.group)  # fmt: skip
        self._create_groups()
        self._gap_check = set(self._last_seq)

    # Reading --------------------------------------------------------------------------------------------
    def read(self, timeout: float) -> list[Delivery]:
        self.payloads.release()  # the previous read's frames are processed and acknowledged by now
        out = self._read(timeout)
        self._handed = (time.monotonic(), len(out))
        return out

    def _read(self, timeout: float) -> list[Delivery]:
        handed_at, handed = self._handed
        if handed and not self._noack:
            took = (time.monotonic() - handed_at) / handed
            self._per_frame = took if not self._per_frame else 0.8 * self._per_frame + 0.2 * took
        if self._held:
            held, self._held = self._held, []
            return self._deliver(held)  # raises, keeping them held, while the data plane is still down
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + min(max(self.claim_after / 2, 0.05), CLAIM_CHECK)
            claimed = self._claim()
            if claimed:
                return claimed
        client: Any = self.broker.client
        pipe = client.pipeline(transaction=False) if self._slots is None else self._slots.pipeline()
        notes: dict[str, list[Any]] = {}
        now = time.monotonic()
        if self._pending_notes and (
            now >= self._notes_due or sum(map(len, self._pending_notes.values())) >= _NOTES_MAX
        ):
            notes, self._pending_notes = self._pending_notes, {}
            self._notes_due = now + _NOTES_EVERY
        acks, self._pending_acks = self._pending_acks, {}
        note_skips = self.broker.scripts.note_skips
        for topic, args in notes.items():
            note_skips(keys=[self._seen_keys[topic]], args=args, client=pipe)
        for key, ids in acks.items():
            pipe.xack(key, self.group, *ids)
        pipe.xreadgroup(self.group, self.consumer, dict.fromkeys(self._streams, ">"), count=self._batch,
                        block=_block_ms(timeout), noack=self._noack)  # fmt: skip
        try:
            results = pipe.execute()
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_lost()
                return []
            raise translate(exc, self.broker.display_url) from exc
        except redis.RedisError as exc:
            # Acks and skip counts not sent go with the next read; a durable frame is at worst delivered twice.
            for key, ids in acks.items():
                self._pending_acks.setdefault(key, [])[:0] = ids
            for topic, args in notes.items():
                self._pending_notes.setdefault(topic, [])[:0] = args
            raise translate(exc, self.broker.display_url) from exc
        for n in results[: len(notes)]:
            self.skipped += int(n)
        entries: list[_Entry] = []
        size = 0
        for raw_key, got in results[-1] or []:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            stream = self._streams[key]
            for entry_id, fields in got:
                if stream.qos == "realtime" and not self._noack:
                    self._pending_acks.setdefault(key, []).append(entry_id)
                if not fields:
                    continue  # trimmed between delivery and read
                size += sum(len(v) for v in fields.values() if isinstance(v, bytes))
                writer, seq = fields.get(b"w"), fields.get(b"q")
                if writer is not None and seq is not None and seq.isdigit():
                    if stream.qos == "realtime":
                        self._pending_notes.setdefault(stream.topic, []).extend((writer, seq))
                    elif stream.source:
                        self._follow(key, stream.source, writer, int(seq))
                entries.append(_Entry(key, entry_id, fields, 1))
        out = self._deliver(entries)
        if out and not self._noack:
            # Aim at about 4 MB a read (hundreds of small messages per round trip, a few video frames), and at a
            # quarter of claim_after of work: a healthy replica's batch is never taken for a dead one's.
            by_bytes = (4 << 20) * len(out) // max(size, 1)
            # Until a batch's work is measured, reads don't grow.
            by_time = int(self.claim_after / 4 / self._per_frame) if self._per_frame > 0 else self._batch
            self._batch = max(1, min(256, by_bytes, by_time))
        return out

    def _follow(self, key: str, source: str, writer: bytes, seq: int) -> None:
        """Track a durable writer's numbering; right after a group was made again, count the frames Redis lost."""
        last = self._last_seq.get((key, writer))
        if (key, writer) in self._gap_check:
            self._gap_check.discard((key, writer))
            if last is not None and seq > last + 1:
                self.lost += seq - last - 1
                log.error("%s: %d durable frame(s) of %s (after frame number %d of its writer %s) are LOST: Redis "
                          "lost them with its data. Run Redis with appendonly yes for durable links", self.group,
                          seq - last - 1, safe(source), last, safe(writer.decode(errors="replace")))  # fmt: skip
        if last is None or seq > last:
            self._last_seq[(key, writer)] = seq
            if len(self._last_seq) > 4096:  # bounded: producers restarted many times leave their old writers here
                self._last_seq.pop(next(iter(self._last_seq)))

    def _deliver(self, entries: list[_Entry]) -> list[Delivery]:
        """Resolve the payloads of `entries` and decode them; bad ones are counted (and acknowledged if durable)."""
        if not entries:
            return []
        try:
            payloads = self.payloads.resolve([e.fields for e in entries])
        except BrokerError:
            # The data plane is down: durable entries are ours in the group, kept and resolved when it is back;
            # realtime ones are stale by then, and skipped (counted).
            self._held = [e for e in entries if self._streams[e.key].qos == "durable"]
            self.skipped += len(entries) - len(self._held)
            raise
        out: list[Delivery] = []
        for entry, payload in zip(entries, payloads, strict=True):
            stream = self._streams[entry.key]
            source = stream.source or entry.fields.get(b"s", b"").decode(errors="replace")
            if isinstance(payload, Missing):
                self._missing(entry, source, payload)
                continue
            try:
                frame = decode(entry.fields[b"h"], payload)
            except (FrameError, KeyError) as exc:
                self._reject(entry, source, f"not a valid EdgeFlow frame: {exc}", payload)
                continue
            durable = stream.qos == "durable"
            out.append(Delivery(source, frame, entry.entry_id, stream.qos, entry.attempts,
                                self.max_attempts if durable else 1,
                                {"key": entry.key, "fields": entry.fields, "payload": payload}))  # fmt: skip
        return out

    def _missing(self, entry: _Entry, source: str, missing: Missing) -> None:
        if missing.count == "skipped" or (missing.count == "lost" and self._streams[entry.key].qos == "realtime"):
            # A realtime payload gone before its reader came is a stale frame: skipped, as realtime links do.
            self.skipped += 1
            log.debug("%s: a frame of %r went stale before it was read: %s", self.group, source, missing.why)
            return
        if missing.count == "rejected":
            self._reject(entry, source, missing.why, None)
            return
        self.lost += 1
        self._ack_later(entry)  # it can never be read: left pending, it would block trimming and the producer
        last, unlogged = self._lost_logged
        now = time.monotonic()
        if now - last < 1.0:
            self._lost_logged = (last, unlogged + 1)
            return
        more = f" ({unlogged} more since the last report)" if unlogged else ""
        try:
            frame_id: object = peek(entry.fields[b"h"])[0]
        except (FrameError, KeyError):
            frame_id = "?"
        log.error("%s: durable frame %s from %r is LOST: %s; acknowledged and counted as lost%s", self.group,
                  frame_id, source, missing.why, more)  # fmt: skip
        self._lost_logged = (now, 0)

    def _reject(self, entry: _Entry, source: str, why: str, payload: Any) -> None:
        """Count a bad entry; on a durable link it goes to the dead letters with the reason, never silently."""
        self.rejected += 1
        log.warning("%s: rejected an entry from %s (%s): %s", self.group, safe(source), entry.entry_id.decode(), why)
        if self._streams[entry.key].qos == "durable":
            self._bury(entry, why, source, payload)

    def _ack_later(self, entry: _Entry) -> None:
        if self._streams[entry.key].qos == "durable":
            self._pending_acks.setdefault(entry.key, []).append(entry.entry_id)

    def _claim(self) -> list[Delivery]:
        """Take over durable frames that sat too long with a replica that went silent.

        A frame's deliveries are counted before it is decoded: one that kept killing its readers goes to the
        dead letters after `max_attempts`, whatever it holds.
        """
        if not self.broker.data_plane.available():
            return []  # a takeover would only count one more delivery per frame, pushing good frames to the dead
        client: Any = self.broker.client
        idle_ms = int(self.claim_after * 1000)
        entries: list[_Entry] = []
        try:
            for key, stream in self._streams.items():
                if stream.qos != "durable":
                    continue
                pending = client.xpending_range(key, self.group, min="-", max="+", count=32, idle=idle_ms)
                if not pending:
                    continue
                times = {p["message_id"]: int(p["times_delivered"]) for p in pending}
                for entry_id, fields in client.xclaim(key, self.group, self.consumer, idle_ms, list(times)):
                    if not fields:
                        client.xack(key, self.group, entry_id)  # trimmed meanwhile
                        continue
                    tried = times.get(entry_id, 1)
                    entry = _Entry(key, entry_id, fields, tried + 1)
                    if tried >= self.max_attempts:
                        # Delivered max_attempts times and never acknowledged: it keeps killing its reader.
                        self._bury(entry, f"not acknowledged after {tried} deliveries (its readers died?)")
                        continue
                    log.info("%s: took over entry %s of %r from a silent replica", self.group, entry_id.decode(),
                             stream.source or "replay")  # fmt: skip
                    entries.append(entry)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_lost()
                return []
            raise translate(exc, self.broker.display_url) from exc
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc
        return self._deliver(entries)

    # Acknowledging ---------------------------------------------------------------------------------------
    def keepalive(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of durable deliveries still being processed (XCLAIM JUSTID to this consumer)."""
        by_key: dict[str, list[bytes]] = {}
        for d in deliveries:
            if d.qos == "durable" and d.entry_id:
                by_key.setdefault(d.extra["key"], []).append(d.entry_id)
        if not by_key:
            return
        try:
            pipe = self.broker.client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xclaim(key, self.group, self.consumer, 0, ids, justid=True)
            pipe.execute()
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[bytes]] = {}
        for d in deliveries:
            if d.qos == "durable":
                by_key.setdefault(d.extra["key"], []).append(d.entry_id)
        if not by_key:
            return
        try:
            pipe = self.broker.client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xack(key, self.group, *ids)
            pipe.execute()
        except redis.RedisError as exc:
            for key, ids in by_key.items():
                self._pending_acks.setdefault(key, []).extend(ids)
            raise translate(exc, self.broker.display_url) from exc

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        entry = _Entry(delivery.extra["key"], delivery.entry_id, delivery.extra["fields"], delivery.attempts)
        self._bury(entry, error, delivery.source, delivery.extra.get("payload"))

    def _bury(self, entry: _Entry, error: str, source: str | None = None, payload: Any = None) -> None:
        """Move an entry to the target's dead-letter stream, with `error`, and acknowledge it, in one transaction."""
        fields = entry.fields
        stream = self._streams[entry.key]
        source = source or stream.source or fields.get(b"s", b"").decode(errors="replace")
        if payload is None:
            got = self.payloads.resolve([fields])[0]
            payload = None if isinstance(got, Missing) else got
        letter: dict[Any, Any] = {k: v for k, v in fields.items() if k == b"h"}
        # Bounded in bytes as well as in count: as many letters of this size as DEAD_MAX_BYTES holds.
        size = len(fields.get(b"h", b"")) + (len(payload) if payload is not None else 0)
        keep = max(16, min(DEAD_MAX_LEN, DEAD_MAX_BYTES // max(size, 1)))
        if payload is not None:
            letter.update(self.broker.data_plane.dead_letter_fields(fields, payload, self.group, keep))
        letter.update({"s": source, "e": error[:2000], "a": entry.attempts, "i": entry.entry_id})
        try:
            pipe = self.broker.in_order()  # one MULTI; on a cluster, the letter first, then the acknowledgement
            pipe.xadd(self.broker.dead_key(self.group), letter, maxlen=keep, approximate=False)
            pipe.xack(entry.key, self.group, entry.entry_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc
        self.dead += 1
        log.error("%s: entry %s of %s went to the dead-letter stream %s after %d deliveries: %s", self.group,
                  entry.entry_id.decode(), safe(source), self.broker.dead_key(self.group), entry.attempts,
                  error)  # fmt: skip

    def close(self) -> None:
        self.flush()
        if self._slots is not None:
            self._slots.close()
        release_pending(self)  # a replica that stops hands its unacknowledged durable frames to the others
        self.payloads.close()

    def flush(self) -> None:
        """Send the batched skip counts and acknowledgements now."""
        notes, acks = self._pending_notes, self._pending_acks
        if notes or acks:
            try:
                pipe = self.broker.client.pipeline(transaction=False)
                for topic, args in notes.items():
                    self.broker.scripts.note_skips(keys=[self._seen_keys[topic]], args=args, client=pipe)
                for key, ids in acks.items():
                    pipe.xack(key, self.group, *ids)
                for n in pipe.execute()[: len(notes)]:
                    self.skipped += int(n)
            except redis.RedisError:
                pass  # the broker is gone: these were realtime notes and acks, nothing held for a target
        self._pending_notes = {}
        self._pending_acks = {}


def _block_ms(timeout: float) -> int | None:
    """XREADGROUP's BLOCK for `timeout` seconds; 0 reads what is there and returns at once (None: no BLOCK).

    Why not BLOCK 1: Redis checks blocked clients' deadlines on its cron tick, so a 1 ms block can last 100 ms.
    """
    return max(1, int(timeout * 1000)) if timeout > 0 else None
