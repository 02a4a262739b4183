"""A real Prometheus scrapes a running pipeline: its counters agree with the frames counted, a histogram_quantile
of the process time matches a node that sleeps a known time, and promtool accepts the exposition."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edgeflow import EdgeApp, RedisBroker
from edgeflow.embedded import EmbeddedRedis
from edgeflow.nodes import ConsumerNode, ProducerNode, SinkNode
from edgeflow.runtime.runner import run_app

from ..web.support import free_port
from .conftest import Prometheus

FRAMES = 120
SLEEP = 0.03  # seconds slow's process() takes: inside the (0.025, 0.05] bucket


def _app(redis_url: str, seen: list[int]) -> EdgeApp:
    app = EdgeApp(f"p{uuid.uuid4().hex[:10]}", broker=RedisBroker(redis_url))

    @app.node(name="cam", type="producer", fps=100)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.n = 0

        def produce(self) -> Any:
            self.n += 1
            return np.full((60, 80, 3), self.n % 255, np.uint8) if self.n <= FRAMES else None

    @app.node(name="slow", type="consumer")
    class Slow(ConsumerNode):
        def process(self, data: Any) -> Any:
            time.sleep(SLEEP)
            return data

    @app.node(name="rec", type="sink")
    class Rec(SinkNode):
        def process(self, data: Any) -> None:
            seen.append(1)

    # Durable: every frame arrives, so that the counters have an exact number to agree with.
    app.link("cam").to("slow", qos="durable").to("rec", qos="durable")
    return app


@pytest.mark.slow
def test_prometheus_scrapes_counters_that_agree_and_a_histogram_that_knows_the_process_time(
    redis_server: EmbeddedRedis, prometheus: Callable[[list[str]], Prometheus], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("EDGEFLOW_METRICS", "prometheus")
    monkeypatch.setenv("EDGEFLOW_METRICS_PORT", str(port))
    monkeypatch.setenv("EDGEFLOW_METRICS_HOST", "127.0.0.1")
    prom = prometheus([f"127.0.0.1:{port}"])
    seen: list[int] = []
    app = _app(redis_server.url, seen)
    stop = threading.Event()
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(run_app(app, list(app.nodes), embedded=False, stop=stop, install_signals=False))
    )
    runner.start()
    try:
        prom.wait_for(f'up{{instance="127.0.0.1:{port}"}}', lambda v: v == 1)
        runner.join(60)
        assert not runner.is_alive(), "the pipeline drains and stops once cam's stream ends"
        assert len(seen) == FRAMES and result["rec"]["frames_in"] == FRAMES

        # The final report is scraped: every counter agrees with the frames the test counted.
        prom.wait_for('edgeflow_frames_total{node="rec",direction="in"}', lambda v: v == FRAMES)
        assert prom.value('edgeflow_frames_total{node="cam",direction="out"}') == FRAMES
        assert prom.value('sum(edgeflow_frames_total{node="slow",direction="in"})') == FRAMES
        assert prom.value('sum(edgeflow_frames_total{node="slow",direction="out"})') == FRAMES
        assert prom.value("sum(edgeflow_dropped_total)") == 0
        assert prom.value("sum(edgeflow_failed_total)") == 0
        assert prom.value('edgeflow_latency_seconds_count{node="rec",source="slow"}') == FRAMES
        assert prom.value('edgeflow_process_seconds_count{node="slow"}') == FRAMES

        # The process time's median, as Prometheus estimates it from the buckets, is that of a 30 ms sleep.
        p50 = prom.value('histogram_quantile(0.5, sum by (le) (edgeflow_process_seconds_bucket{node="slow"}))')
        assert p50 is not None and 0.025 <= p50 <= 0.05, p50
        mean = prom.value('edgeflow_process_seconds_sum{node="slow"} / edgeflow_process_seconds_count{node="slow"}')
        assert mean is not None and SLEEP <= mean < SLEEP * 2, mean
        # The frame counts may be scraped from the report before the last one, in which the replicas still ran.
        prom.wait_for('edgeflow_replicas_alive{node="slow"}', lambda v: v == 0)  # stopped replicas: not alive
        assert prom.query('edgeflow_link_depth{source="cam",target="slow"}'), "a link backlog gauge per link"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            exposition = resp.read().decode()
        done = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        stop.set()
        runner.join(10)
