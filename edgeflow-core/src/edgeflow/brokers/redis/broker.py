"""`RedisBroker`: one Redis stream per topic, one consumer group per target node, statistics on Pub/Sub."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.retry import Retry

from ...backoff import Backoff
from ...broker import Broker, GatewayPath, Listener, Publisher, Subscription
from ...config import redact_url, settings
from ...embedded import redis_answers
from ...errors import ConfigurationError, FrameError
from ...frame import decode
from ...links import QOS_VALUES
from ..dataplane import DataPlane, Missing
from .cluster import ClusterScripts, ClusterSendWindow, InOrder, WaitingSendWindow, make_cluster_client
from .errors import translate
from .keys import hash_tag, is_cluster_url, pop_url_options
from .listener import RedisListener
from .local import LocalHub
from .packer import ZeroCopyPacker
from .publisher import RedisPublisher
from .replay import remove_groups, replay_streams
from .scripts import Scripts
from .subscription import DEAD_MAX_LEN, RedisSubscription
from .tail import TailSubscription
from .window import SendWindow

if TYPE_CHECKING:
    from ...links import Link

__all__ = ["RedisBroker"]

log = logging.getLogger("edgeflow.broker")


class RedisBroker(Broker):
    """The default broker: frames on Redis Streams, statistics on Redis Pub/Sub.

    Args:
        url: `redis://`, `rediss://` (TLS) or `unix://`, with user and password; default REDIS_URL, or
            REDIS_HOST and REDIS_PORT. `redis+cluster://h1:p1,h2:p2` (`rediss+cluster://` with TLS) runs on a
            Redis Cluster (docs/scaling.md).
        wait_replicas: durable writes count as written once this many replicas have them (WAIT, at most
            `wait_timeout` seconds, 1 by default; frames confirmed without them are counted and logged); 0 by
            default. Also URL parameters: `?wait_replicas=1&wait_timeout=0.5`. See docs/scaling.md.
        data_plane: where payloads live (see `edgeflow.brokers.dataplane`); inline in the entries by default.
        local_links: hand realtime frames over in memory to readers in the producer's own process (see
            `edgeflow.brokers.redis.local`); False sends every frame through Redis, as between processes.
        options: passed to `redis.Redis.from_url`.
    """

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        wait_replicas: int | None = None,
        wait_timeout: float | None = None,
        data_plane: DataPlane | None = None,
        local_links: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        if url is None and (host is not None or port is not None):
            url = f"redis://{host or settings.REDIS_HOST}:{port or settings.REDIS_PORT}/0"
        self._url = url
        self._wait = (wait_replicas, wait_timeout)
        self._options = options
        self._client: redis.Redis | redis.RedisCluster | None = None
        self._scripts: Scripts | None = None
        self._lock = threading.Lock()
        self._sharded: bool | None = None
        self.data_plane = data_plane or DataPlane()
        self.data_plane.attach(self)
        #: Realtime links whose readers all run in this process are served in memory (see brokers/redis/local.py).
        self.local = LocalHub(self)
        self.local.enabled = local_links

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
        embedded = not (self.explicit or self._client is not None or redis_answers("localhost", 6379))
        if embedded:
            self.use_url(start_embedded())
        self.data_plane.ensure_server(start_embedded, embedded)
        return embedded

    @property
    def display_url(self) -> str:
        """The control-plane URL with any password redacted."""
        return redact_url(self.url)

    def make_client(self, url: str) -> redis.Redis | redis.RedisCluster:
        """Return a client for the Redis at `url` with the broker's retries, timeouts and packer."""
        backoff = Backoff(0.05, 1.0)
        opts: dict[str, Any] = {
            # A broken connection is retried at once; a server that does not answer is not waited for again:
            # every read and write gives up after socket_timeout, and the runner's backoff takes over.
            "retry": Retry(backoff.policy, 2, supported_errors=(redis.ConnectionError, ConnectionError)),
            "health_check_interval": 15,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 3.0,
            "socket_keepalive": True,
            "client_name": f"edgeflow-{self.namespace}"[:60],
            "command_packer": ZeroCopyPacker(),
        }
        if settings.REDIS_PASSWORD and url == self.url:
            opts["password"] = settings.REDIS_PASSWORD  # a password in the URL still wins
        opts.update(self._options)
        url, _ = pop_url_options(url)
        if is_cluster_url(url):
            return make_cluster_client(url, opts)
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
                    self._client = self.make_client(self.url)
        return self._client

    @property
    def scripts(self) -> Scripts:
        """The broker's Lua scripts, registered on its client."""
        if self._scripts is None:
            self._scripts = (ClusterScripts if self.cluster else Scripts)(self.client)
        return self._scripts

    def connect(self) -> None:
        """Connect and check that Redis (and the data plane's servers) answer."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise translate(exc, self.display_url) from exc
        self.data_plane.connect()
        if self.data_plane.name != "inline":
            log.info("data plane %s: %s", self.data_plane.name, self.data_plane.describe())

    def close(self) -> None:
        """Close every connection of the pool and the data plane's."""
        self.data_plane.close()
        if self._client is not None:
            self._client.close()
            if isinstance(self._client, redis.Redis):  # a cluster client closed every node's pool
                self._client.connection_pool.disconnect()
            self._client = None
            self._scripts = None

    def ping(self) -> bool:
        """Return True when Redis and the data plane's servers answer."""
        try:
            return bool(self.client.ping()) and self.data_plane.ping()
        except redis.RedisError:
            return False

    # Keys -----------------------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """Return the Redis key for `parts` inside this app's namespace."""
        return ":".join(("ef", self.namespace, *parts))

    def stream_key(self, topic: str, qos: str = "realtime", variant: str = "") -> str:
        """Return the stream that carries `topic`'s frames on links of `qos` (encoded as `variant`, if any)."""
        owner = self.tag(topic)
        return self.key("rt" if qos == "realtime" else "dur", f"{owner}~{variant}" if variant else owner)

    def dead_key(self, target: str) -> str:
        """Return the dead-letter stream of the node `target`."""
        return self.key("dead", self.tag(target))

    def replay_key(self, target: str) -> str:
        """Return the stream from which `target` takes replayed dead letters."""
        return self.key("replay", self.tag(target))

    def seen_key(self, topic: str, group: str) -> str:
        """Return the hash where `group`'s skip accounting of `topic` lives."""
        return self.key("seen", self.tag(topic), group)

    # Frames -----------------------------------------------------------------------------------------------
    def running_here(self, nodes: Sequence[str]) -> None:
        """Links whose two ends don't both run in this process are never wrapped for in-memory hand-over."""
        self.local.nodes_here = (self.local.nodes_here or set()) | set(nodes)  # several runs on one broker add up

    def publisher(self, source: str, links: Sequence[Link]) -> Publisher:
        """Return a publisher that writes the topic `source`'s frames to its realtime and durable streams."""
        return self.local.publisher(self.data_plane.publisher(RedisPublisher(self, source, links)), source, links)

    def subscribe(self, links: Sequence[Link], consumer: str) -> Subscription:
        """Read the `links` into one target as `consumer`, creating the consumer groups as needed."""
        for ln in links:
            if ln.qos not in QOS_VALUES:
                raise ConfigurationError(f"qos={ln.qos!r} on {ln.source} -> {ln.target}; use one of {QOS_VALUES}")
        if len({ln.target for ln in links}) != 1:
            raise ConfigurationError("subscribe() takes the links into one target node")
        chosen = list(links)
        sub = self.data_plane.subscription(lambda: RedisSubscription(self, chosen, consumer), chosen, consumer)
        return self.local.subscription(sub, chosen, consumer)

    def gateway_path(self, source: str, link: Link) -> GatewayPath | None:
        """The data plane's path to `link`'s gateway on this host, if it has one (edgeflow-shm does)."""
        return self.data_plane.gateway_path(source, link)

    def gateway_feed(self, link: Link, consumer: str) -> Subscription | None:
        """The data plane's gateway end of `gateway_path`, if it has one."""
        return self.data_plane.gateway_feed(link, consumer)

    def ensure_group(self, topic: str, group: str, qos: str = "realtime", variant: str = "") -> None:
        """Create the consumer group `group` on `topic`'s stream if it does not exist."""
        self.ensure_group_key(self.stream_key(topic, qos, variant), group)

    def ensure_group_key(self, key: str, group: str, start: str = "$") -> None:
        """Create the consumer group `group` on the stream `key` (and the stream) if it does not exist.

        `start`: "$" to take only entries written from now on, "0" for every entry the stream still holds.
        """
        try:
            self.client.xgroup_create(key, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise translate(exc, self.display_url) from exc
        except redis.RedisError as exc:
            raise translate(exc, self.display_url) from exc

    def link_depth(self, source: str, group: str, variant: str = "") -> int | None:
        """Return how many entries of the topic `source` wait for `group` (Redis 7's lag plus unacknowledged)."""
        backlog = self.link_backlog(source, group, variant)
        return None if backlog is None else backlog[0]

    def link_backlog(self, source: str, group: str, variant: str = "") -> tuple[int, int] | None:
        """Return (depth, pending) of `group` on the topic `source`: Redis 7's lag plus the durable entries
        delivered and not acknowledged, and those alone."""
        total: int | None = None
        unacked = 0
        for qos in QOS_VALUES:
            try:
                infos = self.client.xinfo_groups(self.stream_key(source, qos, variant))
            except redis.RedisError:
                continue
            for info in infos:
                if info.get("name") in (group, group.encode()):
                    lag = info.get("lag")
                    pending = int(info.get("pending") or 0) if qos == "durable" else 0
                    total = (total or 0) + (int(lag) if lag is not None else 0) + pending
                    unacked += pending
        return None if total is None else (total, unacked)

    def tail(self, topic: str) -> Subscription:
        """Watch `topic`'s frames from now on, taking no part in any group (for `edgeflow topic hz|echo`)."""
        return TailSubscription(self, topic)

    def dead_letters(self, target: str, count: int = 100) -> list[dict[str, Any]]:
        """Return up to `count` dead letters of `target`, oldest first: id, source, frame_id, attempts, error."""
        try:
            entries = self.client.xrange(self.dead_key(target), count=count)
        except redis.RedisError as exc:
            raise translate(exc, self.display_url) from exc
        reader = self.data_plane.reader(None)
        payloads = reader.resolve([fields for _, fields in entries])
        out = []
        for (entry_id, fields), payload in zip(entries, payloads, strict=True):
            info: dict[str, Any] = {
                "id": entry_id.decode(),
                "source": fields.get(b"s", b"").decode(errors="replace"),
                "attempts": int(fields.get(b"a", b"0")),
                "error": fields.get(b"e", b"").decode(errors="replace"),
                "frame_id": None,
            }
            if not isinstance(payload, Missing):
                try:
                    frame = decode(fields[b"h"], payload)
                    info["frame_id"], info["timestamp"] = frame.frame_id, frame.timestamp
                except (FrameError, KeyError):
                    pass
            out.append(info)
        reader.close()
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
            self.ensure_group_key(self.replay_key(target), target)
            for entry_id, fields in entries:
                pipe = self.client.pipeline(transaction=True)
                keep = {k: v for k, v in fields.items() if k not in (b"e", b"a")}
                pipe.xadd(self.replay_key(target), keep, maxlen=DEAD_MAX_LEN, approximate=True)
                pipe.xdel(dead, entry_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise translate(exc, self.display_url) from exc
        return len(entries)

    def replay_from(self, links: Sequence[Link], seconds: float, timeout: float = 30.0) -> dict[str, int]:
        """Copy the entries of the last `seconds` (by Redis's clock) that durable `links`' streams hold into their
        targets' replay streams, as dead-letter replay does, waiting (up to `timeout` s at a time) while one is full."""
        return replay_streams(self, links, seconds, timeout)

    def remove_reader(self, links: Sequence[Link]) -> None:
        """Destroy the consumer groups of the links' target on their streams, and its replay stream."""
        remove_groups(self, links)

    # Control plane ------------------------------------------------------------------------------------------
    def emit(self, channel: str, message: bytes) -> None:
        """Publish `message` on the app's channel `channel`."""
        try:
            (self.client.spublish if self.sharded_pubsub else self.client.publish)(self.key("ch", channel), message)
        except redis.RedisError as exc:
            raise translate(exc, self.display_url) from exc

    def listen(self, channel: str) -> Listener:
        """Subscribe to the app's channel `channel`."""
        return RedisListener(self, self.key("ch", channel))

    # Scale ------------------------------------------------------------------------------------------------------
    @property
    def cluster(self) -> bool:
        """True when the broker runs on a Redis Cluster (`redis+cluster://`)."""
        return is_cluster_url(self.url)

    def tag(self, owner: str) -> str:
        """Return `owner` (a topic, or a target node) as key names carry it: on a cluster, in a hash tag, so that
        every key of one topic lives on one slot (keys.py); on one Redis, as it is."""
        return hash_tag(self.namespace, owner) if self.cluster else owner

    @property
    def wait_replicas(self) -> tuple[int, int]:
        """(replicas, timeout in ms) that durable writes wait for (WAIT): the constructor's, else the URL's."""
        replicas, timeout = self._wait
        _, query = pop_url_options(self.url)
        try:
            n = int(replicas if replicas is not None else query.get("wait_replicas", 0))
            seconds = float(timeout if timeout is not None else query.get("wait_timeout", 1.0))
        except ValueError as exc:
            raise ConfigurationError(f"wait_replicas / wait_timeout of {self.display_url}: {exc}") from exc
        limit = float(self._options.get("socket_timeout") or 5.0)  # a WAIT's reply must come before the socket's
        if n < 0 or not 0 < seconds < limit:
            raise ConfigurationError(
                f"wait_replicas must be >= 0 and wait_timeout above 0 and below the socket timeout ({limit:g} s), "
                f"got {n} and {seconds} ({self.display_url})"
            )
        return n, max(1, int(seconds * 1000))

    def send_window(self, name: str, key: str) -> SendWindow:
        """Return the send window a publisher of `key`'s topic writes through (on a cluster: to its slot's node)."""
        replicas, timeout_ms = self.wait_replicas
        if self.cluster:
            return ClusterSendWindow(self.client, name, key, replicas, timeout_ms)
        if replicas:
            return WaitingSendWindow(self.client, name, replicas, timeout_ms)
        return SendWindow(self.client, name)

    def in_order(self) -> Any:
        """Commands that must all happen, in order: one MULTI on one Redis; on a cluster, where their keys live
        on different slots, one after another (`cluster.InOrder`)."""
        return InOrder(self.client) if self.cluster else self.client.pipeline(transaction=True)

    @property
    def sharded_pubsub(self) -> bool:
        """True on a cluster of Redis 7 or newer: the control plane's channels are sharded (SPUBLISH), carried by
        the shard of the channel's slot alone; plain PUBLISH would be copied to every node of the cluster."""
        if self._sharded is None:
            if not self.cluster:
                self._sharded = False
            else:
                try:
                    info = self.client.info("server", target_nodes=self.client.get_random_node())
                    version = str(info.get("redis_version", "0"))
                except redis.RedisError as exc:
                    raise translate(exc, self.display_url) from exc
                self._sharded = int(version.split(".")[0]) >= 7
        return self._sharded
