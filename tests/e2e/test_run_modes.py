"""Both run modes as real processes: one process for the app, one process per node; signals; embedded Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgeflow.embedded import redis_answers
from edgeflow.testing import wait_for

from .conftest import APPS, Proc

APP = APPS / "counting.py"


def records(env: dict[str, str]) -> list[tuple[str, int]]:
    path = Path(env["RECORD"])
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        topic, fid, _ = line.split()
        out.append((topic, int(fid)))
    return out


def rate(env: dict[str, str], topic: str, seconds: float = 2.0) -> float:
    before = sum(1 for t, _ in records(env) if t == topic)
    time.sleep(seconds)
    after = sum(1 for t, _ in records(env) if t == topic)
    return (after - before) / seconds


def test_one_process_mode_runs_and_stops_on_sigterm(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    p = Proc([str(APP)], env, tmp_path / "app.log")
    procs.append(p)
    assert wait_for(lambda: {t for t, _ in records(env)} == {"camera", "processor"}, timeout=20), p.output()
    assert rate(env, "camera") >= 24, "the direct link carries the producer's 30 fps"
    assert rate(env, "processor") >= 24, "so does the path through the two replicas"
    code, took = p.stop(signal.SIGTERM)
    assert code == 0, p.output()
    assert took < 5.0
    assert "received SIGTERM: stopping" in p.output()


def test_one_process_per_node(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    for name in ("gateway", "processor", "camera"):
        procs.append(Proc([str(APP), "--node", name], env, tmp_path / f"{name}.log"))
    gateway, processor, camera = procs
    assert wait_for(lambda: {t for t, _ in records(env)} == {"camera", "processor"}, timeout=20), gateway.output()
    assert rate(env, "processor") >= 24
    ids = [fid for t, fid in records(env) if t == "processor"]
    assert len(ids) == len(set(ids)), "the two replicas in the processor process never share a frame"
    for p in (camera, processor, gateway):
        code, took = p.stop(signal.SIGTERM)
        assert code == 0, p.output()
        assert took < 5.0


def test_producer_process_exits_0_when_its_stream_ends(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    env["FRAMES"] = "15"
    gw = Proc([str(APP), "--node", "gateway"], env, tmp_path / "gw.log")
    procs.append(gw)
    cam = Proc([str(APP), "--node", "camera"], env, tmp_path / "cam.log")
    procs.append(cam)
    assert cam.p.wait(timeout=20) == 0, cam.output()
    assert "the stream ended after 15 frames" in cam.output()
    assert wait_for(lambda: len([1 for t, _ in records(env) if t == "camera"]) == 15, timeout=10), gw.output()
    assert gw.stop(signal.SIGINT)[0] == 0


def test_list_prints_the_graph_without_secrets(env: dict[str, str]) -> None:
    env["REDIS_URL"] = "redis://edge:topsecret@127.0.0.1:1/0"
    out = subprocess.run([sys.executable, str(APP), "--list"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "topsecret" not in text + out.stderr
    assert "redis://edge:***@127.0.0.1:1/0" in text
    assert "processor            consumer  replicas=2 device=gpu" in text
    assert "camera -> gateway  [tcp, realtime]" in text
    assert "camera -> processor  [redis, realtime]" in text


def test_unknown_node_is_a_clear_error(env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, str(APP), "--node", "nope"], env=env, capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode == 2
    assert "--node 'nope': no node of that name. Known nodes: camera, gateway, processor" in out.stderr


@pytest.mark.parametrize("count", ["0", "-2", "two"])
def test_replicas_must_be_a_count_of_at_least_one(env: dict[str, str], count: str) -> None:
    out = subprocess.run([sys.executable, str(APP), "--node", "processor", "--replicas", count], env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--replicas" in out.stderr and ("at least 1" in out.stderr or "not a whole number" in out.stderr)


def test_embedded_redis_when_none_is_configured(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    """With no REDIS_* set, the one-process run starts its own Redis, unless one answers on localhost:6379."""
    for var in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"):
        env.pop(var, None)
    p = Proc([str(APP)], env, tmp_path / "app.log")
    procs.append(p)
    assert wait_for(lambda: len(records(env)) > 20, timeout=20), p.output()
    if redis_answers("localhost", 6379):
        assert "embedded Redis" not in p.output()
        assert p.stop()[0] == 0
        return
    lines = [ln for ln in p.output().splitlines() if "embedded Redis" in ln]
    assert len(lines) == 1, "said in one log line"
    children = [c for c in psutil.Process(p.p.pid).children(recursive=True) if "server" in c.name()]
    assert children, "the embedded server is a child of the app"
    code, _ = p.stop()
    assert code == 0, p.output()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, "the embedded Redis lives only as long as the app"
