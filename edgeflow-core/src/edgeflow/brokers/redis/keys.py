"""Key names on a Redis Cluster, and the URLs that ask for one.

A cluster hashes a key to one of 16,384 slots, each served by one master; a command or a Lua script that names
keys of two slots is refused (CROSSSLOT), and a pipeline splits into one per node. So every key of one topic (its
realtime and durable streams with their consumer groups, its skip accounting, a data plane's keys for it) carries
the same hash tag, and a target's dead-letter and replay streams carry the target's: a publisher's pipelined
writes and a reader's scripts stay on one slot, and different topics spread over the shards. Only a cluster gets
the tag: on one Redis, key names stay as they always were (existing data, tools that read them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode

from ...config import redact_url
from ...errors import ConfigurationError

__all__ = ["BROKER_OPTIONS", "CLUSTER_SCHEMES", "ClusterURL", "hash_tag", "is_cluster_url", "parse_cluster_url",
           "pop_url_options"]  # fmt: skip

#: `redis+cluster://h1:p1,h2:p2` and, with TLS, `rediss+cluster://`.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: URL parameters that are the broker's, not redis-py's (which would refuse them).
BROKER_OPTIONS = ("wait_replicas", "wait_timeout")


def hash_tag(namespace: str, owner: str) -> str:
    """Return `owner` (a topic or a node of the app `namespace`) as a hash tag: every key that carries it hashes
    to one slot. Names hold no braces (edgeflow.names), so the tag is the first `{...}` of any key it is in."""
    return "{" + namespace + "/" + owner + "}"


def pop_url_options(url: str) -> tuple[str, dict[str, str]]:
    """Return `url` without the broker's own parameters (BROKER_OPTIONS), and those parameters."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    pairs = parse_qsl(query, keep_blank_values=True)
    mine = {k: v for k, v in pairs if k in BROKER_OPTIONS}
    if not mine:
        return url, {}
    rest = urlencode([(k, v) for k, v in pairs if k not in BROKER_OPTIONS])
    return (f"{base}?{rest}" if rest else base), mine


def is_cluster_url(url: str) -> bool:
    """Return True when `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterURL:
    """What a `redis+cluster://` URL says: the nodes to start from, TLS, credentials, and the query's options."""

    nodes: list[tuple[str, int]]
    tls: bool
    username: str | None = None
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse `redis+cluster://[user:password@]host:port[,host:port...][/][?option=value...]`.

    Any one node will do to find the others; naming several lets a client start while one of them is down.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a Redis Cluster URL: use redis+cluster://host:port[,host:port...]"
        )
    # The netloc lists several hosts, which urlsplit does not take apart: split it by hand.
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        user, has_pw, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    nodes: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        host, port = _host_port(item, url)
        nodes.append((host, port))
    if not nodes:
        raise ConfigurationError(f"Redis Cluster URL {redact_url(url)!r} names no node: use host:port[,host:port...]")
    path = path.strip("/")
    if path not in ("", "0"):
        raise ConfigurationError(f"Redis Cluster URL {redact_url(url)!r} names database {path!r}: a cluster has only 0")
    options = dict(parse_qsl(query, keep_blank_values=True))
    return ClusterURL(nodes, scheme.lower() == "rediss+cluster", username, password, options)


def _host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:7000
        host, _, port = item[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = item.rpartition(":")
        if not host:
            host, port = port, ""
    try:
        return host, int(port or 6379)
    except ValueError:
        raise ConfigurationError(f"Redis Cluster URL {redact_url(url)!r}: {item!r} is not host:port") from None
