"""The data plane of DualRedisBroker: payloads of `inline_threshold` bytes and more on a second Redis.

Payloads go under `ef:{app}:pl:{kind}:{id}` (kind `rt`, `dur` or `mix` after the links' qos). Realtime payloads
expire `realtime_ttl` seconds after they are written, or 0.5 s (32 frames at most) after newer frames pushed
their entry out of the stream. Durable payloads are deleted once every target group acknowledged them, and
expire after `durable_ttl` seconds at the latest (a safety net for entries trimmed without us).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis

from edgeflow.brokers.dataplane import DataPlane, Fields, Missing, PayloadReader, Placer
from edgeflow.brokers.redis import translate
from edgeflow.config import redact_url
from edgeflow.embedded import redis_answers
from edgeflow.errors import BrokerError, ConfigurationError
from edgeflow.frame import Buffer

from .settings import data_redis_configured, data_redis_url, data_where

if TYPE_CHECKING:
    from edgeflow.brokers.redis import RedisPublisher, RedisSubscription

__all__ = ["DataRedisPlane", "payload_kind"]

log = logging.getLogger("edgeflow.broker.dualredis")

# A realtime payload whose entry newer frames pushed out of the stream lives a little longer, so that a reader
# that took the entry just before it went still finds the payload (it fetches it within the same read(), so
# within milliseconds): 0.5 s, and at most 32 frames more. The data Redis then holds (depth + 32) payloads at
# most however fast the producer runs, and 0.5 s of frames at camera rates (30 fps VGA: 14 MB). A reader stalled
# longer finds the payload gone and counts the frame as skipped, as realtime links do with stale frames.
_GRACE_MS = 500
_GRACE_FRAMES = 32
# Refs whose deletion failed while the data plane was down; retried with the next trim, then left to the TTL.
_MAX_UNDONE = 100_000


def payload_kind(realtime: bool, durable: bool) -> str:
    """Return the kind of payload key for links of these qos: `rt`, `dur` or `mix` (both)."""
    if realtime and durable:
        return "mix"
    return "dur" if durable else "rt"


class DataRedisPlane(DataPlane):
    """Large payloads on a data-plane Redis, one pipelined round trip per plane; small ones stay inline."""

    name = "dualredis"
    frees_payloads = True

    def __init__(
        self,
        data_url: str | None = None,
        *,
        inline_threshold: int = 4096,
        realtime_ttl: float = 60.0,
        durable_ttl: float = 7 * 86400.0,
    ) -> None:
        if not isinstance(inline_threshold, int) or inline_threshold < 0:
            raise ConfigurationError(f"inline_threshold must be an int >= 0 (bytes), got {inline_threshold!r}")
        for name, ttl in (("realtime_ttl", realtime_ttl), ("durable_ttl", durable_ttl)):
            if not isinstance(ttl, (int, float)) or ttl < 0.01:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0.01, got {ttl!r}")
        self.inline_threshold = inline_threshold
        self.realtime_ttl = float(realtime_ttl)
        self.durable_ttl = float(durable_ttl)
        self._data_url = data_url
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._writer = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._undone: list[bytes] = []
        #: True after a data-plane command failed, until one succeeds; readers don't take over frames meanwhile.
        self.down = False

    # Servers ------------------------------------------------------------------------------------------------
    @property
    def data_url(self) -> str:
        """The data-plane URL, from the constructor, DATA_REDIS_URL, or DATA_REDIS_HOST / DATA_REDIS_PORT."""
        return self._data_url or data_redis_url()

    @property
    def display_url(self) -> str:
        """The data-plane URL with any password redacted."""
        return redact_url(self.data_url)

    def use_url(self, url: str) -> None:
        """Point the data plane at `url` before it connects (for the embedded data Redis)."""
        if self._client is not None:
            raise ConfigurationError("the data plane's use_url() must be called before connect()")
        self._data_url = url

    def ensure_server(self, start_embedded: Callable[[], str], control_embedded: bool) -> None:
        """Start an embedded data Redis when the control plane got one and no data plane is configured.

        Only then: a private data Redis next to a shared control Redis would hand other processes references
        they can't resolve.
        """
        if control_embedded and self._data_url is None and not data_redis_configured() and self._client is None:
            self.use_url(start_embedded())

    @property
    def client(self) -> Any:
        """The data-plane `redis.Redis` client, connected on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self.broker.make_client(self.data_url)
        return self._client

    def connect(self) -> None:
        """Check that the data Redis answers."""
        self.run(lambda c: c.ping())

    def close(self) -> None:
        """Close every connection to the data Redis."""
        if self._client is not None:
            self._client.close()
            self._client.connection_pool.disconnect()
            self._client = None

    def ping(self) -> bool:
        """Return True when the data Redis answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def available(self) -> bool:
        """False while the data Redis is known to be down and still does not answer (no retries)."""
        if not self.down:
            return True
        parts = urlsplit(self.data_url)
        if parts.scheme not in ("redis", "rediss") or parts.hostname is None:
            return self.ping()
        return redis_answers(parts.hostname, parts.port or 6379)

    def describe(self) -> str:
        """Say where payloads live, for the log."""
        return f"payloads of {self.inline_threshold} bytes and more on the Redis at {self.display_url}"

    def run(self, op: Callable[[Any], Any]) -> Any:
        """Run `op(data_client)`, translating failures into errors that name the data plane."""
        try:
            result = op(self.client)
        except redis.RedisError as exc:
            self.down = True
            where = "the data_url passed to DualRedisBroker" if self._data_url else data_where()
            raise translate(
                exc,
                self.display_url,
                what="the data-plane Redis",
                fix=f"it comes from {where}: start a second redis-server (e.g. redis-server --port 6380) or set "
                "DATA_REDIS_HOST and DATA_REDIS_PORT. DualRedisBroker never falls back to the control Redis; it "
                "retries until the data Redis answers",
            ) from exc
        self.down = False
        return result

    # Payloads ---------------------------------------------------------------------------------------------
    def new_ref(self, kind: str, topic: str = "") -> str:
        """Return a fresh data-plane key for a payload of `kind` (`rt`, `dur` or `mix`) of `topic`: on a Redis
        Cluster it carries the topic's hash tag, so that one publisher's payload writes stay on one slot."""
        owner = self.broker.tag(topic) if topic and self.broker.cluster else ""  # one Redis: names as they were
        return self.broker.key("pl", kind, f"{owner}{self._writer}-{next(self._ids)}")

    def ttl_ms(self, kind: str) -> int:
        """Return how long a fresh payload of `kind` lives at most, in milliseconds."""
        return int((self.realtime_ttl if kind == "rt" else self.durable_ttl) * 1000)

    @staticmethod
    def dead_copy(ref: bytes | str) -> str:
        """Return the key that keeps the payload of `ref` for the dead-letter stream."""
        text = ref.decode() if isinstance(ref, bytes) else ref
        prefix, _kind, ident = text.rsplit(":", 2)
        return f"{prefix}:dead:{ident}"

    def placer(self, publisher: RedisPublisher) -> Placer:
        """A placer that writes large payloads to the data Redis, with the realtime window of `publisher`."""
        return _DualPlacer(self, publisher)

    def reader(self, subscription: RedisSubscription | None) -> PayloadReader:
        """A reader that fetches a batch's payloads with one MGET."""
        return _DualReader(self)

    def release(self, entries: Sequence[Fields]) -> None:
        """Free the payloads of durable entries that every target acknowledged (trimmed from the stream)."""
        with self._lock:
            refs, self._undone = self._undone, []
        refs += [f[b"r"] for f in entries if b"r" in f]
        if not refs:
            return
        # A `mix` payload is also referenced by the realtime stream: let realtime readers finish with it.
        gone = [r for r in refs if b":pl:mix:" not in r]
        keep_briefly = [r for r in refs if b":pl:mix:" in r]

        def op(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            if gone:
                pipe.unlink(*gone)
            for r in keep_briefly:
                pipe.pexpire(r, self.ttl_ms("rt"))
            pipe.execute()

        try:
            self.run(op)
        except BrokerError as exc:
            # Never fail the publisher's trim over this: the frames are delivered, the TTL frees them later.
            with self._lock:
                self._undone = (refs + self._undone)[:_MAX_UNDONE]
            log.warning("could not free %d acknowledged payloads yet (retried with the next trim): %s", len(refs), exc)

    def dead_letter_fields(self, fields: Fields, payload: Buffer, target: str, keep: int) -> dict[str, Any]:
        """Keep a copy of a referenced payload for the dead letter (its original goes with its entry); the copies
        of `target`'s letters are as many as its dead-letter stream keeps: older ones are deleted."""
        ref = fields.get(b"r")
        if ref is None:
            return {"d": payload}
        dead = self.dead_copy(ref)
        copies = self.broker.key("pl", "dead-list", self.broker.tag(target))

        def op(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.copy(ref, dead, replace=True)
            pipe.pexpire(dead, self.ttl_ms("dur"))
            pipe.rpush(copies, dead)
            pipe.lrange(copies, 0, -(keep + 1))
            pipe.ltrim(copies, -keep, -1)
            old = pipe.execute()[3]
            if old:
                c.unlink(*old)

        self.run(op)
        return {"r": dead}


class _DualPlacer(Placer):
    def __init__(self, plane: DataRedisPlane, publisher: RedisPublisher) -> None:
        self.plane = plane
        self.publisher = publisher
        self.kind = payload_kind(publisher.rt_key is not None, publisher.dur_key is not None)
        # This publisher's realtime payloads still referenced by the stream (MAXLEN rt_depth), then those in grace.
        self._window: deque[str] = deque()
        self._grace: deque[str] = deque()

    def place(self, header: bytes, payload: Buffer) -> dict[str, Any]:
        plane = self.plane
        if len(payload) < plane.inline_threshold:
            return {"d": payload}
        ref = plane.new_ref(self.kind, self.publisher.source)
        expire: list[str] = []
        drop: list[str] = []
        if self.kind == "rt":
            self._window.append(ref)
            while len(self._window) > self.publisher.rt_depth:
                expire.append(self._window.popleft())
            self._grace.extend(expire)
            while len(self._grace) > _GRACE_FRAMES:
                drop.append(self._grace.popleft())
        ttl = plane.ttl_ms(self.kind)

        def op(c: Any) -> None:
            # The payload, the shortened life of the refs newer frames pushed out, and the oldest dropped: one trip.
            pipe = c.pipeline(transaction=False)
            pipe.set(ref, payload, px=ttl)
            for old in expire:
                pipe.pexpire(old, _GRACE_MS)
            if drop:
                pipe.unlink(*drop)
            pipe.execute()

        plane.run(op)
        return {"r": ref}


class _DualReader(PayloadReader):
    def __init__(self, plane: DataRedisPlane) -> None:
        self.plane = plane

    def resolve(self, entries: Sequence[Fields]) -> list[Buffer | Missing]:
        out: list[Buffer | Missing] = [f.get(b"d", b"") for f in entries]
        refs = [(i, f[b"r"]) for i, f in enumerate(entries) if b"r" in f]
        if not refs:
            return out
        found: list[bytes | None] = self.plane.run(lambda c: c.mget([r for _, r in refs]))
        for (i, ref), payload in zip(refs, found, strict=True):
            if payload is not None:
                out[i] = payload
                continue
            out[i] = Missing(
                "lost",
                f"its payload {ref.decode(errors='replace')} is gone from the data-plane Redis at "
                f"{self.plane.display_url} (restarted without persistence, evicted under maxmemory, or older than "
                f"durable_ttl={self.plane.durable_ttl:g}s). Run the data Redis with appendonly yes and "
                "maxmemory-policy noeviction",
            )
        return out
