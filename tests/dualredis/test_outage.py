"""The data Redis goes away: clear errors, no fallback to the control Redis, nothing lost once it is back."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from edgeflow import EdgeApp, Frame
from edgeflow.embedded import EmbeddedRedis, free_port
from edgeflow.errors import BrokerConnectionError
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for
from edgeflow_dualredis import DualRedisBroker

from .conftest import rt

FRAMES = 300


def test_unreachable_data_redis_is_a_clear_error_and_never_falls_back(
    redis_server: EmbeddedRedis, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("DATA_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("DATA_REDIS_PORT", str(port))
    b = DualRedisBroker(redis_server.url, socket_connect_timeout=0.2)
    b.bind(app_name)
    with pytest.raises(BrokerConnectionError) as info:
        b.connect()
    msg = str(info.value)
    assert f"can't reach the data-plane Redis at redis://127.0.0.1:{port}/0" in msg
    assert f"DATA_REDIS_HOST=127.0.0.1 DATA_REDIS_PORT={port}" in msg and "never falls back" in msg
    assert info.value.url == f"redis://127.0.0.1:{port}/0"
    pub = b.publisher("cam", [rt("cam", "det")])
    with pytest.raises(BrokerConnectionError, match="data-plane Redis"):
        pub.publish(Frame(0, 0.0, {}, bytes(5000)))
    assert b.client.xlen(b.stream_key("cam")) == 0, "nothing was written to the control Redis instead"
    pub.publish(Frame(1, 0.0, {}, b"small"))  # small payloads live inline: they never needed the data plane
    assert b.client.xlen(b.stream_key("cam")) == 1
    assert b.ping() is False
    b.close()


def _restart_app(name: str, control_url: str, data_url: str, seen: list[int], bad: list[int]) -> EdgeApp:
    app = EdgeApp(name, broker=DualRedisBroker(control_url, data_url))

    @app.node(name="imu", type="producer", fps=150)
    class Imu(ProducerNode):
        def configure(self) -> None:
            self.i = -1

        def produce(self) -> Any:
            self.i += 1
            return self.i.to_bytes(4, "big") * 2048 if self.i < FRAMES else None  # 8 KiB: by reference

    lock = threading.Lock()

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            time.sleep(0.01)  # slower than the producer: a backlog waits in the stream when the data Redis stops
            i = int.from_bytes(data[:4], "big")
            with lock:
                (seen if data == i.to_bytes(4, "big") * 2048 else bad).append(i)

    app.link("imu").to("store", qos="durable")
    return app


def test_durable_frames_survive_the_data_redis_stopping_mid_run(
    redis_server: EmbeddedRedis, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = EmbeddedRedis(extra_args=["--appendonly", "yes"]).start()
    seen: list[int] = []
    bad: list[int] = []
    try:
        run = RunningApp(_restart_app(app_name, redis_server.url, data.url, seen, bad))
        with caplog.at_level(logging.WARNING):
            run.start()
            assert wait_for(lambda: len(seen) >= 60, timeout=20)
            assert data.proc is not None
            data.proc.terminate()  # not data.stop(): its folder keeps the append-only file for the restart
            data.proc.wait(10)
            time.sleep(1.5)
            during = len(seen)
            time.sleep(0.5)
            assert len(seen) == during, "nothing moves while the data Redis is down"
            assert during < FRAMES
            data.start()  # same port, same folder: it reloads its append-only file
            summary = run.wait(timeout=60)
    finally:
        data.stop()
    assert bad == []
    assert sorted(set(seen)) == list(range(FRAMES)), "every durable frame arrived once the data Redis was back"
    assert summary["store"]["rejected"] == 0, "no payload was lost"
    assert summary["imu"]["frames_out"] == FRAMES
    outage = [r.getMessage() for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert outage and all("data-plane Redis" in m for m in outage)
    # The producer always meets the outage; the reader only if it reached for a payload while the data Redis was
    # down (it may have read everything before and waited on the control Redis meanwhile).
    assert 1 <= len(outage) <= 2, "said once per outage by each node that met it, not once per retry"
    assert any("reachable again" in r.getMessage() for r in caplog.records)
