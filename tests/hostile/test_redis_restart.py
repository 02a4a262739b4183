"""Redis restarted without persistence under a durable link: the consumer's group is made again at the oldest
entry still held, so frames written since are delivered, and the frames Redis lost are counted and logged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgeflow import EdgeApp, RedisBroker
from edgeflow.embedded import EmbeddedRedis, find_server_binary
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for

FRAMES = 600


@pytest.fixture
def volatile_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own that keeps nothing across restarts (no AOF, no snapshots)."""
    binary = find_server_binary()
    assert binary is not None, "apt-get install redis-server"
    server = EmbeddedRedis(binary).start()
    yield server
    server.stop()


def test_frames_written_after_a_restart_without_aof_are_delivered_and_the_lost_counted(
    volatile_redis: EmbeddedRedis, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(volatile_redis.url))
    made: list[int] = []
    seen: list[int] = []
    lock = threading.Lock()

    @app.node(name="sensor", type="producer", fps=100)
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            if self.i >= FRAMES:
                return None
            self.i += 1
            made.append(self.i)
            return {"i": self.i}

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            time.sleep(0.015)  # slower than the sensor: a backlog waits in Redis when it restarts
            with lock:
                seen.append(data["i"])

    app.link("sensor").to("store", qos="durable")
    with caplog.at_level(logging.WARNING, logger="edgeflow"):
        run = RunningApp(app).start()
        assert wait_for(lambda: len(made) >= 200, timeout=20)
        volatile_redis.terminate()  # everything Redis held is gone: streams, groups, the backlog
        time.sleep(0.5)
        volatile_redis.start()
        summary = run.wait(timeout=60)
    assert len(made) == FRAMES
    lost = summary["store"]["lost"]
    print(f"restart without AOF: {len(set(seen))} stored + {lost} counted lost of {FRAMES}")
    assert lost > 0, "the backlog Redis held when it restarted is gone"
    assert len(set(seen)) + lost == FRAMES, f"{len(set(seen))} stored + {lost} counted lost of {FRAMES}"
    assert max(seen) == FRAMES and set(range(max(made[:200]) + 50, FRAMES + 1)) <= set(seen), "after: every frame"
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "consumer groups were gone" in messages
    assert f"{lost} durable frame(s) of sensor" in messages and "are LOST" in messages, messages
