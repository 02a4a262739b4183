"""The gateway's Kubernetes readiness probe (edgeflow-k8s) against a real token-protected WebInterface.

No kubelet here: the rendered httpGet probe is sent as the kubelet sends it (a plain GET of its path on its port,
no credentials) to a real gateway whose other routes all want EDGEFLOW_TOKEN.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeflow.loader import load_app

from .support import make_app, run_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "main.py"


def _probe(objects: list[dict[str, Any]], name: str = "gateway") -> dict[str, Any]:
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    probe: dict[str, Any] = gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    return probe


def test_gateway_readiness_probe_runs_against_a_real_token_protected_gateway(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's gateway gets an httpGet of WebInterface's /ready on its port. Without the token the gateway
    answers it with 200 once frames flow, and with nothing but {"status": "ok"}; everything else stays 401."""
    from edgeflow_k8s import RenderOptions, render

    probe = _probe(render(load_app(EXAMPLE), RenderOptions("registry.local/app:1", "demo")))
    assert probe["httpGet"] == {"path": "/ready", "port": 8000} and "exec" not in probe
    monkeypatch.setenv("EDGEFLOW_TOKEN", "probe-secret")
    app, holder = make_app(redis_server.url)
    with run_pipeline(app, holder, token="probe-secret") as running:
        url = f"http://127.0.0.1:{running.web.port}{probe['httpGet']['path']}"
        deadline = time.monotonic() + probe["periodSeconds"] * 3
        while (answer := httpx.get(url, timeout=probe["timeoutSeconds"])).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert answer.json() == {"status": "ok"}, "the probe learns ready or not, and nothing else"
        assert "probe-secret" not in answer.text
        assert httpx.get(f"http://127.0.0.1:{running.web.port}/api/nodes", timeout=5).status_code == 401
        with running.client() as c:
            assert c.get("/ready").json()["receiving"] is True


def test_a_gateway_the_broker_left_is_not_ready_to_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Redis gone the anonymous probe gets 503 {"status": "unavailable"}: still nothing more."""
    from edgeflow.embedded import EmbeddedRedis

    monkeypatch.setenv("EDGEFLOW_TOKEN", "probe-secret")
    server = EmbeddedRedis().start()
    try:
        app, holder = make_app(server.url)
        with run_pipeline(app, holder, token="probe-secret") as running:
            url = f"http://127.0.0.1:{running.web.port}/ready"
            server.stop()
            deadline = time.monotonic() + 15
            while (answer := httpx.get(url, timeout=5)).status_code != 503:
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.2)
            assert answer.json() == {"status": "unavailable"}
    finally:
        server.stop()
