"""EdgeFlow and an independent ROS 2 side (tests/ros2/ros_side.py, separate processes) over DDS on loopback.

No ROS 2 installation exists here; the ROS 2 side is what a node on rmw_cyclonedds_cpp is on the wire: a
Cyclone DDS participant with ROS 2's topic and type names, serializing with cyclonedds' own IDL types.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from benchmarks._harness import Child
from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.nodes import IDLE, GatewayNode, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for
from edgeflow_ros2 import Ros2Interface, Ros2Source

from .patterns import as_received, pattern

IMAGE, COMPRESSED, STRING = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "std_msgs/msg/String"


@contextmanager
def ros_side(role: str, **kwargs: Any) -> Iterator[Child]:
    """The ROS 2 side as a process, READY when this yields; killed (by pid) when the block ends."""
    child = Child(f"tests.ros2.ros_side:{role}", **kwargs)
    try:
        child.wait_for("READY", 30)
        yield child
    finally:
        if child.proc.poll() is None:
            child.kill()


class Collector:
    """What reached a sink, by source, thread-safely (arrays copied: they are views of received buffers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[str, list[Frame]] = {}

    def add(self, source: str, frame: Frame) -> None:
        data = np.array(frame.data) if isinstance(frame.data, np.ndarray) else frame.data
        with self.lock:
            self.frames.setdefault(source, []).append(Frame(frame.frame_id, frame.timestamp, dict(frame.meta), data))

    def count(self, source: str | None = None) -> int:
        with self.lock:
            return sum(len(v) for k, v in self.frames.items() if source in (None, k))


def add_collecting_sink(app: EdgeApp, sources: list[str], into: Collector, qos: str = "durable") -> None:
    @app.node(name="sink", type="sink")
    class Sink(SinkNode):
        def process(self, data: Any) -> None:
            assert self.current_frame is not None and self.current_source is not None
            into.add(self.current_source, self.current_frame)

    for source in sources:
        app.link(source).to("sink", qos=qos)


@pytest.mark.slow
def test_edgeflow_to_ros2_640x480_at_30_fps(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="cam", type="producer", fps=30)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Frame:
            self.i += 1
            return Frame(self.i, time.time(), {"frame_id": f"f{self.i}"}, pattern(self.i, 480, 640))

    @app.node(name="gw", type="gateway")
    class Gw(GatewayNode):
        def configure(self) -> None:
            self.add_interface(Ros2Interface({"cam": "/edgeflow/camera/image_raw"}))

    app.link("cam").to("gw")
    stream = {"topic": "/edgeflow/camera/image_raw", "msg_type": IMAGE, "count": 90}
    with ros_side("sub", streams=[stream], timeout=25) as ros:
        with RunningApp(app) as run:
            res = ros.finish(40)["/edgeflow/camera/image_raw"]
            summary = run.stop()
    assert res["count"] == 90, res
    assert res["rate"] >= 25, f"{res['rate']:.1f} Hz at the ROS 2 side"
    assert res["n_bad"] == 0, res["bad"]
    fields = {"w": 640, "h": 480, "encoding": "bgr8", "step": 1920, "bigendian": 0, "len": 921_600}
    assert res["all_fields"] == [[list(kv) for kv in sorted(fields.items())]], (
        "every message had the right size, encoding and step"
    )
    assert summary["gw"]["ros2_published"] >= 90 and summary["gw"]["ros2_failed"] == 0


def test_ros2_to_edgeflow_every_frame_as_bgr(redis_url: str, app_name: str) -> None:
    n, h, w = 8, 48, 64

    def images(encoding: str) -> list[dict[str, Any]]:
        return [{"kind": "image", "encoding": encoding, "h": h, "w": w, "index": i, "frame_id": f"f{i}",
                 "sec": 1000 + i, "nanosec": 250_000_000} for i in range(n)]  # fmt: skip

    streams = [
        {"topic": f"/ros/{enc}", "msg_type": IMAGE, "messages": images(enc)} for enc in ("bgr8", "rgb8", "mono8")
    ]
    streams.append(
        {
            "topic": "/ros/jpeg",
            "msg_type": COMPRESSED,
            "messages": [
                {"kind": "jpeg", "h": h, "w": w, "index": i, "frame_id": f"f{i}", "sec": 1000 + i} for i in range(n)
            ],
        }
    )
    streams.append({"topic": "/ros/chatter", "msg_type": STRING, "messages": [
        {"kind": "string", "text": json.dumps({"i": i, "label": "ünï"})} for i in range(n)]})  # fmt: skip

    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    for enc in ("bgr8", "rgb8", "mono8"):

        @app.node(name=f"ros_{enc}", type="producer", topic=f"/ros/{enc}", msg_type=IMAGE, qos="durable")
        class RosCam(Ros2Source):
            pass

    @app.node(name="ros_jpeg", type="producer", topic="/ros/jpeg", msg_type=COMPRESSED, qos="durable")
    class RosJpeg(Ros2Source):
        pass

    @app.node(name="ros_chatter", type="producer", topic="ros/chatter", msg_type=STRING, qos="durable",
              parse_json=True)  # fmt: skip
    class RosChatter(Ros2Source):
        pass

    got = Collector()
    sources = ["ros_bgr8", "ros_rgb8", "ros_mono8", "ros_jpeg", "ros_chatter"]
    add_collecting_sink(app, sources, got)
    with RunningApp(app) as run:
        with ros_side("pub", streams=streams, rate=40, reliable=True, timeout=20) as ros:
            res = ros.finish(40)
        assert wait_for(lambda: got.count() >= 5 * n, timeout=15), {s: got.count(s) for s in sources}
        summary = run.stop()
    assert res["matched"] == [1] * 5 and res["acked"], res
    for enc in ("bgr8", "rgb8", "mono8"):
        frames = got.frames[f"ros_{enc}"]
        assert [f.meta["frame_id"] for f in frames] == [f"f{i}" for i in range(n)], "every frame, in order"
        for i, f in enumerate(frames):
            assert f.timestamp == pytest.approx(1000.25 + i, abs=1e-6), "the timestamp is the header's stamp"
            assert f.meta["encoding"] == enc and f.meta["ros_topic"] == f"/ros/{enc}"
            assert f.data.shape == ((h, w) if enc == "mono8" else (h, w, 3)) and f.data.dtype == np.uint8
            assert np.array_equal(f.data, as_received(i, h, w, enc)), f"{enc} frame {i} is the right BGR array"
    for i, f in enumerate(got.frames["ros_jpeg"]):
        assert f.data.shape == (h, w, 3) and f.meta["format"] == "jpeg"
        # A channel swap would be ~85 off on this random picture; JPEG at quality 95 is a few levels off.
        assert np.abs(f.data.astype(int) - pattern(i, h, w).astype(int)).mean() < 12
    assert [f.data for f in got.frames["ros_chatter"]] == [{"i": i, "label": "ünï"} for i in range(n)]
    for source in sources:
        assert summary[source]["rejected"] == 0 and summary[source]["failed"] == 0, summary[source]
        assert summary[source]["frames_out"] == n


@pytest.mark.slow
def test_round_trip_edgeflow_ros2_edgeflow(redis_url: str, app_name: str) -> None:
    h, w = 120, 160
    sent: dict[int, float] = {}
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="cam", type="producer", fps=20)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Frame:
            self.i += 1
            sent[self.i] = ts = time.time()
            return Frame(self.i, ts, {"frame_id": f"f{self.i}"}, pattern(self.i, h, w))

    @app.node(name="gw", type="gateway")
    class Gw(GatewayNode):
        def configure(self) -> None:
            self.add_interface(Ros2Interface({"cam": "/roundtrip/out"}))

    @app.node(name="back", type="producer", topic="/roundtrip/back", msg_type=IMAGE)
    class Back(Ros2Source):
        pass

    got = Collector()
    app.link("cam").to("gw")
    add_collecting_sink(app, ["back"], got)
    with ros_side("relay", src="/roundtrip/out", dst="/roundtrip/back", duration_s=15) as ros:
        with RunningApp(app) as run:
            assert wait_for(lambda: got.count() >= 40, timeout=15), got.count()
            summary = run.stop()
        ros.kill()
    frames = got.frames["back"]
    for f in frames:
        index = int(f.meta["frame_id"][1:])
        assert np.array_equal(f.data, pattern(index, h, w)), f"frame {index} came back with its pixels"
        assert f.timestamp == pytest.approx(sent[index], abs=1e-6), "and with its original timestamp"
        assert f.meta["encoding"] == "bgr8"
    indices = [int(f.meta["frame_id"][1:]) for f in frames]
    assert indices == sorted(indices), "in order"
    assert summary["back"]["rejected"] == 0 and summary["gw"]["ros2_failed"] == 0


def test_bad_input_is_counted_and_the_source_keeps_running(redis_url: str, app_name: str) -> None:
    h, w = 12, 16
    good = {"kind": "image", "encoding": "bgr8", "h": h, "w": w}
    messages = [
        {**good, "index": 0, "frame_id": "f0"},
        {**good, "step": 100},  # rows of 48 bytes declared 100 long: the sizes don't add up
        {**good, "data_len": 100},  # 100 bytes of pixels for a 12 x 16 image
        {**good, "h_field": 2**32 - 1, "w_field": 2**32 - 1, "step": 2**32 - 1},  # "4 billion squared" pixels
        {**good, "encoding": "yuv422", "step": 32},  # not an encoding this source converts
        {**good, "h": 0, "w": 0},  # an empty image
        {**good, "index": 1, "frame_id": "f1"},
        {**good, "index": 2, "frame_id": "f2"},
    ]
    streams = [
        {"topic": "/ros/bad", "msg_type": IMAGE, "messages": messages},
        # Another node publishes strings on the same topic: DDS refuses the match; the source counts the writer.
        {"topic": "/ros/bad", "msg_type": STRING, "messages": [{"kind": "string", "text": "hi"}], "match": False},
    ]
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="ros_bad", type="producer", topic="/ros/bad", msg_type=IMAGE, qos="durable")
    class RosBad(Ros2Source):
        pass

    got = Collector()
    add_collecting_sink(app, ["ros_bad"], got)
    with RunningApp(app) as run:
        with ros_side("pub", streams=streams, rate=50, reliable=True, timeout=20) as ros:
            res = ros.finish(40)
        assert wait_for(lambda: got.count() >= 3, timeout=10), got.count()
        time.sleep(1.2)  # the source looks at DDS's status once a second
        summary = run.stop()
    assert res["acked"], res
    frames = got.frames["ros_bad"]
    assert [f.meta["frame_id"] for f in frames] == ["f0", "f1", "f2"], "the good frames, before and after"
    assert all(np.array_equal(f.data, pattern(int(f.meta["frame_id"][1:]), h, w)) for f in frames)
    assert summary["ros_bad"]["rejected"] == 5, summary["ros_bad"]
    assert summary["ros_bad"]["failed"] == 0
    assert summary["ros_bad"]["ros2_refused_writers"] >= 1, "the String writer was refused and counted"


def test_edgeflow_to_ros2_rgb8_mono8_jpeg_and_string(redis_url: str, app_name: str) -> None:
    h, w = 48, 64
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    def producer(name: str, make: Any) -> None:
        @app.node(name=name, type="producer", fps=30)
        class P(ProducerNode):
            def configure(self) -> None:
                self.i = 0

            def produce(self) -> Frame:
                self.i += 1
                return Frame(self.i, time.time(), {"frame_id": f"f{self.i}"}, make(self.i))

    producer("color", lambda i: pattern(i, h, w))
    producer("gray", lambda i: np.ascontiguousarray(pattern(i, h, w)[..., 0]))
    producer("jpg", lambda i: pattern(i, h, w))
    producer("events", lambda i: {"i": i, "boxes": [[1, 2, 3, 4]]})

    @app.node(name="gw", type="gateway")
    class Gw(GatewayNode):
        def configure(self) -> None:
            topics = {"color": "/ef/color", "gray": "/ef/gray", "jpg": "/ef/jpeg", "events": "/ef/events"}
            self.add_interface(Ros2Interface(topics, encodings={"color": "rgb8", "jpg": "jpeg"}))

    for name in ("color", "gray", "jpg", "events"):
        app.link(name).to("gw")
    kinds = {"/ef/color": IMAGE, "/ef/gray": IMAGE, "/ef/jpeg": COMPRESSED, "/ef/events": STRING}
    streams = [{"topic": topic, "msg_type": kind, "count": 8} for topic, kind in kinds.items()]
    with ros_side("sub", streams=streams, timeout=20) as ros:
        with RunningApp(app) as run:
            res = ros.finish(30)
            summary = run.stop()
    assert all(res[st["topic"]]["count"] >= 8 for st in streams), {t: r["count"] for t, r in res.items()}
    assert res["/ef/color"]["all_fields"] == [
        [["bigendian", 0], ["encoding", "rgb8"], ["h", h], ["len", h * w * 3], ["step", w * 3], ["w", w]]
    ]
    assert res["/ef/gray"]["all_fields"] == [
        [["bigendian", 0], ["encoding", "mono8"], ["h", h], ["len", h * w], ["step", w], ["w", w]]
    ]
    assert res["/ef/color"]["n_bad"] == res["/ef/gray"]["n_bad"] == 0, "pixels in RGB order and mono"
    assert res["/ef/jpeg"]["all_fields"] == [[["format", "jpeg"], ["h", h], ["w", w]]]
    # Random pixels at quality 80 with 4:2:0 chroma come back ~12 levels off; a red/blue swap would be ~85.
    assert res["/ef/jpeg"]["max_err"] < 30, "the JPEG holds the frame, in BGR order"
    events = [json.loads(t) for t in res["/ef/events"]["texts"]]
    assert all(e["boxes"] == [[1, 2, 3, 4]] for e in events) and len({e["i"] for e in events}) == len(events)
    assert summary["gw"]["ros2_failed"] == 0


@pytest.mark.slow
def test_durable_topic_waits_for_a_slow_reliable_subscriber(redis_url: str, app_name: str) -> None:
    """A reliable subscriber slower than the frames: every message written reaches it; the rest is counted.

    Warm-up frames go until the subscriber has matched the writer (DDS delivers a volatile topic's samples
    only to readers that know the writer when they are sent); the frames that count come after.
    """
    h, w = 48, 64
    hold, go = threading.Event(), threading.Event()
    interfaces: list[Ros2Interface] = []
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="cam", type="producer", fps=1000)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            if not go.is_set():
                time.sleep(0.05)
                return IDLE if hold.is_set() else Frame(0, time.time(), {"frame_id": "warm-up"}, pattern(0, h, w))
            self.i += 1
            return Frame(self.i, time.time(), {"frame_id": f"f{self.i}"}, pattern(self.i, h, w))

    @app.node(name="gw", type="gateway")
    class Gw(GatewayNode):
        def configure(self) -> None:
            interfaces.append(self.add_interface(Ros2Interface({"cam": "/ef/reliable"}, qos="durable")))  # type: ignore[arg-type]

    app.link("cam").to("gw")
    stream = {"topic": "/ef/reliable", "msg_type": IMAGE, "count": 10_000}
    side = {"timeout": 20, "reliable": True, "keep_all": True, "delay": 0.02, "quiet": 1.5}
    with ros_side("sub", streams=[stream], **side) as ros:
        with RunningApp(app) as run:
            ros.wait_for("MATCHED", 15)
            hold.set()
            time.sleep(0.3)  # the last warm-up frames are written (and skipped by the subscriber)
            before = interfaces[0].counters()["cam"]
            go.set()
            time.sleep(2.0)
            run.stop()
        res = ros.finish(20)["/ef/reliable"]
    after = interfaces[0].counters()["cam"]
    written = after["published"] - before["published"]
    assert res["n_bad"] == 0
    assert res["count"] == written, "every message written arrived: nothing lost on the way"
    delta = {k: after[k] - before[k] for k in after}
    assert delta["dropped"] > 0, "the frames the subscriber could not take were dropped here, counted"
    assert delta["received"] == delta["published"] + delta["dropped"], delta
    assert delta["failed"] == delta["unwatched"] == 0, delta
