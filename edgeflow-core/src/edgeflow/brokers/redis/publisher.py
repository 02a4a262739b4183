"""`RedisPublisher`: one source's frames into its realtime stream (trimmed to depth) and durable stream (kept until
every target acknowledged them)."""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from ...broker import Publisher
from ...errors import BackpressureError, BrokerError, ConfigurationError
from ...frame import Buffer, Frame, encode
from .errors import translate

if TYPE_CHECKING:
    from ...links import Link
    from .broker import RedisBroker

__all__ = ["RedisPublisher"]

log = logging.getLogger("edgeflow.broker")

# Durable streams are trimmed every 64 frames of video, small messages every 1,024 (a trim costs three round trips).
_TRIM_EVERY = 64
_TRIM_EVERY_SMALL = 1024
_TRIM_BYTES = 4 << 20


class RedisPublisher(Publisher):
    """Writes the frames of one topic to its streams: realtime entries trimmed to depth, durable ones until acked.

    Public for data planes that wrap it: `source` (the topic), `links`, `writer` and `seq` (the numbering of
    this writer's frames, which skip counts follow), `rt_depth`, and `trim()`.
    """

    def __init__(self, broker: RedisBroker, source: str, links: Sequence[Link]) -> None:
        self.broker = broker
        self.source = source
        self.links = list(links)
        self.writer = secrets.token_hex(4)
        self.seq = 0
        rt = [ln for ln in self.links if ln.qos == "realtime"]
        dur = [ln for ln in self.links if ln.qos == "durable"]
        variants = {ln.variant for ln in self.links}
        if len(variants) > 1:
            raise ConfigurationError(f"one publisher writes one encoding; {source!r} got links of {sorted(variants)}")
        if any(ln.topic != source for ln in self.links):
            raise ConfigurationError(f"a publisher of topic {source!r} got links of other topics: {self.links}")
        self.variant = variants.pop() if variants else ""
        self.rt_key = broker.stream_key(source, "realtime", self.variant) if rt or not self.links else None
        self.rt_depth = max((ln.depth for ln in rt), default=1)
        self.dur_key = broker.stream_key(source, "durable", self.variant) if dur else None
        self.dur_cap = min((ln.max_len for ln in dur), default=0)
        self.dur_byte_cap = min((ln.max_bytes for ln in dur), default=0)
        self.durable = bool(dur)
        # Acknowledged durable frames kept this long (ms) for `edgeflow replay --from-broker`: the most any link asks.
        self.retain_ms = int(1000 * max((ln.retain_seconds for ln in dur), default=0.0))
        self._dur_len = 0
        # The payload sizes of this writer's durable entries still in the stream, oldest first, and their sum.
        self._dur_sizes: deque[int] = deque()
        self._dur_bytes = 0
        self._since_trim = self._bytes_since_trim = 0
        self._window = broker.send_window(source, self.rt_key or self.dur_key or source)
        self._placer = broker.data_plane.placer(self)
        # A frame whose write failed, and its entry fields: the runner retries with the same encoding, and its
        # payload is not placed twice.
        self._retry: tuple[object, dict[str, Any]] | None = None
        # Groups exist before the first frame, so a target that starts later still gets every durable frame.
        for ln in self.links:
            broker.ensure_group(source, ln.target, ln.qos, self.variant)

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        with self._window.io:
            self._publish(frame, encoded)

    def _publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None) -> None:
        window = self._window
        if window.flush_error is not None:
            exc, window.flush_error = window.flush_error, None
            raise self._failed(exc) from exc
        if self.dur_key is not None and (self._dur_len >= self.dur_cap or self._dur_bytes >= self.dur_byte_cap):
            self._wait_for_room()  # before the payload is placed, so a producer held back does not place it again
        header, payload = encoded or encode(frame)
        if self._retry is not None and encoded is not None and self._retry[0] is encoded:
            fields = self._retry[1]
        else:
            fields = {"h": header, **self._placer.place(header, payload)}
            fields["w"] = self.writer
        fields["q"] = self.seq + 1
        flat: list[Any] = []
        size = 0
        for key, value in fields.items():
            flat += (key, value)
            if isinstance(value, (bytes, bytearray, memoryview)):
                size += len(value)
        commands: list[tuple[Any, ...]] = []
        if self.rt_key is not None:
            commands.append(("XADD", self.rt_key, "MAXLEN", self.rt_depth, "*", *flat))
        if self.dur_key is not None:
            commands.append(("XADD", self.dur_key, "*", *flat))
        try:
            window.send(commands, size, self.durable)
        except (redis.RedisError, OSError) as exc:
            self._retry = (encoded, fields) if encoded is not None else None
            raise self._failed(exc) from exc
        self._retry = None
        self.seq += 1
        if self.dur_key is not None:
            self._dur_len += 1
            self._dur_sizes.append(len(payload))
            self._dur_bytes += len(payload)
            self._since_trim += 1
            self._bytes_since_trim += len(payload)
            due = self._since_trim >= _TRIM_EVERY and (
                self._bytes_since_trim >= _TRIM_BYTES or self._since_trim >= _TRIM_EVERY_SMALL
            )
            if due or self._dur_len >= self.dur_cap or self._dur_bytes >= self.dur_byte_cap:
                try:
                    self.trim()
                except redis.RedisError as exc:
                    raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> BrokerError:
        """Drop the connection; durable commands not yet confirmed are sent again first, realtime ones counted."""
        self.dropped += self._window.failed()
        return translate(exc, self.broker.display_url)

    def close(self) -> None:
        """Send what is held, wait for the replies still due, then give the connection back."""
        unsure = self._window.close()
        if unsure:
            log.error("%s: %d durable frame(s) may not have reached Redis before the publisher closed: %s",
                      self.source, unsure, self.broker.display_url)  # fmt: skip
        self._placer.close()

    def trim(self) -> int:
        """Delete durable entries that every target acknowledged; return the stream's length after."""
        with self._window.io:
            return self._trim()

    def _trim(self) -> int:
        assert self.dur_key is not None
        self._since_trim = self._bytes_since_trim = 0
        self._window.drain()  # our own writes first, so that the length below counts them
        client: Any = self.broker.client
        key = self.dur_key
        safe: bytes | None = None
        for info in client.xinfo_groups(key):
            name = info["name"]
            if int(info.get("pending") or 0):
                low = client.xpending(key, name).get("min")
            else:
                low = info.get("last-delivered-id")
            if low is None:
                continue
            low = low if isinstance(low, bytes) else str(low).encode()
            if safe is None or id_lt(low, safe):
                safe = low
        safe = self._keep_retained(client, safe)
        if safe is not None and safe != b"0-0":
            plane = self.broker.data_plane
            if plane.frees_payloads:
                # Release in chunks, and trim only what was released, so no payload outlives its entry unnoticed.
                while gone := client.xrange(key, max=b"(" + safe, count=1000):
                    plane.release([f for _, f in gone])
                    last = gone[-1][0]
                    client.xtrim(key, minid=next_id(last if isinstance(last, bytes) else str(last).encode()),
                                 approximate=False)  # fmt: skip
            client.xtrim(key, minid=safe, approximate=False)
        self._dur_len = int(client.xlen(key))
        if self.retain_ms:
            self._dur_len = self._unacked(client, key, self._dur_len)
        # What waits is the newest entries: what is left of ours is the newest of them (other replicas of the
        # source write the same stream, so this is our share of its bytes, at most). Retained frames, already
        # acknowledged, count in neither budget.
        while len(self._dur_sizes) > self._dur_len:
            self._dur_bytes -= self._dur_sizes.popleft()
        return self._dur_len

    def _keep_retained(self, client: Any, safe: bytes | None) -> bytes | None:
        """Where to trim with `retain_seconds`: acknowledged entries younger than that stay (by Redis's clock)."""
        if not self.retain_ms or safe is None:
            return safe
        sec, usec = client.time()
        floor = b"%d-0" % max(0, int(sec) * 1000 + int(usec) // 1000 - self.retain_ms)
        return floor if id_lt(floor, safe) else safe

    def _unacked(self, client: Any, key: str, length: int) -> int:
        """With retained entries in the stream, its length is not what waits: the slowest group's lag + pending."""
        most = 0
        for info in client.xinfo_groups(key):
            lag = info.get("lag")
            if lag is None:
                return length  # Redis can't tell: count every entry, as without retention
            most = max(most, int(lag) + int(info.get("pending") or 0))
        return most

    def _wait_for_room(self) -> None:
        try:
            if self.trim() < self.dur_cap and self._dur_bytes < self.dur_byte_cap:
                return
        except redis.RedisError as exc:
            raise translate(exc, self.broker.display_url) from exc
        raise BackpressureError(
            f"durable links out of {self.source!r} hold {self._dur_len} unacknowledged frames (max_len "
            f"{self.dur_cap}) of {self._dur_bytes} bytes (max_bytes {self.dur_byte_cap}); the producer waits for its "
            "targets to catch up",
            url=self.broker.display_url,
        )


def next_id(entry_id: bytes) -> bytes:
    """Return the stream id right after `entry_id`."""
    ms, _, seq = entry_id.partition(b"-")
    return b"%d-%d" % (int(ms), int(seq or 0) + 1)


def id_lt(a: bytes, b: bytes) -> bool:
    """Return True when stream id `a` comes before `b`."""
    ams, _, aseq = a.partition(b"-")
    bms, _, bseq = b.partition(b"-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))
