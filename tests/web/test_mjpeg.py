"""MJPEG streams parsed part by part; ordering and the jitter buffer; many viewers and a slow one."""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest
import simplejpeg

from edgeflow.embedded import EmbeddedRedis
from edgeflow.frame import Frame
from edgeflow_web._streams import TopicStream

from .support import make_app, mjpeg, rate, run_pipeline


def test_parts_are_valid_jpegs_at_the_producer_rate(redis_server: EmbeddedRedis) -> None:
    app, holder = make_app(redis_server.url, fps=30, shape=(240, 320, 3))
    with run_pipeline(app, holder) as running, mjpeg(running, "cam") as stream:
        arrivals: list[float] = []
        ids: list[int] = []
        t_end = time.monotonic() + 3.0
        for headers, body in stream:
            arrivals.append(time.monotonic())
            ids.append(int(headers["x-frame-id"]))
            assert headers["content-type"] == "image/jpeg"
            assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
            height, width, _, _ = simplejpeg.decode_jpeg_header(body)
            assert (height, width) == (240, 320)
            if len(arrivals) == 1:
                pixels = simplejpeg.decode_jpeg(body, colorspace="BGR")
                assert pixels.shape == (240, 320, 3)
            if time.monotonic() > t_end:
                break
        with running.client() as c:
            produced = c.get("/api/fps").json()["cam"]
            status = c.get("/api/status").json()["topics"]["cam"]
    assert ids == sorted(ids), "frames of a topic come in order"
    assert 20 <= rate(arrivals) <= 40, (rate(arrivals), produced)
    assert abs(rate(arrivals) - produced) < 0.25 * produced
    assert status["encoded"] <= status["received"]


def test_each_frame_is_encoded_once_whatever_the_viewers(redis_server: EmbeddedRedis) -> None:
    app, holder = make_app(redis_server.url, fps=30)
    with run_pipeline(app, holder) as running, running.client() as c:
        time.sleep(0.5)
        assert c.get("/api/status").json()["topics"]["cam"]["encoded"] == 0, "no viewer, no encoding"
        got: list[int] = [0, 0, 0]
        start = threading.Barrier(4)

        def watch(i: int) -> None:
            with mjpeg(running, "cam") as stream:
                start.wait()
                t_end = time.monotonic() + 2.0
                for _ in stream:
                    got[i] += 1
                    if time.monotonic() > t_end:
                        break

        threads = [threading.Thread(target=watch, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        start.wait()
        before = c.get("/api/status").json()["topics"]["cam"]
        for t in threads:
            t.join(10)
        after = c.get("/api/status").json()["topics"]["cam"]
    encoded = after["encoded"] - before["encoded"]
    received = after["received"] - before["received"]
    assert min(got) >= 40, got
    # Three viewers, yet no more encodes than frames: they share each JPEG.
    assert encoded <= received + 1, (encoded, received)
    assert sum(got) > 2 * encoded, (got, encoded)


def _frame(ts: float) -> Frame:
    return Frame(int(ts * 1000), ts, {}, np.zeros((8, 8, 3), np.uint8))


def test_out_of_order_frames_are_dropped_without_buffer() -> None:
    stream = TopicStream("t", buffer_delay=0.0)
    for ts in (1.0, 3.0, 2.0, 4.0):
        stream.put(_frame(ts))
    assert stream.late == 1
    assert stream.last_frame is not None and stream.received == 4


def test_jitter_buffer_restores_timestamp_order() -> None:
    stream = TopicStream("t", buffer_delay=0.05)
    released: list[float] = []
    stream._release = lambda frame, orig=stream._release: (released.append(frame.timestamp), orig(frame))  # type: ignore[method-assign]
    order = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    for ts in order:
        stream.put(_frame(ts))
    assert released == [], "frames wait buffer_delay before they are shown"
    time.sleep(0.08)
    stream.put(_frame(7.0))
    assert released == sorted(order)
    assert stream.late == 0


def test_jitter_buffer_is_bounded() -> None:
    stream = TopicStream("t", buffer_delay=60.0)
    for i in range(500):
        stream.put(_frame(float(i)))
    assert stream.status()["buffered"] <= 64


def test_replicas_finishing_out_of_order_are_smoothed_by_buffer_delay(redis_server: EmbeddedRedis) -> None:
    def jittery(data: Any) -> Any:
        time.sleep(random.uniform(0.0, 0.03))  # two replicas with uneven work finish out of order
        return data

    app, holder = make_app(redis_server.url, fps=30, process=jittery, web_kwargs={"buffer_delay": 0.1})
    with run_pipeline(app, holder, wait_topics=("proc",)) as running, mjpeg(running, "proc") as stream:
        stamps: list[float] = []
        for headers, _ in stream:
            stamps.append(float(headers["x-timestamp"]))
            if len(stamps) >= 45:
                break
        with running.client() as c:
            late = c.get("/api/status").json()["topics"]["proc"]["late"]
    assert stamps == sorted(stamps)
    assert late <= 2, late


def _slow_viewer(port: int, path: str, stop: threading.Event, received: list[int]) -> None:
    """Reads an MJPEG stream through a tiny socket buffer, 4 KB every 100 ms (about 40 KB/s)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        while not stop.is_set():
            data = sock.recv(4096)
            if not data:
                break
            received[0] += len(data)
            time.sleep(0.1)
    finally:
        sock.close()


@pytest.mark.slow
def test_ten_viewers_keep_full_rate_beside_a_slow_one_and_memory_stays_flat(redis_server: EmbeddedRedis) -> None:
    # Noise compresses badly: each JPEG is ~100 KB, so a per-viewer queue would show in memory at once.
    app, holder = make_app(redis_server.url, fps=30, shape=(240, 640, 3), noise=True)
    proc = psutil.Process()
    with run_pipeline(app, holder) as running:
        stop = threading.Event()
        slow_bytes = [0]
        slow = threading.Thread(target=_slow_viewer, args=(running.web.port, "/video/cam", stop, slow_bytes))
        slow.start()
        arrivals: list[list[float]] = [[] for _ in range(10)]
        sizes: list[int] = []

        def watch(i: int) -> None:
            with mjpeg(running, "cam") as stream:
                for _, body in stream:
                    arrivals[i].append(time.monotonic())
                    if i == 0:
                        sizes.append(len(body))
                    if stop.is_set():
                        break

        viewers = [threading.Thread(target=watch, args=(i,)) for i in range(10)]
        for t in viewers:
            t.start()
        time.sleep(2.0)
        rss_start = proc.memory_info().rss
        cpu_start, t_start = proc.cpu_times(), time.monotonic()
        time.sleep(5.0)
        rss_end = proc.memory_info().rss
        cpu_end, t_end = proc.cpu_times(), time.monotonic()
        with running.client() as c:
            produced = c.get("/api/fps").json()["cam"]
            status = c.get("/api/status").json()["topics"]["cam"]
        stop.set()
        for t in [*viewers, slow]:
            t.join(10)
    rates = [rate([a for a in times if t_start <= a <= t_end]) for times in arrivals]
    cpu = (cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / (t_end - t_start)
    growth = (rss_end - rss_start) / 2**20
    print(
        f"\nproducer {produced} fps; viewers {[round(r, 1) for r in rates]} fps; jpeg ~{np.mean(sizes) / 1024:.0f} KB"
    )
    print(f"slow viewer got {slow_bytes[0] / 1024:.0f} KB; RSS growth {growth:.1f} MB; process CPU {cpu * 100:.0f}%")
    assert status["viewers"] == 11
    assert min(rates) >= 0.75 * produced, (rates, produced)
    # The slow viewer took a fraction of the video (it skips frames) while memory did not grow with its backlog.
    assert slow_bytes[0] < 0.2 * sum(sizes) / 10
    assert growth < 40, f"RSS grew by {growth:.1f} MB in 5 s"


@pytest.mark.parametrize("max_fps", [15, 0])
def test_stream_rate_is_capped_and_each_part_is_the_newest_frame(redis_server: EmbeddedRedis, max_fps: int) -> None:
    """A 150 fps topic watched through a stream capped at 15 fps: 15 JPEGs/s, each of the newest frame;
    max_fps=0 encodes every frame it can."""
    app, holder = make_app(redis_server.url, fps=150, shape=(120, 160, 3), web_kwargs={"max_fps": max_fps})
    with run_pipeline(app, holder) as running, mjpeg(running, "cam") as stream:
        arrivals: list[float] = []
        ages: list[float] = []
        t_end = time.monotonic() + 2.0
        for headers, _ in stream:
            arrivals.append(time.monotonic())
            ages.append(time.time() - float(headers["x-timestamp"]))
            if time.monotonic() > t_end:
                break
        with running.client() as c:
            produced = c.get("/api/fps").json()["cam"]
    assert produced > 100, "frames reach the gateway at their own rate"
    if max_fps:
        assert 5 <= rate(arrivals) <= 16.5, rate(arrivals)  # at most the cap (a loaded machine may give less)
        assert sorted(ages)[len(ages) // 2] < 0.1, "a capped stream shows the newest frame, not a backlog"
    else:
        assert rate(arrivals) > 60, rate(arrivals)
