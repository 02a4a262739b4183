"""The cost of tracing: the 921,600-byte link producer -> sink unthrottled, with EDGEFLOW_TRACE=0 and =1 in turns,
in the same run (off, on, off, on, ...), on each installed data plane and process layout.

A traced frame carries its stamps in the header (43 bytes for a 3-node path) and costs its producer one clock read
and its sink three, plus a reservoir counter; the rows show what that is against the frame rate.
"""

from __future__ import annotations

import os
import statistics
import time
import timeit
from typing import Any

from .._harness import FRAME_BYTES, Settings, row
from .edgeflow_link import brokers, measure, server_client_flush

LAYOUTS = ["1proc", "per-node"]
CASE = "tracing cost 921600B unthrottled"


def per_frame_us(quick: bool) -> dict[str, float]:
    """The CPU time tracing adds to one 921,600-byte frame, on the producer (stamp, encode) and on the sink (decode,
    three stamps, the sample), in microseconds: the best of several repeats, so the machine's noise stays out.
    Also what a frame the producer does not trace costs it (past EDGEFLOW_TRACE_RATE): one clock read."""
    import numpy as np

    from edgeflow import EdgeApp, Frame, ProducerNode, RedisBroker, SinkNode
    from edgeflow.frame import decode, encode
    from edgeflow.runtime.stats import NodeStats
    from edgeflow.runtime.trace import Tracer

    saved = os.environ.pop("EDGEFLOW_TRACE", None)
    try:
        app = EdgeApp("tracing-cost", broker=RedisBroker("redis://127.0.0.1:1/0"))  # never connects

        @app.node(name="src", type="producer")
        class Src(ProducerNode):
            def produce(self) -> None:
                return None

        @app.node(name="dst", type="sink")
        class Dst(SinkNode):
            def process(self, data: Any) -> None:
                pass

        app.link("src").to("dst")
        src, dst = Tracer(app, "src", NodeStats("src", "producer")), Tracer(app, "dst", NodeStats("dst", "sink"))
    finally:
        if saved is not None:
            os.environ["EDGEFLOW_TRACE"] = saved
    data = np.zeros((480, 640, 3), np.uint8)
    plain = encode(Frame(1, time.time(), {}, data))
    traced_frame = Frame(1, time.time(), {}, data)
    src.period = 0.0  # every frame traced here, whatever EDGEFLOW_TRACE_RATE says
    src.written(traced_frame)
    traced = encode(traced_frame)

    def produce_off() -> None:
        encode(Frame(1, time.time(), {}, data))

    def produce_on() -> None:
        f = Frame(1, time.time(), {}, data)
        src.written(f)
        encode(f)

    def sink_off() -> None:
        decode(*plain)

    def sink_on() -> None:
        g = decode(*traced)
        dst.read(g, time.time())
        dst.start()
        dst.end(g, "src")

    n, repeat = (2_000, 2) if quick else (50_000, 7)

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=n, repeat=repeat)) / n * 1e6

    off = best(produce_off)
    out = {"producer": best(produce_on) - off, "sink": best(sink_on) - best(sink_off)}
    src.period, src._next = 1.0, float("inf")  # the rate's budget spent: frames go untraced
    out["producer_untraced"] = best(produce_on) - off
    return out


def _rate(rows: list[dict[str, Any]]) -> float:
    return next((r["value"] for r in rows if r["metric"] == "rate"), float("nan"))


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure each combination `rounds` times with tracing off and on, alternating; report rates and the cost."""
    from edgeflow.embedded import EmbeddedRedis

    cfg = Settings.make(quick)
    rounds = 1 if quick else 3
    combos = [(b, lay) for b in brokers() for lay in LAYOUTS]
    if quick:
        combos = combos[:1]
    server = EmbeddedRedis().start()
    from edgeflow.tracing import rate_limit

    extra = per_frame_us(quick)
    limit = rate_limit()
    out: list[dict[str, Any]] = [
        row(CASE, "edgeflow tracing, per frame", f"extra_us_{side}", us, "us", "CPU time tracing adds per frame")
        for side, us in extra.items()
    ]
    saved = os.environ.get("EDGEFLOW_TRACE")
    try:
        for broker, layout in combos:
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(rounds):
                for setting in ("off", "on"):
                    os.environ["EDGEFLOW_TRACE"] = "0" if setting == "off" else "1"
                    pid = server.proc.pid if server.proc else None
                    got = measure(server.url, pid, broker, FRAME_BYTES, None, "realtime", layout, cfg)
                    server_client_flush(server.url)
                    errors = [r for r in got if r["metric"] == "error"]
                    if errors:
                        note = errors[0]["note"]
                        return [*out, row(CASE, f"edgeflow {broker} {layout}", "error", float("nan"), "", note)]
                    rates[setting].append(_rate(got))
            system = f"edgeflow {broker} realtime {layout}"
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            runs = {k: [round(r) for r in v] for k, v in rates.items()}
            note = f"median of {rounds}, alternating; off {runs['off']} on {runs['on']}"
            out.append(row(CASE, f"{system} trace=off", "rate", off, "msg/s", note))
            out.append(row(CASE, f"{system} trace=on", "rate", on, "msg/s", note))
            out.append(row(CASE, f"{system} trace=on", "trace_cost_pct", 100.0 * (off - on) / off, "%", note))
            # What the per-frame CPU time comes to at this rate, on the side that pays more: a bound on the cost
            # that the run-to-run noise of a shared machine can't hide.
            traced = min(off, limit)
            worst = max(extra["producer"] + extra["producer_untraced"], extra["sink"])
            bound = (worst * traced + extra["producer_untraced"] * (off - traced)) / 1e4
            out.append(row(CASE, f"{system} trace=on", "cpu_bound_pct", bound, "%",
                           f"CPU us per frame x frames/s on the busier side, {traced:.0f} traced/s"))  # fmt: skip
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("EDGEFLOW_TRACE", None)
        else:
            os.environ["EDGEFLOW_TRACE"] = saved
    return out
