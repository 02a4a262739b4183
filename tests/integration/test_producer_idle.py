"""`IDLE` from produce(): no frame is sent or counted; an event source (no fps) is called again at once, a paced
producer at its next slot (no busy loop); stopping stays prompt."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import IDLE, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for


@pytest.mark.parametrize("fps", [None, 50])
def test_idle_sends_nothing_and_is_called_again(redis_url: str, app_name: str, fps: float | None) -> None:
    calls: list[float] = []
    got: list[Any] = []
    lock = threading.Lock()
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="src", type="producer", fps=fps)
    class Src(ProducerNode):
        def produce(self) -> Any:
            calls.append(time.monotonic())
            if len(calls) % 10:
                if fps is None:
                    time.sleep(0.001)  # an event source waits for its event inside produce()
                return IDLE
            return {"call": len(calls)}

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
        assert got[:2] == [{"call": 10}, {"call": 20}], "only real frames were sent, in order"
    assert 2 <= summary["src"]["frames_out"] <= len(calls) // 10, "an IDLE call is not counted as a frame"
    assert summary["src"]["failed"] == 0
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    if fps is None:
        assert max(gaps[:15]) < 0.05, "called again at once"
    else:
        assert min(gaps[:15]) > 0.5 / fps, "a paced producer that has nothing waits for its next slot"
    assert repr(IDLE) == "IDLE"
