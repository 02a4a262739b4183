"""`edgeflow trace`, `edgeflow topic list|hz|echo` and `edgeflow graph --format` on a pipeline running as a real
process (tests/e2e/apps/observed.py), as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .conftest import APPS, Proc

APP = str(APPS / "observed.py")


def _edgeflow(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture
def running(env: dict[str, str], tmp_path: Path, procs: list[Proc]) -> Iterator[dict[str, str]]:
    proc = Proc([APP], env, tmp_path / "app.log")
    procs.append(proc)
    client = redis.Redis.from_url(env["REDIS_URL"])
    deadline = time.monotonic() + 30
    # Running once the recorder's group has read something (a link into a sink is durable): every node is up.
    while True:
        assert proc.p.poll() is None, proc.output()
        groups = client.xinfo_groups(f"ef:{env['APP_NAME']}:dur:boxes") if client.exists(
            f"ef:{env['APP_NAME']}:dur:boxes") else []  # fmt: skip
        if any(int(g.get("entries-read") or 0) > 5 for g in groups):
            break
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.2)
    client.close()
    yield env
    code, _ = proc.stop()
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


@pytest.mark.slow
def test_trace_names_the_known_slow_stage_and_topics_show_what_runs(running: dict[str, str]) -> None:
    done = _edgeflow(running, "trace", APP, "--seconds", "3", "--json")
    assert done.returncode == 0, done.stderr
    paths = {tuple(p["nodes"]): p for p in json.loads(done.stdout)["paths"]}
    slow = paths[("camera", "slow", "gateway")]
    assert slow["slowest"] == "slow process"
    stage = next(s for s in slow["stages"] if s["name"] == "slow process")
    assert stage["kind"] == "process" and stage["node"] == "slow" and 24 <= stage["p50_ms"] <= 60
    assert set(stage) == {"name", "node", "kind", "p50_ms", "p99_ms", "cross_host"}
    assert slow["total_p50_ms"] >= stage["p50_ms"] and slow["total_p99_ms"] >= slow["total_p50_ms"]
    assert not any(s["cross_host"] for s in slow["stages"]), "one process on one host: every stage is exact"
    assert [s["kind"] for s in paths[("camera", "detector", "recorder")]["stages"]] == [
        "transfer", "queue", "queue", "process", "transfer", "queue", "queue", "process"
    ]  # fmt: skip

    table = _edgeflow(running, "trace", APP, "--seconds", "2")
    assert table.returncode == 0, table.stderr
    assert "camera -> slow -> gateway" in table.stdout
    lines = table.stdout.splitlines()
    assert any(line.lstrip().startswith("* slow process") and "<- slowest" in line for line in lines)

    listing = _edgeflow(running, "topic", "list", APP, "--json")
    assert listing.returncode == 0, listing.stderr
    topics = {t["topic"]: t for t in json.loads(listing.stdout)}
    assert topics["boxes"]["publisher"] == "detector" and topics["boxes"]["status"] == "up"
    assert 30 <= topics["camera"]["fps"] <= 50, topics["camera"]

    echo = _edgeflow(running, "topic", "echo", APP, "boxes", "-n", "2")
    assert echo.returncode == 0, echo.stderr
    assert echo.stdout.count("---") == 2 and '"label": "robot"' in echo.stdout and "frame_id:" in echo.stdout

    hz = _edgeflow(running, "topic", "hz", APP, "camera", "--seconds", "3")
    assert hz.returncode == 0, hz.stderr
    rates = [float(line.split(":")[1]) for line in hz.stdout.splitlines() if line.startswith("average rate:")]
    assert rates and 30 <= rates[-1] <= 50, hz.stdout

    # Both watched from outside every group: the streams' groups are the app's own, nothing was left behind.
    client = redis.Redis.from_url(running["REDIS_URL"])
    for key, groups in ((f"ef:{running['APP_NAME']}:dur:boxes", {"recorder"}),
                        (f"ef:{running['APP_NAME']}:rt:camera", {"slow", "detector"})):  # fmt: skip
        assert {g["name"].decode() for g in client.xinfo_groups(key)} == groups
    client.close()


def test_graph_formats(env: dict[str, str]) -> None:
    mermaid = _edgeflow(env, "graph", APP, "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart LR") and "-.->|tcp realtime|" in mermaid.stdout
    dot = _edgeflow(env, "graph", APP, "--format", "dot")
    assert dot.returncode == 0 and '"camera" -> "slow" [label="redis realtime"];' in dot.stdout
    default = _edgeflow(env, "graph", APP)
    assert json.loads(default.stdout)["nodes"][0]["name"] == "camera", "json stays the default"
    for args in (["graph"], ["trace"], ["topic"], ["topic", "hz"], ["topic", "echo"], ["topic", "list"]):
        helped = _edgeflow(env, *args, "--help")
        assert helped.returncode == 0 and "Example: edgeflow" in helped.stdout, (args, helped.stdout)
