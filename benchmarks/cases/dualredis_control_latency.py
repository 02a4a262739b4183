"""Control-plane latency while video saturates a link: RedisBroker (one Redis) against DualRedisBroker (two).

One process, two redis-servers. A producer thread publishes 640x480x3 uint8 frames as fast as it can on a
realtime link and a consumer thread drains it; meanwhile ~100-byte messages go every 5 ms over a second link,
and we record how long each takes from `publish` to `read`. RedisBroker carries both on one Redis;
DualRedisBroker keeps the frames' payloads on the second Redis, so the control Redis only moves small entries.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeflow import Frame, RedisBroker
from edgeflow.broker import Broker
from edgeflow.embedded import EmbeddedRedis
from edgeflow.links import Link

CASE = "control 100 B under 640x480 video"
VIDEO_CASE = "video 640x480x3 saturating"
SHAPE = (480, 640, 3)
CONTROL_PERIOD = 0.005
# The control link keeps every message for a reader that falls behind: we measure delay, not skipping.
CONTROL_DEPTH = 1000


def _row(case: str, broker: str, metric: str, value: float, unit: str, note: str = "") -> dict[str, Any]:
    return {"case": case, "broker": broker, "metric": metric, "value": float(value), "unit": unit, "note": note}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _measure(broker: Broker, duration: float, video: bool) -> dict[str, Any]:
    """Run the control stream for `duration` seconds (with the video link saturated when `video`)."""
    broker.bind(f"bench-{uuid.uuid4().hex[:8]}")
    broker.connect()
    stop = threading.Event()
    warm = threading.Event()  # samples count once every thread runs
    latencies: list[float] = []
    video_frames = [0]
    vlink, clink = Link("cam", "det", "realtime"), Link("ctl", "mon", "realtime", depth=CONTROL_DEPTH)
    vsub, csub = broker.subscribe([vlink], "c0"), broker.subscribe([clink], "c0")
    vpub, cpub = broker.publisher("cam", [vlink]), broker.publisher("ctl", [clink])
    image = np.random.default_rng(0).integers(0, 255, SHAPE, dtype=np.uint8)

    def video_producer() -> None:
        i = 0
        while not stop.is_set():
            vpub.publish(Frame(i, time.time(), {}, image))
            i += 1

    def video_consumer() -> None:
        while not stop.is_set():
            n = len(vsub.read(0.05))
            if warm.is_set():
                video_frames[0] += n

    def control_producer() -> None:
        i = 0
        next_t = time.perf_counter()
        while not stop.is_set():
            cpub.publish(
                Frame(i, time.time(), {}, {"t": time.perf_counter(), "seq": i, "cmd": "set-roi", "pad": "x" * 40})
            )
            i += 1
            next_t += CONTROL_PERIOD
            stop.wait(max(0.0, next_t - time.perf_counter()))

    def control_consumer() -> None:
        while not stop.is_set():
            for d in csub.read(0.05):
                if warm.is_set():
                    latencies.append((time.perf_counter() - d.frame.data["t"]) * 1000.0)

    threads = [threading.Thread(target=control_consumer), threading.Thread(target=control_producer)]
    if video:
        threads += [threading.Thread(target=video_consumer), threading.Thread(target=video_producer)]
    for t in threads:
        t.start()
    time.sleep(min(0.3, duration / 4))
    warm.set()
    t0 = time.perf_counter()
    time.sleep(duration)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(10)
    for closable in (vsub, csub, vpub, cpub):
        closable.close()
    # What the Redis holding the pixels needs at the end of the run: realtime payloads expire, so it stays flat.
    pixels = broker.data_plane.client if hasattr(broker.data_plane, "client") else broker.client
    used_mb = int(pixels.info("memory")["used_memory"]) / 1e6
    broker.close()
    return {
        "lat": latencies,
        "video_fps": video_frames[0] / elapsed,
        "control_rate": len(latencies) / elapsed,
        "used_mb": used_mb,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure p50/p99 of the control stream: idle, then under video with RedisBroker and DualRedisBroker."""
    from edgeflow_dualredis import DualRedisBroker

    # Rounds alternate the setups, so that a load change on the machine falls on all of them alike.
    rounds, duration = (1, 0.4) if quick else (5, 2.0)
    control, data = EmbeddedRedis().start(), EmbeddedRedis().start()
    try:
        plans: list[tuple[str, Callable[[], Broker], bool, str]] = [
            ("redis", lambda: RedisBroker(control.url), False, "no video: the floor"),
            ("redis", lambda: RedisBroker(control.url), True, "video and control on one Redis"),
            ("dualredis", lambda: DualRedisBroker(control.url, data.url), True, "video payloads on the data Redis"),
        ]
        results: list[list[dict[str, Any]]] = [[] for _ in plans]
        for _ in range(rounds):
            for i, (_name, make, video, _note) in enumerate(plans):
                results[i].append(_measure(make(), duration, video))
        rows: list[dict[str, Any]] = []
        for (name, _make, video, note), runs in zip(plans, results, strict=True):
            lat = [x for r in runs for x in r["lat"]]
            case = CASE if video else "control 100 B, idle"
            samples = f"{len(lat)} samples, {rounds} x {duration:g} s"
            rows += [
                _row(case, name, "p50_ms", _percentile(lat, 50), "ms"),
                _row(case, name, "p99_ms", _percentile(lat, 99), "ms", samples),
                _row(case, name, "rate", sum(r["control_rate"] for r in runs) / rounds, "msg/s", note),
            ]
            if video:
                fps = sum(r["video_fps"] for r in runs) / rounds
                used = max(r["used_mb"] for r in runs)
                rows += [
                    _row(VIDEO_CASE, name, "rate", fps, "msg/s", "read by the draining consumer"),
                    _row(VIDEO_CASE, name, "mb_per_s", fps * int(np.prod(SHAPE)) / 1e6, "MB/s"),
                    _row(VIDEO_CASE, name, "redis_used_mb", used, "MB", "in the Redis holding the pixels"),
                ]
        return rows
    finally:
        control.stop()
        data.stop()
