"""Autoscaling on stream lag with KEDA: a ScaledObject for each node declared with `max_replicas`.

`@app.node(..., replicas=2, max_replicas=8)` on a consumer, sink or fusion node renders a `keda.sh/v1alpha1`
ScaledObject that targets the node's Deployment, between `replicas` and `max_replicas`, and one
TriggerAuthentication per app that reads the Redis password (and, with TLS, its CA) from the Secret the pods read.

* **Durable inputs**: one `redis-streams` trigger per link (`redis-cluster-streams` on a Redis Cluster), on the
  link's real stream and the node's consumer group: `lagCount` (entries no replica has taken; Redis 7 or newer) or,
  on older Redis, `pendingEntriesCount` (delivered, not yet acknowledged). The target per replica is the node's
  `scale_lag` (default 10 frames).
* **Realtime inputs** skip what a slow node can't take instead of queueing it, so their streams never grow and
  their lag stays near zero: no Redis figure says the node is short of replicas. They scale on the offered load the
  pods' Prometheus metrics give (`--prometheus-url` names a Prometheus that scrapes them): frames taken plus frames
  skipped per second, times the mean time `process()` takes, is how many replicas the input needs; KEDA keeps each
  at `scale_busy` (default 0.8) of that. Without a Prometheus a node whose inputs are all realtime is an error.

The Deployment of a scaled node carries no `replicas`, so that a deploy never undoes what KEDA decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeflow.brokers.redis import RedisBroker
from edgeflow.errors import ConfigurationError

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp, NodeSpec

__all__ = ["DEFAULT_BUSY", "DEFAULT_LAG", "TRIGGER_AUTH", "RedisTarget", "autoscaled", "keda_objects"]

TRIGGER_AUTH = "edgeflow-redis"
DEFAULT_LAG = 10
DEFAULT_BUSY = 0.8
POLLING_SECONDS = 15
COOLDOWN_SECONDS = 300


@dataclass(frozen=True)
class RedisTarget:
    """The Redis the pods use, as KEDA must reach it: its URL (no password), its addresses, its major version."""

    url: str
    addresses: list[str]
    cluster: bool
    tls: bool
    major: int = 7


def autoscaled(app: EdgeApp) -> list[NodeSpec]:
    """The nodes of `app` that scale (declared with `max_replicas`)."""
    return [spec for spec in app.nodes.values() if spec.max_replicas is not None]


def _number(spec: NodeSpec, key: str, default: float, low: float, high: float) -> float:
    value = spec.params.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"node {spec.name!r}: {key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _stream_keys(app: EdgeApp, target: RedisTarget) -> RedisBroker:
    """A broker that names keys as the pods' will: bound to the app, on the pods' Redis (a cluster tags keys)."""
    broker = RedisBroker(target.url)
    broker.bind(app.name)
    return broker


def _redis_trigger(spec: NodeSpec, key: str, source: str, variant: str, target: RedisTarget) -> dict[str, Any]:
    lag = int(_number(spec, "scale_lag", DEFAULT_LAG, 1, 1_000_000))
    metadata: dict[str, str] = {"stream": key, "consumerGroup": spec.name}
    if target.cluster:
        metadata["addresses"] = ",".join(target.addresses)
    else:
        metadata["address"] = target.addresses[0]
    if target.major >= 7:
        metadata.update(lagCount=str(lag), activationLagCount="1")
    else:
        metadata["pendingEntriesCount"] = str(lag)
    return {
        "type": "redis-cluster-streams" if target.cluster else "redis-streams",
        "name": f"lag-{source}{'-' + variant if variant else ''}"[:63].lower().replace("_", "-").replace(".", "-"),
        "metadata": metadata,
        "authenticationRef": {"name": TRIGGER_AUTH},
    }


def _load_query(node: str) -> str:
    sel = f'node="{node}"'
    offered = (f'sum(rate(edgeflow_frames_total{{{sel},direction="in"}}[1m])) + '
               f'sum(rate(edgeflow_dropped_total{{{sel},reason="stale"}}[1m]))')  # fmt: skip
    per_frame = (f"sum(rate(edgeflow_process_seconds_sum{{{sel}}}[1m])) / "
                 f"sum(rate(edgeflow_process_seconds_count{{{sel}}}[1m]))")  # fmt: skip
    return f"({offered}) * ({per_frame})"


def _load_trigger(spec: NodeSpec, prometheus_url: str) -> dict[str, Any]:
    busy = _number(spec, "scale_busy", DEFAULT_BUSY, 0.05, 1.0)
    return {
        "type": "prometheus",
        "name": "offered-load",
        "metadata": {"serverAddress": prometheus_url, "query": _load_query(spec.name), "threshold": f"{busy:g}"},
    }


def scaled_object(
    app: EdgeApp, spec: NodeSpec, deployment: str, namespace: str, labels: dict[str, str], target: RedisTarget,
    prometheus_url: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The ScaledObject of the node `spec`, whose Deployment is `deployment`."""
    assert spec.max_replicas is not None
    keys = _stream_keys(app, target)
    inputs = [ln for ln in app.links_into(spec.name) if ln.transport == "redis"]
    triggers = [
        _redis_trigger(spec, keys.stream_key(ln.topic, "durable", ln.variant), ln.source, ln.variant, target)
        for ln in inputs
        if ln.qos == "durable"
    ]
    realtime = [ln.source for ln in inputs if ln.qos == "realtime"]
    if realtime and prometheus_url:
        triggers.append(_load_trigger(spec, prometheus_url))
    if not triggers:
        why = (f"its inputs ({', '.join(realtime)}) are realtime links, whose lag is skipped rather than queued"
               if realtime else "it has no input links declared in main.py")  # fmt: skip
        raise ConfigurationError(
            f"node {spec.name!r} scales (max_replicas={spec.max_replicas}), but {why}: pass --prometheus-url (a "
            "Prometheus that scrapes the pods) so that it scales on its offered load, or link it with qos='durable'"
        )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": deployment, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicaCount": spec.replicas,
            "maxReplicaCount": spec.max_replicas,
            "pollingInterval": POLLING_SECONDS,
            "cooldownPeriod": COOLDOWN_SECONDS,
            "triggers": triggers,
        },
    }


def trigger_authentication(
    namespace: str, labels: dict[str, str], auth: tuple[str, str], env_secret: str | None, tls: bool
) -> dict[str, Any]:
    """The TriggerAuthentication every trigger of the app uses: the password from `auth` (Secret, key), the pods'
    own, and for TLS the CA from the env Secret."""
    refs: list[dict[str, str]] = [{"parameter": "password", "name": auth[0], "key": auth[1]}]
    spec: dict[str, Any] = {"secretTargetRef": refs}
    if tls and env_secret:
        refs.append({"parameter": "ca", "name": env_secret, "key": "REDIS_TLS_CA"})
        # Not a secret: the pods carry REDIS_TLS=enable (manifests.py), which KEDA reads from the Deployment.
        spec["env"] = [{"parameter": "tls", "name": "REDIS_TLS", "containerName": "node"}]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": TRIGGER_AUTH, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def keda_objects(
    app: EdgeApp, deployments: dict[str, dict[str, Any]], namespace: str, labels: dict[str, str],
    target: RedisTarget, auth: tuple[str, str] | None, env_secret: str | None, prometheus_url: str | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The app's KEDA objects; each scaled node's Deployment (in `deployments`, by node) loses its `replicas`.

    `auth` is the Secret and key holding the Redis password the pods use (None: the Redis asks for none).
    """
    scaled = autoscaled(app)
    if not scaled:
        return []
    objects: list[dict[str, Any]] = []
    if auth is not None:
        objects.append(trigger_authentication(namespace, labels, auth, env_secret, target.tls))
    for spec in scaled:
        deployment = deployments[spec.name]
        deployment["spec"].pop("replicas", None)  # KEDA's from now on: a deploy must not reset it
        name = deployment["metadata"]["name"]
        obj = scaled_object(app, spec, name, namespace, {**deployment["metadata"]["labels"]}, target, prometheus_url)
        if auth is None:
            for trig in obj["spec"]["triggers"]:
                trig.pop("authenticationRef", None)
        objects.append(obj)
    return objects
