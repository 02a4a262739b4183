"""In-process links against a real redis-server: realtime frames between nodes of one process are handed over in
memory as read-only views, every frame is delivered or counted (also across the switch to memory and back), a reader
in another process or a topic watcher brings the stream entries back, and durable links keep their log in Redis."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
import redis

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.embedded import free_port
from edgeflow.links import Link
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for


@pytest.fixture(autouse=True)
def _gateway_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TCP_PORT", str(free_port()))


def entries_added(url: str, app: EdgeApp, topic: str, qos: str = "realtime") -> int:
    """How many entries were ever written to `topic`'s stream (0 when it does not exist)."""
    client = redis.Redis.from_url(url)
    try:
        key = app.broker.stream_key(topic, qos)  # type: ignore[attr-defined]
        return int(client.xinfo_stream(key)["entries-added"]) if client.exists(key) else 0
    finally:
        client.close()


class Seen:
    """What a sink got: frame ids, and whether each frame's array was a view of what the producer sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[int] = []
        self.views: list[bool] = []
        self.writable: list[bool] = []

    def add(self, frame_id: int, view: bool = False, writable: bool = False) -> None:
        with self.lock:
            self.ids.append(frame_id)
            self.views.append(view)
            self.writable.append(writable)

    def has(self, frame_id: int) -> bool:
        with self.lock:
            return frame_id in self.ids


def counting_app(name: str, url: str, n: int, seen: Seen, *, fps: float | None, depth: int = 1, **link: Any) -> EdgeApp:
    """src sends `n` frames (new arrays, kept by id) and ends; dst records what it gets."""
    app = EdgeApp(name, broker=RedisBroker(url))
    sent: dict[int, np.ndarray] = {}

    @app.node(name="src", type="producer", fps=fps)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            if self.i >= n:
                return None
            data = np.full((120, 160, 3), self.i % 256, np.uint8)
            sent[self.i] = data
            self.i += 1
            return data

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def process(self, data: np.ndarray) -> None:
            frame = self.current_frame
            assert frame is not None
            mine = sent.get(frame.frame_id)
            seen.add(frame.frame_id, mine is not None and np.shares_memory(data, mine), data.flags.writeable)

    app.link("src").to("dst", **{"qos": "realtime", "depth": depth, **link})  # into a sink, durable is the default
    return app


def test_frames_between_nodes_of_one_process_are_read_only_views_without_stream_entries(
    redis_url: str, app_name: str
) -> None:
    seen = Seen()
    app = counting_app(app_name, redis_url, 10_000, seen, fps=100)
    with RunningApp(app):
        # The producer looks at who reads its topic once a second; give it that second, then watch.
        assert wait_for(lambda: len(seen.ids) >= 150, timeout=10)
        written = entries_added(redis_url, app, "src")
        count = len(seen.ids)
        assert wait_for(lambda: len(seen.ids) >= count + 50, timeout=10)
        assert entries_added(redis_url, app, "src") == written, "no stream entry while the reader is in memory"
    with seen.lock:
        last = seen.views[-50:]
        assert all(last), "the sink viewed the producer's arrays: no copy"
        assert not any(seen.writable), "a frame's array is read-only, wherever it came from"
        assert seen.ids == sorted(set(seen.ids)), "in order, none twice"


@pytest.mark.parametrize("fps", [None, 200.0], ids=["unthrottled", "200fps"])
def test_every_frame_is_delivered_or_counted_across_the_switch_to_memory(
    redis_url: str, app_name: str, fps: float | None
) -> None:
    """The first frames go through Redis, the next ones through memory: none is lost uncounted at the switch."""
    seen = Seen()
    n = 3000 if fps is None else 400
    app = counting_app(app_name, redis_url, n, seen, fps=fps, depth=2)
    with RunningApp(app) as run:
        # The newest frame always reaches a realtime reader, so the last frame marks the end of the run.
        assert wait_for(lambda: seen.has(n - 1), timeout=30)
        summary = run.stop()
    dst = summary["dst"]
    assert summary["src"]["frames_out"] == n
    assert dst["frames_in"] == len(seen.ids)
    assert dst["frames_in"] + dst["dropped"] == n, dst
    assert seen.ids == sorted(set(seen.ids))
    assert any(seen.views), "the link went to memory during the run"


def test_a_producer_that_ends_leaves_its_last_frames_to_its_reader(redis_url: str, app_name: str) -> None:
    """A burst of frames and the producer is gone: what it handed over stays readable."""
    seen = Seen()
    app = counting_app(app_name, redis_url, 5, seen, fps=None, depth=8)
    with RunningApp(app) as run:
        assert wait_for(lambda: len(seen.ids) == 5, timeout=10), seen.ids
        summary = run.stop()
    assert seen.ids == [0, 1, 2, 3, 4]
    assert summary["dst"]["dropped"] == 0


def test_a_chain_to_a_gateway_in_one_process_delivers_or_counts_every_frame(redis_url: str, app_name: str) -> None:
    """sensor -> double -> gateway, all in one process: the reader that waits on Redis when the producer switches
    to memory is woken and reads on; the gateway gets the frames in memory."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    got: list[int] = []

    @app.node(name="sensor", type="producer", fps=100)
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"reading": self.i} if self.i <= 150 else None

    @app.node(name="double", type="consumer")
    class Double(ConsumerNode):
        def process(self, data: Any) -> Any:
            return {"reading": data["reading"] * 2}

    @app.node(name="gateway", type="gateway")
    class Gateway(GatewayNode):
        def on_frame(self, topic: str, frame: Frame) -> None:
            got.append(frame.data["reading"])

    app.link("sensor").to("double").to("gateway")
    with RunningApp(app) as run:
        assert wait_for(lambda: 300 in got, timeout=15)
        summary = run.stop()
    double = summary["double"]
    assert double["frames_in"] + double["dropped"] == 150, double
    assert double["frames_out"] == len(got) == summary["gateway"]["frames_in"]
    assert got == sorted(set(got)) and all(r % 2 == 0 for r in got)


def test_replicas_in_one_process_share_the_frames_of_a_link_in_memory(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    lock = threading.Lock()
    by: dict[int, list[int]] = {0: [], 1: []}
    n = 600

    @app.node(name="src", type="producer", fps=300)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i} if self.i <= n else None

    @app.node(name="work", type="sink", replicas=2)
    class Work(SinkNode):
        def process(self, data: Any) -> None:
            time.sleep(0.004)  # slower than the producer: one replica alone could not keep up
            with lock:
                by[self.replica].append(data["i"])

    app.link("src").to("work", qos="realtime", depth=4)
    with RunningApp(app) as run:
        assert wait_for(lambda: n in by[0] + by[1], timeout=20)
        time.sleep(0.1)  # the other replica finishes the frame it holds
        summary = run.stop()
    both = by[0] + by[1]
    assert len(both) == len(set(both)), "no frame processed twice"
    assert by[0] and by[1], "both replicas worked"
    work = summary["work"]
    assert work["frames_in"] == len(both)
    assert work["frames_in"] + work["dropped"] == n, work


def test_a_reader_in_another_process_brings_the_stream_entries_back(redis_url: str, app_name: str) -> None:
    """A second broker object is another process to the first: once its reader joins the sink's group, the
    producer writes stream entries again, and between the two readers every frame is delivered or counted."""
    seen = Seen()
    n = 900
    app = counting_app(app_name, redis_url, n, seen, fps=300, depth=2)
    other = RedisBroker(redis_url)
    other.bind(app_name)
    other.connect()
    theirs: list[int] = []
    with RunningApp(app) as run:
        assert wait_for(lambda: any(seen.views), timeout=10), "served in memory first"
        sub = other.subscribe([Link("src", "dst", "realtime", "redis", 2)], "elsewhere")
        try:
            deadline = time.monotonic() + 20
            while not seen.has(n - 1) and (not theirs or theirs[-1] != n - 1) and time.monotonic() < deadline:
                theirs += [d.frame.frame_id for d in sub.read(0.1)]
            sub.flush()
            summary = run.stop()
            skipped = sub.skipped
        finally:
            sub.close()
            other.close()
    assert theirs, "the reader elsewhere got frames: the producer went back to stream entries"
    assert not set(theirs) & set(seen.ids), "one group: each frame goes to one of its readers"
    dst = summary["dst"]
    assert dst["frames_in"] + dst["dropped"] + len(theirs) + skipped == n, (dst, len(theirs), skipped)


def test_a_topic_watcher_sees_the_frames_of_a_link_served_in_memory(redis_url: str, app_name: str) -> None:
    seen = Seen()
    app = counting_app(app_name, redis_url, 100_000, seen, fps=100)
    with RunningApp(app):
        assert wait_for(lambda: any(seen.views), timeout=10)
        watcher = app.broker.tail("src")
        try:
            watched: list[int] = []
            deadline = time.monotonic() + 10
            while len(watched) < 20 and time.monotonic() < deadline:
                watched += [d.frame.frame_id for d in watcher.read(0.1)]
        finally:
            watcher.close()
    assert len(watched) >= 20, "the producer writes stream entries again while someone watches"
    assert watched == sorted(set(watched))


def test_a_durable_link_keeps_its_log_in_redis_in_one_process(redis_url: str, app_name: str) -> None:
    seen = Seen()
    app = counting_app(app_name, redis_url, 200, seen, fps=200, qos="durable")
    with RunningApp(app):
        assert wait_for(lambda: seen.has(199), timeout=15)
    assert entries_added(redis_url, app, "src", "durable") == 200, "every durable frame was logged"
    assert seen.ids == list(range(200)) and not any(seen.views)


def test_a_producer_that_writes_into_a_frame_it_sent_is_told_what_to_do(
    redis_url: str, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its reader views that memory: the array became read-only, and the error says why and what to do."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    got: list[int] = []

    @app.node(name="src", type="producer", fps=100)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.buf = np.zeros((8, 8), np.uint8)
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            self.buf[0, 0] = self.i % 256
            return self.buf

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def process(self, data: np.ndarray) -> None:
            got.append(int(data[0, 0]))

    app.link("src").to("dst", qos="realtime")
    with caplog.at_level(logging.ERROR), RunningApp(app) as run:
        assert wait_for(lambda: run.stats("src").get("failed", 0) > 0, timeout=10)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "node 'src': produce() raised" in text and "read-only" in text and "Return a new array" in text


@pytest.mark.parametrize("local_links", [True, False], ids=["in-memory", "through-redis"])
def test_the_producers_of_a_process_start_once_its_readers_take_input(
    redis_url: str, app_name: str, local_links: bool
) -> None:
    """A reader slow to start (a model to load) still gets a short run's first frames: on a realtime link of depth 1
    a frame produced before its reader subscribed would be skipped."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url, local_links=local_links))
    got: list[int] = []

    @app.node(name="src", type="producer", fps=50)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i} if self.i <= 20 else None

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def configure(self) -> None:
            time.sleep(1.0)

        def process(self, data: dict[str, int]) -> None:
            got.append(data["i"])

    app.link("src").to("dst", qos="realtime")
    with RunningApp(app) as run:
        assert wait_for(lambda: 20 in got, timeout=15), got
        summary = run.stop()
    assert got == list(range(1, 21)), f"the first frames were skipped: {summary['dst']}"


def test_a_process_that_runs_one_end_of_a_link_reads_and_writes_it_through_the_broker_alone(
    redis_url: str, app_name: str
) -> None:
    """`python main.py --node dst`: the source runs elsewhere, so nothing of the in-memory hand-over is in the way
    of the reader's (or, for `--node src`, the writer's) every frame."""
    from edgeflow.brokers.redis.local import LocalPublisher, LocalSubscription

    link = Link("src", "dst", "realtime")
    reader = RedisBroker(redis_url)
    reader.bind(app_name)
    reader.running_here(["dst"])
    writer = RedisBroker(redis_url)
    writer.bind(app_name)
    writer.running_here(["src"])
    both = RedisBroker(redis_url)
    both.bind(app_name)
    both.running_here(["src", "dst"])
    try:
        assert not isinstance(reader.subscribe([link], "c0"), LocalSubscription)
        assert not isinstance(writer.publisher("src", [link]), LocalPublisher)
        assert isinstance(both.subscribe([link], "c1"), LocalSubscription)
        assert isinstance(both.publisher("src", [link]), LocalPublisher)
    finally:
        for b in (reader, writer, both):
            b.close()


def test_garbage_in_the_reader_registrations_never_stops_a_producer(redis_url: str, app_name: str) -> None:
    """Redis is reachable by others: a registration whose stamp is not a number, or whose name is not UTF-8, is no
    registration; the producer keeps handing frames over in memory and never dies of it."""
    seen = Seen()
    app = counting_app(app_name, redis_url, 100_000, seen, fps=200)
    client = redis.Redis.from_url(redis_url)
    try:
        with RunningApp(app) as run:
            assert wait_for(lambda: len(seen.ids) >= 50, timeout=10)
            hub = app.broker.local  # type: ignore[attr-defined]
            client.hset(hub.readers_key("src", "dst"), b"\xff\xfe", b"not-a-time")
            client.hset(hub.watchers_key("src"), "evil", "soon")
            before = len(seen.ids)
            time.sleep(2.5)  # the producer reads the registrations once a second
            assert len(seen.ids) > before + 200
            assert run.stats("src").get("restarts", 0) == 0, "the producer never died"
            assert seen.views[-1], "still handed over in memory"
    finally:
        client.close()


def test_a_reader_stuck_in_process_never_holds_its_producer(redis_url: str, app_name: str) -> None:
    """The producer waits for a reader it woke to come back for more (the hand-back), but only briefly: a reader
    stuck in process() for a second leaves its producer making frames, the rest counted as skipped."""
    release = threading.Event()
    made: list[int] = []
    got: list[int] = []
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="src", type="producer")
    class Src(ProducerNode):
        def produce(self) -> Any:
            made.append(1)
            return b"x" * 64

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def process(self, data: bytes) -> None:
            got.append(1)
            if len(got) == 300:
                release.wait(1.0)  # stuck, as a node waiting on a device would be

    app.link("src").to("dst", qos="realtime")
    with RunningApp(app) as run:
        assert wait_for(lambda: len(got) >= 300, timeout=10)
        stuck_at = len(made)
        time.sleep(0.5)
        assert len(got) == 300, "the reader is still stuck"
        assert len(made) - stuck_at > 100, "its producer went on making frames meanwhile"
        release.set()
        assert wait_for(lambda: len(got) > 300, timeout=5), "and the reader goes on once it is free"
        assert run.stats("src").get("restarts", 0) == 0
