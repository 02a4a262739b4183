"""Rendered manifests: schema-valid for several Kubernetes versions, and following the seed's scheduling rules.

No cluster here: the objects are checked against the official OpenAPI schemas that kubernetes-validate ships
(strict mode, so a misspelt field fails), then for the structure a cluster would depend on.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgeflow import EdgeApp
from edgeflow.errors import ConfigurationError
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode
from edgeflow_k8s import InvalidNameError, RenderOptions, k8s_name, render

from .conftest import K8S_VERSIONS, validate_all

IMAGE = "registry.local:5000/test-distributed-system:20260101-000000-abc"


def _by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.fixture
def seed_objects(seed_app: EdgeApp) -> list[dict[str, Any]]:
    return render(seed_app, RenderOptions(IMAGE, "demo"))


@pytest.fixture
def dual_objects(dual_app: EdgeApp) -> list[dict[str, Any]]:
    return render(dual_app, RenderOptions(IMAGE, "demo"))


def test_seed_manifests_pass_the_schemas_of_several_kubernetes_versions(seed_objects: list[dict[str, Any]]) -> None:
    """The seed app's objects validate strictly against Kubernetes 1.27, 1.31 and 1.37 schemas."""
    assert [o["kind"] for o in seed_objects].count("Deployment") == 4  # redis + 3 nodes
    validate_all(seed_objects)


def test_dual_broker_manifests_pass_the_schemas(dual_objects: list[dict[str, Any]]) -> None:
    """With a dual-Redis broker (a test stand-in answering `broker_services`), every object still validates."""
    validate_all(dual_objects)


def test_schema_validation_catches_a_misspelt_field(seed_objects: list[dict[str, Any]]) -> None:
    """The strict validation used above does reject an unknown field, so its passing means something."""
    broken = [dict(seed_objects[1], spec={**seed_objects[1]["spec"], "replica": 2})]
    with pytest.raises(pytest.fail.Exception, match="replica"):
        validate_all(broken, K8S_VERSIONS[:1])


def test_every_selector_matches_its_pod_labels(dual_objects: list[dict[str, Any]]) -> None:
    """Each Deployment's selector picks its own template, and each Service's selector exactly one Deployment."""
    deployments = _by(dual_objects, "Deployment")
    for d in deployments.values():
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        others = [o for o in deployments.values() if o is not d]
        assert not any(selector.items() <= o["spec"]["template"]["metadata"]["labels"].items() for o in others)
    for svc in _by(dual_objects, "Service").values():
        sel = svc["spec"]["selector"].items()
        hits = [n for n, d in deployments.items() if sel <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(hits) == 1, svc["metadata"]["name"]
        pod = deployments[hits[0]]["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"] for p in pod["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_scheduling_follows_the_seed(seed_objects: list[dict[str, Any]]) -> None:
    """Redis and the gateway go to `edgeflow.io/role=infra` machines, nodes to their `edgeflow.io/device`."""
    deployments = _by(seed_objects, "Deployment")
    selectors = {n: d["spec"]["template"]["spec"].get("nodeSelector") for n, d in deployments.items()}
    assert selectors == {
        "redis": {"edgeflow.io/role": "infra"},
        "fake-camera": {"edgeflow.io/device": "camera"},
        "gpu-processor": {"edgeflow.io/device": "gpu"},
        "gateway": {"edgeflow.io/role": "infra"},
    }


def test_nodes_run_one_replica_per_pod_with_the_declared_replica_count(seed_objects: list[dict[str, Any]]) -> None:
    """`replicas=2` becomes two pods, each running `python main.py --node NAME --replicas 1`."""
    deployments = _by(seed_objects, "Deployment")
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {
        "redis": 1,
        "fake-camera": 1,
        "gpu-processor": 2,
        "gateway": 1,
    }
    gpu = deployments["gpu-processor"]
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "main.py", "--node", "gpu_processor", "--replicas", "1"]
    assert container["image"] == IMAGE
    assert container["workingDir"] == "/app"
    assert gpu["metadata"]["labels"]["edgeflow.io/node"] == "gpu_processor"
    pod = gpu["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 10
    assert pod["enableServiceLinks"] is False
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert {"readinessProbe", "livenessProbe"} <= container.keys()


def test_environment_points_every_node_at_its_servers(seed_objects: list[dict[str, Any]]) -> None:
    """Nodes get REDIS_HOST/PORT of the Redis Service, GATEWAY_HOST/TCP_PORT of the gateway's, and NODE_NAME."""
    for name, d in _by(seed_objects, "Deployment").items():
        if name == "redis":
            continue
        env = _env(d)
        assert env["REDIS_HOST"] == "redis" and env["REDIS_PORT"] == "6379"
        assert env["GATEWAY_HOST"] == "gateway" and env["GATEWAY_TCP_PORT"] == "8080"
        assert env["NODE_NAME"] == d["metadata"]["labels"]["edgeflow.io/node"]
        assert "DATA_REDIS_HOST" not in env
    assert _env(_by(seed_objects, "Deployment")["gateway"])["GATEWAY_HTTP_PORT"] == "8000"


def test_dual_broker_adds_a_data_redis_and_its_environment(dual_objects: list[dict[str, Any]]) -> None:
    """The broker's `broker_services` answer decides the Redis servers: `redis-data` on 6380 with DATA_REDIS_*."""
    deployments, services = _by(dual_objects, "Deployment"), _by(dual_objects, "Service")
    assert {"redis", "redis-data"} <= deployments.keys() & services.keys()
    assert services["redis-data"]["spec"]["ports"][0]["port"] == 6380
    data = deployments["redis-data"]["spec"]["template"]["spec"]
    assert data["nodeSelector"] == {"edgeflow.io/role": "infra"}
    assert data["containers"][0]["args"][:3] == ["redis-server", "--port", "6380"]
    env = _env(deployments["gpu-processor"])
    assert env["DATA_REDIS_HOST"] == "redis-data" and env["DATA_REDIS_PORT"] == "6380"


def test_gateway_services_nodeport_for_http_clusterip_for_tcp(seed_objects: list[dict[str, Any]]) -> None:
    """The dashboard is a NodePort on the seed's `node_port=30080`; the TCP intake stays inside the cluster."""
    services = _by(seed_objects, "Service")
    http, tcp = services["gateway-http"]["spec"], services["gateway"]["spec"]
    assert http["type"] == "NodePort"
    assert http["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}]
    assert tcp["type"] == "ClusterIP" and tcp["ports"][0]["port"] == 8080
    assert tcp["publishNotReadyAddresses"] is True, "frames reach the gateway before it is ready, through this"
    probes = _by(seed_objects, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8000}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_labels_and_prometheus_annotations(seed_objects: list[dict[str, Any]]) -> None:
    """Every object carries app.kubernetes.io/* labels; node pods are annotated for Prometheus on their port."""
    for obj in seed_objects[1:]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "edgeflow"
        assert labels["app.kubernetes.io/instance"] == "test-distributed-system"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"} <= labels.keys()
    camera = _by(seed_objects, "Deployment")["fake-camera"]["spec"]["template"]
    annotations = camera["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    port = int(annotations["prometheus.io/port"])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in camera["spec"]["containers"][0]["ports"]


def test_no_secret_reaches_the_manifests(seed_app: EdgeApp) -> None:
    """Credentials are referenced through an optional Secret, never written as values."""
    objects = render(seed_app, RenderOptions(IMAGE, "demo", env_secret="edgeflow-env"))
    container = _by(objects, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "edgeflow-env", "optional": True}}]
    env = {e["name"]: e for e in container["env"]}
    assert "EDGEFLOW_TOKEN" not in env
    # The Redis password comes from its Secret; the URL refers to it, for the kubelet to fill in.
    assert env["REDIS_PASSWORD"] == {
        "name": "REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "test-distributed-system-redis-auth", "key": "password"}},
    }
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert not [o for o in objects if o["kind"] == "Secret"], "the Secret is made at deploy time, never rendered"


@pytest.mark.parametrize(
    ("name", "expected"), [("gpu_processor", "gpu-processor"), ("Cam.Front", "cam-front"), ("a1", "a1")]
)
def test_names_map_to_dns_1123(name: str, expected: str) -> None:
    """Underscores and dots become dashes, upper case becomes lower case."""
    assert k8s_name(name) == expected


def _app(*names: str) -> EdgeApp:
    app = EdgeApp("naming")
    for i, n in enumerate(names):

        @app.node(name=n, type="producer" if i == 0 else "consumer")
        class Node(ProducerNode if i == 0 else ConsumerNode):  # type: ignore[misc]
            def produce(self) -> bytes:
                return b""

            def process(self, data: bytes) -> bytes:
                return data

    return app


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (("camera_",), "maps to 'camera-'"),
        (("gpu_proc", "gpu-proc"), "already used by node 'gpu_proc'"),
        (("redis",), "EdgeFlow's own 'redis'"),
    ],
)
def test_invalid_or_clashing_node_names_are_clear_errors(names: tuple[str, ...], match: str) -> None:
    """A name that can't be a Kubernetes name, or clashes after mapping, says which and what to do."""
    with pytest.raises(InvalidNameError, match=match) as info:
        render(_app(*names), RenderOptions(IMAGE, "demo"))
    assert "rename" in str(info.value)


def test_node_port_outside_the_cluster_range_is_an_error() -> None:
    """A `node_port` Kubernetes would refuse is reported before anything is sent."""
    app = _app("camera")

    @app.node(name="gateway", type="gateway", node_port=8080)
    class Gateway(GatewayNode):
        pass

    with pytest.raises(ConfigurationError, match="30000 to 32767"):
        render(app, RenderOptions(IMAGE, "demo"))


def test_bad_namespace_is_an_error(seed_app: EdgeApp) -> None:
    """A namespace that is not a DNS-1123 label is refused with the name to use instead."""
    with pytest.raises(InvalidNameError, match="use 'my-ns'"):
        render(seed_app, RenderOptions(IMAGE, "My_NS"))


def test_real_dual_plugin_and_durable_links_shape_the_redis_servers() -> None:
    """With the real edgeflow-dualredis plugin: `redis-data` refuses to evict, and durable links turn on AOF."""
    from edgeflow import plugins
    from edgeflow.nodes import SinkNode
    from edgeflow_dualredis import DualRedisBroker
    from edgeflow_dualredis import plugin as dual_plugin

    pm = plugins.get_plugin_manager()
    pm.register(dual_plugin)
    try:
        app = EdgeApp("imu-logger", broker=DualRedisBroker())

        @app.node(name="imu", type="producer", fps=100)
        class Imu(ProducerNode):
            def produce(self) -> Any:
                return {"ax": 0.0}

        @app.node(name="logger", type="sink")
        class Logger(SinkNode):
            def process(self, data: Any) -> None:
                pass

        app.link("imu").to("logger", qos="durable")
        objects = render(app, RenderOptions(IMAGE, "demo"))
    finally:
        pm.unregister(dual_plugin)
    validate_all(objects, K8S_VERSIONS)
    deployments = _by(objects, "Deployment")
    control = deployments["redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    data = deployments["redis-data"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--appendonly" in control and control[control.index("--appendonly") + 1] == "yes"
    assert data[data.index("--maxmemory-policy") + 1] == "noeviction"
    # Durable frames are never evicted, and the memory they may take is what the links' byte budgets add up to:
    # one durable link of 512 MiB, its target's dead letters (64 MiB) and 128 MiB of room.
    assert control[control.index("--maxmemory") + 1] == "704mb"
    assert control[control.index("--maxmemory-policy") + 1] == "noeviction"
    seed_like = render(EdgeApp("rt-only"), RenderOptions(IMAGE, "demo"))
    args = _by(seed_like, "Deployment")["redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "no", "realtime-only apps keep no append-only file"
    assert "--maxmemory" not in args
