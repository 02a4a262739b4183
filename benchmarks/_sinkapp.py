"""The app behind the sink cases: a producer at a fixed rate -> a sink over a durable link, one node per process."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any

import numpy as np

from edgeflow import EdgeApp, Frame, ProducerNode, RedisBroker
from edgeflow.runtime.runner import run_app

from ._harness import FRAME_BYTES, Recorder, announce
from ._linkapp import DURABLE_FRAME_MAX_LEN, _group_ready

__all__ = ["load", "node_proc"]


def load(path: str) -> Any:
    """Import "module:Class"."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def node_proc(url: str, app_name: str, sink: str, out: str, rate: float, duration: float, max_frames: int,
              nodes: list[str], deadline: float) -> None:  # fmt: skip
    """Run `nodes` of the sink app; the sink announces READY once its group exists, RESULT when the end came."""
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    rec = Recorder()
    state = {"stored": 0}
    app = EdgeApp(app_name, broker=RedisBroker(url))
    data = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert data.nbytes == FRAME_BYTES

    @app.node(name="src", type="producer", fps=rate)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.n = 0
            self.end = 0.0
            self.ended = False

        def produce(self) -> Any:
            now = time.time()
            if self.n == 0:
                self.end = now + duration
            if self.ended:
                return None
            if self.n >= max_frames or now >= self.end:
                self.ended = True
                return Frame(self.n + 1, now, {"end": 1}, data)
            self.n += 1
            return Frame(self.n, now, {}, data)

    base = load(sink)

    @app.node(name="dst", type="sink", path=out)
    class Dst(base):  # type: ignore[misc, valid-type]
        def process(self, got: Any) -> None:
            frame = self.current_frame
            if frame is not None and frame.meta.get("end"):
                stop.set()  # the runner's last settle commits and acknowledges what is held
                return
            super().process(got)
            state["stored"] += 1
            rec.hit(frame.timestamp if frame is not None else time.time())

    app.link("src").to("dst", max_len=DURABLE_FRAME_MAX_LEN)
    timer = threading.Timer(deadline, stop.set)
    timer.daemon = True
    timer.start()
    summary: dict[str, Any] = {}

    def target() -> None:
        summary.update(run_app(app, nodes, embedded=False, stop=stop, install_signals=False))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    if "dst" in nodes:
        probe = RedisBroker(url)
        probe.bind(app_name)
        end = time.monotonic() + 20
        while not _group_ready(probe, "durable") and time.monotonic() < end:
            time.sleep(0.01)
        probe.close()
        announce("READY", {})
    t.join(deadline + 10)
    timer.cancel()
    # Frames the producer wrote, less the end marker.
    out_doc: dict[str, Any] = {"sent": max(0, summary.get("src", {}).get("frames_out", 0) - 1)}
    if "dst" in nodes:
        out_doc.update(rec.summary())
        out_doc["stored"] = state["stored"]
    announce("RESULT", out_doc)
