"""The seed's example, `EdgeApp("app", broker=DualRedisBroker())`, runs a pipeline on two Redis servers."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import redis

from edgeflow import EdgeApp
from edgeflow.embedded import EmbeddedRedis, redis_answers
from edgeflow.nodes import ConsumerNode, ProducerNode, SinkNode
from edgeflow.testing import RunningApp
from edgeflow_dualredis import DualRedisBroker

FRAMES = 40


def _seed_app(broker: DualRedisBroker, results: list[tuple[int, float]]) -> EdgeApp:
    app = EdgeApp("app", broker=broker)

    @app.node(name="camera", type="producer", fps=60)
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.i = -1

        def produce(self) -> Any:
            self.i += 1
            return np.full((480, 640, 3), self.i, np.uint8) if self.i < FRAMES else None

    @app.node(name="detector", type="consumer")
    class Detector(ConsumerNode):
        def process(self, frame: Any) -> Any:
            return {"mean": float(frame.mean())}

    lock = threading.Lock()

    @app.node(name="gateway", type="sink")
    class Gateway(SinkNode):
        def process(self, data: Any) -> None:
            with lock:
                results.append((self.current_frame.frame_id, data["mean"]))

    app.link("camera").to("detector", depth=FRAMES).to("gateway", qos="durable")
    return app


def test_seed_example_runs_on_the_environments_two_redis_servers(
    monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis
) -> None:
    from edgeflow.comms.brokers import DualRedisBroker as SeedDualRedisBroker

    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(redis_server.port))
    monkeypatch.setenv("DATA_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("DATA_REDIS_PORT", str(data_redis_server.port))
    control, data = redis.Redis.from_url(redis_server.url), redis.Redis.from_url(data_redis_server.url)
    for r in (control, data):  # the seed's app name is fixed: start from a clean slate
        for k in list(r.scan_iter(match="ef:app:*")):
            r.delete(k)
    results: list[tuple[int, float]] = []
    summary = RunningApp(_seed_app(SeedDualRedisBroker(), results)).start().wait(timeout=60)
    assert sorted(results) == [(i, float(i)) for i in range(FRAMES)], "every image reached the detector intact"
    assert summary["detector"]["dropped"] == 0
    pixels = list(data.scan_iter(match="ef:app:pl:rt:*"))
    assert pixels and all(len(data.get(k) or b"") == 480 * 640 * 3 for k in pixels), "images went to the data Redis"
    assert not list(control.scan_iter(match="ef:app:pl:*")), "and none to the control Redis"
    entries = control.xrange("ef:app:rt:camera")
    assert entries and all(b"r" in f and b"d" not in f for _, f in entries)
    control.close()
    data.close()


def test_a_one_process_run_without_configuration_starts_two_embedded_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "DATA_REDIS_HOST", "DATA_REDIS_PORT"):
        monkeypatch.delenv(var, raising=False)
    started: list[EmbeddedRedis] = []

    def start_embedded() -> str:
        started.append(EmbeddedRedis().start())
        return started[-1].url

    b = DualRedisBroker()
    try:
        if redis_answers("localhost", 6379):
            # A Redis answers on the default port: it is used, and so must the default data port be.
            assert b.ensure_server(start_embedded) is False and started == []
            return
        assert b.ensure_server(start_embedded) is True
        assert [s.url for s in started] == [b.url, b.data_url], "one server per plane, never one for both"
        b.bind(f"embedded-{time.monotonic_ns()}")
        b.connect()
        assert b.ping()
    finally:
        b.close()
        for s in started:
            s.stop()


def test_a_configured_control_redis_gets_no_private_data_redis(
    monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis
) -> None:
    """Other processes share the control Redis: a private data Redis would hand them references they can't read."""
    monkeypatch.setenv("REDIS_PORT", str(redis_server.port))
    monkeypatch.delenv("DATA_REDIS_HOST", raising=False)
    monkeypatch.delenv("DATA_REDIS_PORT", raising=False)
    started: list[str] = []
    assert DualRedisBroker().ensure_server(lambda: started.append("x") or "redis://unused") is False
    assert started == []


def test_data_redis_url_carries_credentials_and_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow.comms.brokers import DualRedisBroker

    monkeypatch.setenv("DATA_REDIS_HOST", "ignored")
    monkeypatch.setenv("DATA_REDIS_URL", "rediss://data:pw-123@redis-data:6380/0")
    broker = DualRedisBroker()
    assert broker.data_url == "rediss://data:pw-123@redis-data:6380/0"
    assert "pw-123" not in broker.data_display_url
