"""Poison entries written straight into a link's stream, by someone who can reach Redis: the readers keep running,
every bad entry is counted, and on durable links it goes to the dead letters with its reason."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import numpy as np
import pytest
import redis

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.frame import _FIXED, MAGIC, encode
from edgeflow.links import Link
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for


def poison_entries() -> list[dict[str, Any]]:
    """The three entries of the red-team report, each as a stream entry of a valid-looking writer."""
    deep = b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"

    def arr(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
        d = dtype.encode()
        desc = struct.pack(f"<B{len(d)}sB{len(shape)}Q", len(d), d, len(shape), *shape)
        return _FIXED.pack(MAGIC, 1, 1, 9, 0.0, 2, len(data)) + desc + b"{}"

    return [
        {"h": _FIXED.pack(MAGIC, 1, 0, 9, 0.0, len(deep), 1) + deep, "d": b"x", "w": "evil", "q": 1},
        {"h": arr("|u1", (0, 2**63), b""), "d": b"", "w": "evil", "q": 2},
        {"h": arr("{'names':['a'],'formats':['u1']}", (1,), b"x"), "d": b"x", "w": "evil", "q": 3},
    ]


def counting_app(name: str, url: str, qos: str, seen: list[int], replicas: int = 1) -> EdgeApp:
    # The readers take every frame from the streams, as readers in other processes do: in one process a realtime
    # link would be served in memory, and the entries written into the stream here read by nobody.
    app = EdgeApp(name, broker=RedisBroker(url, local_links=False))

    @app.node(name="sensor", type="producer", fps=50)
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i}

    lock = threading.Lock()

    @app.node(name="store", type="sink", replicas=replicas)
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            with lock:
                seen.append(data["i"])

    app.link("sensor").to("store", qos=qos, claim_after=0.5)
    return app


@pytest.mark.parametrize("qos", ["realtime", "durable"])
def test_poison_entries_are_counted_and_the_readers_keep_running(redis_url: str, app_name: str, qos: str) -> None:
    seen: list[int] = []
    app = counting_app(app_name, redis_url, qos, seen, replicas=2)
    admin = redis.Redis.from_url(redis_url)
    with RunningApp(app) as run:
        assert wait_for(lambda: len(seen) >= 10, timeout=10)
        key = app.broker.stream_key("sensor", qos)  # type: ignore[attr-defined]
        for entry in poison_entries():
            admin.xadd(key, entry)
        before = len(seen)
        assert wait_for(lambda: len(seen) >= before + 50, timeout=10), "both replicas go on with the good frames"
        summary = run.stop()
    assert summary["store"]["rejected"] == 3, summary
    if qos == "durable":
        broker = RedisBroker(redis_url)
        broker.bind(app_name)
        letters = broker.dead_letters("store")
        assert len(letters) == 3, letters
        assert all("not a valid EdgeFlow frame" in x["error"] and x["attempts"] == 1 for x in letters)
        reasons = " | ".join(x["error"] for x in letters)
        for why in ("nested deeper than 64", "a dimension over 4294967296 is refused", "is not allowed on the wire"):
            assert why in reasons, reasons
        assert admin.xpending(key, "store")["pending"] == 0, "nothing left pending: no takeover loop"
        broker.close()
    admin.close()


def test_an_entry_that_kept_killing_its_readers_is_dead_lettered_before_it_is_decoded(
    redis_url: str, app_name: str
) -> None:
    """Attempts are counted first: an entry delivered max_attempts times goes to the dead letters on its next
    takeover whatever it holds (here one whose meta nests 3,000 deep, which once crashed the decoder)."""
    broker = RedisBroker(redis_url)
    broker.bind(app_name)
    link = Link("sensor", "store", "durable", claim_after=0.1, max_attempts=3)
    sub = broker.subscribe([link], "survivor")
    key = broker.stream_key("sensor", "durable")
    admin = redis.Redis.from_url(redis_url)
    entry_id = admin.xadd(key, poison_entries()[0])
    admin.xreadgroup("store", "dead-1", {key: ">"})  # delivered once, never acknowledged: the reader died
    for dead in ("dead-2", "dead-3"):
        time.sleep(0.12)
        admin.xclaim(key, "store", dead, 100, [entry_id])  # taken over, and that reader died too
    assert admin.xpending(key, "store")["pending"] == 1
    time.sleep(0.12)
    got: list[Any] = []
    assert wait_for(lambda: bool(broker.dead_letters("store")) or bool(got.extend(sub.read(0.05))), timeout=5)
    assert got == []
    (letter,) = broker.dead_letters("store")
    assert "not acknowledged after 3 deliveries" in letter["error"]
    assert admin.xpending(key, "store")["pending"] == 0
    sub.close()
    broker.close()
    admin.close()


def test_data_the_producer_cant_send_is_counted_and_the_producer_goes_on(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    def nested(depth: int) -> list[Any]:
        root: list[Any] = []
        cur = root
        for _ in range(depth):
            cur.append([])
            cur = cur[0]
        return root

    @app.node(name="sensor", type="producer")
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            if self.i > 6:
                return None
            return nested(1500) if self.i == 3 else (float("nan") if self.i == 5 else {"i": self.i})

    got: list[int] = []

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            got.append(data["i"])

    app.link("sensor").to("store", qos="durable")
    summary = RunningApp(app).start().wait(timeout=20)
    assert got == [1, 2, 4, 6]
    assert summary["sensor"]["failed"] == 2 and summary["sensor"]["frames_out"] == 4


def test_a_non_numeric_skip_field_is_ignored_not_taken_for_an_outage(
    redis_url: str, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = RedisBroker(redis_url)
    broker.bind(app_name)
    link = Link("sensor", "viewer", "realtime", depth=8)
    sub = broker.subscribe([link], "c0")
    pub = broker.publisher("sensor", [link])
    header, payload = encode(Frame(1, 0.0, {}, np.zeros(4, np.uint8)))
    broker.client.xadd(broker.stream_key("sensor"), {"h": header, "d": payload, "w": "evil", "q": "not-a-number"})
    pub.publish(Frame(2, 0.0, {}, b"ok"))
    got: list[int] = []
    assert wait_for(lambda: bool(got.extend(d.frame.frame_id for d in sub.read(0.05))) or len(got) >= 2, timeout=5)
    sub.flush()
    assert got == [1, 2] and sub.skipped == 0
    pub.publish(Frame(3, 0.0, {}, b"ok"))
    assert [d.frame.frame_id for d in sub.read(0.5)] == [3], "the skip notes went through: Redis did not fail"
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    sub.close()
    pub.close()
    broker.close()


def test_a_healthy_replica_busy_with_a_big_batch_is_not_taken_over(
    redis_url: str, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Small messages came 256 to a read; processed at 10 ms each, a batch outlasted claim_after, and the other
    replica took frames of a healthy one over: 32 of 600 were duplicated. Reads are sized by time now, and what
    is still being processed is kept alive."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    frames = 300

    @app.node(name="sensor", type="producer")
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i} if self.i <= frames else None

    seen: list[int] = []
    lock = threading.Lock()

    @app.node(name="store", type="sink", replicas=2)
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            time.sleep(0.01)
            with lock:
                seen.append(data["i"])

    app.link("sensor").to("store", qos="durable", claim_after=0.5)
    summary = RunningApp(app).start().wait(timeout=60)
    assert sorted(seen) == list(range(1, frames + 1)), f"{len(seen) - len(set(seen))} duplicated"
    assert summary["store"]["frames_in"] == frames
    assert not [r for r in caplog.records if "took over" in r.getMessage()]
