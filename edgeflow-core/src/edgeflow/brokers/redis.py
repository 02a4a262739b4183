"""RedisBroker: one Redis stream per source node, one consumer group per target node."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..broker import Broker, Delivery, Listener, Publisher, ServiceSpec, Subscription
from ..config import redact_url, settings
from ..errors import BrokerConnectionError, BrokerError, BrokerTimeoutError, ConfigurationError, FrameError
from ..frame import Buffer, Frame, decode, encode
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..app import EdgeApp

__all__ = ["RedisBroker"]

log = logging.getLogger("edgeflow.broker")

# Counts frames a realtime group skipped. Each writer numbers its entries; per group we keep the highest
# number delivered. A jump past it counts the gap as skipped; an older number arriving later (another
# replica of the group took it) takes one back. Replicas in other processes agree because Redis keeps it.
_NOTE_SKIPS = """
local skipped = 0
for i = 1, #ARGV, 2 do
  local w = ARGV[i]
  local q = tonumber(ARGV[i + 1])
  local hi = tonumber(redis.call('HGET', KEYS[1], w))
  if not hi then
    redis.call('HSET', KEYS[1], w, q)
  elseif q > hi then
    skipped = skipped + (q - hi - 1)
    redis.call('HSET', KEYS[1], w, q)
  elseif q < hi then
    skipped = skipped - 1
  end
end
redis.call('EXPIRE', KEYS[1], 86400)
return skipped
"""

_CONN_ERRORS = (redis.ConnectionError, ConnectionError, OSError)


def _translate(exc: Exception, url: str) -> BrokerError:
    if isinstance(exc, redis.TimeoutError):
        return BrokerTimeoutError(f"Redis at {url} did not answer in time: {exc}", url=url)
    if isinstance(exc, redis.AuthenticationError):
        return BrokerConnectionError(
            f"Redis at {url} refused the credentials; check the user and password in REDIS_URL", url=url
        )
    if isinstance(exc, _CONN_ERRORS):
        return BrokerConnectionError(
            f"can't reach Redis at {url}: {exc}; start redis-server or set REDIS_URL / REDIS_HOST and REDIS_PORT",
            url=url,
        )
    return BrokerError(f"Redis at {url} failed: {exc}", url=url)


class RedisBroker(Broker):
    """The default broker: frames on Redis Streams, statistics on Redis Pub/Sub."""

    name = "redis"

    def __init__(self, url: str | None = None, *, host: str | None = None, port: int | None = None, **options: Any):
        super().__init__()
        if url is None and (host is not None or port is not None):
            url = f"redis://{host or settings.REDIS_HOST}:{port or settings.REDIS_PORT}/0"
        self._url = url
        self._options = options
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBroker:
        """Return a broker for the Redis at `url` (`redis://`, `rediss://`, `unix://`)."""
        return cls(url, **options)

    @property
    def url(self) -> str:
        """The control-plane URL, from the constructor or the environment."""
        return self._url or settings.redis_url()

    @property
    def explicit(self) -> bool:
        """True when a Redis was named in code or in the environment."""
        return self._url is not None or settings.redis_configured()

    def use_url(self, url: str) -> None:
        """Point the broker at `url` before it connects (the runner does this for the embedded Redis)."""
        if self._client is not None:
            raise ConfigurationError("RedisBroker.use_url() must be called before connect()")
        self._url = url

    def ensure_server(self, start_embedded: Callable[[], str]) -> bool:
        """Use an embedded Redis when no Redis is configured and none answers on localhost:6379."""
        from ..embedded import redis_answers

        if self.explicit or self._client is not None or redis_answers("localhost", 6379):
            return False
        self.use_url(start_embedded())
        return True

    @property
    def display_url(self) -> str:
        """The control-plane URL with any password redacted."""
        return redact_url(self.url)

    def _make_client(self, url: str) -> redis.Redis:
        opts: dict[str, Any] = {
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 4),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
            "health_check_interval": 15,
            "socket_connect_timeout": 3.0,
            "socket_keepalive": True,
            "client_name": f"edgeflow-{self.namespace}"[:60],
        }
        opts.update(self._options)
        try:
            return redis.Redis.from_url(url, **opts)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {exc}") from exc

    @property
    def client(self) -> redis.Redis:
        """The control-plane client, connected on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client(self.url)
        return self._client

    def connect(self) -> None:
        """Connect and check that Redis answers."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc

    def close(self) -> None:
        """Close every connection of the pool."""
        if self._client is not None:
            self._client.close()
            self._client.connection_pool.disconnect()
            self._client = None

    def ping(self) -> bool:
        """Return True when Redis answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # Keys -----------------------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """Return the Redis key for `parts` inside this app's namespace."""
        return ":".join(("ef", self.namespace, *parts))

    def stream_key(self, source: str, qos: str = "realtime") -> str:
        """Return the stream that carries `source`'s frames on links of `qos`."""
        return self.key("rt" if qos == "realtime" else "dur", source)

    # Payload placement: the steps a data plane overrides ----------------------------------------------
    def _payload_fields(self, header: bytes, payload: Buffer, routes: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
        """Return the stream-entry fields that carry `payload`; inline here, a reference in a data plane."""
        return {"h": header, "d": payload}

    def _payload_from_fields(self, fields: dict[bytes, Any]) -> Buffer:
        """Return the payload that `_payload_fields` placed."""
        payload: Buffer = fields.get(b"d", b"")
        return payload

    # Frames -----------------------------------------------------------------------------------------------
    def publisher(self, source: str, routes: Sequence[tuple[str, str, int]]) -> Publisher:
        """Return a publisher that writes `source`'s frames to its realtime (and durable) streams."""
        return _RedisPublisher(self, source, routes)

    def subscribe(self, sources: Sequence[str], group: str, consumer: str, qos: str = "realtime") -> Subscription:
        """Read `sources` as `consumer` in the group `group`, creating the groups as needed."""
        if qos != "realtime":
            raise ConfigurationError(f"qos={qos!r} is not supported by this version of RedisBroker; use 'realtime'")
        return _RedisSubscription(self, list(sources), group, consumer, qos)

    def ensure_group(self, source: str, group: str, qos: str = "realtime") -> None:
        """Create the consumer group `group` on `source`'s stream if it does not exist."""
        try:
            self.client.xgroup_create(self.stream_key(source, qos), group, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _translate(exc, self.display_url) from exc
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc

    def link_depth(self, source: str, group: str) -> int | None:
        """Return how many entries of `source` wait for `group` (Redis 7's lag), or None."""
        try:
            for info in self.client.xinfo_groups(self.stream_key(source)):
                if info.get("name") in (group, group.encode()):
                    lag = info.get("lag")
                    return None if lag is None else int(lag)
        except redis.RedisError:
            return None
        return None

    # Control plane ------------------------------------------------------------------------------------------
    def emit(self, channel: str, message: bytes) -> None:
        """Publish `message` on the app's channel `channel`."""
        try:
            self.client.publish(self.key("ch", channel), message)
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc

    def listen(self, channel: str) -> Listener:
        """Subscribe to the app's channel `channel`."""
        return _RedisListener(self, self.key("ch", channel))


class _RedisPublisher(Publisher):
    def __init__(self, broker: RedisBroker, source: str, routes: Sequence[tuple[str, str, int]]) -> None:
        self.broker = broker
        self.routes = list(routes)
        self.writer = secrets.token_hex(4)
        self.seq = 0
        self.streams: list[tuple[str, int]] = []
        rt_depth = max((d for _, q, d in self.routes if q == "realtime"), default=0)
        if rt_depth:
            self.streams.append((broker.stream_key(source, "realtime"), rt_depth))
        # Groups exist before the first frame so that a target started later still finds its place.
        for target, qos, _ in self.routes:
            broker.ensure_group(source, target, qos)

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        header, payload = encoded or encode(frame)
        self.seq += 1
        fields: dict[Any, Any] = self.broker._payload_fields(header, payload, self.routes)
        fields["w"] = self.writer
        fields["q"] = self.seq
        client = self.broker.client
        try:
            if len(self.streams) == 1:
                key, depth = self.streams[0]
                client.xadd(key, fields, maxlen=depth, approximate=False)
            else:
                pipe = client.pipeline(transaction=False)
                for key, depth in self.streams:
                    pipe.xadd(key, fields, maxlen=depth, approximate=False)
                pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc, self.broker.display_url) from exc


class _RedisSubscription(Subscription):
    def __init__(self, broker: RedisBroker, sources: list[str], group: str, consumer: str, qos: str) -> None:
        self.broker = broker
        self.sources = sources
        self.group = group
        self.consumer = consumer
        self.qos = qos
        self.skipped = 0
        self.rejected = 0
        self._keys = {broker.stream_key(s, qos): s for s in sources}
        self._seen_keys = {s: broker.key("seen", s, group) for s in sources}
        self._pending_notes: dict[str, list[Any]] = {}
        self._create_groups()

    def _create_groups(self) -> None:
        for s in self.sources:
            self.broker.ensure_group(s, self.group, self.qos)

    def read(self, timeout: float) -> list[Delivery]:
        client = self.broker.client
        block_ms = max(1, int(timeout * 1000))
        pipe = client.pipeline(transaction=False)
        notes = self._pending_notes
        self._pending_notes = {}
        for source, args in notes.items():
            pipe.eval(_NOTE_SKIPS, 1, self._seen_keys[source], *args)
        pipe.xreadgroup(self.group, self.consumer, dict.fromkeys(self._keys, ">"), count=1, block=block_ms, noack=True)
        try:
            results = pipe.execute()
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                # Redis restarted without its data or the stream was deleted: make our place again.
                self._create_groups()
                return []
            raise _translate(exc, self.broker.display_url) from exc
        except redis.RedisError as exc:
            raise _translate(exc, self.broker.display_url) from exc
        for n in results[:-1]:
            self.skipped += int(n)
        out: list[Delivery] = []
        for key, entries in results[-1] or []:
            source = self._keys[key.decode() if isinstance(key, bytes) else key]
            for entry_id, fields in entries:
                if not fields:
                    continue  # trimmed between delivery and read
                writer, seq = fields.get(b"w"), fields.get(b"q")
                if writer is not None and seq is not None:
                    self._pending_notes.setdefault(source, []).extend((writer, seq))
                try:
                    frame = decode(fields[b"h"], self.broker._payload_from_fields(fields))
                except (FrameError, KeyError) as exc:
                    self.rejected += 1
                    log.warning("rejected a bad frame from %r (entry %s): %s", source, entry_id, exc)
                    continue
                out.append(Delivery(source, frame, entry_id, self.qos))
        return out

    def close(self) -> None:
        self._pending_notes.clear()


class _RedisListener(Listener):
    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self._pubsub: Any = None

    def get(self, timeout: float) -> bytes | None:
        try:
            if self._pubsub is None:
                self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                self._pubsub.subscribe(self.channel)
            msg = self._pubsub.get_message(timeout=timeout)
        except redis.RedisError as exc:
            self._drop()
            raise _translate(exc, self.broker.display_url) from exc
        if msg is None or msg.get("type") != "message":
            return None
        data = msg["data"]
        return bytes(data) if not isinstance(data, bytes) else data

    def _drop(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:
                pass
            self._pubsub = None

    def close(self) -> None:
        self._drop()


@hookimpl
def register_brokers(register: Any) -> None:
    """Register the built-in Redis broker."""
    register("redis", RedisBroker)


@hookimpl(trylast=True)
def broker_services(broker: Broker, app: EdgeApp) -> list[ServiceSpec] | None:
    """One Redis for any broker that no plugin answered for."""
    return [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")]
