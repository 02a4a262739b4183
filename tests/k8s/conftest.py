"""Fixtures for the k8s plugin: the seed app, a dual-Redis stand-in broker, the API emulation, schema checks."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import edgeflow_k8s.plugin
import edgeflow_web.plugin
from edgeflow import EdgeApp, plugins
from edgeflow.broker import ServiceSpec
from edgeflow.brokers.redis import RedisBroker
from edgeflow.hookspecs import hookimpl
from edgeflow.loader import load_app

from .apiserver import FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "main.py"
# The oldest and the newest Kubernetes minor versions whose schemas kubernetes-validate ships, and one between.
K8S_VERSIONS = ("1.27", "1.31", "1.37")


class DualTestBroker(RedisBroker):
    """Test-only stand-in for edgeflow-dualredis' DualRedisBroker: what matters here is the services it asks for."""

    name = "dual-test"


class DualServices:
    """A `broker_services` hookimpl answering as the dual-Redis plugin will: control and data Redis."""

    @hookimpl
    def broker_services(self, broker: Any, app: Any) -> list[ServiceSpec] | None:
        if not isinstance(broker, DualTestBroker):
            return None
        return [
            ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT", role="control"),
            ServiceSpec("redis-data", 6380, "DATA_REDIS_HOST", "DATA_REDIS_PORT", role="data"),
        ]


@pytest.fixture(autouse=True)
def _web_plugin(_fresh_plugins: None) -> None:
    """The seed example imports WebInterface: the web plugin is there, as with `pip install "edgeflow[web,k8s]"`."""
    plugins.get_plugin_manager().register(edgeflow_web.plugin, name="web")


@functools.cache
def _seed_loaded() -> EdgeApp:
    return load_app(SEED)


@pytest.fixture
def seed_app() -> EdgeApp:
    """The seed README's example app (examples/main.py), loaded without running it."""
    return _seed_loaded()


@pytest.fixture
def k8s_plugin() -> Iterator[None]:
    """Register the k8s plugin by hand, as entry-point autoload is off in tests."""
    pm = plugins.get_plugin_manager()
    pm.register(edgeflow_k8s.plugin, name="k8s")
    try:
        yield
    finally:
        pm.unregister(name="k8s")


@pytest.fixture
def dual_app(seed_app: EdgeApp) -> Iterator[EdgeApp]:
    """The seed app on a dual-Redis broker, with the dual plugin's `broker_services` answer registered."""
    app = EdgeApp(seed_app.name, broker=DualTestBroker())
    app.nodes = dict(seed_app.nodes)
    app.links = list(seed_app.links)
    pm = plugins.get_plugin_manager()
    pm.register(DualServices(), name="dual-test")
    try:
        yield app
    finally:
        pm.unregister(name="dual-test")


def validate_all(objects: list[dict[str, Any]], versions: tuple[str, ...] = K8S_VERSIONS) -> None:
    """Validate each object against the official OpenAPI schemas (strict: unknown fields fail) of `versions`."""
    for version in versions:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {where}: {exc.message}"
                )


@pytest.fixture
def fake_k8s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    """The API emulation on a free port, with KUBECONFIG pointing at it."""
    fake = FakeKubernetes()
    url = fake.start()
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(fake.kubeconfig(url)))
    monkeypatch.setenv("KUBECONFIG", str(config))
    try:
        yield fake
    finally:
        fake.stop()
