"""The cost of tracing: the 921,600-byte link producer -> sink unthrottled, with EDGEFLOW_TRACE=0 and =1 in turns,
in the same run (off, on, off, on, ...), on each installed data plane and process layout.

A traced frame carries its stamps in the header (43 bytes for a 3-node path) and costs its producer one clock read
and its sink three, plus a reservoir counter; the rows show what that is against the frame rate.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from .._harness import FRAME_BYTES, Settings, row
from .edgeflow_link import brokers, measure, server_client_flush

LAYOUTS = ["1proc", "per-node"]
CASE = "tracing cost 921600B unthrottled"


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
    out: list[dict[str, Any]] = []
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
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("EDGEFLOW_TRACE", None)
        else:
            os.environ["EDGEFLOW_TRACE"] = saved
    return out
