"""What `edgeflow deploy` renders to grow an app: KEDA autoscaling on stream lag, a Redis Cluster or one outside the
app, several gateways. Built-in kinds validate against the Kubernetes schemas, KEDA's against keda_schema.py."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from edgeflow import EdgeApp, RedisBroker
from edgeflow.errors import ConfigurationError
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode, SinkNode
from edgeflow_k8s import RenderOptions, render

from .conftest import validate_all
from .keda_schema import validate_keda

IMAGE = "registry.local:5000/scaled:1"
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")


def scaled_app(name: str = "robot", qos: str = "durable", max_replicas: int = 8, **det: Any) -> EdgeApp:
    app = EdgeApp(name, broker=RedisBroker())

    @app.node(name="camera", type="producer", fps=30)
    class Camera(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    @app.node(name="gpu_det", type="consumer", replicas=2, max_replicas=max_replicas, **det)
    class Det(ConsumerNode):
        def process(self, data: Any) -> Any:
            return data

    @app.node(name="store", type="sink", max_replicas=3)
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            return None

    @app.node(name="gateway", type="gateway", node_port=30080)
    class Gateway(GatewayNode):
        pass

    app.link("camera").to("gpu_det", qos=qos).to("store")
    app.link("camera").to("store", codec=None)
    app.link("camera").to("gateway")
    return app


def _by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def _validate(objects: list[dict[str, Any]]) -> None:
    validate_all([o for o in objects if o["kind"] not in KEDA_KINDS])
    for o in objects:
        if o["kind"] in KEDA_KINDS:
            validate_keda(o)


def test_a_scaled_consumer_gets_a_scaled_object_on_its_real_stream_and_group() -> None:
    app = scaled_app()
    objects = render(app, RenderOptions(IMAGE, "robot", env_secret="edgeflow-env"))
    _validate(objects)
    scaled = _by(objects, "ScaledObject")
    assert set(scaled) == {"gpu-det", "store"}
    det = scaled["gpu-det"]["spec"]
    assert (det["scaleTargetRef"]["name"], det["minReplicaCount"], det["maxReplicaCount"]) == ("gpu-det", 2, 8)
    (trigger,) = det["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"] == {"stream": "ef:robot:dur:camera", "consumerGroup": "gpu_det", "address": "redis:6379",
                                   "lagCount": "10", "activationLagCount": "1"}  # fmt: skip
    assert trigger["authenticationRef"] == {"name": "edgeflow-redis"}
    store_streams = {t["metadata"]["stream"] for t in scaled["store"]["spec"]["triggers"]}
    assert store_streams == {"ef:robot:dur:camera", "ef:robot:dur:gpu_det"}, "one trigger per durable input"
    deployments = _by(objects, "Deployment")
    assert "replicas" not in deployments["gpu-det"]["spec"], "KEDA owns the count: a deploy must not reset it"
    assert deployments["camera"]["spec"]["replicas"] == 1
    (auth,) = _by(objects, "TriggerAuthentication").values()
    # The Redis this deploy renders asks for the app's own password (edgeflow_k8s.security): KEDA reads it there.
    password = {"parameter": "password", "name": "robot-redis-auth", "key": "password"}
    assert auth["spec"]["secretTargetRef"] == [password]


def test_redis_before_7_scales_on_pending_entries() -> None:
    objects = render(scaled_app(scale_lag=25), RenderOptions(IMAGE, "robot", redis_url="redis://redis6.infra:6379/0",
                                                             redis_version=6))  # fmt: skip
    _validate(objects)
    (trigger,) = _by(objects, "ScaledObject")["gpu-det"]["spec"]["triggers"]
    assert trigger["metadata"]["pendingEntriesCount"] == "25" and "lagCount" not in trigger["metadata"]
    assert trigger["metadata"]["address"] == "redis6.infra:6379"
    assert "authenticationRef" not in trigger, "no env Secret: nothing to authenticate with"


def test_realtime_inputs_scale_on_offered_load_through_prometheus_or_are_refused() -> None:
    app = scaled_app(qos="realtime")
    with pytest.raises(ConfigurationError, match=r"node 'gpu_det' scales .*realtime links.*--prometheus-url"):
        render(app, RenderOptions(IMAGE, "robot"))
    objects = render(app, RenderOptions(IMAGE, "robot", prometheus_url="http://prometheus.monitoring:9090"))
    _validate(objects)
    (trigger,) = _by(objects, "ScaledObject")["gpu-det"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "0.8"
    query = trigger["metadata"]["query"]
    assert 'edgeflow_dropped_total{node="gpu_det",reason="stale"}' in query and "edgeflow_process_seconds_sum" in query


def test_the_schema_check_catches_what_keda_would_reject() -> None:
    """Numbers where KEDA wants strings, a lag without its activation count, a misspelt field."""
    objects = render(scaled_app(), RenderOptions(IMAGE, "robot"))
    good = _by(objects, "ScaledObject")["gpu-det"]
    bad_number = {
        **good,
        "spec": {
            **good["spec"],
            "triggers": [
                {**good["spec"]["triggers"][0], "metadata": {**good["spec"]["triggers"][0]["metadata"], "lagCount": 10}}
            ],
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(bad_number)
    meta = dict(good["spec"]["triggers"][0]["metadata"])
    del meta["activationLagCount"]
    no_activation = {**good, "spec": {**good["spec"], "triggers": [{**good["spec"]["triggers"][0], "metadata": meta}]}}
    with pytest.raises(AssertionError, match="activationLagCount"):
        validate_keda(no_activation)
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        validate_keda({**good, "spec": {**good["spec"], "maxReplicas": 3}})
    with pytest.raises(AssertionError, match="below"):
        validate_keda({**good, "spec": {**good["spec"], "minReplicaCount": 9}})


def test_a_rendered_redis_cluster_replaces_the_one_redis() -> None:
    app = scaled_app()
    objects = render(app, RenderOptions(IMAGE, "robot", env_secret="edgeflow-env", redis_cluster=3))
    _validate(objects)
    assert "redis" not in _by(objects, "Deployment"), "no single Redis"
    (sts,) = _by(objects, "StatefulSet").values()
    assert sts["spec"]["replicas"] == 6 and sts["spec"]["serviceName"] == "redis-cluster"
    server = " ".join(sts["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--cluster-enabled yes" in server and "--appendonly yes" in server and "cluster-announce-hostname" in server
    assert _by(objects, "Service")["redis-cluster"]["spec"]["clusterIP"] == "None"
    (job,) = _by(objects, "Job").values()
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "redis-cli --cluster create $hosts --cluster-replicas 1 --cluster-yes" in script
    assert job["metadata"]["name"] == _by(render(app, RenderOptions(IMAGE, "robot", env_secret="edgeflow-env",
                                                                    redis_cluster=3)), "Job").popitem()[0]  # fmt: skip
    env = _env(_by(objects, "Deployment")["gpu-det"])
    assert env["REDIS_URL"] == (
        "redis+cluster://redis-cluster-0.redis-cluster.robot.svc:6379,"
        "redis-cluster-1.redis-cluster.robot.svc:6379,redis-cluster-2.redis-cluster.robot.svc:6379/"
    )
    assert "REDIS_HOST" not in env
    (trigger,) = _by(objects, "ScaledObject")["gpu-det"]["spec"]["triggers"]
    assert trigger["type"] == "redis-cluster-streams"
    assert trigger["metadata"]["stream"] == "ef:robot:dur:{robot/camera}", "the cluster's hash-tagged key"
    assert trigger["metadata"]["addresses"].count(":6379") == 3
    # One password for what the deploy renders: the servers, the Job, the nodes and KEDA read the app's own Secret.
    ref = {"name": "robot-redis-auth", "key": "password"}
    pod = sts["spec"]["template"]["spec"]
    password = [e for e in pod["containers"][0]["env"] if e["name"] == "REDIS_PASSWORD"]
    assert password[0]["valueFrom"]["secretKeyRef"] == ref
    job_env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": ref}} in job_env
    node_env = _by(objects, "Deployment")["gpu-det"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}} in node_env
    (auth,) = _by(objects, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "robot-redis-auth", "key": "password"}]
    # Hardened like the one Redis, and reachable only from the app's pods on the client and bus ports.
    assert pod["securityContext"]["runAsNonRoot"] and pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    (policy,) = _by(objects, "NetworkPolicy").values()
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {6379, 16379}


def test_an_outside_redis_is_named_without_its_password() -> None:
    objects = render(scaled_app(), RenderOptions(IMAGE, "robot", redis_url="rediss+cluster://r1.infra:7000,r2.infra:7000",
                                                 env_secret="edgeflow-env"))  # fmt: skip
    _validate(objects)
    assert not _by(objects, "StatefulSet") and "redis" not in _by(objects, "Deployment")
    env = _env(_by(objects, "Deployment")["camera"])
    assert (env["REDIS_URL"], env["REDIS_TLS"]) == ("rediss+cluster://r1.infra:7000,r2.infra:7000", "enable")
    (auth,) = _by(objects, "TriggerAuthentication").values()
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("password", "edgeflow-env", "REDIS_PASSWORD"), ("ca", "edgeflow-env", "REDIS_TLS_CA")}  # fmt: skip
    node_env = _by(objects, "Deployment")["camera"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "REDIS_PASSWORD" not in {e["name"] for e in node_env}, "the user's password comes from their env Secret"
    assert auth["spec"]["env"] == [{"parameter": "tls", "name": "REDIS_TLS", "containerName": "node"}]
    for url in ("redis://:pw@redis:6379/0", "redis+cluster://u:pw@r1:7000"):
        with pytest.raises(ConfigurationError, match="REDIS_PASSWORD") as info:
            render(scaled_app(), RenderOptions(IMAGE, "robot", redis_url=url))
        assert "pw@" not in str(info.value)
    with pytest.raises(ConfigurationError, match="not both"):
        render(scaled_app(), RenderOptions(IMAGE, "robot", redis_url="redis://r:1/0", redis_cluster=3))


def two_gateway_app() -> EdgeApp:
    app = EdgeApp("sites", broker=RedisBroker())

    @app.node(name="camera", type="producer", fps=30)
    class Camera(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    @app.node(name="north", type="gateway", node_port=30081)
    class North(GatewayNode):
        pass

    @app.node(name="south_1", type="gateway", tcp_port=9090, node_port=30082)
    class South(GatewayNode):
        pass

    app.link("camera").to("north")
    app.link("camera").to("south_1")
    return app


def test_two_gateways_each_get_their_services_and_every_pod_their_addresses() -> None:
    objects = render(two_gateway_app(), RenderOptions(IMAGE, "sites"))
    _validate(objects)
    services = _by(objects, "Service")
    assert services["north"]["spec"]["ports"][0]["port"] == 8080
    assert services["south-1"]["spec"]["ports"][0]["port"] == 9090
    assert services["north-http"]["spec"]["ports"][0]["nodePort"] == 30081
    assert services["south-1-http"]["spec"]["ports"][0]["nodePort"] == 30082
    for d in _by(objects, "Deployment").values():
        if d["metadata"]["name"] == "redis":
            continue
        env = _env(d)
        assert (env["GATEWAY_NORTH_HOST"], env["GATEWAY_NORTH_TCP_PORT"]) == ("north", "8080")
        assert (env["GATEWAY_SOUTH_1_HOST"], env["GATEWAY_SOUTH_1_TCP_PORT"]) == ("south-1", "9090")
        assert "GATEWAY_HOST" not in env, "two gateways fed: each is named, none is the gateway"
    south = _by(objects, "Deployment")["south-1"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in south["ports"] if p["name"] == "tcp"} == {9090}


def test_two_gateways_may_not_share_a_node_port() -> None:
    app = two_gateway_app()
    app.nodes["south_1"].params["node_port"] = 30081
    with pytest.raises(ConfigurationError, match="node_port=30081"):
        render(app, RenderOptions(IMAGE, "sites"))


def test_deploy_applies_the_cluster_and_keda_objects_and_prunes_a_scaled_object_no_longer_declared(
    fake_k8s: Any,
) -> None:
    """Through the real kubernetes client against the API emulation (tests/k8s/apiserver.py)."""
    from edgeflow_k8s import KubernetesDeployer
    from edgeflow_k8s.cluster import Cluster
    from edgeflow_k8s.deployer import DeployPlan

    from .conftest import SEED

    def deploy(app: EdgeApp) -> list[str]:
        options = RenderOptions(IMAGE, "robot", env_secret="edgeflow-env", redis_cluster=3)
        plan = DeployPlan(app, SEED, "robot", IMAGE, render(app, options), options)
        return KubernetesDeployer().apply(Cluster.connect(), plan, progress=lambda _: None, interval=0.05)

    deploy(scaled_app())
    assert fake_k8s.names("ScaledObject", "robot") == {"gpu-det", "store"}
    assert fake_k8s.names("TriggerAuthentication", "robot") == {"edgeflow-redis"}
    assert fake_k8s.names("StatefulSet", "robot") == {"redis-cluster"}
    assert len(fake_k8s.names("Job", "robot")) == 1
    _validate([o for o in fake_k8s.applied if o["kind"] != "Namespace"])
    fixed = scaled_app()
    fixed.nodes["gpu_det"].max_replicas = None
    pruned = deploy(fixed)
    assert pruned == ["scaledobject/gpu-det"]
    assert fake_k8s.get("Deployment", "gpu-det", "robot")["spec"]["replicas"] == 2, "a fixed count again"
