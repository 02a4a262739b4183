"""RedisBroker: one Redis stream per source node, one consumer group per target node."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..broker import Broker, Delivery, Listener, Publisher, ServiceSpec, Subscription
from ..config import redact_url, settings
from ..errors import (
    BackpressureError,
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    ConfigurationError,
    FrameError,
)
from ..frame import Buffer, Frame, decode, encode
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..app import EdgeApp
    from ..linker import Link

__all__ = ["RedisBroker", "RedisPublisher", "RedisSubscription"]

log = logging.getLogger("edgeflow.broker")

# Counts frames a realtime group skipped. Each writer numbers its entries; per group we keep the highest
# number delivered. A jump past it counts the gap as skipped; an older number arriving later (another
# replica of the group took it) takes one back. Replicas in other processes agree because Redis keeps it.
# The group's total never goes below zero (a replica may report an older frame before the first jump);
# the script returns the change of that total, so the replicas' sums add up to it.
_NOTE_SKIPS = """
local total = tonumber(redis.call('HGET', KEYS[1], '_skipped') or '0')
local skipped = total
for i = 1, #ARGV, 2 do
  local w = ARGV[i]
  local q = tonumber(ARGV[i + 1])
  local hi = tonumber(redis.call('HGET', KEYS[1], w))
  if not hi then
    redis.call('HSET', KEYS[1], w, q)
  elseif q > hi then
    skipped = skipped + (q - hi - 1)
    redis.call('HSET', KEYS[1], w, q)
  elseif q < hi and skipped > 0 then
    skipped = skipped - 1
  end
end
redis.call('HSET', KEYS[1], '_skipped', skipped)
redis.call('EXPIRE', KEYS[1], 86400)
return skipped - total
"""

_TRIM_EVERY = 64
_TRIM_EVERY_SMALL = 1024
_TRIM_BYTES = 4 << 20
# Commands a publisher sends before it waits for their replies, and the bytes they may carry.
_WINDOW = 64
_WINDOW_BYTES = 8 << 20
_DRAIN_AT = 16
# Small commands closer together than _DENSE seconds (on average) are sent together: up to _COALESCE of them,
# each held _HOLD at most.
_DENSE = 100e-6
_COALESCE = 16
_HOLD = 0.5e-3
# A producer quiet for this long has what it holds sent by the publisher's flusher thread.
_QUIET = 2e-3
# Buffers larger than this are written to the socket as they are rather than joined into one command buffer.
_BUFFER_CUTOFF = 6000


def _encode_arg(value: Any) -> bytes | memoryview:
    """Encode one command argument as redis-py does: buffers as they are, numbers and text as UTF-8."""
    if isinstance(value, (bytes, memoryview)):
        return value
    if isinstance(value, bytearray):
        return memoryview(value)
    if isinstance(value, bool):
        raise redis.DataError(f"invalid command argument {value!r}: convert booleans to int or str first")
    if isinstance(value, (int, float)):
        return repr(value).encode()
    if isinstance(value, str):
        return value.encode()
    raise redis.DataError(f"invalid command argument of type {type(value).__name__}")


class _ZeroCopyPacker:
    """Packs commands as redis-py does, except that frame-sized buffers go to the socket without a copy.

    redis-py's hiredis packer copies every argument into one buffer while holding the GIL (2.2 ms for a
    921,600-byte XADD on the development machine, against 0.25 ms without the copies), which also stalls every
    other thread of the process. Small commands keep the fast hiredis packer.
    """

    def __init__(self) -> None:
        from redis.connection import PythonRespSerializer

        self._plain = PythonRespSerializer(_BUFFER_CUTOFF, _encode_arg)
        try:
            from redis.connection import HiredisRespSerializer

            self._fast: Any = HiredisRespSerializer() if redis.utils.HIREDIS_AVAILABLE else self._plain
        except ImportError:  # pragma: no cover - older redis-py without the hiredis packer
            self._fast = self._plain

    def pack(self, *args: Any) -> list[Any]:
        """Return the command as buffers for the socket."""
        for arg in args:
            if isinstance(arg, (memoryview, bytes, bytearray)) and len(arg) > _BUFFER_CUTOFF:
                return list(self._plain.pack(*args))  # type: ignore[no-untyped-call]
        return list(self._fast.pack(*args))


_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - redis-py without hiredis
    _pack_command = None


def _pack_small(commands: list[tuple[Any, ...]]) -> list[bytes] | None:
    """Small commands straight through hiredis' packer; None for what it can't take (a bytearray, say).

    redis-py's own path (argument checks, a tuple rebuilt per command) cost as much as the rest of publish().
    """
    if _pack_command is None:
        return None
    try:
        return [_pack_command(c) for c in commands]
    except TypeError:
        return None


_DEAD_MAXLEN = 10_000
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
    #: True when payloads live outside the stream entries and must be freed when entries are trimmed.
    frees_payloads = False
    #: The classes `publisher()` and `subscribe()` build; a data plane may subclass them.
    publisher_class: type[RedisPublisher]
    subscription_class: type[RedisSubscription]

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
            "command_packer": _ZeroCopyPacker(),
        }
        opts.update(self._options)
        try:
            return redis.Redis.from_url(url, **opts)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {exc}") from exc

    @property
    def client(self) -> Any:
        """The control-plane `redis.Redis` client, connected on first use (typed loosely: its replies vary)."""
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

    def stream_key(self, source: str, qos: str = "realtime", variant: str = "") -> str:
        """Return the stream that carries `source`'s frames on links of `qos` (encoded as `variant`, if any)."""
        return self.key("rt" if qos == "realtime" else "dur", f"{source}~{variant}" if variant else source)

    def dead_key(self, target: str) -> str:
        """Return the dead-letter stream of the node `target`."""
        return self.key("dead", target)

    def replay_key(self, target: str) -> str:
        """Return the stream from which `target` takes replayed dead letters."""
        return self.key("replay", target)

    # Payload placement: the steps a data plane overrides ----------------------------------------------
    def _payload_fields(self, header: bytes, payload: Buffer, links: Sequence[Link]) -> dict[str, Any]:
        """Return the stream-entry fields that carry `payload`; inline here, a reference in a data plane."""
        return {"h": header, "d": payload}

    def _payload_from_fields(self, fields: dict[bytes, Any]) -> Buffer:
        """Return the payload that `_payload_fields` placed."""
        payload: Buffer = fields.get(b"d", b"")
        return payload

    def _payload_done(self, fields_list: Sequence[dict[bytes, Any]]) -> None:
        """Called when durable entries are trimmed: every target acknowledged them (a data plane frees them)."""

    # Frames -----------------------------------------------------------------------------------------------
    def publisher(self, source: str, links: Sequence[Link]) -> Publisher:
        """Return a publisher that writes `source`'s frames to its realtime and durable streams."""
        return self.publisher_class(self, source, links)

    def subscribe(self, links: Sequence[Link], consumer: str) -> Subscription:
        """Read the `links` into one target as `consumer`, creating the consumer groups as needed."""
        for ln in links:
            if ln.qos not in ("realtime", "durable"):
                raise ConfigurationError(f"qos={ln.qos!r} on {ln.source} -> {ln.target}; use 'realtime' or 'durable'")
        if len({ln.target for ln in links}) != 1:
            raise ConfigurationError("subscribe() takes the links into one target node")
        return self.subscription_class(self, list(links), consumer)

    def ensure_group(self, source: str, group: str, qos: str = "realtime", variant: str = "") -> None:
        """Create the consumer group `group` on `source`'s stream if it does not exist."""
        self._ensure_group_key(self.stream_key(source, qos, variant), group)

    def _ensure_group_key(self, key: str, group: str) -> None:
        try:
            self.client.xgroup_create(key, group, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _translate(exc, self.display_url) from exc
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc

    def link_depth(self, source: str, group: str, variant: str = "") -> int | None:
        """Return how many entries of `source` wait for `group` (Redis 7's lag plus unacknowledged), or None."""
        total: int | None = None
        for qos in ("realtime", "durable"):
            try:
                infos = self.client.xinfo_groups(self.stream_key(source, qos, variant))
            except redis.RedisError:
                continue
            for info in infos:
                if info.get("name") in (group, group.encode()):
                    lag = info.get("lag")
                    pending = int(info.get("pending") or 0) if qos == "durable" else 0
                    total = (total or 0) + (int(lag) if lag is not None else 0) + pending
        return total

    def dead_letters(self, target: str, count: int = 100) -> list[dict[str, Any]]:
        """Return up to `count` dead letters of `target`, oldest first: id, source, frame_id, attempts, error."""
        try:
            entries = self.client.xrange(self.dead_key(target), count=count)
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc
        out = []
        for entry_id, fields in entries:
            info: dict[str, Any] = {
                "id": entry_id.decode(),
                "source": fields.get(b"s", b"").decode(),
                "attempts": int(fields.get(b"a", b"0")),
                "error": fields.get(b"e", b"").decode(errors="replace"),
            }
            try:
                frame = decode(fields[b"h"], self._payload_from_fields(fields))
                info["frame_id"], info["timestamp"] = frame.frame_id, frame.timestamp
            except (FrameError, KeyError):
                info["frame_id"] = None
            out.append(info)
        return out

    def replay_dead_letters(self, target: str, ids: Sequence[str] | None = None) -> int:
        """Give dead letters of `target` (all, or those `ids`) back to it once more; return how many."""
        dead = self.dead_key(target)
        try:
            if ids:
                entries = []
                for i in ids:
                    entries.extend(self.client.xrange(dead, min=i, max=i))
            else:
                entries = self.client.xrange(dead)
            self._ensure_group_key(self.replay_key(target), target)
            for entry_id, fields in entries:
                pipe = self.client.pipeline(transaction=True)
                keep = {k: v for k, v in fields.items() if k not in (b"e", b"a")}
                pipe.xadd(self.replay_key(target), keep, maxlen=_DEAD_MAXLEN, approximate=True)
                pipe.xdel(dead, entry_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc, self.display_url) from exc
        return len(entries)

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


class RedisPublisher(Publisher):
    """Writes one source's frames: realtime entries trimmed to depth, durable entries kept until acknowledged."""

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
        self.variant = variants.pop() if variants else ""
        self.rt_key = broker.stream_key(source, "realtime", self.variant) if rt or not self.links else None
        self.rt_depth = max((ln.depth for ln in rt), default=1)
        self.dur_key = broker.stream_key(source, "durable", self.variant) if dur else None
        self.dur_cap = min((ln.max_len for ln in dur), default=0)
        self.durable = bool(dur)
        self._dur_len = 0
        self._since_trim = self._bytes_since_trim = 0
        self._io = threading.RLock()  # the connection and what is held, shared with the flusher thread
        self._held: list[bytes] = []
        self._held_since = 0.0
        self._unsent = 0  # the newest entries of _outstanding that are held, not sent yet
        self._last_send_call = 0.0
        self._gap = 1.0
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False
        self._flush_error: Exception | None = None
        self._conn: Any = None
        self._outstanding: deque[tuple[list[tuple[Any, ...]], int, bool]] = deque()
        self._resend: deque[tuple[list[tuple[Any, ...]], int, bool]] = deque()
        self._window_bytes = 0
        # Groups exist before the first frame, so a target that starts later still gets every durable frame.
        for ln in self.links:
            broker.ensure_group(source, ln.target, ln.qos, self.variant)

    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        with self._io:
            self._publish(frame, encoded)

    def _publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None) -> None:
        if self._flush_error is not None:
            exc, self._flush_error = self._flush_error, None
            raise self._failed(exc) from exc
        if self.dur_key is not None and self._dur_len >= self.dur_cap:
            self._wait_for_room()
        header, payload = encoded or encode(frame)
        fields: dict[Any, Any] = self.broker._payload_fields(header, payload, self.links)
        fields["w"] = self.writer
        fields["q"] = self.seq + 1
        flat: list[Any] = []
        for key, value in fields.items():
            flat += (key, value)
        commands: list[tuple[Any, ...]] = []
        if self.rt_key is not None:
            commands.append(("XADD", self.rt_key, "MAXLEN", self.rt_depth, "*", *flat))
        if self.dur_key is not None:
            commands.append(("XADD", self.dur_key, "*", *flat))
        try:
            while self._resend:
                self._send(*self._resend[0])
                self._resend.popleft()
            self._send(commands, len(payload) + len(header), self.durable)
        except (redis.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self.seq += 1
        if self.dur_key is not None:
            self._dur_len += 1
            self._since_trim += 1
            self._bytes_since_trim += len(payload)
            # Every 64 frames of video; small messages every 1,024 (a trim costs three round trips).
            due = self._since_trim >= _TRIM_EVERY and (
                self._bytes_since_trim >= _TRIM_BYTES or self._since_trim >= _TRIM_EVERY_SMALL
            )
            if due or self._dur_len >= self.dur_cap:
                try:
                    self.trim()
                except redis.RedisError as exc:
                    raise self._failed(exc) from exc

    # Commands go out without waiting for their replies, which are read while later frames are made: the
    # round trips overlap the producer's work, and small messages share round trips. At most _WINDOW commands
    # (and _WINDOW_BYTES) wait for replies; durable ones are kept until their reply came, and sent again first
    # if the connection breaks before that (at least once: a frame may land twice, never not at all).
    #
    # Small commands that come densely (less than _DENSE apart, on average) are held and sent together, up to
    # _COALESCE of them or _HOLD seconds: one system call instead of one each, which on loopback also
    # spares Redis a wake-up per message. An isolated message goes at once (no added latency at low rates),
    # and a thread sends what is held if the producer goes quiet.
    def _send(self, commands: list[tuple[Any, ...]], size: int, keep: bool) -> None:
        if self._conn is None:
            self._conn = self.broker.client.connection_pool.get_connection()
        conn = self._conn
        # Replies are picked up in bursts: polling the socket costs three system calls, about as much as a
        # small message's own work.
        if len(self._outstanding) >= _DRAIN_AT:
            while self._outstanding and conn.can_read(timeout=0):
                self._collect_one()
        while self._outstanding and (len(self._outstanding) >= _WINDOW or self._window_bytes + size > _WINDOW_BYTES):
            self._collect_one()
        now = time.perf_counter()
        # The producer's pace, smoothed: on a busy machine a producer is preempted now and then, and one long gap
        # must not make a steady stream look idle.
        self._gap += (min(now - self._last_send_call, 1.0) - self._gap) / 16
        self._last_send_call = now
        dense = self._gap < _DENSE
        self._outstanding.append((commands, size, keep))
        self._window_bytes += size
        small = _pack_small(commands) if size <= _BUFFER_CUTOFF else None
        if small is not None:
            self._held += small
            self._unsent += 1
            if self._unsent == 1:
                self._held_since = now
            if not dense or self._unsent >= _COALESCE or now - self._held_since >= _HOLD:
                self._flush_held()
            elif self._unsent == 1:
                self._arm_flusher()
            return
        packed = conn.pack_commands(commands)
        if self._held:  # in order: what is held goes first, in the same call
            packed = [b"".join(self._held), *packed]
        self._unsent += 1
        conn.send_packed_command(packed, check_health=False)
        self._held.clear()
        self._unsent = 0

    def _flush_held(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._conn.send_packed_command([data], check_health=False)
            self._held.clear()
            self._unsent = 0

    def _arm_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name=f"edgeflow-flush-{self.source}", daemon=True)
            self._flusher.start()
        self._wake.set()

    def _flush_loop(self) -> None:
        # A safety net for a producer that went quiet with messages held: while it keeps publishing it sends
        # them itself (every _COALESCE messages or _HOLD), so this thread wakes rarely and mostly finds nothing.
        while True:
            self._wake.wait()
            if self._closing:
                return
            time.sleep(_QUIET)
            if time.perf_counter() - self._last_send_call < _QUIET / 2:
                continue  # still publishing
            with self._io:
                if self._held:
                    try:
                        self._flush_held()
                    except (redis.RedisError, OSError) as exc:
                        self._flush_error = exc  # the next publish() reports it and keeps what must be resent
                if not self._held:
                    self._wake.clear()

    def _collect_one(self) -> None:
        self._flush_held()  # what is held goes out before we wait on the socket (and a reply needs its command)
        commands, size, _ = self._outstanding[0]
        for _ in commands:
            self._conn.read_response()
        self._outstanding.popleft()
        self._window_bytes -= size

    def _failed(self, exc: Exception) -> BrokerError:
        """Drop the connection; keep the durable commands not yet confirmed, to send again first."""
        unsent = list(self._outstanding)[len(self._outstanding) - self._unsent :] if self._unsent else []
        self.dropped += sum(1 for item in unsent if not item[2])  # realtime frames that never left: counted
        unconfirmed = [item for item in self._outstanding if item[2]]
        self._resend.extendleft(reversed(unconfirmed))
        self._outstanding.clear()
        self._held.clear()
        self._unsent = 0
        self._window_bytes = 0
        if self._conn is not None:
            self._conn.disconnect()
            self.broker.client.connection_pool.release(self._conn)
            self._conn = None
        return _translate(exc, self.broker.display_url)

    def close(self) -> None:
        """Send what is held, wait for the replies still due, then give the connection back."""
        with self._io:
            try:
                while self._resend:
                    self._send(*self._resend[0])
                    self._resend.popleft()
                while self._outstanding:
                    self._collect_one()
            except (redis.RedisError, OSError) as exc:
                self._failed(exc)
            if self._resend:
                log.error("%s: %d durable frame(s) may not have reached Redis before the publisher closed: %s",
                          self.source, len(self._resend), self.broker.display_url)  # fmt: skip
            if self._conn is not None:
                self.broker.client.connection_pool.release(self._conn)
                self._conn = None
            self._closing = True
            self._wake.set()

    def trim(self) -> int:
        """Delete durable entries that every target acknowledged; return the stream's length after."""
        with self._io:
            return self._trim()

    def _trim(self) -> int:
        assert self.dur_key is not None
        self._since_trim = self._bytes_since_trim = 0
        while self._outstanding:  # our own writes first, so that the length below counts them
            self._collect_one()
        client: Any = self.broker.client
        key = self.dur_key
        safe: bytes | None = None
        for info in client.xinfo_groups(key):
            name = info["name"]
            if int(info.get("pending") or 0):
                summary = client.xpending(key, name)
                low = summary.get("min")
            else:
                low = info.get("last-delivered-id")
            if low is None:
                continue
            low = low if isinstance(low, bytes) else str(low).encode()
            if safe is None or _id_lt(low, safe):
                safe = low
        if safe is not None and safe != b"0-0":
            if self.broker.frees_payloads:
                # Free in chunks, and trim only what was freed, so no payload outlives its entry unnoticed.
                while gone := client.xrange(key, max=b"(" + safe, count=1000):
                    self.broker._payload_done([f for _, f in gone])
                    last = gone[-1][0]
                    client.xtrim(key, minid=_next_id(last if isinstance(last, bytes) else str(last).encode()),
                                 approximate=False)  # fmt: skip
            client.xtrim(key, minid=safe, approximate=False)
        self._dur_len = int(client.xlen(key))
        return self._dur_len

    def _wait_for_room(self) -> None:
        try:
            if self.trim() < self.dur_cap:
                return
        except redis.RedisError as exc:
            raise _translate(exc, self.broker.display_url) from exc
        raise BackpressureError(
            f"durable links out of {self.source!r} hold {self._dur_len} unacknowledged frames (max_len "
            f"{self.dur_cap}); the producer waits for its targets to catch up",
            url=self.broker.display_url,
        )


def _next_id(entry_id: bytes) -> bytes:
    ms, _, seq = entry_id.partition(b"-")
    return b"%d-%d" % (int(ms), int(seq or 0) + 1)


def _id_lt(a: bytes, b: bytes) -> bool:
    ams, _, aseq = a.partition(b"-")
    bms, _, bseq = b.partition(b"-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))


class RedisSubscription(Subscription):
    """Reads the links into one target as one consumer of its group; acknowledges, takes over, dead-letters."""

    def __init__(self, broker: RedisBroker, links: list[Link], consumer: str) -> None:
        self.broker = broker
        self.links = links
        self.group = links[0].target
        self.consumer = consumer
        self.skipped = 0
        self.rejected = 0
        self.dead = 0
        # stream key -> (source, qos, link)
        self._streams: dict[str, tuple[str, str, Link | None]] = {}
        for ln in links:
            self._streams[broker.stream_key(ln.source, ln.qos, ln.variant)] = (ln.source, ln.qos, ln)
        durable = [ln for ln in links if ln.qos == "durable"]
        if durable:
            self._streams[broker.replay_key(self.group)] = ("", "durable", None)
        self.max_attempts = max((ln.max_attempts for ln in durable), default=1)
        self.claim_after = min((ln.claim_after for ln in durable), default=0.0)
        self._seen_keys = {ln.source: broker.key("seen", ln.source, self.group) for ln in links}
        self._pending_notes: dict[str, list[Any]] = {}
        self._pending_acks: dict[str, list[bytes]] = {}
        self._notes_due = 0.0
        self._next_claim = time.monotonic() + (self.claim_after / 2 if durable else float("inf"))
        # Realtime reads take the newest frame, one at a time; durable reads take what waits, sized by payload.
        self._batch = 16 if durable else 1
        # With only realtime inputs nothing is ever acknowledged: NOACK keeps the pending lists empty.
        self._noack = not durable
        self._create_groups()

    def _create_groups(self) -> None:
        for key in self._streams:
            self.broker._ensure_group_key(key, self.group)

    def _decode(self, key: str, entry_id: bytes, fields: dict[bytes, Any], attempts: int) -> Delivery | None:
        source, qos, _ = self._streams[key]
        if not source:  # a replayed dead letter names its source
            source = fields.get(b"s", b"").decode()
        try:
            frame = decode(fields[b"h"], self.broker._payload_from_fields(fields))
        except (FrameError, KeyError) as exc:
            self.rejected += 1
            log.warning("%s: rejected a bad frame from %r (entry %s): %s", self.group, source, entry_id, exc)
            if qos == "durable":
                self._pending_acks.setdefault(key, []).append(entry_id)
            return None
        return Delivery(source, frame, entry_id, qos, attempts, self.max_attempts if qos == "durable" else 1,
                        {"key": key})  # fmt: skip

    def read(self, timeout: float) -> list[Delivery]:
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + max(self.claim_after / 2, 0.05)
            claimed = self._claim()
            if claimed:
                return claimed
        client: Any = self.broker.client
        block_ms = max(1, int(timeout * 1000))
        pipe = client.pipeline(transaction=False)
        notes: dict[str, list[Any]] = {}
        now = time.monotonic()
        # Skip counts travel in batches (every 0.1 s, or 64 frames): one script call per frame would cost a
        # third of a realtime read.
        if self._pending_notes and (now >= self._notes_due or sum(map(len, self._pending_notes.values())) >= 128):
            notes, self._pending_notes = self._pending_notes, {}
            self._notes_due = now + 0.1
        acks, self._pending_acks = self._pending_acks, {}
        for source, args in notes.items():
            pipe.eval(_NOTE_SKIPS, 1, self._seen_keys[source], *args)
        for key, ids in acks.items():
            pipe.xack(key, self.group, *ids)
        pipe.xreadgroup(self.group, self.consumer, dict.fromkeys(self._streams, ">"), count=self._batch,
                        block=block_ms, noack=self._noack)  # fmt: skip
        try:
            results = pipe.execute()
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                # Redis restarted without its data, or a stream was deleted: make our place again.
                self._create_groups()
                return []
            raise _translate(exc, self.broker.display_url) from exc
        except redis.RedisError as exc:
            # Acks and skip counts not sent go with the next read; a durable frame is at worst delivered twice.
            for key, ids in acks.items():
                self._pending_acks.setdefault(key, [])[:0] = ids
            for source, args in notes.items():
                self._pending_notes.setdefault(source, [])[:0] = args
            raise _translate(exc, self.broker.display_url) from exc
        for n in results[: len(notes)]:
            self.skipped += int(n)
        out: list[Delivery] = []
        size = 0
        for raw_key, entries in results[-1] or []:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            source, qos, _ = self._streams[key]
            for entry_id, fields in entries:
                if qos == "realtime" and not self._noack:
                    self._pending_acks.setdefault(key, []).append(entry_id)
                if not fields:
                    continue  # trimmed between delivery and read
                size += sum(len(v) for v in fields.values() if isinstance(v, bytes))
                writer, seq = fields.get(b"w"), fields.get(b"q")
                if qos == "realtime" and writer is not None and seq is not None:
                    self._pending_notes.setdefault(source, []).extend((writer, seq))
                d = self._decode(key, entry_id, fields, 1)
                if d is not None:
                    out.append(d)
        if out and not self._noack:
            # Aim at about 4 MB a read: hundreds of small messages per round trip, a few video frames.
            self._batch = max(1, min(256, (4 << 20) * len(out) // max(size, 1)))
        return out

    def _claim(self) -> list[Delivery]:
        """Take over durable frames that sat too long with a replica that went silent."""
        client: Any = self.broker.client
        idle_ms = int(self.claim_after * 1000)
        out: list[Delivery] = []
        try:
            for key, (_, qos, _) in self._streams.items():
                if qos != "durable":
                    continue
                pending = client.xpending_range(key, self.group, min="-", max="+", count=32, idle=idle_ms)
                if not pending:
                    continue
                ids = [p["message_id"] for p in pending]
                times = {p["message_id"]: int(p["times_delivered"]) for p in pending}
                claimed = client.xclaim(key, self.group, self.consumer, idle_ms, ids)
                for entry_id, fields in claimed:
                    if not fields:
                        client.xack(key, self.group, entry_id)
                        continue
                    d = self._decode(key, entry_id, fields, times.get(entry_id, 1) + 1)
                    if d is None:
                        continue
                    if times.get(entry_id, 1) >= self.max_attempts:
                        # Delivered max_attempts times and never acknowledged: it keeps killing its reader.
                        self.dead_letter(d, f"not acknowledged after {times[entry_id]} deliveries (reader died?)")
                        continue
                    log.info("%s: took over frame %s of %r from a silent replica", self.group, d.frame.frame_id,
                             d.source)  # fmt: skip
                    out.append(d)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._create_groups()
                return out
            raise _translate(exc, self.broker.display_url) from exc
        except redis.RedisError as exc:
            raise _translate(exc, self.broker.display_url) from exc
        return out

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
            raise _translate(exc, self.broker.display_url) from exc

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        key = delivery.extra["key"]
        client: Any = self.broker.client
        fields = client.xrange(key, min=delivery.entry_id, max=delivery.entry_id)
        entry = fields[0][1] if fields else {}
        letter: dict[Any, Any] = {k: v for k, v in entry.items() if k in (b"h", b"d", b"r", b"p")}
        letter.update({"s": delivery.source, "e": error[:2000], "a": delivery.attempts, "i": delivery.entry_id})
        try:
            pipe = client.pipeline(transaction=True)
            pipe.xadd(self.broker.dead_key(self.group), letter, maxlen=_DEAD_MAXLEN, approximate=True)
            pipe.xack(key, self.group, delivery.entry_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise _translate(exc, self.broker.display_url) from exc
        self.dead += 1
        log.error("%s: frame %s of %r failed %d times and went to the dead-letter stream %s: %s", self.group,
                  delivery.frame.frame_id, delivery.source, delivery.attempts, self.broker.dead_key(self.group),
                  error)  # fmt: skip

    def close(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the batched skip counts and acknowledgements now."""
        notes, acks = self._pending_notes, self._pending_acks
        if notes or acks:
            try:
                pipe = self.broker.client.pipeline(transaction=False)
                for source, args in notes.items():
                    pipe.eval(_NOTE_SKIPS, 1, self._seen_keys[source], *args)
                for key, ids in acks.items():
                    pipe.xack(key, self.group, *ids)
                for n in pipe.execute()[: len(notes)]:
                    self.skipped += int(n)
            except redis.RedisError:
                pass  # the broker is gone: these were realtime notes and acks, nothing held for a target
        self._pending_notes = {}
        self._pending_acks = {}


class _RedisListener(Listener):
    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self._pubsub: Any = None

    def get(self, timeout: float) -> bytes | None:
        try:
            if self._pubsub is None:
                self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
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


RedisBroker.publisher_class = RedisPublisher
RedisBroker.subscription_class = RedisSubscription
