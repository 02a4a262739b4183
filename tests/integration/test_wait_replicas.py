"""`wait_replicas` on one Redis with a replica (no cluster): durable frames wait for the replica, and go on,
counted, when it is gone."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from edgeflow import RedisBroker
from edgeflow.embedded import EmbeddedRedis, find_server_binary
from edgeflow.errors import ConfigurationError
from edgeflow.frame import Frame
from edgeflow.testing import wait_for
from edgeflow.testing.contract import drain, durable


@pytest.fixture
def master_and_replica() -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    binary = find_server_binary()
    assert binary is not None, "apt-get install redis-server"
    master = EmbeddedRedis(binary, extra_args=["--repl-diskless-sync-delay", "0"]).start()
    replica = EmbeddedRedis(binary, extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    admin = replica.url
    import redis

    assert wait_for(lambda: redis.Redis.from_url(admin).info("replication").get("master_link_status") == "up", 10)
    yield master, replica
    replica.stop()
    master.stop()


def test_durable_frames_wait_for_the_replica_and_go_on_counted_without_it(
    master_and_replica: tuple[EmbeddedRedis, EmbeddedRedis], caplog: pytest.LogCaptureFixture
) -> None:
    master, replica = master_and_replica
    broker = RedisBroker(master.url + "?wait_replicas=1&wait_timeout=2")
    broker.bind("waiting")
    broker.connect()
    link = durable("imu", "log")
    pub = broker.publisher("imu", [link])
    sub = broker.subscribe([link], "c0")
    for i in range(200):
        pub.publish(Frame(i, 0.0, {}, {"i": i}))
    assert [f.frame_id for f in drain(sub, 200, ack=True)] == list(range(200))
    window = pub._window  # type: ignore[attr-defined]
    assert type(window).__name__ == "WaitingSendWindow"
    assert window.unreplicated == 0
    replica.stop()
    caplog.set_level(logging.WARNING, logger="edgeflow.broker")
    started = time.monotonic()
    for i in range(200, 400):
        pub.publish(Frame(i, 0.0, {}, {"i": i}))
    pub.close()
    took = time.monotonic() - started
    assert [f.frame_id for f in drain(sub, 200, ack=True)] == list(range(200, 400)), "nothing is held back for good"
    assert window.unreplicated > 0 and window.degraded
    assert took < 8.0, f"without a replica, 200 frames took {took:.1f}s: the 2 s timeout is not paid frame after frame"
    assert any("confirmed by the master alone" in r.getMessage() for r in caplog.records)
    broker.close()


def test_wait_settings_are_checked(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="wait_timeout"):
        _ = RedisBroker(redis_url, wait_replicas=1, wait_timeout=9.0).wait_replicas
    with pytest.raises(ConfigurationError, match="wait_replicas"):
        _ = RedisBroker(redis_url + "?wait_replicas=many").wait_replicas
    assert RedisBroker(redis_url).wait_replicas == (0, 1000)
