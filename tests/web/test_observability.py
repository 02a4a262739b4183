"""The gateway's view inside a running pipeline: /metrics of the whole app, the history, the latency breakdown and
the last errors, on the dashboard in a real headless Chromium."""

from __future__ import annotations

import itertools
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeflow.embedded import EmbeddedRedis

from .support import make_app, run_pipeline
from .test_dashboard import _chromium

ROOT = Path(__file__).resolve().parents[2]


def _slow_and_sometimes_failing() -> Any:
    count = itertools.count(1)

    def process(data: Any) -> Any:
        time.sleep(0.015)  # the known slow stage
        if next(count) % 40 == 0:
            raise RuntimeError("boom: a bad frame")
        return data

    return process


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_gateway_serves_the_whole_apps_metrics_behind_the_token(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "metrics-token"
    monkeypatch.setenv("EDGEFLOW_TOKEN", token)
    app, holder = make_app(redis_server.url, process=_slow_and_sometimes_failing())
    with run_pipeline(app, holder, token=token) as running:
        with running.client() as client, httpx.Client(base_url=running.base, timeout=10) as anonymous:
            assert anonymous.get("/metrics").status_code == 401
            deadline = time.monotonic() + 20
            while True:
                body = client.get("/metrics").text
                fams = _families(body)
                frames = {
                    (s.labels["node"], s.labels["direction"]): s.value
                    for s in fams["edgeflow_frames"].samples
                    if s.name == "edgeflow_frames_total"
                }
                if frames.get(("gw", "in"), 0) > 30 and any(s.value for s in fams["edgeflow_failed"].samples):
                    break
                assert time.monotonic() < deadline, body[:2000]
                time.sleep(0.5)
        done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        assert fams["edgeflow_frames"].type == "counter" and fams["edgeflow_process_seconds"].type == "histogram"
        alive = {s.labels["node"]: s.value for s in fams["edgeflow_replicas_alive"].samples}
        assert alive == {"cam": 1, "info": 1, "proc": 2, "gw": 1}
        # Both replicas of proc are summed per replica label; the link cam -> proc has a depth gauge.
        assert {s.labels["replica"] for s in fams["edgeflow_frames"].samples if s.labels["node"] == "proc"} == {
            "0",
            "1",
        }
        assert any(s.labels == {"source": "cam", "target": "proc"} for s in fams["edgeflow_link_depth"].samples)
        latency = {s.labels["source"] for s in fams["edgeflow_latency_seconds"].samples if s.labels["node"] == "gw"}
        assert latency >= {"cam", "proc", "info"}


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_history_breakdown_and_errors_in_chromium(redis_server: EmbeddedRedis) -> None:
    app, holder = make_app(redis_server.url, process=_slow_and_sometimes_failing())
    with run_pipeline(app, holder, wait_topics=("cam", "proc", "info")) as running, tempfile.TemporaryDirectory() as d:
        time.sleep(3)  # a few samples of history before the page opens: it shows what came before it
        pw, ctx = _chromium(d)
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(running.base + "/dashboard")
            page.wait_for_selector("#ch-fps .uplot canvas", timeout=10000)
            assert page.locator(".charts .uplot").count() == 4, "fps, latency, depth, drops: four uPlot charts"
            page.wait_for_function(
                "Object.values(window.edgeflowCharts).length === 4 && "
                # Past the first samples, which may be of a node's first second (its rate not known yet).
                "Object.values(window.edgeflowCharts).every(c => c.data[0].length >= 5)",
                timeout=10000,
            )
            # The charts have a series per node and per link, and their values are the pipeline's.
            labels = page.evaluate("window.edgeflowCharts.fps.series.slice(1).map(s => s.label)")
            assert set(labels) == {"cam", "info", "proc", "gw"}
            cam_fps = page.evaluate(
                "(() => { const c = window.edgeflowCharts.fps; const i = c.series.findIndex(s => s.label === 'cam');"
                " return c.data[i].filter(v => v !== null).slice(-3); })()"
            )
            assert all(10 <= v <= 40 for v in cam_fps), cam_fps  # 30 fps, wide: a loaded CI machine lags
            depth_labels = page.evaluate("window.edgeflowCharts.depth.series.slice(1).map(s => s.label)")
            assert "cam->proc" in depth_labels
            grown = page.evaluate("window.edgeflowCharts.fps.data[0].length")
            page.wait_for_function(f"window.edgeflowCharts.fps.data[0].length > {grown}", timeout=5000)

            # The breakdown of cam -> proc -> gw names the stage that sleeps, highlighted.
            path = page.locator('.path[data-path="cam>proc>gw"]')
            path.wait_for(timeout=10000)
            assert path.locator(".seg.slowest").get_attribute("data-stage") == "proc process"
            assert path.locator("tr.stage.slowest").get_attribute("data-stage") == "proc process"
            assert "slowest proc process" in (path.locator("header").text_content() or "")
            p50 = float(path.locator("tr.stage.slowest td.n").first.text_content() or "nan")
            assert 14 <= p50 <= 60, p50

            # The last error of proc, with its time; the JSON topic's latest value, as `ros2 topic echo` shows it.
            row = page.locator('#errors tr[data-node="proc"]')
            row.wait_for(timeout=10000)
            assert "boom: a bad frame" in (row.locator("td.msg").text_content() or "")
            assert ":" in (row.locator("td.when").text_content() or "")
            assert '"temperature": 21.5' in (page.locator('.dt[data-topic="info"] pre').text_content() or "")

            out = ROOT / "artifacts" / "dashboard-observability.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            assert errors == []
        finally:
            ctx.close()
            pw.stop()
