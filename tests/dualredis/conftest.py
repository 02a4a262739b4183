"""Fixtures for DualRedisBroker: a broker on the session's two redis-servers, scoped to a fresh app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import edgeflow_dualredis.plugin
from edgeflow import Frame
from edgeflow.broker import Subscription
from edgeflow.embedded import EmbeddedRedis
from edgeflow.links import Link
from edgeflow.plugins import get_plugin_manager
from edgeflow_dualredis import DualRedisBroker


@pytest.fixture(autouse=True)
def _dualredis_plugin(_fresh_plugins: None) -> None:
    """The plugin is registered for every test here, as its entry point would be in a user's environment."""
    get_plugin_manager().register(edgeflow_dualredis.plugin, name="dualredis")


@pytest.fixture
def dual(redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis, app_name: str) -> Iterator[DualRedisBroker]:
    """A connected DualRedisBroker: control plane on `redis_server`, payloads on `data_redis_server`.

    Its publishers and subscriptions go through the data plane as in separate processes (local_links=False):
    in one process a realtime frame would be handed over in memory, and these tests are about the data plane."""
    b = DualRedisBroker(redis_server.url, data_redis_server.url, local_links=False)
    b.bind(app_name)
    b.connect()
    yield b
    b.close()


def rt(source: str, target: str, depth: int = 1) -> Link:
    return Link(source, target, "realtime", "redis", depth)


def dur(source: str, target: str, **kw: Any) -> Link:
    return Link(source, target, "durable", "redis", **kw)


def drain(sub: Subscription, want: int, timeout: float = 5.0) -> list[Frame]:
    """Read (and acknowledge) until `want` frames came or `timeout` passed."""
    got: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = sub.read(0.05)
        got.extend(d.frame for d in batch)
        sub.ack(batch)
    return got


def payload_keys(broker: DualRedisBroker) -> list[bytes]:
    """The app's payload keys on the data plane, sorted."""
    return sorted(broker.data_plane.client.scan_iter(match=broker.key("pl", "*"), count=1000))
