"""RedisBroker against a real redis-server: fan-out, replicas, realtime skipping, recovery, control plane."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import redis

from edgeflow import Frame, RedisBroker
from edgeflow.errors import BrokerConnectionError, ConfigurationError
from edgeflow.linker import Link


def rt(source: str, target: str, depth: int = 1) -> Link:
    return Link(source, target, "realtime", "redis", depth)


def drain(sub, want: int, timeout: float = 5.0) -> list[Frame]:  # type: ignore[no-untyped-def]
    got: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(d.frame for d in sub.read(0.05))
    return got


def test_fan_out_every_target_gets_every_frame(broker: Any) -> None:
    subs = {t: broker.subscribe([rt("cam", t)], "c0") for t in ("det", "rec", "viz")}
    pub = broker.publisher("cam", [rt("cam", t) for t in subs])
    for i in range(50):
        pub.publish(Frame(i, time.time(), {}, np.full((4, 4), i, np.uint8)))
        for sub in subs.values():
            (d,) = drain(sub, 1)
            assert d.frame_id == i
            assert int(d.data[0, 0]) == i
    assert all(s.skipped == 0 for s in subs.values())


def test_replicas_share_the_work_without_duplicates(broker: Any) -> None:
    n = 400
    pub = broker.publisher("cam", [rt("cam", "det", n)])
    subs = [broker.subscribe([rt("cam", "det")], f"replica-{i}") for i in range(2)]
    seen: list[list[int]] = [[], []]
    done = threading.Event()

    def reader(i: int) -> None:
        while not done.is_set():
            for d in subs[i].read(0.05):
                seen[i].append(d.frame.frame_id)
                time.sleep(0.001)  # let the other replica win some reads

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for i in range(n):
        pub.publish(Frame(i, time.time(), {}, b"x"))
    deadline = time.monotonic() + 10
    while len(seen[0]) + len(seen[1]) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    for t in threads:
        t.join()
    assert sorted(seen[0] + seen[1]) == list(range(n)), "every frame exactly once across the replicas"
    assert seen[0] and seen[1], "both replicas got work"
    assert set(seen[0]).isdisjoint(seen[1])


def drain_until(sub: Any, last: int, timeout: float = 5.0) -> list[int]:
    """Frame ids read until frame `last` arrives. Publishers pipeline their writes, so a reader may catch the
    stream a moment before the last ones are in: it then gets a newer frame next, never an older one."""
    ids: list[int] = []
    deadline = time.monotonic() + timeout
    while (not ids or ids[-1] != last) and time.monotonic() < deadline:
        ids.extend(d.frame.frame_id for d in sub.read(0.05))
    return ids


def test_realtime_reader_gets_the_newest_frame_and_counts_the_skipped(broker: Any) -> None:
    sub = broker.subscribe([rt("cam", "slow")], "c0")
    pub = broker.publisher("cam", [rt("cam", "slow", 1)])
    for i in range(10):
        pub.publish(Frame(i, time.time(), {}, b"x"))
    ids = drain_until(sub, 9)
    assert ids[-1] == 9 and len(ids) < 10, f"a slow reader skips stale frames: {ids}"
    pub.publish(Frame(10, time.time(), {}, b"x"))
    ids += drain_until(sub, 10)
    assert ids == sorted(set(ids)), "and never sees a frame older than the last one it saw"
    sub.flush()  # skip counts travel in batches
    first = ids[0]
    assert sub.skipped == (10 - first + 1) - len(ids), "the first frame a group reads sets its baseline"
    for i in range(11, 16):
        pub.publish(Frame(i, time.time(), {}, b"x"))
    ids += drain_until(sub, 15)
    assert ids == sorted(set(ids)) and ids[-1] == 15
    sub.flush()
    assert sub.skipped == (15 - first + 1) - len(ids), "every frame after the first: delivered or counted"


def test_skips_are_counted_once_across_replicas(broker: Any) -> None:
    """Replicas take turns; frames the other replica took are not skips."""
    a, b = broker.subscribe([rt("cam", "det")], "a"), broker.subscribe([rt("cam", "det")], "b")
    pub = broker.publisher("cam", [rt("cam", "det", 4)])
    for i in range(40):
        pub.publish(Frame(i, time.time(), {}, b"x"))
        reader = a if i % 2 else b
        assert [f.frame_id for f in drain(reader, 1)] == [i]
    a.flush()
    b.flush()
    assert a.skipped + b.skipped == 0


def test_deeper_link_keeps_frames_for_a_slow_reader(broker: Any) -> None:
    sub = broker.subscribe([rt("cam", "det")], "c0")
    pub = broker.publisher("cam", [rt("cam", "det", 5)])
    for i in range(8):
        pub.publish(Frame(i, time.time(), {}, b"x"))
    ids = drain_until(sub, 7)
    assert ids == sorted(set(ids)) and ids[-5:] == [3, 4, 5, 6, 7], ids
    assert broker.link_depth("cam", "det") == 0


def test_corrupted_entry_is_rejected_and_counted(broker: Any) -> None:
    if getattr(broker, "shm_local", False):
        pytest.skip("writes into the realtime stream, which the channel path does not read: tests/shm/test_channel.py")
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


def test_control_plane_messages(broker: Any) -> None:
    listener = broker.listen("stats")
    assert listener.get(0.1) is None  # subscribes
    broker.emit("stats", b'{"node": "x"}')
    deadline = time.monotonic() + 3
    msg = None
    while msg is None and time.monotonic() < deadline:
        msg = listener.get(0.1)
    listener.close()
    assert msg == b'{"node": "x"}'


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


def test_skip_count_never_goes_negative_when_replicas_report_out_of_order(broker: Any) -> None:
    a, b = broker.subscribe([rt("cam", "det")], "a"), broker.subscribe([rt("cam", "det")], "b")
    pub = broker.publisher("cam", [rt("cam", "det", 4)])
    pub.publish(Frame(0, 0.0, {}, b"x"))
    pub.publish(Frame(1, 0.0, {}, b"x"))
    assert [f.frame_id for f in drain(a, 1)] == [0]
    assert [f.frame_id for f in drain(b, 1)] == [1]
    b.flush()  # b reports frame 1 first: the group's baseline
    a.flush()  # then a reports the older frame 0
    assert (a.skipped, b.skipped) == (0, 0)


def test_a_burst_of_small_messages_arrives_whole_without_another_publish(broker: Any) -> None:
    """Publishers may send small messages together while they come densely; whatever they hold still goes out
    when the producer stops, without a further publish() or close()."""
    sub = broker.subscribe([Link("cam", "log", "durable")], "c0")
    pub = broker.publisher("cam", [Link("cam", "log", "durable")])
    for i in range(2000):
        pub.publish(Frame(i, time.time(), {}, b"m" * 100))
    got = drain(sub, 2000, timeout=10)
    assert [f.frame_id for f in got] == list(range(2000))
    pub.publish(Frame(2000, time.time(), {}, b"one more, after a pause"))
    time.sleep(0.05)
    assert [f.frame_id for f in drain(sub, 1)] == [2000], "an isolated message is not held back"


def test_small_payloads_of_every_kind_go_through(broker: Any) -> None:
    sub = broker.subscribe([rt("cam", "det", 8)], "c0")
    pub = broker.publisher("cam", [rt("cam", "det", 8)])
    sent = [bytearray(b"a bytearray"), memoryview(b"a memoryview"), b"bytes", np.arange(6, dtype=np.int16),
            {"json": [1, 2]}]  # fmt: skip
    for i, data in enumerate(sent):
        pub.publish(Frame(i, time.time(), {"i": i}, data))
    got = drain(sub, len(sent))
    assert [bytes(f.data) for f in got[:3]] == [b"a bytearray", b"a memoryview", b"bytes"]
    assert got[3].data.tolist() == [0, 1, 2, 3, 4, 5] and got[4].data == {"json": [1, 2]}
