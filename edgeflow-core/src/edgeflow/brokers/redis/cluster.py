"""The Redis broker on a Redis Cluster: the client, the send window of one slot, scripts, ordered commands.

`REDIS_URL=redis+cluster://h1:p1,h2:p2` runs the broker on redis-py's `RedisCluster`, with the broker's timeouts
and retries and its zero-copy command packer (through a connection class: RedisCluster passes no packer to its
nodes' connections). Every key of a topic carries one hash tag (keys.py), so what one publisher writes lives on
one slot: its send window keeps one raw connection to the master serving that slot and follows the cluster when
the slot moves (MOVED) or is moving (ASK), sending again what was not confirmed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException

from ...errors import ConfigurationError
from .keys import parse_cluster_url
from .packer import ZeroCopyPacker
from .scripts import NOTE_SKIPS, RAISE_SEEN, Scripts
from .window import SendWindow, _Item

__all__ = ["ClusterScripts", "ClusterSendWindow", "InOrder", "WaitingSendWindow", "make_cluster_client"]

log = logging.getLogger("edgeflow.broker")

#: What a cluster client raises when it can't find its way (no node answers, the slot map is incomplete).
CLUSTER_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)


class ZeroCopyConnection(redis.connection.Connection):
    """A connection with the broker's zero-copy command packer (frame-sized buffers go to the socket as they are)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("command_packer", ZeroCopyPacker())
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]


class ZeroCopySSLConnection(redis.connection.SSLConnection):
    """The TLS connection with the broker's zero-copy command packer."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("command_packer", ZeroCopyPacker())
        super().__init__(**kwargs)


def make_cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """Return a `RedisCluster` for `url` (`redis+cluster://`, `rediss+cluster://`) with the broker's `options`."""
    parsed = parse_cluster_url(url)
    opts = dict(options)
    opts.pop("command_packer", None)  # given through the connection class instead
    opts.pop("health_check_interval", None)  # RedisCluster's nodes take none; keepalive and timeouts remain
    retry = opts.pop("retry", None)
    host, port = parsed.nodes[0]
    # The first node as a URL (RedisCluster then builds every node's pool from the same options, our connection
    # class included), the others as further startup nodes; TLS options (ssl_cert_reqs, ssl_ca_certs) ride along.
    query = {k: v for k, v in parsed.options.items()}
    first = f"redis://{quote(host) if ':' not in host else '[' + host + ']'}:{port}/0"
    if query:
        first += "?" + urlencode(query)
    if parsed.username is not None:
        opts.setdefault("username", parsed.username)
    if parsed.password is not None:
        opts["password"] = parsed.password  # the URL's wins over REDIS_PASSWORD
    opts["connection_class"] = ZeroCopySSLConnection if parsed.tls else ZeroCopyConnection
    try:
        return RedisCluster(
            url=first,
            startup_nodes=[ClusterNode(h, p) for h, p in parsed.nodes[1:]],  # type: ignore[no-untyped-call]
            retry=retry,
            **opts,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"bad Redis Cluster URL or option: {exc}") from exc


class ClusterScripts(Scripts):
    """The broker's scripts as EVAL: a cluster pipeline takes no EVALSHA, and a master that just took over from
    its replica has no script cache (the script text is 1 KB at most, sent every 0.1 s per group at most)."""

    def __init__(self, client: Any) -> None:  # no super(): nothing is registered on the client
        self.note_skips = _Eval(client, NOTE_SKIPS)
        self.raise_seen = _Eval(client, RAISE_SEEN)


class _Eval:
    def __init__(self, client: Any, script: str) -> None:
        self.client = client
        self.script = script

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        return (client or self.client).execute_command("EVAL", self.script, len(keys), *keys, *args)


class InOrder:
    """Commands run one after another, each once the one before succeeded; for what a single Redis runs as one
    MULTI but a cluster can't, because the keys live on different slots (a dead letter written to the target's
    stream, then acknowledged on the source's: a crash in between delivers it again, it is never lost)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> InOrder:
            self._calls.append((name, args, kwargs))
            return self

        return queue

    def execute(self) -> list[Any]:
        """Run the queued commands in order; the first failure stops the rest."""
        calls, self._calls = self._calls, []
        return [getattr(self._client, name)(*args, **kwargs) for name, args, kwargs in calls]


class WaitingSendWindow(SendWindow):
    """A send window whose durable writes count as confirmed only once `replicas` replicas have them (WAIT).

    Replication is asynchronous: without WAIT a master that dies can take the writes of its last moments with it,
    confirmed to the producer but never copied. Here a durable frame is confirmed once a WAIT sent after it on the
    same connection came back with enough replicas (a WAIT covers every write before it); until then it is kept,
    and sent again if the connection breaks. One WAIT is in flight at a time, so the replicas' round trip is paid
    once per burst of frames, while later frames are made; the frames of a burst that ends are covered by a last
    WAIT with the next frame, or when the publisher closes.

    A WAIT that comes back short after `timeout_ms` (no replica, or one far behind) is not waited for again and
    again: frames then go on confirmed by the master alone, counted in `unreplicated` and logged, and every
    PROBE_EVERY seconds one frame asks again, for up to PROBE_MS; once replicas acknowledge again, so is every
    frame again.
    """

    PROBE_EVERY = 0.2
    PROBE_MS = 50

    def __init__(self, client: Any, name: str, replicas: int = 0, timeout_ms: int = 1000) -> None:
        super().__init__(client, name)
        self.replicas = replicas
        self._wait = ("WAIT", replicas, timeout_ms)
        self._probe = ("WAIT", replicas, min(timeout_ms, self.PROBE_MS))
        self.unreplicated = 0
        self.degraded = False
        self._waiting = False  # a WAIT is in flight
        self._uncovered: deque[_Item] = deque()  # durable frames Redis took that no WAIT has covered yet
        self._next_probe = 0.0
        self._logged = (0.0, 0)

    @property
    def unconfirmed(self) -> int:
        """Durable frames not confirmed yet: those SendWindow counts, and those no replica acknowledged yet."""
        return super().unconfirmed + len(self._uncovered)

    def _with_wait(self, commands: list[tuple[Any, ...]], keep: bool) -> list[tuple[Any, ...]]:
        if not (keep and self.replicas) or self._waiting:
            return commands
        if self.degraded:
            now = time.monotonic()
            if now < self._next_probe:
                return commands
            self._next_probe = now + self.PROBE_EVERY
            self._waiting = True
            return [*commands, self._probe]
        self._waiting = True
        return [*commands, self._wait]

    def send(self, commands: list[tuple[Any, ...]], size: int, keep: bool) -> None:
        """Send `commands`, followed by WAIT when they are durable and no WAIT is in flight."""
        super().send(self._with_wait(commands, keep), size, keep)

    def _collect_one(self) -> None:
        if not self.replicas:
            super()._collect_one()
            return
        # As SendWindow._collect_one, looking at WAIT's reply: how many replicas have the writes before it.
        self._flush_held()
        item = self._outstanding[0]
        commands, size, keep = item
        acks: int | None = None
        for command in commands:
            reply = self._conn.read_response()
            if command is self._wait or command is self._probe:
                acks = int(reply)
        self._outstanding.popleft()
        self._bytes -= size
        if keep and acks is None:
            self._uncovered.append(item)
        elif acks is not None:
            self._covered(acks, keep)

    def _covered(self, acks: int, keep: bool) -> None:
        self._waiting = False
        if acks >= self.replicas:
            self._uncovered.clear()
            if self.degraded:
                log.warning("%s: %d replica(s) acknowledge durable frames again (wait_replicas)", self.name, acks)
                self.degraded = False
            return
        self._unreplicated(len(self._uncovered) + int(keep))
        self._uncovered.clear()  # kept no longer: Redis has them, a failover of its master may not
        if not self.degraded:
            self.degraded = True
            self._next_probe = time.monotonic() + self.PROBE_EVERY
            log.warning("%s: only %d of %d replica(s) acknowledged durable frames within %d ms: frames go on "
                        "confirmed by the master alone (counted) until replicas acknowledge again", self.name,
                        acks, self.replicas, self._wait[2])  # fmt: skip

    def failed(self) -> int:
        """As SendWindow.failed; the frames no replica acknowledged yet are sent again too, first, and one WAIT
        after the last of them covers them all."""
        dropped = super().failed()
        self._waiting = False
        if self.replicas:
            self._resend.extendleft(reversed(self._uncovered))
            self._uncovered.clear()
            if self._resend:
                items = [([c for c in commands if c[0] != "WAIT"], size, keep) for commands, size, keep in self._resend]
                items[-1][0].append(self._probe if self.degraded else self._wait)
                self._waiting = True
                self._resend.clear()
                self._resend.extend(items)
        return dropped

    def close(self) -> int:
        """Cover the last frames with a WAIT, then close as SendWindow does."""
        with self.io:
            if self.replicas and self._uncovered and not self._waiting and self._conn is not None:
                try:
                    self.send([], 0, True)
                except (redis.RedisError, OSError):
                    self.failed()
        return super().close()

    def _unreplicated(self, n: int) -> None:
        if not n:
            return
        self.unreplicated += n
        last, since = self._logged
        now = time.monotonic()
        if now - last >= 10.0:
            log.warning("%s: %d durable frame(s) confirmed by the master alone (wait_replicas=%d): a failover now "
                        "could lose them", self.name, since + n, self.replicas)  # fmt: skip
            self._logged = (now, 0)
        else:
            self._logged = (last, since + n)


class ClusterSendWindow(WaitingSendWindow):
    """The send window of one topic on a cluster: one raw connection to the master of the topic's slot.

    On MOVED (the slot now lives on another master) or ASK (it is being moved) what was sent and not confirmed, and
    what was held, is sent again through the cluster client, which follows the redirection; after MOVED the slot
    map is loaded again, so that the next frames go straight to the new master. Durable frames may land twice (at
    least once), realtime ones too (a reader then skips nothing and may see a frame twice).
    """

    def __init__(self, client: Any, name: str, key: str, replicas: int = 0, timeout_ms: int = 1000) -> None:
        super().__init__(client, name, replicas, timeout_ms)
        self.key = key
        #: How many times the window followed the cluster (MOVED or ASK).
        self.redirects = 0

    def _connect(self) -> Any:
        node = self.client.get_node_from_key(self.key)
        self._pool = self.client.get_redis_connection(node).connection_pool
        return self._pool.get_connection()

    def send(self, commands: list[tuple[Any, ...]], size: int, keep: bool) -> None:
        """Send `commands`; on a redirection, send again what it concerns through the cluster client."""
        commands = self._with_wait(commands, keep)
        try:
            SendWindow.send(self, commands, size, keep)
        except AskError as exc:  # MovedError is an AskError
            self._follow(exc, (commands, size, keep))

    def drain(self) -> None:
        """Send what is held and read every reply still due, following the cluster if the slot moved."""
        try:
            super().drain()
        except AskError as exc:
            self._follow(exc, None)

    def failed(self) -> int:
        """Drop the connection; learn the slot map again (a master that died is replaced by its replica)."""
        dropped = super().failed()
        try:
            self.client.nodes_manager.initialize()
        except CLUSTER_ERRORS as exc:
            log.debug("%s: the cluster's slot map could not be loaded yet: %s", self.name, exc)
        return dropped

    def _follow(self, exc: AskError, new: tuple[list[tuple[Any, ...]], int, bool] | None) -> None:
        items = [*self._outstanding, *self._resend, *([new] if new is not None else [])]
        self._unreplicated(len(self._uncovered))  # the slot moved with their data: not sent again, not covered
        self._uncovered.clear()
        self._waiting = False
        self._outstanding.clear()
        self._resend.clear()
        self._held.clear()
        self._unsent = 0
        self._bytes = 0
        if self._conn is not None:
            self._conn.disconnect()  # replies of later commands are still due on it: never reuse it
            self._pool.release(self._conn)
            self._conn = None
        self.redirects += 1
        moved = isinstance(exc, MovedError)
        log.info("%s: slot %s %s %s:%s; sending %d frame(s) again", self.name, exc.slot_id,
                 "moved to" if moved else "is moving to", exc.host, exc.port, len(items))  # fmt: skip
        if moved:
            self.client.nodes_manager.initialize()
        for i, (commands, _size, _keep) in enumerate(items):
            try:
                for command in commands:
                    if command[0] == "WAIT":
                        # WAIT goes to the connection that wrote; here each command may take another. Confirmed by
                        # the master alone: counted.
                        self._unreplicated(1)
                        continue
                    self.client.execute_command(*command)
            except CLUSTER_ERRORS:
                self._resend.extend(item for item in items[i:] if item[2])
                raise
