"""DualRedisBroker: stream entries on the control Redis, large payloads on a second, data-plane Redis."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis

from edgeflow.brokers.redis import RedisBroker
from edgeflow.config import redact_url, settings
from edgeflow.errors import BrokerConnectionError, BrokerError, BrokerTimeoutError, ConfigurationError, FrameError
from edgeflow.frame import Buffer

from ._streams import DualPublisher, DualSubscription, Placed, payload_kind

if TYPE_CHECKING:
    from edgeflow.linker import Link

__all__ = ["DualRedisBroker"]

log = logging.getLogger("edgeflow.broker.dualredis")

_CONN_ERRORS = (redis.ConnectionError, ConnectionError, OSError)
# Refs whose deletion failed while the data plane was down; retried with the next trim, then left to the TTL.
_MAX_UNDONE = 100_000


def data_redis_configured() -> bool:
    """Return True when the environment names the data-plane Redis explicitly."""
    return any(os.environ.get(k) for k in ("DATA_REDIS_URL", "DATA_REDIS_HOST", "DATA_REDIS_PORT"))


class DualRedisBroker(RedisBroker):
    """RedisBroker with a second Redis for payloads: the control Redis only carries small entries and references.

    Payloads of `inline_threshold` bytes or more go to the data-plane Redis under `ef:{app}:pl:{kind}:{id}`
    (kind `rt`, `dur` or `mix` after the links' qos); smaller ones stay inline in the stream entry.
    Realtime payloads expire `realtime_ttl` seconds after they are written, or 0.5 s (32 frames at most) after
    newer frames pushed their entry out of the stream. Durable payloads are deleted once every target group
    acknowledged them, and expire after `durable_ttl` seconds at the latest (a safety net for entries trimmed
    without us).
    """

    name = "dualredis"
    frees_payloads = True
    publisher_class = DualPublisher
    subscription_class = DualSubscription

    def __init__(
        self,
        control_url: str | None = None,
        data_url: str | None = None,
        *,
        inline_threshold: int = 4096,
        realtime_ttl: float = 60.0,
        durable_ttl: float = 7 * 86400.0,
        **options: Any,
    ) -> None:
        super().__init__(control_url, **options)
        if not isinstance(inline_threshold, int) or inline_threshold < 0:
            raise ConfigurationError(f"inline_threshold must be an int >= 0 (bytes), got {inline_threshold!r}")
        for name, ttl in (("realtime_ttl", realtime_ttl), ("durable_ttl", durable_ttl)):
            if not isinstance(ttl, (int, float)) or ttl < 0.01:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0.01, got {ttl!r}")
        self.inline_threshold = inline_threshold
        self.realtime_ttl = float(realtime_ttl)
        self.durable_ttl = float(durable_ttl)
        self._data_url = data_url
        self._data_client: redis.Redis | None = None
        self._data_lock = threading.Lock()
        self._writer = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._undone: list[bytes] = []
        #: True after a data-plane command failed, until one succeeds; readers don't take over frames meanwhile.
        self.data_down = False

    # Servers ------------------------------------------------------------------------------------------------
    @property
    def data_url(self) -> str:
        """The data-plane URL, from the constructor, DATA_REDIS_URL, or DATA_REDIS_HOST / DATA_REDIS_PORT."""
        return (
            self._data_url
            or settings.DATA_REDIS_URL
            or f"redis://{settings.DATA_REDIS_HOST}:{settings.DATA_REDIS_PORT}/0"
        )

    @property
    def data_display_url(self) -> str:
        """The data-plane URL with any password redacted."""
        return redact_url(self.data_url)

    def use_data_url(self, url: str) -> None:
        """Point the data plane at `url` before it connects (for the embedded data Redis)."""
        if self._data_client is not None:
            raise ConfigurationError("DualRedisBroker.use_data_url() must be called before connect()")
        self._data_url = url

    def ensure_server(self, start_embedded: Callable[[], str]) -> bool:
        """Start two embedded Redis servers when neither plane is configured (a one-process run).

        The data plane gets its own embedded server only when the control plane does too: a private data
        Redis next to a shared control Redis would hand other processes references they can't resolve.
        """
        if not super().ensure_server(start_embedded):
            return False
        if self._data_url is None and not data_redis_configured() and self._data_client is None:
            self.use_data_url(start_embedded())
        return True

    @property
    def data_client(self) -> Any:
        """The data-plane `redis.Redis` client, connected on first use."""
        if self._data_client is None:
            with self._data_lock:
                if self._data_client is None:
                    self._data_client = self._make_client(self.data_url)
        return self._data_client

    def connect(self) -> None:
        """Connect to both planes and check that they answer."""
        super().connect()
        self._data(lambda c: c.ping())
        log.info("data plane: Redis at %s (payloads of %d bytes and more)", self.data_display_url,
                 self.inline_threshold)  # fmt: skip

    def close(self) -> None:
        """Close every connection of both planes."""
        super().close()
        if self._data_client is not None:
            self._data_client.close()
            self._data_client.connection_pool.disconnect()
            self._data_client = None

    def ping(self) -> bool:
        """Return True when both Redis servers answer."""
        if not super().ping():
            return False
        try:
            return bool(self.data_client.ping())
        except redis.RedisError:
            return False

    def _data(self, op: Callable[[Any], Any]) -> Any:
        """Run `op(data_client)`, translating failures into errors that name the data plane."""
        try:
            result = op(self.data_client)
        except redis.RedisError as exc:
            self.data_down = True
            raise self._data_error(exc) from exc
        self.data_down = False
        return result

    def _data_error(self, exc: Exception) -> BrokerError:
        url = self.data_display_url
        where = (
            "the data_url passed to DualRedisBroker"
            if self._data_url
            else f"DATA_REDIS_HOST={settings.DATA_REDIS_HOST} DATA_REDIS_PORT={settings.DATA_REDIS_PORT}"
        )
        if isinstance(exc, redis.TimeoutError):
            return BrokerTimeoutError(f"the data-plane Redis at {url} ({where}) did not answer in time: {exc}", url=url)
        if isinstance(exc, redis.AuthenticationError):
            return BrokerConnectionError(
                f"the data-plane Redis at {url} refused the credentials; check the password in data_url", url=url
            )
        if isinstance(exc, _CONN_ERRORS):
            return BrokerConnectionError(
                f"can't reach the data-plane Redis at {url} ({where}): {exc}; start a second redis-server "
                "(e.g. redis-server --port 6380) or set DATA_REDIS_HOST and DATA_REDIS_PORT. DualRedisBroker "
                "never falls back to the control Redis; it retries until the data Redis answers",
                url=url,
            )
        if "OOM" in str(exc):
            return BrokerError(
                f"the data-plane Redis at {url} is full: {exc}; raise its maxmemory, or lower realtime_ttl / the "
                "durable links' max_len",
                url=url,
            )
        return BrokerError(f"the data-plane Redis at {url} failed: {exc}", url=url)

    # Payload placement -----------------------------------------------------------------------------------------
    def new_ref(self, kind: str) -> str:
        """Return a fresh data-plane key for a payload of `kind` (`rt`, `dur` or `mix`)."""
        return self.key("pl", kind, f"{self._writer}-{next(self._ids)}")

    def dead_copy(self, ref: bytes | str) -> str:
        """Return the key that keeps the payload of `ref` for the dead-letter stream."""
        text = ref.decode() if isinstance(ref, bytes) else ref
        prefix, _kind, ident = text.rsplit(":", 2)
        return f"{prefix}:dead:{ident}"

    def ttl_ms(self, kind: str) -> int:
        """Return how long a fresh payload of `kind` lives at most, in milliseconds."""
        return int((self.realtime_ttl if kind == "rt" else self.durable_ttl) * 1000)

    def store(
        self,
        ref: str,
        payload: Buffer,
        ttl_ms: int,
        expire: Sequence[str] = (),
        expire_ms: int = 0,
        drop: Sequence[str] = (),
    ) -> None:
        """Write `payload` under `ref`, shorten the life of the keys `expire` and delete `drop`, in one round trip."""

        def op(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.set(ref, payload, px=ttl_ms)
            for old in expire:
                pipe.pexpire(old, expire_ms)
            if drop:
                pipe.unlink(*drop)
            pipe.execute()

        self._data(op)

    def fetch(self, keys: Sequence[bytes | str]) -> list[bytes | None]:
        """Return the payloads under `keys` (None where gone), in one round trip."""
        if not keys:
            return []
        found: list[bytes | None] = self._data(lambda c: c.mget(keys))
        return found

    def keep_for_dead_letter(self, ref: bytes) -> None:
        """Copy the payload of `ref` where the dead-letter stream finds it, for `durable_ttl`."""
        dead = self.dead_copy(ref)

        def op(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.copy(ref, dead, replace=True)  # a replayed letter reads its copy: its original is gone already
            pipe.pexpire(dead, self.ttl_ms("dur"))
            pipe.execute()

        self._data(op)

    def _payload_fields(self, header: bytes, payload: Buffer, links: Sequence[Link]) -> dict[str, Any]:
        """Return `{"h", "r"}` with the payload on the data plane, or the inline fields for small payloads."""
        if isinstance(payload, Placed):  # DualPublisher already wrote it
            return {"h": header, "r": payload.ref}
        if len(payload) < self.inline_threshold:
            return super()._payload_fields(header, payload, links)
        qos = {ln.qos for ln in links}
        kind = payload_kind(not links or "realtime" in qos, "durable" in qos)
        ref = self.new_ref(kind)
        self.store(ref, payload, self.ttl_ms(kind))
        return {"h": header, "r": ref}

    def _payload_from_fields(self, fields: dict[bytes, Any]) -> Buffer:
        """Return the payload of an entry, from the data plane when it holds a reference (or its dead copy)."""
        ref = fields.get(b"r")
        if ref is None:
            return super()._payload_from_fields(fields)
        for found in self.fetch([ref, self.dead_copy(ref)]):
            if found is not None:
                return found
        raise FrameError(f"the payload {ref.decode(errors='replace')} is gone from the data-plane Redis")

    def _payload_done(self, fields_list: Sequence[dict[bytes, Any]]) -> None:
        """Free the payloads of durable entries that every target acknowledged (trimmed from the stream)."""
        with self._data_lock:
            refs, self._undone = self._undone, []
        refs += [f[b"r"] for f in fields_list if b"r" in f]
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
            self._data(op)
        except BrokerError as exc:
            # Never fail the publisher's trim over this: the frames are delivered, the TTL frees them later.
            with self._data_lock:
                self._undone = (refs + self._undone)[:_MAX_UNDONE]
            log.warning("could not free %d acknowledged payloads yet (retried with the next trim): %s", len(refs), exc)

    # Frames --------------------------------------------------------------------------------------------------
    def data_answers(self) -> bool:
        """Return True when the data-plane Redis accepts a TCP connection and answers PING (no retries)."""
        from edgeflow.embedded import redis_answers

        parts = urlsplit(self.data_url)
        if parts.scheme not in ("redis", "rediss") or parts.hostname is None:
            return self.ping()
        return redis_answers(parts.hostname, parts.port or 6379)
