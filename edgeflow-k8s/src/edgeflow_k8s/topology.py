"""Where a deployed app's Redis and gateways are, as its pods (and KEDA) reach them.

* The Redis: the one EdgeFlow renders (a Deployment and its Service, as before), a small Redis Cluster it renders
  (`--redis-cluster N`, rediscluster.py), or one outside the app (`--redis-url`, a single Redis or a cluster). An
  outside Redis's URL goes into the manifests as REDIS_URL, so it must carry no password: the password is
  REDIS_PASSWORD in the env Secret, read by the pods and by KEDA.
* The gateways: each its own Service; every pod gets `GATEWAY_<NAME>_HOST` and `GATEWAY_<NAME>_TCP_PORT` of each
  (edgeflow.runtime.addresses), and GATEWAY_HOST / GATEWAY_TCP_PORT when TCP links go to one gateway alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgeflow.brokers.redis.keys import is_cluster_url, parse_cluster_url
from edgeflow.config import redact_url
from edgeflow.errors import ConfigurationError
from edgeflow.runtime.addresses import gateway_env

from .keda import RedisTarget
from .rediscluster import cluster_addresses, cluster_url

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp

__all__ = ["external_target", "gateway_env_vars", "image_major", "rendered_target"]


def image_major(image: str, default: int = 7) -> int:
    """The major version in an image tag such as `redis:7.2-alpine` (`default` when it says none)."""
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    head = tag.split(".", 1)[0].split("-", 1)[0]
    return int(head) if head.isdigit() else default


def rendered_target(service: str, port: int, image: str) -> RedisTarget:
    """The Redis EdgeFlow renders as a Deployment and Service named `service`."""
    return RedisTarget(f"redis://{service}:{port}/0", [f"{service}:{port}"], False, False, image_major(image))


def external_target(
    redis_url: str | None, redis_cluster: int, namespace: str, redis_version: int
) -> RedisTarget | None:
    """The Redis that `--redis-url` names or `--redis-cluster` renders; None for the default one."""
    if redis_url and redis_cluster:
        raise ConfigurationError(
            "give --redis-url (a Redis outside the app) or --redis-cluster N (one it runs), not both"
        )
    if redis_cluster:
        return RedisTarget(cluster_url(redis_cluster, namespace), cluster_addresses(redis_cluster, namespace), True,
                           False, 7)  # fmt: skip
    if not redis_url:
        return None
    if redact_url(redis_url) != redis_url or _cluster_password(redis_url):
        raise ConfigurationError(
            f"--redis-url {redact_url(redis_url)!r} carries a password, which must not reach a manifest: pass the URL "
            "without it and put the password in the env Secret as REDIS_PASSWORD (kubectl -n NS create secret "
            "generic edgeflow-env --from-literal=REDIS_PASSWORD=...); the pods and KEDA read it there"
        )
    if is_cluster_url(redis_url):
        parsed = parse_cluster_url(redis_url)
        addresses = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parsed.nodes]
        return RedisTarget(redis_url, addresses, True, parsed.tls, redis_version)
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigurationError(
            f"--redis-url {redis_url!r}: use redis://host:port, rediss://host:port (TLS) or redis+cluster://h1:p1,h2:p2"
        )
    address = f"{parts.hostname}:{parts.port or 6379}"
    return RedisTarget(redis_url, [address], False, parts.scheme == "rediss", redis_version)


def _cluster_password(url: str) -> bool:
    return is_cluster_url(url) and parse_cluster_url(url).password is not None


def gateway_env_vars(app: EdgeApp, names: dict[str, str], ports: dict[str, int]) -> list[dict[str, Any]]:
    """Every pod's environment for reaching the gateways: each gateway's own, and the seed's for one gateway.

    `names`: each node's Kubernetes name (a gateway's TCP Service has it); `ports`: each gateway's TCP port.
    """
    env: list[dict[str, Any]] = []
    for name in ports:
        prefix = gateway_env(name)
        env += [
            {"name": f"{prefix}_HOST", "value": names[name]},
            {"name": f"{prefix}_TCP_PORT", "value": str(ports[name])},
        ]
    fed = sorted({ln.target for ln in app.links if ln.transport == "tcp"})
    only = fed[0] if len(fed) == 1 else (next(iter(ports)) if len(ports) == 1 else None)
    if only is not None:
        env += [{"name": "GATEWAY_HOST", "value": names[only]}, {"name": "GATEWAY_TCP_PORT", "value": str(ports[only])}]
    return env
