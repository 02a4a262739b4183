"""A gateway on the producer's host: frames through edgeflow-shm's gateway channel against the same broker with
the gateway on TCP (`shm_gateway=False`), one process per node, in interleaved rounds, quiet and loaded.

The frames reach the gateway's `on_frame` (no interface behind it): the rate, the latency from the frame's creation,
and the CPU % of the producer and of the gateway per frame. The first 1.5 s of each run are left out: the producer
looks at the registrations once a second, so its frames start going through the channel within that time.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from typing import Any

from .._harness import FRAME_BYTES, Settings, row, run_pair
from .compare import MODES, Contender, Target, Workload, _compare
from .edgeflow_link import server_client_flush

CASE = "gateway on the producer's host"
_NODE = "benchmarks._linkapp:node_proc"
_WARMUP = 1.5
CHANNEL = "edgeflow shm gateway channel"
TCP = "edgeflow shm gateway tcp"


def measure(url: str, broker: str, rate: float | None, cfg: Settings) -> list[dict[str, Any]]:
    """One run: a producer process and a gateway process on `broker` ("shm" or "shm-tcpgw")."""
    from edgeflow.embedded import free_port

    warmup = 0.0 if cfg.quick else _WARMUP
    duration = cfg.duration_for(rate) + warmup
    system = CHANNEL if broker == "shm" else TCP
    env = {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_TCP_PORT": str(free_port())}
    kw: dict[str, Any] = {
        "url": url, "app_name": f"bench-{uuid.uuid4().hex[:8]}", "broker": broker, "size": FRAME_BYTES,
        "rate": rate, "qos": "realtime", "duration": duration, "max_frames": cfg.max_frames,
        "deadline": duration + 20, "into": "gateway", "warmup": warmup,
    }  # fmt: skip
    try:
        res, pres = run_pair((_NODE, {**kw, "nodes": ["dst"]}), (_NODE, {**kw, "nodes": ["src"]}), duration + 30, env)
    except (RuntimeError, TimeoutError) as exc:
        return [row(CASE, system, "error", float("nan"), "", str(exc)[-300:])]
    finally:
        server_client_flush(url)
    rate_got = res["rate"]
    per_frame = {who: pct * 1e4 / rate_got if rate_got else float("nan")  # % of a core -> µs per frame
                 for who, pct in (("pub", pres["pub_cpu_pct"]), ("gateway", res["cpu_pct"]))}  # fmt: skip
    note = f"sent {pres['sent']}"
    return [
        row(CASE, system, "rate", rate_got, "frames/s", note),
        row(CASE, system, "p50_ms", res["p50_ms"], "ms"),
        row(CASE, system, "p99_ms", res["p99_ms"], "ms"),
        row(CASE, system, "cpu_pub_us_per_frame", per_frame["pub"], "µs"),
        row(CASE, system, "cpu_gateway_us_per_frame", per_frame["gateway"], "µs"),
    ]


def _contender(broker: str, rate: float | None) -> Contender:
    def run(cfg: Settings, server: Any) -> list[dict[str, Any]]:
        return measure(server.url, broker, rate, cfg)

    return Contender(CHANNEL if broker == "shm" else TCP, run)


def workloads(quick: bool) -> list[Workload]:
    """921,600-byte frames unthrottled and at 30/s, channel against TCP."""
    cpu = ("cpu_pub_us_per_frame", "cpu_gateway_us_per_frame")
    unthrottled = Workload(FRAME_BYTES, None, [_contender("shm", None), _contender("shm-tcpgw", None)],
                           [(CHANNEL, TCP)], [Target(CHANNEL, "ratio", 1.0, TCP)], cpu)  # fmt: skip
    paced = Workload(FRAME_BYTES, 30, [_contender("shm", 30), _contender("shm-tcpgw", 30)], [], [], cpu)
    return [unthrottled] if quick else [unthrottled, paced]


def run(quick: bool) -> list[dict[str, Any]]:
    """Both workloads in interleaved rounds, quiet and loaded."""
    if importlib.util.find_spec("edgeflow_shm") is None:
        return [row(CASE, "edgeflow shm", "available", 0, "", "needs edgeflow-shm (make install)")]
    from edgeflow.embedded import EmbeddedRedis

    cfg = Settings.make(quick)
    rounds = 1 if quick else int(os.environ.get("EFBENCH_ROUNDS", "3"))
    server = EmbeddedRedis().start()
    out: list[dict[str, Any]] = []
    try:
        for mode in MODES[:1] if quick else MODES:
            for wl in workloads(quick):
                out += [r | {"case": r["case"].replace(wl.name, f"{CASE}, {wl.name}")} for r in
                        _compare(wl, mode, rounds, cfg, server)]  # fmt: skip
    finally:
        server.stop()
    return out
