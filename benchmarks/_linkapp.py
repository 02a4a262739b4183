"""The EdgeFlow app behind the link cases: one producer linked to one sink (or a gateway), and the process that
runs its nodes."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import psutil

from edgeflow import Broker, EdgeApp, Frame, GatewayNode, ProducerNode, RedisBroker, SinkNode
from edgeflow.runtime.runner import run_app

from ._harness import CpuClock, Recorder, announce

__all__ = ["build", "make_broker", "node_proc"]

# A durable link holds this many unacknowledged frames before the producer waits: 64 frames of 921,600 B
# keep Redis under 60 MB where the default 10,000 would let it grow to 9 GB on a 24 GB machine.
DURABLE_FRAME_MAX_LEN = 64


def make_broker(kind: str, url: str) -> Broker:
    """Return the broker `kind` ("redis", "shm", or "shm-tcpgw": shm with gateways on TCP) at `url`."""
    if kind in ("shm", "shm-tcpgw"):
        from edgeflow_shm import ShmBroker

        return ShmBroker(url, shm_gateway=kind == "shm")
    return RedisBroker(url)


class _State:
    """What the nodes of one process share with the code that reports on them."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self.stop = threading.Event()
        self.sent = 0
        self.pub_cpu = CpuClock()


def build(
    state: _State,
    name: str,
    broker: Broker,
    size: int,
    rate: float | None,
    qos: str,
    duration: float,
    max_frames: int,
    into: str = "sink",
) -> EdgeApp:
    """Return the app: `src` (producer at `rate`, None = unthrottled) -> `dst` (a sink over a `qos` link, or a
    gateway when `into` is "gateway")."""
    app = EdgeApp(name, broker=broker)

    @app.node(name="src", type="producer", fps=rate)
    class Src(ProducerNode):
        def configure(self) -> None:
            # One buffer sent again and again: the benchmark measures the transport, not frame generation.
            self.data: Any = np.zeros((480, 640, 3), np.uint8) if size == 640 * 480 * 3 else b"x" * size
            self.end = 0.0
            self.n = 0
            self.ended = False

        def produce(self) -> Frame | None:
            now = time.time()
            if self.n == 0:
                self.end = now + duration
                state.pub_cpu.start()
            if self.n >= max_frames or now >= self.end:
                if self.ended:
                    return None
                # The end marker; a realtime link keeps the newest frame, so the reader always sees it.
                self.ended = True
                state.pub_cpu.stop()
                return Frame(self.n + 1, now, {"end": 1}, self.data)
            self.n += 1
            state.sent = self.n
            return Frame(self.n, now, {}, self.data)

    if into == "gateway":

        @app.node(name="dst", type="gateway")
        class Gw(GatewayNode):
            def on_frame(self, topic: str, frame: Frame) -> None:
                if frame.meta.get("end"):
                    state.stop.set()
                    return
                state.rec.hit(frame.timestamp)

        app.link("src").to("dst")
        return app

    @app.node(name="dst", type="sink")
    class Dst(SinkNode):
        def process(self, data: Any) -> None:
            frame = self.current_frame
            assert frame is not None
            if frame.meta.get("end"):
                state.stop.set()
                return
            state.rec.hit(frame.timestamp)

    opts: dict[str, Any] = {}
    if qos == "durable" and size > 10_000:
        opts["max_len"] = DURABLE_FRAME_MAX_LEN
    if qos == "realtime" and os.environ.get("EFBENCH_QUICK") == "1":
        # The smoke run sends a burst of a few frames: newest-wins could leave the reader only the last one,
        # and no rate to report. Keeping them all tests the same code paths.
        opts["depth"] = max_frames + 1
    app.link("src").to("dst", qos=qos, **opts)
    return app


def _group_ready(broker: Broker, qos: str) -> bool:
    assert isinstance(broker, RedisBroker)
    try:
        groups = broker.client.xinfo_groups(broker.stream_key("src", qos))
    except Exception:
        return False
    return any(g.get("name") in (b"dst", "dst") for g in groups)


def node_proc(
    url: str,
    app_name: str,
    broker: str,
    size: int,
    rate: float | None,
    qos: str,
    duration: float,
    max_frames: int,
    nodes: list[str],
    deadline: float,
    into: str = "sink",
    warmup: float | None = None,
) -> None:
    """Run `nodes` of the link app in this process; a sink announces READY once its group exists, a gateway once
    it listens. `warmup`: seconds the receiver leaves out before it measures (the Recorder's default if None)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    state = _State()
    if warmup is not None:
        state.rec.warmup = warmup
    b = make_broker(broker, url)
    app = build(state, app_name, b, size, rate, qos, duration, max_frames, into)
    timer = threading.Timer(deadline, state.stop.set)
    timer.daemon = True
    timer.start()
    summary: dict[str, Any] = {}

    def target() -> None:
        summary.update(run_app(app, nodes, embedded=False, stop=state.stop, install_signals=False))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    if "dst" in nodes and into == "gateway":
        end = time.monotonic() + 20
        me = psutil.Process()
        while time.monotonic() < end and not any(c.status == psutil.CONN_LISTEN for c in me.net_connections("tcp")):
            time.sleep(0.01)
        time.sleep(0.2)  # its feed registers right after the intake listens
        announce("READY", {})
    elif "dst" in nodes:
        probe = make_broker(broker, url)
        probe.bind(app_name)
        end = time.monotonic() + 20
        while not _group_ready(probe, qos) and time.monotonic() < end:
            time.sleep(0.01)
        probe.close()
        announce("READY", {})
    t.join(deadline + 10)
    timer.cancel()
    out: dict[str, Any] = {"sent": state.sent, "pub_cpu_pct": state.pub_cpu.pct}
    if "dst" in nodes:
        out.update(state.rec.summary())
        out["dropped"] = summary.get("dst", {}).get("dropped", 0)
    announce("RESULT", out)
