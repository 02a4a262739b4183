"""Whole pipelines in one process against a real redis-server: links, gateway TCP, fusion, bad input."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.embedded import free_port
from edgeflow.nodes import ConsumerNode, FusionNode, GatewayNode, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for


@pytest.fixture(autouse=True)
def _gateway_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TCP_PORT", str(free_port()))


class Recorder:
    """Collects what reached a node, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, Frame]] = []

    def add(self, topic: str, frame: Frame) -> None:
        with self.lock:
            self.items.append((topic, frame))

    def ids(self, topic: str) -> list[int]:
        with self.lock:
            return [f.frame_id for t, f in self.items if t == topic]


def seed_like_app(name: str, url: str, frames: int, rec: Recorder, fps: float | None = 60) -> EdgeApp:
    app = EdgeApp(name, broker=RedisBroker(url))

    @app.node(name="camera", type="producer", fps=fps, device="camera")
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            if self.i >= frames:
                return None
            self.i += 1
            return np.full((48, 64, 3), self.i % 256, np.uint8)

    @app.node(name="detector", type="consumer", replicas=2, device="gpu")
    class Detector(ConsumerNode):
        def process(self, frame: np.ndarray) -> Any:
            out = frame.copy()
            out[0, 0] = 255
            return out, {"replica": self.replica}

    @app.node(name="gateway", type="gateway")
    class Gateway(GatewayNode):
        def on_frame(self, topic: str, frame: Frame) -> None:
            rec.add(topic, frame)

    app.link("camera").to("detector").to("gateway")
    app.link("camera").to("gateway")
    return app


def test_frames_reach_the_gateway_over_both_paths(redis_url: str, app_name: str) -> None:
    rec = Recorder()
    app = seed_like_app(app_name, redis_url, 60, rec)
    with RunningApp(app) as run:
        # The newest frame always reaches a realtime reader, so the last frame marks the end of the run.
        assert wait_for(lambda: len(rec.ids("camera")) >= 60 and 59 in rec.ids("detector"), timeout=15)
        summary = run.stop()
    direct, processed = rec.ids("camera"), rec.ids("detector")
    assert direct == list(range(60)), "the direct TCP link delivers every frame, in order"
    assert len(set(processed)) == len(processed), "no frame processed twice by the two replicas"
    det = summary["detector"]
    # Nothing lost silently: what the detector did not get was skipped by design, and counted.
    assert det["frames_in"] + det["dropped"] == 60
    assert det["frames_out"] == det["frames_in"] == len(processed)
    frames = [f for t, f in rec.items if t == "detector"]
    assert {f.meta["replica"] for f in frames} <= {0, 1}
    assert all(f.data[0, 0, 0] == 255 for f in frames)
    cam = summary["camera"]
    assert cam["frames_out"] == 60
    assert cam["failed"] == 0


def test_producer_is_paced_by_fps(redis_url: str, app_name: str) -> None:
    rec = Recorder()
    app = seed_like_app(app_name, redis_url, 30, rec, fps=30)
    with RunningApp(app):
        assert wait_for(lambda: len(rec.ids("camera")) >= 30, timeout=10)
    stamps = [f.timestamp for t, f in rec.items if t == "camera"]
    span = stamps[-1] - stamps[0]
    assert 29 / 30 * 0.8 < span < 29 / 30 * 1.5, f"30 frames at 30 fps span ~0.97 s, got {span:.2f} s"


def test_pipeline_without_gateway_ends_when_its_producer_ends(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    got: list[Any] = []

    @app.node(name="imu", type="producer", fps=500)
    class Imu(ProducerNode):
        def configure(self) -> None:
            self.n = 0

        def produce(self) -> Any:
            self.n += 1
            return {"ax": self.n} if self.n <= 20 else None

    @app.node(name="log", type="sink")
    class Log(SinkNode):
        def process(self, data: Any) -> None:
            got.append((data["ax"], self.current_frame.frame_id if self.current_frame else None))

    app.link("imu").to("log", qos="realtime", depth=32)
    summary = RunningApp(app).start().wait(timeout=20)
    assert got == [(i + 1, i) for i in range(20)]
    assert summary["log"]["frames_in"] == 20


def test_fusion_matches_by_timestamp(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    fused: list[tuple[float, float]] = []
    base = time.time()

    def producer(name: str, offset: float, count: int) -> None:
        @app.node(name=name, type="producer", fps=50)
        class P(ProducerNode):
            def configure(self) -> None:
                self.i = 0

            def produce(self) -> Any:
                if self.i >= count:
                    return None
                self.i += 1
                return Frame(self.i, base + self.i * 0.1 + offset, {"src": name}, self.i)

    producer("cam", 0.0, 10)
    producer("lidar", 0.004, 10)

    @app.node(name="fuse", type="fusion")
    class Fuse(FusionNode):
        def configure(self) -> None:
            self.slop = 0.01

        def process(self, frames: list[Frame]) -> Any:
            fused.append((frames[0].data, frames[1].data))
            assert [f.meta["src"] for f in frames] == ["cam", "lidar"]
            return {"pair": [frames[0].data, frames[1].data]}

    @app.node(name="out", type="sink")
    class Out(SinkNode):
        def process(self, data: Any) -> None:
            pass

    app.link("cam").to("fuse", depth=16).to("out", qos="realtime", depth=16)
    app.link("lidar").to("fuse", depth=16)
    summary = RunningApp(app).start().wait(timeout=20)
    assert fused == [(i, i) for i in range(1, 11)]
    assert summary["out"]["frames_in"] == 10
    assert summary["fuse"]["dropped"] == 0


def test_bad_input_is_logged_counted_and_skipped(
    redis_url: str, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    processed: list[int] = []

    @app.node(name="src", type="producer", fps=200)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            if self.i > 40:
                return None
            if self.i % 10 == 0:
                return {1, 2}  # not sendable
            if self.i % 10 == 5:
                raise RuntimeError("sensor glitch")
            return self.i

    @app.node(name="proc", type="sink")
    class Proc(SinkNode):
        def process(self, data: Any) -> None:
            if data % 3 == 0:
                raise ValueError(f"cannot handle {data}")
            processed.append(data)

    app.link("src").to("proc", qos="realtime", depth=64)
    with caplog.at_level(logging.INFO, logger="edgeflow"):
        summary = RunningApp(app).start().wait(timeout=20)
    sent = [i for i in range(1, 41) if i % 10 not in (0, 5)]
    assert processed == [i for i in sent if i % 3], "the nodes went on after every failure"
    assert summary["src"]["failed"] == 8
    assert summary["proc"]["failed"] == len([i for i in sent if i % 3 == 0])
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("'src'" in m and "frame" in m and "produce() returned set" in m for m in messages)
    assert any("'src'" in m and "RuntimeError: sensor glitch" in m for m in messages)
    assert any("'proc'" in m and "ValueError: cannot handle 3" in m for m in messages)
    tracebacks = sum("Traceback" in m for m in messages)
    assert 1 <= tracebacks <= 4, "tracebacks are rate-limited to one a second"


def test_consumer_return_shapes(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    out: list[Frame] = []

    @app.node(name="src", type="producer")
    class Src(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return Frame(self.i, 1000.0 + self.i, {"origin": "src"}, self.i) if self.i <= 4 else None

    @app.node(name="mid", type="consumer")
    class Mid(ConsumerNode):
        def process(self, data: Any) -> Any:
            return [None, data * 10, (data * 10, {"extra": True}), (None, {})][data - 1]

    @app.node(name="end", type="sink")
    class End(SinkNode):
        def process(self, data: Any) -> None:
            assert self.current_frame is not None
            assert self.current_source == "mid"
            out.append(self.current_frame)

    app.link("src").to("mid", depth=8).to("end", qos="realtime", depth=8)
    RunningApp(app).start().wait(timeout=20)
    assert [(f.frame_id, f.timestamp, f.data, f.meta) for f in out] == [
        (2, 1002.0, 20, {"origin": "src"}),
        (3, 1003.0, 30, {"origin": "src", "extra": True}),
    ]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "through-redis"])
def test_a_link_codec_encodes_once_for_its_link_only(redis_url: str, app_name: str, in_memory: bool) -> None:
    """cam -> remote asks for JPEG: that link carries JPEG, decoded to an array; cam -> local stays raw and exact.
    Both when the readers are served in memory (one process) and through the streams (as between processes)."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url, local_links=in_memory))
    got: dict[str, list[np.ndarray]] = {"remote": [], "local": []}
    img = np.zeros((240, 320, 3), np.uint8)
    img[60:180, 80:240] = (10, 120, 250)

    @app.node(name="cam", type="producer", fps=100)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return img if self.i <= 5 else None

    for name in got:

        @app.node(name=name, type="sink")
        class Keep(SinkNode):
            def process(self, data: Any) -> None:
                got[self.name].append(data)

    app.link("cam").to("remote", qos="realtime", codec="jpeg", quality=90, depth=8)
    app.link("cam").to("local", qos="realtime", depth=8)
    RunningApp(app).start().wait(timeout=20)
    assert len(got["local"]) == len(got["remote"]) == 5
    assert all(np.array_equal(a, img) for a in got["local"])
    assert all(a.shape == img.shape and np.abs(a.astype(int) - img).mean() < 2.0 for a in got["remote"])
    assert not any(np.array_equal(a, img) for a in got["remote"]), "JPEG's loss shows: the frames were encoded"
    if in_memory:
        return
    broker = RedisBroker(redis_url)
    broker.bind(app_name)
    raw_entry = broker.client.xrevrange(broker.stream_key("cam"), count=1)[0][1]
    jpeg_entry = broker.client.xrevrange(broker.stream_key("cam", variant="jpeg90"), count=1)[0][1]
    assert len(raw_entry[b"d"]) == img.nbytes
    assert len(jpeg_entry[b"d"]) < img.nbytes // 20
    broker.close()
