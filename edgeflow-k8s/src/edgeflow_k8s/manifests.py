"""Render an app as Kubernetes objects: plain dicts, one list per deploy, no text templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from edgeflow.broker import ServiceSpec
from edgeflow.errors import ConfigurationError
from edgeflow.plugins import get_plugin_manager

from .availability import disruption_budgets, with_resources
from .errors import InvalidNameError
from .keda import keda_objects
from .names import check_label_value, k8s_name, k8s_names
from .probes import gateway_readiness
from .rediscluster import BUS_PORT as CLUSTER_BUS_PORT
from .rediscluster import CLUSTER_NAME, cluster_objects
from .rediscluster import PORT as CLUSTER_PORT
from .security import PASSWORD_KEY, redis_secret_name, secure
from .telemetry import DEFAULT_PORT as METRICS_PORT
from .topology import external_target, gateway_env_vars, rendered_target

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp, NodeSpec

__all__ = [
    "APP_DIR",
    "FIELD_MANAGER",
    "GRACE_SECONDS",
    "INFRA_SELECTOR",
    "RenderOptions",
    "app_selector",
    "render",
]

FIELD_MANAGER = "edgeflow"
APP_DIR = "/app"
# The runner stops a node within 5 s of SIGTERM; 10 s leaves room before the kubelet's SIGKILL.
GRACE_SECONDS = 10
INFRA_SELECTOR = {"edgeflow.io/role": "infra"}
DEVICE_LABEL = "edgeflow.io/device"
NODE_LABEL = "edgeflow.io/node"
APP_LABEL = "edgeflow.io/app"
GATEWAY_HTTP_PORT = 8000
GATEWAY_TCP_PORT = 8080
NODE_PORT_RANGE = range(30000, 32768)
METRICS_EXPORTER = "k8s"


@dataclass(frozen=True)
class RenderOptions:
    """What a deploy adds to the app: where the image is, which namespace, which Secret holds credentials."""

    image: str
    namespace: str
    app_file: str = "main.py"
    env_secret: str | None = None
    pull_secret: str | None = None
    #: A Redis outside the app (`redis://`, `rediss://`, `redis+cluster://`), no password in it; None: render one.
    redis_url: str | None = None
    #: Render a Redis Cluster of this many masters (each with a replica) instead of one Redis; 0: don't.
    redis_cluster: int = 0
    #: The major version of an outside Redis (KEDA's lag trigger needs 7).
    redis_version: int = 7
    #: A Prometheus that scrapes the pods: nodes with realtime inputs scale on their offered load through it.
    prometheus_url: str | None = None


def app_selector(app_name: str) -> str:
    """Return the label selector that finds every object EdgeFlow deployed for `app_name`."""
    return f"{APP_LABEL}={app_name},app.kubernetes.io/managed-by=edgeflow"


def _labels(app: str, name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": app,
        "app.kubernetes.io/managed-by": "edgeflow",
        APP_LABEL: app,
    }


def _selector(app: str, name: str) -> dict[str, str]:
    return {APP_LABEL: app, "app.kubernetes.io/name": name}


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def _env(name: str, value: str | int) -> dict[str, str]:
    return {"name": name, "value": str(value)}


def _requests(cpu: str, memory: str) -> dict[str, Any]:
    # Requests only: limits would OOM-kill a node on a burst of large frames, and edge machines differ a lot.
    return {"requests": {"cpu": cpu, "memory": memory}}


def _deployment(
    meta: dict[str, Any], selector: dict[str, str], replicas: int, pod: dict[str, Any], annotations: dict[str, str]
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": dict(meta["labels"])}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


def durable_budget_mb(app: EdgeApp) -> int:
    """MiB a Redis needs for the app's durable links: each stream's byte budget, the dead letters, some room."""
    streams: dict[tuple[str, str], int] = {}
    targets = set()
    for ln in app.links:
        if ln.qos == "durable":
            key = (ln.topic, ln.variant)
            streams[key] = min(streams.get(key, ln.max_bytes), ln.max_bytes)
            targets.add(ln.target)
    return (sum(streams.values()) >> 20) + 64 * len(targets) + 128


def _redis(app: str, svc: ServiceSpec, namespace: str, durable: bool, budget_mb: int = 0) -> list[dict[str, Any]]:
    name = k8s_name(svc.name, "broker service")
    labels = _labels(app, name, "broker")
    labels["edgeflow.io/broker-role"] = check_label_value(svc.role, "broker role")
    selector = _selector(app, name)
    container = {
        "name": "redis",
        "image": svc.image,
        # Realtime streams are transient: no snapshots, so a restart never replays stale frames. An app with
        # durable links keeps an append-only file (in the pod's emptyDir), so a Redis restart loses nothing.
        "args": [
            "redis-server",
            "--port",
            str(svc.port),
            "--save",
            "",
            *(["--appendonly", "yes", "--appendfsync", "everysec"] if durable else ["--appendonly", "no"]),
            # Durable frames must never be evicted: Redis refuses writes when full (the producers wait, counted)
            # and its memory is bounded by the links' byte budgets.
            *(["--maxmemory", f"{budget_mb}mb", "--maxmemory-policy", "noeviction"] if durable else []),
            *svc.args,
        ],
        "ports": [{"name": "redis", "containerPort": svc.port, "protocol": "TCP"}],
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "-p", str(svc.port), "ping"]},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "initialDelaySeconds": 5, "periodSeconds": 10},
        "resources": _requests("100m", "128Mi"),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = {
        "nodeSelector": dict(INFRA_SELECTOR),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    deployment = _deployment(_meta(name, namespace, labels), selector, 1, pod, {})
    # One Redis with its data in an emptyDir: never two at once, so replace it rather than roll it.
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "redis", "port": svc.port, "targetPort": "redis", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def _gateway_ports(spec: NodeSpec) -> tuple[int, int, int | None]:
    tcp = int(spec.params.get("tcp_port", GATEWAY_TCP_PORT))
    http = GATEWAY_HTTP_PORT  # the seed's WebInterface listens on settings.GATEWAY_HTTP_PORT, set below
    node_port = spec.params.get("node_port")
    if node_port is not None:
        if not isinstance(node_port, int) or isinstance(node_port, bool) or node_port not in NODE_PORT_RANGE:
            raise ConfigurationError(
                f"node {spec.name!r}: node_port={node_port!r} must be an int from 30000 to 32767 "
                "(the cluster's NodePort range)"
            )
    return tcp, http, node_port


def _distinct_node_ports(gateways: dict[str, tuple[int, int, int | None]]) -> None:
    seen: dict[int, str] = {}
    for name, (_, _, node_port) in gateways.items():
        if node_port is not None and node_port in seen:
            raise ConfigurationError(
                f"gateways {seen[node_port]!r} and {name!r} both ask for node_port={node_port}: give each its own"
            )
        if node_port is not None:
            seen[node_port] = name


def _node(
    app: EdgeApp, spec: NodeSpec, name: str, options: RenderOptions, env: list[dict[str, Any]], app_label: str
) -> list[dict[str, Any]]:
    labels = _labels(app_label, name, spec.type)
    labels[NODE_LABEL] = spec.name
    if spec.device:
        labels[DEVICE_LABEL] = check_label_value(spec.device, f"node {spec.name!r}: device")
    selector = _selector(app_label, name)
    is_gateway = spec.type == "gateway"
    env = [*env, _env("NODE_NAME", spec.name), _env("EDGEFLOW_METRICS", METRICS_EXPORTER)]
    ports: list[dict[str, Any]] = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    # Nodes serve no HTTP of their own; the k8s telemetry exporter answers /healthz while the runner reports.
    readiness: dict[str, Any] = {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5}
    liveness: dict[str, Any] = {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "initialDelaySeconds": 15,
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    objects: list[dict[str, Any]] = []
    if is_gateway:
        tcp, http, node_port = _gateway_ports(spec)
        env.append(_env("GATEWAY_HTTP_PORT", http))
        # The probe of the interface the gateway really has (edgeflow_k8s.probes): an httpGet of WebInterface's
        # /ready on its port, which answers without EDGEFLOW_TOKEN and then says only ready or not.
        readiness, served = gateway_readiness(app, spec, {e["name"]: e["value"] for e in env if "value" in e})
        http = served or http
        ports += [
            {"name": "http", "containerPort": http, "protocol": "TCP"},
            {"name": "tcp", "containerPort": tcp, "protocol": "TCP"},
        ]
        http_port: dict[str, Any] = {"name": "http", "port": http, "targetPort": "http", "protocol": "TCP"}
        if node_port is not None:
            http_port["nodePort"] = node_port
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(name, options.namespace, labels),
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [{"name": "tcp", "port": tcp, "targetPort": "tcp", "protocol": "TCP"}],
                    # The gateway is ready once frames arrive, and they arrive through this Service: it must
                    # reach the pod before it is ready.
                    "publishNotReadyAddresses": True,
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(f"{name}-http", options.namespace, labels),
                "spec": {"type": "NodePort", "selector": selector, "ports": [http_port]},
            },
        ]
    container: dict[str, Any] = {
        "name": "node",
        "image": options.image,
        "workingDir": APP_DIR,
        # One replica per pod: Kubernetes scales the pods, so `--replicas 1` stops the runner from multiplying them.
        "command": ["python", options.app_file, "--node", spec.name, "--replicas", "1"],
        "env": env,
        "ports": ports,
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "resources": _requests("100m", "256Mi" if is_gateway else "128Mi"),
    }
    if options.env_secret:
        # Credentials (REDIS_URL with a password, EDGEFLOW_TOKEN) come from a Secret, never from the manifest.
        container["envFrom"] = [{"secretRef": {"name": options.env_secret, "optional": True}}]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # Service links would inject REDIS_PORT=tcp://... and break the integer port EdgeFlow expects.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [container],
    }
    node_selector = dict(INFRA_SELECTOR) if is_gateway else {}
    if spec.device:
        node_selector[DEVICE_LABEL] = spec.device
    if node_selector:
        pod["nodeSelector"] = node_selector
    if options.pull_secret:
        pod["imagePullSecrets"] = [{"name": options.pull_secret}]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    return [_deployment(_meta(name, options.namespace, labels), selector, spec.replicas, pod, annotations), *objects]


def _password_ref(app: EdgeApp, options: RenderOptions) -> tuple[str, str] | None:
    """The Secret and key of the control Redis's password: the app's own for a Redis it renders, else the user's."""
    if options.redis_url:
        return (options.env_secret, "REDIS_PASSWORD") if options.env_secret else None
    return redis_secret_name(app.name), PASSWORD_KEY


def render(app: EdgeApp, options: RenderOptions) -> list[dict[str, Any]]:
    """Return the Namespace, the broker's Redis servers and one Deployment per node, ready to apply in order."""
    namespace = options.namespace
    if k8s_name(namespace, "namespace") != namespace:
        raise InvalidNameError(
            f"namespace {namespace!r} is not a Kubernetes name; use {k8s_name(namespace, 'namespace')!r}",
            name=namespace,
        )
    if PurePosixPath(options.app_file).name != options.app_file:
        raise ConfigurationError(f"app_file {options.app_file!r} must be a file name inside the app's folder")
    app_label = check_label_value(app.name, "app name")
    answer = get_plugin_manager().hook.broker_services(broker=app.broker, app=app)
    services: list[ServiceSpec] = list(answer or [])
    if not services:
        raise ConfigurationError(
            f"the broker {type(app.broker).__name__} names no servers to deploy (its broker_services hook answered "
            "nothing); install the plugin that provides it"
        )
    target = external_target(options.redis_url, options.redis_cluster, namespace, options.redis_version)
    if target is not None:  # the control plane is a Redis outside the app, or a cluster rendered below
        services = [s for s in services if s.role != "control"]
    service_names = [k8s_name(s.name, "broker service") for s in services]
    gateway_services = [f"{k8s_name(s.name)}-http" for s in app.nodes.values() if s.type == "gateway"]
    names = k8s_names(app.nodes, reserved=[*service_names, *gateway_services])
    gateways = {s.name: _gateway_ports(s) for s in app.nodes.values() if s.type == "gateway"}
    _distinct_node_ports(gateways)

    env: list[dict[str, Any]] = []
    for svc, svc_name in zip(services, service_names, strict=True):
        env += [_env(svc.host_env, svc_name), _env(svc.port_env, svc.port)]
    if target is not None:
        env.append(_env("REDIS_URL", target.url))
        if target.tls:
            env.append(_env("REDIS_TLS", "enable"))  # for KEDA's TriggerAuthentication (keda.py)
    env += gateway_env_vars(app, names, {name: tcp for name, (tcp, _, _) in gateways.items()})
    env.append(_env("PYTHONUNBUFFERED", "1"))

    ns_labels = {"app.kubernetes.io/managed-by": "edgeflow", APP_LABEL: app_label}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": ns_labels}}
    ]
    for svc in services:
        durable = any(ln.qos == "durable" for ln in app.links)
        objects += _redis(app_label, svc, namespace, durable=durable, budget_mb=durable_budget_mb(app))
    if options.redis_cluster:
        labels = {**_labels(app_label, CLUSTER_NAME, "broker"), "edgeflow.io/broker-role": "control"}
        objects += cluster_objects(
            options.redis_cluster, namespace, labels, _selector(app_label, CLUSTER_NAME), INFRA_SELECTOR,
            redis_secret_name(app.name), any(ln.qos == "durable" for ln in app.links), durable_budget_mb(app),
        )  # fmt: skip
    for spec in app.nodes.values():
        objects += _node(app, spec, names[spec.name], options, env, app_label)
    if target is None:
        control = next((s for s in services if s.role == "control"), services[0])
        target = rendered_target(k8s_name(control.name, "broker service"), control.port, control.image)
    deployments = {n: o for n in app.nodes for o in objects if o["kind"] == "Deployment" and
                   o["metadata"]["name"] == names[n]}  # fmt: skip
    # Resources, disruption budgets, autoscaling and the hardening (availability, keda, security).
    objects = with_resources(app, objects)
    objects += disruption_budgets(objects)
    auth = _password_ref(app, options)
    objects += keda_objects(app, deployments, namespace, ns_labels, target, auth, options.env_secret,
                            options.prometheus_url)  # fmt: skip
    ports = [s.port for s in services] + ([CLUSTER_PORT, CLUSTER_BUS_PORT] if options.redis_cluster else [])
    return secure(app, objects, services, service_names, app_label, ports, control_rendered=not options.redis_url)
