"""REDIS_PASSWORD: the control Redis's password apart from its URL (a Kubernetes Secret holds it, KEDA reads it)."""

from __future__ import annotations

import pytest

from edgeflow import RedisBroker
from edgeflow.embedded import EmbeddedRedis, find_server_binary
from edgeflow.errors import BrokerConnectionError


def test_redis_password_fills_in_for_a_url_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = find_server_binary()
    assert binary is not None, "apt-get install redis-server"
    server = EmbeddedRedis(binary, extra_args=["--requirepass", "s3cret"]).start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        with pytest.raises(BrokerConnectionError):
            RedisBroker().connect()
        monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
        broker = RedisBroker()
        broker.connect()
        assert broker.ping() and "s3cret" not in broker.display_url
        broker.close()
        wrong = RedisBroker(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(BrokerConnectionError):
            wrong.connect()  # the URL's password wins over REDIS_PASSWORD
    finally:
        server.stop()
