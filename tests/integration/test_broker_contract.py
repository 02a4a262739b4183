"""The broker contract over every registered broker, and what the Redis-based brokers add: recovery, isolation,
errors that say what to do."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from edgeflow import RedisBroker
from edgeflow.errors import BrokerConnectionError, ConfigurationError
from edgeflow.frame import Frame
from edgeflow.links import Link
from edgeflow.testing.contract import BrokerContract, drain
from edgeflow.testing.contract import realtime as rt


class TestBrokerContract(BrokerContract):
    """Every registered broker configuration (tests/integration/conftest.py registers the plugins' brokers), with
    publishers and readers in one process (realtime links in memory)."""


class TestBrokerContractAcrossProcesses(BrokerContract):
    """The same promises where every frame goes through the broker, as between processes."""

    in_process = False


def test_corrupted_entry_is_rejected_and_counted(broker: Any) -> None:
    # Entries are written into the realtime stream: a same-host channel would not read it (its own bad frames are
    # tested in tests/shm/test_channel.py), so the stream path it falls back to is what is tested here.
    if getattr(broker.data_plane, "shm_local", False):
        broker.data_plane.shm_local = False
    sub = broker.subscribe([rt("cam", "det")], "c0")
    pub = broker.publisher("cam", [rt("cam", "det", 10)])
    broker.client.xadd(broker.stream_key("cam"), {"h": b"EF\x01garbage", "d": b"", "w": "x", "q": 1})
    pub.publish(Frame(1, time.time(), {}, b"ok"))
    got = drain(sub, 1)
    assert [f.data for f in got] == [b"ok"]
    assert sub.rejected == 1


def test_reader_recovers_when_its_stream_and_group_vanish(broker: Any) -> None:
    sub = broker.subscribe([rt("cam", "det")], "c0")
    pub = broker.publisher("cam", [rt("cam", "det", 1)])
    broker.client.delete(broker.stream_key("cam"))
    assert sub.read(0.05) == []  # NOGROUP: the group is made again, nothing is lost that existed
    pub.publish(Frame(7, time.time(), {}, b"x"))
    assert [f.frame_id for f in drain(sub, 1)] == [7]


def test_apps_sharing_a_redis_are_isolated(redis_url: str, broker: Any) -> None:
    other = RedisBroker(redis_url)
    other.bind(broker.namespace + "-other")
    sub = other.subscribe([rt("cam", "det")], "c0")
    broker.publisher("cam", [rt("cam", "det", 1)]).publish(Frame(0, 0.0, {}, b"x"))
    assert sub.read(0.1) == []
    other.close()


def test_unreachable_redis_is_a_clear_error() -> None:
    from edgeflow.embedded import free_port

    b = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    with pytest.raises(BrokerConnectionError, match=r"can't reach Redis at redis://127\.0\.0\.1:\d+/0.*REDIS_URL"):
        b.connect()


def test_password_is_redacted_and_checked(redis_server) -> None:  # type: ignore[no-untyped-def]
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "edge", "on", ">s3cret-pw", "~*", "&*", "+@all")
    try:
        good = RedisBroker(f"redis://edge:s3cret-pw@127.0.0.1:{redis_server.port}/0")
        good.connect()
        assert good.display_url == f"redis://edge:***@127.0.0.1:{redis_server.port}/0"
        good.close()
        bad = RedisBroker(f"redis://edge:wrong@127.0.0.1:{redis_server.port}/0")
        with pytest.raises(BrokerConnectionError) as info:
            bad.connect()
        assert "wrong" not in str(info.value)
    finally:
        admin.execute_command("ACL", "DELUSER", "edge")
        admin.close()


def test_bad_url_and_unsupported_qos(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        RedisBroker("http://nope").connect()
    b = RedisBroker(redis_url)
    with pytest.raises(ConfigurationError, match="qos='sometimes'"):
        b.subscribe([Link("a", "b", "sometimes")], "c")
    b.close()
