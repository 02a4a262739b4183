"""What makes the rendered app safe to run on a shared cluster, applied to the objects `render()` made.

- Every pod runs as a fixed unprivileged user (nodes 65532, the image's `USER`; Redis 999, its image's `redis`
  user), with no privilege escalation, every Linux capability dropped and the runtime's default seccomp profile.
- Root filesystems are read-only. What must be writable is an emptyDir: `/tmp` for every node (HOME points there),
  `/data` for Redis (its append-only file), and the folder of each sink's `path` (lost with the pod: mount a
  PersistentVolumeClaim there for data that must outlive it). A sink that would write into the app's own folder
  can't (it is read-only, and root's) and is an error that says how to give it a folder.
- Redis asks for a password, `requirepass`, from the Secret `<app>-redis-auth` (key `password`), which `edgeflow
  deploy` creates once with a random value and never prints; the pods get it from the same Secret, as REDIS_URL
  (DATA_REDIS_URL, ...), built by the kubelet from `$(REDIS_PASSWORD)`. The manifests name the Secret only. A Redis
  Cluster it renders (`--redis-cluster`) uses the same Secret; a Redis outside the app (`--redis-url`) is the user's,
  and so is its password (REDIS_PASSWORD in the env Secret).
- A NetworkPolicy lets only the app's own pods reach its Redis servers (and KEDA's operator, when the app is
  scaled by a KEDA ScaledObject), on their ports; everything else in the cluster is refused.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from edgeflow.errors import ConfigurationError

from .names import k8s_name

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp
    from edgeflow.broker import ServiceSpec

__all__ = [
    "NODE_USER",
    "PASSWORD_ENV",
    "PASSWORD_KEY",
    "REDIS_USER",
    "RENDERED_PASSWORD_ENV",
    "network_policy",
    "redis_secret_name",
    "secure",
]

#: The image's `USER` (edgeflow_k8s.image) and the nodes' runAsUser: any unprivileged uid, the same everywhere.
NODE_USER = 65532
#: The `redis` user of the official Redis (and Valkey) images.
REDIS_USER, REDIS_GROUP = 999, 1000
PASSWORD_KEY = "password"
PASSWORD_ENV = "REDIS_PASSWORD"
#: The app's own password when the control Redis is the user's (their REDIS_PASSWORD): for the servers it renders.
RENDERED_PASSWORD_ENV = "EDGEFLOW_REDIS_AUTH"
APP_DIR = PurePosixPath("/app")
TMP_LIMIT = "256Mi"
KEDA_NAMESPACE = "keda"


def redis_secret_name(app_name: str) -> str:
    """Return the name of the Secret holding the app's Redis password."""
    return f"{k8s_name(app_name, 'app')}-redis-auth"


def _pod_context(user: int, group: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_CONTAINER_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _password_env(secret: str, name: str = PASSWORD_ENV) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}}}


def _url_env(host_env: str) -> str:
    # REDIS_HOST -> REDIS_URL, DATA_REDIS_HOST -> DATA_REDIS_URL: the URL each broker reads before host and port.
    return host_env.removesuffix("_HOST") + "_URL"


def _sink_folder(app: EdgeApp, node: str) -> PurePosixPath | None:
    """The folder a sink node writes into, from its `path` (resolved against the app's folder), or None."""
    spec = app.nodes[node]
    path = spec.params.get("path")
    if spec.type != "sink" or not isinstance(path, str) or not path:
        return None
    from edgeflow.sinks import FileSink

    full = APP_DIR / path
    folder = full if issubclass(spec.cls, FileSink) else full.parent  # FileSink's path is its folder
    if folder == APP_DIR or folder in APP_DIR.parents or ".." in folder.parts:
        raise ConfigurationError(
            f"sink {node!r}: path={path!r} is in the app's folder {APP_DIR}, which its pod can't write (the image's "
            f"files are read-only and root's); give it a folder of its own, e.g. path='data/{PurePosixPath(path).name}'"
            ": `edgeflow deploy` mounts a volume there"
        )
    return folder


def _harden(pod: dict[str, Any], user: int, group: int) -> dict[str, Any]:
    pod["securityContext"] = _pod_context(user, group)
    container: dict[str, Any] = pod["containers"][0]
    container["securityContext"] = dict(_CONTAINER_CONTEXT)
    return container


def _secure_node(app: EdgeApp, node: str, pod: dict[str, Any], services: list[tuple[ServiceSpec, str]],
                 secret: str, password_env: str) -> None:  # fmt: skip
    container = _harden(pod, NODE_USER, NODE_USER)
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_LIMIT}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    folder = _sink_folder(app, node)
    if folder is not None:
        volumes.append({"name": "sink-data", "emptyDir": {}})
        mounts.append({"name": "sink-data", "mountPath": str(folder)})
    pod["volumes"] = [*pod.get("volumes", []), *volumes]
    container["volumeMounts"] = [*container.get("volumeMounts", []), *mounts]
    env = container["env"]
    # Defined before the URLs that refer to it: the kubelet expands $(VAR) from the variables above it only.
    env += [_password_env(secret, password_env), {"name": "HOME", "value": "/tmp"}]
    for svc, host in services:
        env.append({"name": _url_env(svc.host_env), "value": f"redis://:$({password_env})@{host}:{svc.port}/0"})


def _secure_redis(pod: dict[str, Any], secret: str) -> None:
    container = _harden(pod, REDIS_USER, REDIS_GROUP)
    # redis-cli reads REDISCLI_AUTH: the readiness probe authenticates without the password on a command line.
    container["env"] = [
        *container.get("env", []),
        _password_env(secret),
        {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}}},
    ]
    container["args"] = [*container["args"], "--requirepass", f"$({PASSWORD_ENV})"]


def network_policy(app_label: str, namespace: str, ports: list[int], keda: bool) -> dict[str, Any]:
    """Return the NetworkPolicy that lets only the app's pods (and KEDA's, if `keda`) reach its Redis servers."""
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": {"edgeflow.io/app": app_label, "app.kubernetes.io/managed-by": "edgeflow"}}}
    ]
    if keda:
        # A ScaledObject's Redis scaler connects from the KEDA operator's own namespace.
        peers.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KEDA_NAMESPACE}}})
    labels = {
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/instance": app_label,
        "app.kubernetes.io/component": "broker",
        "app.kubernetes.io/part-of": app_label,
        "app.kubernetes.io/managed-by": "edgeflow",
        "edgeflow.io/app": app_label,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{k8s_name(app_label, 'app')}-redis", "namespace": namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": {"edgeflow.io/app": app_label, "app.kubernetes.io/component": "broker"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": p} for p in sorted(set(ports))]}],
        },
    }


def secure(
    app: EdgeApp, objects: list[dict[str, Any]], services: list[ServiceSpec], service_names: list[str], app_label: str,
    ports: list[int] | None = None, control_rendered: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """Harden the rendered `objects` in place as the module docstring says; return them with the NetworkPolicy.

    `ports` are the Redis servers' (default: the services'); with `control_rendered` False the control Redis is the
    user's, and its password (REDIS_PASSWORD) comes from their env Secret, not from the app's own.
    """
    secret = redis_secret_name(app.name)
    pairs = list(zip(services, service_names, strict=True))
    password_env = PASSWORD_ENV if control_rendered else RENDERED_PASSWORD_ENV
    namespace = ""
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        namespace = obj["metadata"]["namespace"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        pod = obj["spec"]["template"]["spec"]
        if labels.get("app.kubernetes.io/component") == "broker":
            if obj["kind"] == "Deployment":
                _secure_redis(pod, secret)
            else:  # the Redis Cluster's servers and the Job that joins them (rediscluster.py) set their password
                _harden(pod, REDIS_USER, REDIS_GROUP)
        elif labels.get("edgeflow.io/node") in app.nodes:
            _secure_node(app, labels["edgeflow.io/node"], pod, pairs, secret, password_env)
    ports = [s.port for s in services] if ports is None else ports
    if not ports or not namespace:
        return objects
    keda = any(o["kind"] == "ScaledObject" for o in objects)
    return [*objects, network_policy(app_label, namespace, ports, keda)]
