"""`IDLE` from produce(): no frame is sent or counted, the runner calls again at once, and stopping stays prompt."""

from __future__ import annotations

import threading
import time
from typing import Any

from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import IDLE, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for


def test_idle_sends_nothing_and_is_called_again(redis_url: str, app_name: str) -> None:
    calls = [0]
    got: list[Any] = []
    lock = threading.Lock()
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    # fps=5 would space calls 200 ms apart; IDLE skips the pacing, so 40 idle calls take a few ms, not 8 s.
    @app.node(name="src", type="producer", fps=5)
    class Src(ProducerNode):
        def produce(self) -> Any:
            calls[0] += 1
            if calls[0] % 40:
                time.sleep(0.001)
                return IDLE
            return {"call": calls[0]}

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def process(self, data: Any) -> None:
            with lock:
                got.append(data)

    app.link("src").to("dst", qos="durable")
    with RunningApp(app) as run:
        assert wait_for(lambda: len(got) >= 2, timeout=10)
        t0 = time.monotonic()
        summary = run.stop()
        assert time.monotonic() - t0 < 5
    with lock:
        assert got[:2] == [{"call": 40}, {"call": 80}], "only real frames were sent, in order"
    assert 2 <= summary["src"]["frames_out"] <= calls[0] // 40, "an IDLE call is not counted as a frame"
    assert summary["src"]["failed"] == 0
    assert repr(IDLE) == "IDLE"
