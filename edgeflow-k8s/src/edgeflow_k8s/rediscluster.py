"""A small Redis Cluster for an app, when `edgeflow deploy --redis-cluster N` asks for one.

N masters with one replica each: a StatefulSet of redis-server --cluster-enabled pods with stable names (a headless
Service gives each a DNS name; each announces it, so clients are sent to names, not to pod IPs that change), each
with its own volume (nodes.conf and the append-only file survive a restart, and with them the node's place in the
cluster), and a Job that joins them once with `redis-cli --cluster create` (it does nothing when the cluster is
already up). The password, if any, is REDIS_PASSWORD in the app's env Secret: the servers require it, the nodes
and KEDA read it from the same Secret.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edgeflow.errors import ConfigurationError

from .security import PASSWORD_KEY

__all__ = [
    "BUS_PORT",
    "CLUSTER_NAME",
    "IMAGE",
    "MAX_SHARDS",
    "PORT",
    "cluster_addresses",
    "cluster_objects",
    "cluster_url",
]

CLUSTER_NAME = "redis-cluster"
IMAGE = "redis:7.2-alpine"
PORT = 6379
BUS_PORT = 16379
MAX_SHARDS = 64
# Startup nodes named in REDIS_URL: any one answering will do to find the others.
_STARTUP_NODES = 3

_SERVER = """\
exec redis-server --port {port} --cluster-enabled yes --cluster-config-file /data/nodes.conf \\
  --cluster-node-timeout 5000 --cluster-announce-hostname "$POD_NAME.{svc}.$POD_NAMESPACE.svc" \\
  --cluster-preferred-endpoint-type hostname --dir /data --save '' {persistence} \\
  ${{REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"}}
"""

# `redis-cli --cluster create` takes IP addresses: resolve the pods' names first (they are up by then).
_CREATE = """\
set -e
hosts=""
for i in $(seq 0 {last}); do
  h="{svc}-$i.{svc}.$POD_NAMESPACE.svc"
  until redis-cli -h "$h" -p {port} ping 2>/dev/null | grep -q PONG; do echo "waiting for $h"; sleep 2; done
  hosts="$hosts $(getent hosts "$h" | awk '{{print $1}}'):{port}"
done
if redis-cli -h "{svc}-0.{svc}.$POD_NAMESPACE.svc" -p {port} cluster info | grep -q cluster_state:ok; then
  echo "the cluster is up already"; exit 0
fi
redis-cli --cluster create $hosts --cluster-replicas {replicas} --cluster-yes
"""


def _host(i: int, namespace: str) -> str:
    return f"{CLUSTER_NAME}-{i}.{CLUSTER_NAME}.{namespace}.svc"


def cluster_addresses(shards: int, namespace: str) -> list[str]:
    """The `host:port` of the first pods, the cluster's startup nodes."""
    return [f"{_host(i, namespace)}:{PORT}" for i in range(min(_STARTUP_NODES, shards * 2))]


def cluster_url(shards: int, namespace: str) -> str:
    """The REDIS_URL the nodes use (no password: REDIS_PASSWORD comes from the Secret)."""
    return "redis+cluster://" + ",".join(cluster_addresses(shards, namespace)) + "/"


def _secret_env(name: str, secret: str) -> list[dict[str, Any]]:
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}}}]


def cluster_objects(
    shards: int, namespace: str, labels: dict[str, str], selector: dict[str, str], node_selector: dict[str, str],
    password_secret: str, durable: bool, budget_mb: int, storage: str = "1Gi",
) -> list[dict[str, Any]]:  # fmt: skip
    """The StatefulSet, its headless Service and the Job that creates the cluster: `shards` masters, a replica each."""
    if not isinstance(shards, int) or not 3 <= shards <= MAX_SHARDS:
        raise ConfigurationError(
            f"--redis-cluster {shards!r}: a Redis Cluster needs 3 to {MAX_SHARDS} masters (redis-cli --cluster "
            "create refuses fewer); for one shard, deploy without --redis-cluster"
        )
    pods = shards * 2
    persistence = "--appendonly yes --appendfsync everysec" if durable else "--appendonly no"
    if durable:
        persistence += f" --maxmemory {budget_mb}mb --maxmemory-policy noeviction"
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        *_secret_env("REDIS_PASSWORD", password_secret),
        *_secret_env("REDISCLI_AUTH", password_secret),  # redis-cli reads it: the probes and the Job need no argument
    ]
    container = {
        "name": "redis",
        "image": IMAGE,
        "command": ["sh", "-c", _SERVER.format(port=PORT, svc=CLUSTER_NAME, persistence=persistence)],
        "env": env,
        "ports": [
            {"name": "redis", "containerPort": PORT, "protocol": "TCP"},
            {"name": "bus", "containerPort": BUS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "-p", str(PORT), "ping"]},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "initialDelaySeconds": 10, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod_labels = {**labels}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": CLUSTER_NAME, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "serviceName": CLUSTER_NAME,
            "replicas": pods,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "nodeSelector": dict(node_selector),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
                }
            ],
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": CLUSTER_NAME, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",
            # The Job joins the pods by name before they are ready (a node is ready once it is in the cluster).
            "publishNotReadyAddresses": True,
            "selector": dict(selector),
            "ports": [
                {"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"},
                {"name": "bus", "port": BUS_PORT, "targetPort": "bus", "protocol": "TCP"},
            ],
        },
    }
    script = _CREATE.format(last=pods - 1, svc=CLUSTER_NAME, port=PORT, replicas=1)
    job_container = {
        "name": "create",
        "image": IMAGE,
        "command": ["sh", "-c", script],
        "env": [env[1], *_secret_env("REDISCLI_AUTH", password_secret)],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
    }
    # A Job's template can't change once made: its name carries a digest of what it runs.
    digest = hashlib.sha256(json.dumps(job_container, sort_keys=True).encode()).hexdigest()[:8]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{CLUSTER_NAME}-create-{digest}", "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": 20,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": {k: v for k, v in labels.items() if k != "app.kubernetes.io/name"}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "nodeSelector": dict(node_selector),
                    "containers": [job_container],
                },
            },
        },
    }
    return [headless, statefulset, job]
