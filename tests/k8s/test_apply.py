"""Apply, prune, idempotency and rollout waiting through the real `kubernetes` client.

No real cluster here: the client talks HTTP to tests/k8s/apiserver.py, an in-memory emulation of the API
server (server-side apply, lists by label, deletes, pods, events, logs). The emulation accepts any object, so
every object the deployer sends is validated against the official schemas of several Kubernetes versions.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from edgeflow import EdgeApp
from edgeflow_k8s import ClusterError, KubernetesDeployer, RenderOptions, RolloutTimeoutError, render
from edgeflow_k8s.cluster import Cluster
from edgeflow_k8s.deployer import DeployPlan

from .apiserver import FakeKubernetes
from .conftest import SEED, validate_all

NS = "demo"


def _plan(app: EdgeApp, image: str) -> DeployPlan:
    return DeployPlan(app, SEED, NS, image, render(app, RenderOptions(image, NS)))


def _deploy(app: EdgeApp, image: str, progress: list[str] | None = None, **kwargs: Any) -> list[str]:
    out = progress if progress is not None else []
    cluster = Cluster.connect()
    return KubernetesDeployer().apply(cluster, _plan(app, image), progress=out.append, interval=0.05, **kwargs)


def test_deploy_applies_every_object_with_server_side_apply(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """Each object is PATCHed as apply-patch+yaml by field manager `edgeflow` (forced), and is schema-valid."""
    progress: list[str] = []
    _deploy(seed_app, "reg/app:one", progress)
    patches = [r for r in fake_k8s.requests if r["method"] == "PATCH"]
    assert len(patches) == len(render(seed_app, RenderOptions("x", NS)))
    assert {r["content_type"] for r in patches} == {"application/apply-patch+yaml"}
    assert {(r["query"]["fieldManager"], r["query"]["force"]) for r in patches} == {("edgeflow", "true")}
    assert fake_k8s.names("Deployment", NS) == {"redis", "fake-camera", "gpu-processor", "gateway"}
    assert fake_k8s.names("Service", NS) == {"redis", "gateway", "gateway-http"}
    assert fake_k8s.names("PodDisruptionBudget", NS) == {"gpu-processor"}
    assert fake_k8s.names("NetworkPolicy", NS) == {"test-distributed-system-redis"}
    assert fake_k8s.get("Namespace", NS) is not None
    validate_all(fake_k8s.applied)
    # Namespace first, so that the namespaced objects have somewhere to go.
    assert patches[0]["path"] == f"/api/v1/namespaces/{NS}"
    assert any("gpu-processor" in line and "2/2 ready" in line for line in progress)


def test_the_redis_password_is_made_once_and_kept(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """The first deploy creates the Secret with a random password, right after the Namespace; later ones keep it."""
    progress: list[str] = []
    _deploy(seed_app, "reg/app:one", progress)
    secret = fake_k8s.get("Secret", "test-distributed-system-redis-auth", NS)
    assert secret is not None
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) == 48 and int(password, 16) >= 0, "24 random bytes, hex"
    assert "created secret/test-distributed-system-redis-auth with a random Redis password" in progress
    writes = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in fake_k8s.requests if r["method"] != "GET"]
    assert writes[:2] == [("PATCH", NS), ("POST", "secrets")], "before any pod that reads it"
    again: list[str] = []
    _deploy(seed_app, "reg/app:two", again)
    kept = fake_k8s.get("Secret", "test-distributed-system-redis-auth", NS)
    assert kept is not None and base64.b64decode(kept["data"]["password"]).decode() == password
    assert not [line for line in again if "created secret" in line]
    assert password not in str(fake_k8s.applied), "the password is never in an applied object"


def test_second_deploy_changes_only_the_image(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """Deploying the same app again with a new image changes each node's image and nothing else."""
    _deploy(seed_app, "reg/app:one")
    before = copy.deepcopy(fake_k8s.objects)
    _deploy(seed_app, "reg/app:two")
    validate_all(fake_k8s.applied)
    changed = []
    for key, old in before.items():
        if key[0] in ("Pod", "Event"):
            continue
        new = fake_k8s.objects[key]
        if old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"]:
            changed.append(key[2])
            template_old, template_new = old["spec"]["template"], new["spec"]["template"]
            assert template_old["spec"]["containers"][0]["image"] == "reg/app:one"
            template_old["spec"]["containers"][0]["image"] = "reg/app:two"
            assert template_old == template_new
            assert new["metadata"]["generation"] == old["metadata"]["generation"] + 1
    assert sorted(changed) == ["fake-camera", "gateway", "gpu-processor"]
    # The NodePort the cluster allocated or was given survives the re-apply.
    assert fake_k8s.objects[("Service", NS, "gateway-http")]["spec"]["ports"][0]["nodePort"] == 30080


def test_nodes_removed_from_main_py_are_pruned(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """A node dropped from the app loses its Deployment on the next deploy; other apps' objects stay."""
    _deploy(seed_app, "reg/app:one")
    # An object of another app in the same namespace must survive the prune.
    fake_k8s.objects[("Deployment", NS, "stranger")] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "stranger",
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "edgeflow", "edgeflow.io/app": "other"},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    smaller = EdgeApp(seed_app.name, broker=seed_app.broker)
    smaller.nodes = {k: v for k, v in seed_app.nodes.items() if k != "gpu_processor"}
    smaller.links = [ln for ln in seed_app.links if "gpu_processor" not in (ln.source, ln.target)]
    pruned = _deploy(smaller, "reg/app:two")
    # Its two replicas had a PodDisruptionBudget: it goes with them.
    assert pruned == ["deployment/gpu-processor", "poddisruptionbudget/gpu-processor"]
    assert fake_k8s.names("Deployment", NS) == {"redis", "fake-camera", "gateway", "stranger"}
    assert fake_k8s.names("PodDisruptionBudget", NS) == set()
    deletes = [r for r in fake_k8s.requests if r["method"] == "DELETE"]
    assert [r["path"].rsplit("/", 1)[1] for r in deletes] == ["gpu-processor", "gpu-processor"]


def test_rollout_timeout_prints_a_failure_summary(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """A Deployment whose pods never get ready ends the wait with phase, events and log lines per pod."""
    fake_k8s.stuck = {"gpu-processor"}
    progress: list[str] = []
    with pytest.raises(RolloutTimeoutError, match="1 of 4 deployments not ready") as info:
        _deploy(seed_app, "reg/app:missing", progress, timeout=0.3)
    summary = info.value.summary
    assert "deployment gpu-processor: 2 pod(s)" in summary
    assert "Pending (ImagePullBackOff" in summary
    assert 'event Warning Failed: Failed to pull image "reg/app:missing"' in summary
    assert "log |" in summary or "(no logs:" in summary
    assert any("gpu-processor" in line and "0/2 ready" in line for line in progress)
    assert any("[ok] fake-camera" in line for line in progress)


def test_failure_summary_includes_last_log_lines(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """For a pod that runs but isn't ready, the summary ends with its last log lines."""
    _deploy(seed_app, "reg/app:one")
    summary = Cluster.connect().failure_summary(NS, ["fake-camera"], log_lines=3)
    lines = summary.splitlines()
    assert lines[1].startswith("  pod fake-camera-") and "Running" in lines[1]
    assert [ln.split("line ")[1].split(" ")[0] for ln in lines if "log |" in ln] == ["18", "19", "20"]


def test_refused_request_is_a_cluster_error(fake_k8s: FakeKubernetes, seed_app: EdgeApp) -> None:
    """An API error (here a namespaced object sent before its Namespace exists) says what the cluster said."""
    cluster = Cluster.connect()
    service = next(o for o in render(seed_app, RenderOptions("x", NS)) if o["kind"] == "Service")
    with pytest.raises(ClusterError, match=r'refused to patch a Service: 404 .*namespaces "demo" not found'):
        cluster.apply(service)


def test_kubeconfig_in_use_is_the_one_named(fake_k8s: FakeKubernetes, tmp_path: Path) -> None:
    """`--kubeconfig` wins over KUBECONFIG: a missing one is reported by its path."""
    with pytest.raises(ClusterError, match=f"no kubeconfig at {tmp_path / 'nope'}"):
        Cluster.connect(str(tmp_path / "nope"))
