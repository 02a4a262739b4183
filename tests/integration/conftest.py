"""The broker contract runs against every registered broker: the plugins' brokers are registered here."""

from __future__ import annotations

import pytest

import edgeflow_dualredis.plugin
import edgeflow_shm.plugin
from edgeflow import Broker
from edgeflow.embedded import EmbeddedRedis
from edgeflow.plugins import get_plugin_manager

#: The broker plugins held to the contract besides the core's own Redis broker.
BROKER_PLUGINS = {"dualredis": edgeflow_dualredis.plugin, "shm": edgeflow_shm.plugin}


def _register() -> None:
    pm = get_plugin_manager()
    for name, module in BROKER_PLUGINS.items():
        if pm.get_plugin(name) is None:
            pm.register(module, name=name)


_register()  # for collection: the contract is parametrized over the brokers registered then


@pytest.fixture(autouse=True)
def _broker_plugins(_fresh_plugins: None) -> None:
    """Every test here sees the broker plugins (tests/conftest.py starts each test with a fresh manager)."""
    _register()


@pytest.fixture(scope="session")
def contract_servers(redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis) -> list[str]:
    """The contract's two servers are the session's."""
    return [redis_server.url, data_redis_server.url]


@pytest.fixture
def broker(contract_broker: Broker) -> Broker:
    """A connected broker of each registered configuration, scoped to a fresh app (for the Redis-based tests).

    These tests write into and look at the streams themselves: every frame goes through them, as between processes
    (in one process a realtime link would be served in memory; tests/integration/test_local_links.py tests that)."""
    local = getattr(contract_broker, "local", None)
    if local is not None:
        local.enabled = False
    return contract_broker
