"""The seed example as a real process: its streams at 30 fps, and its dashboard in a real headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgeflow.embedded import EmbeddedRedis
from edgeflow.runtime.runner import run_app

from .support import make_app, parts, rate, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    from .support import free_port

    return free_port()


@pytest.fixture(scope="module")
def example() -> Iterator[str]:
    """examples/main.py, unchanged, run as the README says, on free ports; yields its base URL."""
    http_port, tcp_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "EDGEFLOW_"))}
    env.update(GATEWAY_HTTP_PORT=str(http_port), GATEWAY_TCP_PORT=str(tcp_port), HOSTNAME="edge-cam-01")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "main.py")], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, "the example exited"
                try:
                    fps = httpx.get(base + "/api/fps", timeout=2).json()
                    if fps.get("fake_camera", 0) > 20 and fps.get("gpu_processor", 0) > 20:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the example's gateway never served 30 fps"
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            output = log.read().decode(errors="replace")
            assert "Traceback" not in output, output


def _measure(base: str, topic: str, seconds: float, out: dict[str, float]) -> None:
    with httpx.Client(base_url=base, timeout=10) as c, c.stream("GET", f"/video/{topic}") as r:
        assert r.status_code == 200
        arrivals: list[float] = []
        t_end = time.monotonic() + seconds
        for _headers, body in parts(r.iter_raw()):
            assert body[:2] == b"\xff\xd8"
            arrivals.append(time.monotonic())
            if arrivals[-1] > t_end:
                break
    out[topic] = rate(arrivals)


def test_example_streams_both_topics_at_30_fps(example: str) -> None:
    rates: dict[str, float] = {}
    threads = [
        threading.Thread(target=_measure, args=(example, t, 3.0, rates)) for t in ("fake_camera", "gpu_processor")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    print(f"\nexample MJPEG rates: {rates}")
    assert set(rates) == {"fake_camera", "gpu_processor"}
    for topic, fps in rates.items():
        assert 24 <= fps <= 36, (topic, fps)


def _chromium(user_dir: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(
        user_dir, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1600, "height": 1000}
    )
    return pw, ctx


def _figures(page) -> str:  # type: ignore[no-untyped-def]
    return str(page.eval_on_selector_all(".tile .stats b, #nodes td.n", "els => els.map(e => e.textContent).join('|')"))


@pytest.mark.browser
def test_example_dashboard_in_chromium(example: str) -> None:
    with tempfile.TemporaryDirectory() as user_dir:
        pw, ctx = _chromium(user_dir)
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(example + "/dashboard")
            page.wait_for_selector('.tile[data-topic="fake_camera"] img', timeout=10000)
            page.wait_for_selector('.tile[data-topic="gpu_processor"] img', timeout=10000)
            page.wait_for_function(
                "[...document.querySelectorAll('.tile img')].every(i => i.naturalWidth === 640)", timeout=10000
            )
            assert page.locator("#conn").get_attribute("class") == "conn live"
            assert page.locator("#graph .g-node").count() == 3
            assert page.locator("#graph .g-edge.redis").count() == 1
            assert page.locator("#graph .g-edge.tcp").count() == 2
            assert page.locator("#nodes tbody tr.up").count() == 3
            before = _figures(page)
            time.sleep(2.5)
            after = _figures(page)
            assert before != after, "the figures must change live, without a reload"
            page.wait_for_function(
                "document.querySelector('#k-spark polyline').getAttribute('points').split(' ').length >= 3"
            )
            # Kept out of the tree so a test run never changes a tracked file; docs/img/dashboard.png is a copy.
            out = ROOT / "artifacts" / "dashboard.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            assert out.stat().st_size > 20_000
            assert errors == []
        finally:
            ctx.close()
            pw.stop()


@pytest.mark.browser
def test_dashboard_passes_the_token_and_shows_a_node_gone(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "dash-token-123"
    monkeypatch.setenv("EDGEFLOW_TOKEN", token)
    app, holder = make_app(redis_server.url)
    # "info" runs apart, as on another machine, so that it can stop while the gateway keeps serving.
    twin, _ = make_app(redis_server.url, name=app.name, tcp_port=app.nodes["gw"].params["tcp_port"])
    info_stop = threading.Event()
    info = threading.Thread(
        target=run_app, args=(twin, ["info"]), kwargs={"embedded": False, "stop": info_stop, "install_signals": False}
    )
    info.start()
    main = [n for n in app.nodes if n != "info"]
    with (
        run_pipeline(app, holder, token=token, names=main, wait_topics=("cam", "info")) as running,
        tempfile.TemporaryDirectory() as user_dir,
    ):
        pw, ctx = _chromium(user_dir)
        try:
            page = ctx.new_page()
            assert page.goto(running.base + "/dashboard").status == 401  # type: ignore[union-attr]
            page.goto(f"{running.base}/dashboard?token={token}")
            page.wait_for_function(
                "document.querySelectorAll('.tile img').length === 2 && "
                "[...document.querySelectorAll('.tile img')].every(i => i.naturalWidth === 320)",
                timeout=10000,
            )
            assert page.locator("#conn").get_attribute("class") == "conn live"
            assert page.locator('.dt[data-topic="info"]').count() == 1, "non-image data shows as a data topic"
            page.wait_for_selector('#nodes tr.up[data-node="info"]', timeout=8000)
            info_stop.set()
            info.join(10)
            t0 = time.monotonic()
            # Within 5 s of its last heartbeat (plus a push a second) the node shows as gone; the rest stays up.
            page.wait_for_selector('#nodes tr.gone[data-node="info"]', timeout=9000)
            assert time.monotonic() - t0 < 7.5
            assert page.locator('#graph .g-node.gone[data-node="info"]').count() == 1
            assert page.locator('#nodes tr.up[data-node="cam"]').count() == 1
        finally:
            ctx.close()
            pw.stop()
            info_stop.set()
            info.join(10)
