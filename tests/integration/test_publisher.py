"""RedisPublisher against a real redis-server: small messages sent together while they come densely, at once
when isolated, and durable ones sent again when the connection breaks with some still held."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from edgeflow import Frame, RedisBroker
from edgeflow.errors import BrokerError
from edgeflow.links import Link
from edgeflow.testing.contract import drain


def _spy_sends(pub: Any) -> list[int]:
    """Count the publisher's socket writes (the real writes still happen)."""
    pub.publish(Frame(10**6, time.time(), {}, b"opens the connection"))
    calls: list[int] = []
    conn = pub._window._conn
    real = conn.send_packed_command

    def counting(command: Any, check_health: bool = True) -> None:
        calls.append(1)
        real(command, check_health=check_health)

    conn.send_packed_command = counting
    return calls


@pytest.fixture
def durable_link(redis_url: str, app_name: str) -> Iterator[tuple[Any, Any]]:
    """A durable link cam -> log: its subscription and its publisher."""
    b = RedisBroker(redis_url)
    b.bind(app_name)
    link = Link("cam", "log", "durable")
    sub = b.subscribe([link], "c0")
    pub = b.publisher("cam", [link])
    yield sub, pub
    pub.close()
    b.close()


def test_a_dense_stream_shares_writes_and_an_isolated_message_goes_at_once(durable_link: tuple[Any, Any]) -> None:
    sub, pub = durable_link
    calls = _spy_sends(pub)
    for i in range(3000):
        pub.publish(Frame(i, time.time(), {}, b"m" * 100))
    assert len(calls) < 3000 / 4, f"{len(calls)} writes for 3000 small messages"
    assert [f.frame_id for f in drain(sub, 3001, timeout=10)][1:] == list(range(3000))
    time.sleep(0.05)  # the producer pauses: the next message is on its own
    calls.clear()
    pub.publish(Frame(5000, time.time(), {}, b"alone"))
    assert len(calls) == 1 and pub._window._held == [], "sent within publish(), not held"


def test_held_durable_messages_are_sent_again_when_the_connection_breaks(
    redis_url: str, durable_link: tuple[Any, Any]
) -> None:
    sub, pub = durable_link
    admin = redis.Redis.from_url(redis_url)
    try:
        for i in range(500):
            pub.publish(Frame(i, time.time(), {}, b"m" * 100))
        # The last publish() always leaves its own command unconfirmed (its reply is read later); whether the
        # burst is also still held unsent depends on the machine's pace, and both must survive the break.
        assert pub._window.unconfirmed, "the burst left durable messages not yet confirmed"
        admin.client_kill_filter(_type="normal", skipme=True)  # every client connection but this one breaks
        i, failures = 500, 0
        while i < 600:
            try:
                pub.publish(Frame(i, time.time(), {}, b"m" * 100))
                i += 1
            except BrokerError:
                failures += 1  # the runner holds a durable frame and tries again, as here
                assert failures < 50
        pub.close()
        ids = set()
        deadline = time.monotonic() + 10
        while len(ids) < 600 and time.monotonic() < deadline:
            got = sub.read(0.1)
            ids |= {d.frame.frame_id for d in got}
            sub.ack(got)
        assert ids == set(range(600)), f"missing {sorted(set(range(600)) - ids)[:10]}"
    finally:
        admin.close()
