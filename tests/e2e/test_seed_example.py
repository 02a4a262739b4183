"""The seed example (examples/main.py, unchanged) as one process per node, as the seed README runs it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from edgeflow.embedded import free_port
from edgeflow.testing import wait_for

from .conftest import Proc

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "main.py")


def test_seed_example_one_process_per_node(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    http_port = free_port()
    env.update(GATEWAY_HTTP_PORT=str(http_port), HOSTNAME="edge-node-1")
    for name in ("gateway", "gpu_processor", "fake_camera"):
        procs.append(Proc([EXAMPLE, "--node", name], env, tmp_path / f"{name}.log"))
    base = f"http://127.0.0.1:{http_port}"

    def fps() -> dict[str, float]:
        try:
            return dict(httpx.get(base + "/api/fps", timeout=2).json())
        except httpx.HTTPError:
            return {}

    assert wait_for(lambda: min(fps().get("fake_camera", 0), fps().get("gpu_processor", 0)) > 20, timeout=45), (
        "\n".join(p.output()[-2000:] for p in procs)
    )
    samples = []
    for _ in range(3):
        time.sleep(1.0)
        samples.append(fps())
    for topic in ("fake_camera", "gpu_processor"):
        best = max(s[topic] for s in samples)
        assert best >= 27, f"{topic} reaches the gateway at the producer's 30 fps, got {samples}"
    nodes = {n["name"]: n for n in httpx.get(base + "/api/nodes", timeout=5).json()["nodes"]}
    assert nodes["gpu_processor"]["replicas_alive"] == 2, "the gpu_processor process runs its two replicas"
    for p in reversed(procs):
        code, took = p.stop(signal.SIGTERM)
        assert code == 0, p.output()
        assert took < 5.0
