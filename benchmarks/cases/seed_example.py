"""The seed example (examples/main.py) end to end: frames/s reaching the gateway, the MJPEG viewer's frames/s and
glass-to-glass latency, unthrottled; then the gateway's CPU with 1 and with 10 MJPEG viewers at the seed's 30 fps."""

from __future__ import annotations

import importlib.util
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from .._harness import Child, ServerCpu, Settings, announce, percentile, row
from .._mjpeg import Viewer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "main.py"
TOPICS = ["fake_camera", "gpu_processor"]
CASE = "seed example unthrottled"
VIEWERS_CASE = "gateway MJPEG viewers (seed at 30 fps)"


def seed_proc(nodes: list[str], fps: float | None, broker: str, url: str) -> None:
    """Run `nodes` of the seed example as written, except the camera's fps and, optionally, the broker."""
    import logging

    from edgeflow.loader import load_app
    from edgeflow.runtime.runner import run_app

    from .._linkapp import make_broker

    logging.basicConfig(level=logging.WARNING)
    app = load_app(EXAMPLE)
    app.nodes["fake_camera"].params["fps"] = fps
    if broker != "redis":
        app._broker = make_broker(broker, url)
    announce("READY", {})
    summary = run_app(app, nodes, embedded=False, install_signals=True)
    announce("RESULT", {"summary": summary})


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return json.loads(resp.read())


def _wait_http(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fps = _get_json(port, "/api/fps")
            if all(fps.get(t, 0) > 0 for t in TOPICS):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the gateway on port {port} served no frames of {TOPICS} within {timeout:.0f}s")


class _Seed:
    """The seed example's processes on a private Redis and private ports."""

    def __init__(self, layout: str, broker: str, fps: float | None) -> None:
        from edgeflow.embedded import EmbeddedRedis, free_port

        self.server = EmbeddedRedis().start()
        self.http, tcp = free_port(), free_port()
        env = {"REDIS_URL": self.server.url, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_TCP_PORT": str(tcp),
               "GATEWAY_HTTP_PORT": str(self.http)}  # fmt: skip
        groups = [["gateway", "gpu_processor", "fake_camera"]] if layout == "1proc" else [
            ["gateway"], ["gpu_processor"], ["fake_camera"]]  # fmt: skip
        self.children: dict[str, Child] = {}
        for nodes in groups:
            child = Child(f"{__name__}:seed_proc", env, nodes=nodes, fps=fps, broker=broker, url=self.server.url)
            child.wait_for("READY", 60)
            self.children["+".join(nodes) if layout != "1proc" else "proc"] = child

    def stop(self) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children.values():
            child.kill(grace=8.0)
        self.server.stop()


def _measure_seed(layout: str, broker: str, cfg: Settings) -> list[dict[str, Any]]:
    system = f"edgeflow {broker} {layout}"
    seed = _Seed(layout, broker, None)
    try:
        _wait_http(seed.http, 60)
        viewers = [Viewer(seed.http, t).start() for t in TOPICS]
        time.sleep(0.5 if cfg.quick else 1.0)
        t0 = time.time()
        cpus = {name: ServerCpu(c.pid) for name, c in seed.children.items()}
        time.sleep(1.0 if cfg.quick else 5.0)
        fps = _get_json(seed.http, "/api/fps")
        cpu = {name: m.stop() for name, m in cpus.items()}
        for v in viewers:
            v.stop()
    finally:
        seed.stop()
    rows = [row(CASE, system, "rate", min(fps.get(t, 0.0) for t in TOPICS), "frames/s", "slowest topic at the gateway")]
    for t, v in zip(TOPICS, viewers, strict=True):
        lat = [x for x, when in zip(v.lat_ms, v.times, strict=True) if when >= t0]
        rows += [
            row(CASE, system, f"gateway_fps_{t}", fps.get(t, 0.0), "frames/s"),
            row(CASE, system, f"viewer_fps_{t}", v.rate(t0), "frames/s", v.error),
            row(CASE, system, f"g2g_p50_ms_{t}", percentile(lat, 50), "ms"),
            row(CASE, system, f"g2g_p99_ms_{t}", percentile(lat, 99), "ms"),
        ]
    rows += [row(CASE, system, f"cpu_{name}", pct, "%") for name, pct in cpu.items()]
    return rows


def _measure_viewers(cfg: Settings) -> list[dict[str, Any]]:
    seed = _Seed("per-node", "redis", 30)
    system = "edgeflow redis per-node"
    out: dict[int, float] = {}
    rates: dict[int, float] = {}
    try:
        _wait_http(seed.http, 60)
        gateway = seed.children["gateway"]
        for n in (1, 10):
            viewers = [Viewer(seed.http, "fake_camera").start() for _ in range(n)]
            time.sleep(0.5 if cfg.quick else 1.5)
            t0 = time.time()
            m = ServerCpu(gateway.pid)
            time.sleep(1.0 if cfg.quick else 6.0)
            out[n] = m.stop()
            rates[n] = min(v.rate(t0) for v in viewers)
            for v in viewers:
                v.stop()
    finally:
        seed.stop()
    return [
        row(VIEWERS_CASE, system, "cpu_gateway_1_viewer", out[1], "%"),
        row(VIEWERS_CASE, system, "cpu_gateway_10_viewers", out[10], "%"),
        row(VIEWERS_CASE, system, "gateway_cpu_ratio_10_vs_1", out[10] / out[1] if out[1] else float("nan"), "x"),
        row(VIEWERS_CASE, system, "viewer_fps_1", rates[1], "frames/s"),
        row(VIEWERS_CASE, system, "viewer_fps_10_slowest", rates[10], "frames/s"),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """The seed example unthrottled in both layouts on each data plane, then the viewers' CPU."""
    cfg = Settings.make(quick)
    missing = [m for m in ("cv2", "edgeflow_web") if importlib.util.find_spec(m) is None]
    if missing:
        why = f"needs {', '.join(missing)}: scripts/bootstrap.sh test installs them"
        return [row(CASE, "edgeflow", "available", 0, "", why), row(VIEWERS_CASE, "edgeflow", "available", 0, "", why)]
    brokers = ["redis"] + (["shm"] if importlib.util.find_spec("edgeflow_shm") else [])
    combos = [("1proc", "redis")] if quick else [(lay, b) for b in brokers for lay in ("1proc", "per-node")]
    rows: list[dict[str, Any]] = []
    for layout, broker in combos:
        try:
            rows += _measure_seed(layout, broker, cfg)
        except (RuntimeError, TimeoutError, OSError) as exc:
            rows.append(row(CASE, f"edgeflow {broker} {layout}", "error", float("nan"), "", str(exc)[-300:]))
    try:
        rows += _measure_viewers(cfg)
    except (RuntimeError, TimeoutError, OSError) as exc:
        rows.append(row(VIEWERS_CASE, "edgeflow redis per-node", "error", float("nan"), "", str(exc)[-300:]))
    return rows
