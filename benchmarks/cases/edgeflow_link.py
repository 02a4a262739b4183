"""EdgeFlow, one link producer -> sink: every size, pace, QoS and process layout, on each installed data plane."""

from __future__ import annotations

import importlib.util
import itertools
import uuid
from typing import Any

from .._harness import FRAME_BYTES, MSG_BYTES, Child, ServerCpu, Settings, report, row, run_pair
from .ceilings import workload_name

SIZES = [FRAME_BYTES, MSG_BYTES]
RATES: list[float | None] = [None, 30, 1000]
QOS = ["realtime", "durable"]
LAYOUTS = ["1proc", "per-node"]
_NODE = "benchmarks._linkapp:node_proc"


def brokers() -> list[str]:
    """The data planes to measure: Redis always, shared memory when edgeflow-shm is installed."""
    return ["redis"] + (["shm"] if importlib.util.find_spec("edgeflow_shm") else [])


def matrix(quick: bool) -> list[tuple[str, int, float | None, str, str]]:
    """Every combination; a quick run keeps one per code path (both QoS, both layouts, both sizes)."""
    full = [(b, s, r, q, lay) for b in brokers() for s, r, q, lay in itertools.product(SIZES, RATES, QOS, LAYOUTS)]
    if not quick:
        return full
    picks = [
        (FRAME_BYTES, None, "realtime", "1proc"),
        (FRAME_BYTES, None, "durable", "per-node"),
        (MSG_BYTES, None, "durable", "1proc"),
    ]
    return [(b, s, r, q, lay) for b in brokers() for s, r, q, lay in picks]


def measure(
    url: str, server_pid: int | None, broker: str, size: int, rate: float | None, qos: str, layout: str, cfg: Settings
) -> list[dict[str, Any]]:
    """Run one combination and return its rows."""
    duration = cfg.duration_for(rate)
    case = workload_name(size, rate)
    system = f"edgeflow {broker} {qos} {layout}"
    kw: dict[str, Any] = {
        "url": url, "app_name": f"bench-{uuid.uuid4().hex[:8]}", "broker": broker, "size": size, "rate": rate,
        "qos": qos, "duration": duration, "max_frames": cfg.max_frames, "deadline": duration + 20,
    }  # fmt: skip
    redis_cpu = ServerCpu(server_pid)
    try:
        if layout == "1proc":
            child = Child(_NODE, nodes=["src", "dst"], **kw)
            child.wait_for("READY", 30)
            res = child.finish(duration + 30)
            cpu = {"proc": res["cpu_pct"]}
            sent = res["sent"]
        else:
            res, pres = run_pair((_NODE, {**kw, "nodes": ["dst"]}), (_NODE, {**kw, "nodes": ["src"]}), duration + 30)
            cpu = {"pub": pres["pub_cpu_pct"], "sub": res["cpu_pct"]}
            sent = pres["sent"]
    except (RuntimeError, TimeoutError) as exc:
        return [row(case, system, "error", float("nan"), "", str(exc)[-300:])]
    cpu["redis"] = redis_cpu.stop()
    return report(case, system, res, size, cpu, f"sent {sent} skipped {res.get('dropped', 0)}")


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure the whole matrix against one redis-server."""
    from edgeflow.embedded import EmbeddedRedis

    cfg = Settings.make(quick)
    server = EmbeddedRedis().start()
    rows: list[dict[str, Any]] = []
    try:
        for broker, size, rate, qos, layout in matrix(quick):
            pid = server.proc.pid if server.proc else None
            rows += measure(server.url, pid, broker, size, rate, qos, layout, cfg)
            server_client_flush(server.url)
    finally:
        server.stop()
    return rows


def server_client_flush(url: str) -> None:
    """Empty Redis between runs so that one run's backlog never slows the next."""
    import redis

    r = redis.Redis.from_url(url)
    r.flushall()
    r.close()
