"""The plugin: found through the entry point, registers its broker, tells the deployer about redis-data."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

import edgeflow_dualredis
import edgeflow_dualredis.plugin
from edgeflow import EdgeApp, RedisBroker, ServiceSpec
from edgeflow.plugins import get_plugin_manager, registry
from edgeflow_dualredis import DualRedisBroker


def test_the_seed_import_path_hands_over_to_the_plugin() -> None:
    from edgeflow.comms.brokers import DualRedisBroker as Seed

    assert Seed is edgeflow_dualredis.DualRedisBroker
    assert issubclass(Seed, RedisBroker)


def test_the_entry_point_names_the_hook_module() -> None:
    (ep,) = [e for e in entry_points(group="edgeflow") if e.name == "dualredis"]
    assert ep.value == "edgeflow_dualredis.plugin"
    assert ep.load() is edgeflow_dualredis.plugin


def test_services_hook_asks_for_a_second_redis_for_dual_brokers_only() -> None:
    """The plugin is registered by conftest.py, as its entry point would be."""
    assert registry("register_brokers") == {"redis": RedisBroker, "dualredis": DualRedisBroker}
    dual = EdgeApp("dual", broker=DualRedisBroker())
    assert get_plugin_manager().hook.broker_services(broker=dual.broker, app=dual) == [
        ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT"),
        ServiceSpec(
            "redis-data",
            6380,
            "DATA_REDIS_HOST",
            "DATA_REDIS_PORT",
            role="data",
            args=("--maxmemory-policy", "noeviction"),
        ),
    ]
    plain = EdgeApp("plain", broker=RedisBroker())
    assert get_plugin_manager().hook.broker_services(broker=plain.broker, app=plain) == [
        ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")
    ]
    assert edgeflow_dualredis.plugin.broker_services(broker=plain.broker, app=plain) is None


def test_urls_come_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "DATA_REDIS_HOST", "DATA_REDIS_PORT"):
        monkeypatch.delenv(var, raising=False)
    b = DualRedisBroker()
    assert (b.url, b.data_url) == ("redis://localhost:6379/0", "redis://localhost:6380/0")
    monkeypatch.setenv("REDIS_HOST", "ctl")
    monkeypatch.setenv("REDIS_PORT", "7000")
    monkeypatch.setenv("DATA_REDIS_HOST", "pixels")
    monkeypatch.setenv("DATA_REDIS_PORT", "7001")
    assert (b.url, b.data_url) == ("redis://ctl:7000/0", "redis://pixels:7001/0")
    monkeypatch.setenv("REDIS_URL", "redis://u:pw@ctl-url:7002/1")
    assert b.url == "redis://u:pw@ctl-url:7002/1"
    assert b.display_url == "redis://u:***@ctl-url:7002/1"
    given = DualRedisBroker("redis://a:1/0", "redis://:secret@b:2/0")
    assert (given.url, given.data_url) == ("redis://a:1/0", "redis://:secret@b:2/0")
    assert given.data_display_url == "redis://:***@b:2/0"
