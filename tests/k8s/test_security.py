"""The production side of the manifests: securityContext, read-only roots and their emptyDirs, Redis's password,
the NetworkPolicy, PodDisruptionBudgets, per-node resources and GPUs, and the gateway's probe per interface.

No cluster and no CNI here, so the NetworkPolicy is checked by its selectors (no packet is refused by it); the
objects validate strictly against the schemas of the Kubernetes versions of conftest. The Redis password is
tried for real: the rendered Redis arguments and the nodes' REDIS_URL, expanded as the kubelet expands $(VAR),
run a real redis-server that refuses the unauthenticated and takes the nodes' URL and the probe's redis-cli.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any

import pytest
import redis

from edgeflow import EdgeApp
from edgeflow.broker import ServiceSpec
from edgeflow.embedded import find_server_binary, free_port
from edgeflow.errors import ConfigurationError, NodeDefinitionError
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode
from edgeflow.sinks import FileSink, SQLiteSink
from edgeflow_k8s import RenderOptions, render
from edgeflow_k8s.security import network_policy, secure

from .conftest import K8S_VERSIONS, validate_all

IMAGE = "registry.local:5000/app:sha-0123456789abcdef"


def _by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod: dict[str, Any] = _by(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return pod


@pytest.fixture
def seed_objects(seed_app: EdgeApp) -> list[dict[str, Any]]:
    return render(seed_app, RenderOptions(IMAGE, "demo"))


def test_every_pod_runs_unprivileged_on_a_read_only_root(seed_objects: list[dict[str, Any]]) -> None:
    """Non-root with a fixed uid, no escalation, no capabilities, RuntimeDefault seccomp; writable only where an
    emptyDir is mounted."""
    validate_all(seed_objects)
    for name, d in _by(seed_objects, "Deployment").items():
        pod = d["spec"]["template"]["spec"]
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert ctx["runAsUser"] == (999 if name == "redis" else 65532), name
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts == ({"/data": "data"} if name == "redis" else {"/tmp": "tmp"}), name
        assert all("emptyDir" in volumes[v] for v in mounts.values())
        if name != "redis":
            assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "256Mi"}
            assert {"name": "HOME", "value": "/tmp"} in container["env"]


def _sink_app(path: str, cls: type[Any] = SQLiteSink) -> EdgeApp:
    app = EdgeApp("sinks")

    @app.node(name="cam", type="producer")
    class Cam(ProducerNode):
        def produce(self) -> Any:
            return {"x": 1}

    app.node(name="store", type="sink", path=path)(type("Store", (cls,), {}))
    app.link("cam").to("store")
    return app


@pytest.mark.parametrize(
    ("path", "cls", "mount"),
    [("data/frames.db", SQLiteSink, "/app/data"), ("/var/lib/rec/run.db", SQLiteSink, "/var/lib/rec"),
     ("recording/", FileSink, "/app/recording")],
)  # fmt: skip
def test_a_sink_writes_into_a_volume_of_its_own(path: str, cls: type[Any], mount: str) -> None:
    """The folder of a sink's `path` (for FileSink, the path itself) is an emptyDir; the root stays read-only."""
    objects = render(_sink_app(path, cls), RenderOptions(IMAGE, "demo"))
    validate_all(objects, K8S_VERSIONS[:1])
    pod = _pod(objects, "store")
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", mount: "sink-data"}
    assert {"name": "sink-data", "emptyDir": {}} in pod["volumes"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_sink_writing_into_the_apps_folder_is_a_clear_error() -> None:
    """`path="frames.db"` would land in /app, which the pod can't write: the error names the node and the fix."""
    with pytest.raises(ConfigurationError, match=r"sink 'store': path='frames.db' is in the app's folder /app") as e:
        render(_sink_app("frames.db"), RenderOptions(IMAGE, "demo"))
    assert "path='data/frames.db'" in str(e.value)


def test_redis_and_the_nodes_share_a_password_from_the_secret(seed_objects: list[dict[str, Any]]) -> None:
    """Redis asks for `requirepass $(REDIS_PASSWORD)`, its probe authenticates through REDISCLI_AUTH, the nodes
    get REDIS_URL with the same password: all three from the one Secret, none written in the manifest."""
    ref = {"secretKeyRef": {"name": "test-distributed-system-redis-auth", "key": "password"}}
    redis_container = _pod(seed_objects, "redis")["containers"][0]
    assert redis_container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": ref} in redis_container["env"]
    assert {"name": "REDISCLI_AUTH", "valueFrom": ref} in redis_container["env"]
    for node in ("fake-camera", "gpu-processor", "gateway"):
        env = _pod(seed_objects, node)["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), "$(VAR) expands from earlier variables"
        assert env[names.index("REDIS_URL")]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"


def test_a_dual_redis_app_gets_both_urls(dual_app: EdgeApp) -> None:
    """With two Redis servers, each gets the password, and the nodes get REDIS_URL and DATA_REDIS_URL."""
    objects = render(dual_app, RenderOptions(IMAGE, "demo"))
    validate_all(objects, K8S_VERSIONS[:1])
    env = {e["name"]: e.get("value") for e in _pod(objects, "gpu-processor")["containers"][0]["env"]}
    assert env["DATA_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis-data:6380/0"
    assert _pod(objects, "redis-data")["containers"][0]["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    policy = _by(objects, "NetworkPolicy")["test-distributed-system-redis"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}, {"protocol": "TCP", "port": 6380}]


def _kubelet_expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)


def test_the_rendered_password_really_locks_redis(seed_objects: list[dict[str, Any]], tmp_path: Any) -> None:
    """A real redis-server started with the rendered arguments (the port moved to a free one) refuses a client
    without the password, and takes the nodes' expanded REDIS_URL and the readiness probe's redis-cli."""
    binary = find_server_binary()
    if binary is None or shutil.which("redis-cli") is None:
        pytest.fail("no redis-server or redis-cli: run `scripts/bootstrap.sh test`", pytrace=False)
    secret = {"REDIS_PASSWORD": "0f" * 24}
    container = _pod(seed_objects, "redis")["containers"][0]
    args = [_kubelet_expand(a, secret) for a in container["args"][1:]]
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    server = subprocess.Popen([binary, *args, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        _wait(port)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        env = _pod(seed_objects, "fake-camera")["containers"][0]["env"]
        url = _kubelet_expand(next(e["value"] for e in env if e["name"] == "REDIS_URL"), secret)
        assert redis.Redis.from_url(url.replace("@redis:6379", f"@127.0.0.1:{port}"), socket_timeout=2).ping()
        probe = container["readinessProbe"]["exec"]["command"]
        probe = [p if p != "6379" else str(port) for p in probe]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10,
                              env={**os.environ, "REDISCLI_AUTH": secret["REDIS_PASSWORD"]})  # fmt: skip
        assert done.stdout.strip() == "PONG", done.stdout + done.stderr
    finally:
        server.terminate()
        server.wait(10)


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
        except redis.AuthenticationError:
            return
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def _matching(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """The Deployments whose pods carry `labels`."""
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in _by(objects, "Deployment").items()}
    return sorted(n for n, have in pods.items() if labels.items() <= have.items())


def test_only_the_apps_pods_reach_redis(seed_objects: list[dict[str, Any]]) -> None:
    """The NetworkPolicy selects the broker's pods and admits only pods labelled as this app's, on Redis's port."""
    policy = _by(seed_objects, "NetworkPolicy")["test-distributed-system-redis"]
    spec = policy["spec"]
    assert _matching(seed_objects, spec["podSelector"]["matchLabels"]) == ["redis"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (peer,) = rule["from"]
    admitted = _matching(seed_objects, peer["podSelector"]["matchLabels"])
    assert admitted == ["fake-camera", "gateway", "gpu-processor", "redis"]
    other_app = {"edgeflow.io/app": "other", "app.kubernetes.io/managed-by": "edgeflow"}
    assert not peer["podSelector"]["matchLabels"].items() <= other_app.items()


def test_a_keda_scaled_app_lets_the_operator_in(seed_app: EdgeApp) -> None:
    """When the objects hold a KEDA ScaledObject, the operator's namespace may reach Redis too (its scaler)."""
    objects = render(seed_app, RenderOptions(IMAGE, "demo"))
    without = [o for o in objects if o["kind"] != "NetworkPolicy"]
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x", "namespace": "demo"}}
    services = [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")]
    again = secure(seed_app, [*without, scaled], services, ["redis"], seed_app.name)
    peers = _by(again, "NetworkPolicy")["test-distributed-system-redis"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers
    assert network_policy("a", "demo", [6379], keda=False)["spec"]["ingress"][0]["from"][0].keys() == {"podSelector"}


def test_replicated_nodes_get_a_disruption_budget(seed_objects: list[dict[str, Any]]) -> None:
    """gpu_processor (2 replicas) may lose one pod at a time to a drain; single-replica nodes get none."""
    budgets = _by(seed_objects, "PodDisruptionBudget")
    assert list(budgets) == ["gpu-processor"]
    spec = budgets["gpu-processor"]["spec"]
    assert spec["maxUnavailable"] == 1
    assert (
        spec["selector"]["matchLabels"]
        == _by(seed_objects, "Deployment")["gpu-processor"]["spec"]["selector"]["matchLabels"]
    )


def _gpu_app(resources: Any) -> EdgeApp:
    app = EdgeApp("gpus")

    @app.node(name="cam", type="producer")
    class Cam(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    @app.node(name="detector", type="consumer", device="gpu", resources=resources)
    class Detector(ConsumerNode):
        def process(self, data: Any) -> Any:
            return data

    app.link("cam").to("detector")
    return app


def test_declared_resources_and_a_gpu() -> None:
    """resources={"cpu", "memory", "gpu"}: CPU and memory requested, the GPU as nvidia.com/gpu with its toleration."""
    objects = render(_gpu_app({"cpu": "500m", "memory": "1Gi", "gpu": 1}), RenderOptions(IMAGE, "demo"))
    validate_all(objects)
    pod = _pod(objects, "detector")
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"nvidia.com/gpu": 1},
    }
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"edgeflow.io/device": "gpu"}
    camera = _pod(objects, "cam")
    assert camera["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert "tolerations" not in camera
    cpu_only = _pod(render(_gpu_app({"memory": 512 << 20}), RenderOptions(IMAGE, "demo")), "detector")
    assert cpu_only["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "536870912"}}


@pytest.mark.parametrize(
    ("resources", "match"),
    [({"memroy": "1Gi"}, "unknown key 'memroy'; did you mean 'memory'"), ({"gpu": "1"}, r"resources\['gpu'\]='1'"),
     ({"cpu": "lots"}, r"resources\['cpu'\]='lots' is not valid"), (["cpu"], "resources must be a dict")],
)  # fmt: skip
def test_a_wrong_resources_dict_names_the_key(resources: Any, match: str) -> None:
    """A typo fails where the node is declared, naming the node and the key."""
    with pytest.raises(NodeDefinitionError, match=match) as info:
        _gpu_app(resources)
    assert info.value.node == "detector"


def _gateway_app(configure: Any) -> EdgeApp:
    app = EdgeApp("probes")

    @app.node(name="cam", type="producer")
    class Cam(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    app.node(name="gw", type="gateway")(type("Gw", (GatewayNode,), {"configure": configure}))
    app.link("cam").to("gw")
    return app


def test_the_probe_follows_the_gateways_interface(_web_plugin: None) -> None:
    """A WebInterface on port 9000 is probed there; a gateway with no HTTP interface by its runner's reports."""
    from edgeflow.nodes.gateway.interfaces.web import WebInterface

    def web(self: Any) -> None:
        self.add_interface(WebInterface(port=9000))

    objects = render(_gateway_app(web), RenderOptions(IMAGE, "demo"))
    validate_all(objects, K8S_VERSIONS[:1])
    container = _pod(objects, "gw")["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert {"name": "http", "containerPort": 9000, "protocol": "TCP"} in container["ports"]
    assert _by(objects, "Service")["gw-http"]["spec"]["ports"][0]["port"] == 9000

    bare = _pod(render(_gateway_app(lambda self: None), RenderOptions(IMAGE, "demo")), "gw")["containers"][0]
    assert bare["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5}


def test_a_gateway_whose_configure_fails_here_still_renders(caplog: pytest.LogCaptureFixture) -> None:
    """A configure() that needs the pod's hardware is not run to the end here: the reports decide, with a warning."""

    def needs_hardware(self: Any) -> None:
        raise OSError("/dev/video0 not found")

    objects = render(_gateway_app(needs_hardware), RenderOptions(IMAGE, "demo"))
    assert _pod(objects, "gw")["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "its configure() can't run here (OSError: /dev/video0 not found)" in caplog.text
