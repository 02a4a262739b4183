"""DualRedisBroker's payload placement against two real redis-servers: threshold, expiry, freeing, loss."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from edgeflow import Frame
from edgeflow.embedded import EmbeddedRedis
from edgeflow.errors import ConfigurationError
from edgeflow_dualredis import DualRedisBroker

from .conftest import drain, dur, payload_keys, rt

DAY_MS = 86_400_000


def test_small_payloads_stay_inline_and_large_ones_go_to_the_data_plane(dual: DualRedisBroker) -> None:
    link = rt("cam", "det", 10)
    sub = dual.subscribe([link], "c0")
    pub = dual.publisher("cam", [link])
    pub.publish(Frame(0, 0.0, {}, b"s" * 4095))
    pub.publish(Frame(1, 0.0, {}, b"L" * 4096))
    (_, small), (_, large) = dual.client.xrange(dual.stream_key("cam"))
    assert small[b"d"] == b"s" * 4095 and b"r" not in small, "under the threshold: inline, one round trip"
    assert b"d" not in large
    assert large[b"r"].startswith(f"ef:{dual.namespace}:pl:rt:".encode()), "the key is named per app"
    assert dual.data_plane.client.get(large[b"r"]) == b"L" * 4096
    assert payload_keys(dual) == [large[b"r"]]
    assert [f.data for f in drain(sub, 2)] == [b"s" * 4095, b"L" * 4096]


def test_video_frames_travel_by_reference_and_arrive_intact(dual: DualRedisBroker) -> None:
    link = rt("cam", "det", 4)
    sub = dual.subscribe([link], "c0")
    pub = dual.publisher("cam", [link])
    images = [np.full((480, 640, 3), i, np.uint8) for i in range(4)]
    for i, img in enumerate(images):
        pub.publish(Frame(i, time.time(), {"i": i}, img))
    entry_sizes = [sum(len(v) for v in f.values()) for _, f in dual.client.xrange(dual.stream_key("cam"))]
    assert max(entry_sizes) < 400, "the control Redis holds no pixels"
    got = drain(sub, 4)
    assert [f.meta["i"] for f in got] == [0, 1, 2, 3]
    assert all(np.array_equal(f.data, img) for f, img in zip(got, images, strict=True))


def test_threshold_is_configurable(
    redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis, app_name: str
) -> None:
    every = DualRedisBroker(redis_server.url, data_redis_server.url, inline_threshold=0)
    never = DualRedisBroker(redis_server.url, data_redis_server.url, inline_threshold=1 << 30)
    for b, field in ((every, b"r"), (never, b"d")):
        b.bind(f"{app_name}-{field.decode()}")
        b.publisher("imu", [rt("imu", "log")]).publish(Frame(0, 0.0, {}, {"x": 1}))
        ((_, fields),) = b.client.xrange(b.stream_key("imu"))
        assert field in fields
        b.close()
    with pytest.raises(ConfigurationError, match="inline_threshold must be an int >= 0"):
        DualRedisBroker(inline_threshold=-1)
    with pytest.raises(ConfigurationError, match="realtime_ttl must be a number of seconds"):
        DualRedisBroker(realtime_ttl=0)


def test_realtime_payloads_expire_and_an_expired_one_counts_as_skipped(
    redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis, app_name: str
) -> None:
    b = DualRedisBroker(redis_server.url, data_redis_server.url, inline_threshold=0, realtime_ttl=0.4)
    b.bind(app_name)
    sub = b.subscribe([rt("cam", "det")], "c0")
    b.publisher("cam", [rt("cam", "det")]).publish(Frame(0, 0.0, {}, b"old"))
    (key,) = payload_keys(b)
    assert 0 < b.data_plane.client.pttl(key) <= 400
    time.sleep(0.6)
    assert payload_keys(b) == []
    assert sub.read(0.05) == []
    assert (sub.skipped, sub.rejected) == (1, 0), "a realtime frame read too late is stale: skipped, not an error"
    b.close()


def test_realtime_payloads_pushed_out_of_the_stream_go_within_half_a_second(dual: DualRedisBroker) -> None:
    """The data plane holds what the stream references plus a short grace: it never grows without bound."""
    pub = dual.publisher("cam", [rt("cam", "det", depth=2)])
    for i in range(20):
        pub.publish(Frame(i, 0.0, {}, bytes(5000)))
    keys = payload_keys(dual)
    assert len(keys) == 20
    live = sorted(keys, key=lambda k: int(k.rsplit(b"-", 1)[1]))[-2:]
    for k in keys:
        ttl = dual.data_plane.client.pttl(k)
        assert (ttl > 50_000) if k in live else (0 < ttl <= 500), (k, ttl)
    time.sleep(0.7)
    assert payload_keys(dual) == live, "only the payloads the stream still references are left"


def test_a_fast_realtime_producer_keeps_at_most_32_payloads_beyond_the_stream(dual: DualRedisBroker) -> None:
    pub = dual.publisher("cam", [rt("cam", "det", depth=3)])
    for i in range(200):
        pub.publish(Frame(i, 0.0, {}, bytes(5000)))
    assert len(payload_keys(dual)) == 3 + 32, "bounded by frames, not by time, however fast the producer runs"


def test_durable_payloads_are_freed_once_every_target_acknowledged(dual: DualRedisBroker) -> None:
    a, b = dur("imu", "a"), dur("imu", "b")
    pub = dual.publisher("imu", [a, b])
    sa, sb = dual.subscribe([a], "c"), dual.subscribe([b], "c")
    for i in range(20):
        pub.publish(Frame(i, 0.0, {}, bytes([i]) * 5000))
    keys = payload_keys(dual)
    assert len(keys) == 20 and all(b":pl:dur:" in k for k in keys)
    assert all(dual.data_plane.client.pttl(k) > 6 * DAY_MS for k in keys), "a long safety TTL, not the realtime one"
    assert [f.data[0] for f in drain(sa, 20)] == list(range(20))
    pub.trim()  # type: ignore[attr-defined]
    assert len(payload_keys(dual)) == 20, "b has acknowledged nothing: every payload stays"
    assert [f.data[0] for f in drain(sb, 20)] == list(range(20))
    pub.trim()  # type: ignore[attr-defined]
    assert len(payload_keys(dual)) <= 1, "freed with their entries (the newest entry stays as the trim mark)"


def test_a_payload_read_by_realtime_and_durable_links_outlives_the_durable_ack(dual: DualRedisBroker) -> None:
    links = [rt("cam", "viewer"), dur("cam", "recorder")]
    pub = dual.publisher("cam", links)
    rec = dual.subscribe([links[1]], "c")
    for i in range(3):
        pub.publish(Frame(i, 0.0, {}, bytes(5000)))
    assert len(drain(rec, 3)) == 3
    pub.trim()  # type: ignore[attr-defined]
    keys = payload_keys(dual)
    assert keys and all(b":pl:mix:" in k for k in keys)
    assert all(0 < dual.data_plane.client.pttl(k) <= dual.data_plane.realtime_ttl * 1000 for k in keys[:-1])


def test_a_durable_frame_whose_payload_is_gone_is_counted_lost_and_logged(
    dual: DualRedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    link = dur("imu", "log")
    pub = dual.publisher("imu", [link])
    sub = dual.subscribe([link], "c0")
    for i in range(3):
        pub.publish(Frame(i, 0.0, {}, bytes([i]) * 5000))
    victim = sorted(payload_keys(dual), key=lambda k: int(k.rsplit(b"-", 1)[1]))[1]
    dual.data_plane.client.delete(victim)  # the data Redis lost it (restarted without persistence, evicted...)
    with caplog.at_level(logging.ERROR, logger="edgeflow.broker.dualredis"):
        got = drain(sub, 2)
        sub.read(0.05)  # the lost frame's ack travels with the next read
    assert [f.frame_id for f in got] == [0, 2]
    assert (sub.lost, sub.rejected) == (1, 0), "a payload gone is lost, not bad input"
    (line,) = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]
    assert "durable frame 1 from 'imu'" in line and victim.decode() in line and "appendonly yes" in line
    assert dual.client.xpending(dual.stream_key("imu", "durable"), "log")["pending"] == 0, "it does not block"
    assert pub.trim() <= 1  # type: ignore[attr-defined]


def test_dead_letters_keep_their_payload_and_replay_it(dual: DualRedisBroker) -> None:
    link = dur("imu", "log")
    pub = dual.publisher("imu", [link])
    sub = dual.subscribe([link], "c0")
    pub.publish(Frame(7, 0.0, {}, b"P" * 5000))
    (d,) = sub.read(0.05)
    sub.dead_letter(d, "RuntimeError: boom")
    pub.publish(Frame(8, 0.0, {}, b"Q" * 5000))
    assert [f.frame_id for f in drain(sub, 1)] == [8]
    pub.trim()  # type: ignore[attr-defined]
    assert dual.data_plane.client.exists(d.extra["fields"][b"r"]) == 0, (
        "the entry's own payload is freed with the entry"
    )
    (letter,) = dual.dead_letters("log")
    assert (letter["frame_id"], letter["error"]) == (7, "RuntimeError: boom")
    assert dual.replay_dead_letters("log") == 1
    again = drain(dual.subscribe([link], "c1"), 1)
    assert [(f.frame_id, f.data) for f in again] == [(7, b"P" * 5000)]
