"""The gateway's Kubernetes readiness probe (edgeflow-k8s) against a real token-protected WebInterface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeflow.loader import load_app

from .support import make_app, run_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "main.py"


def test_gateway_readiness_probe_runs_against_a_real_token_protected_gateway(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No kubelet here: the exec probe's command is run as the kubelet runs it in the pod (the pod's environment
    carries EDGEFLOW_TOKEN from the Secret), against a real gateway whose routes all want that token."""
    from edgeflow_k8s import RenderOptions, render

    objects = render(load_app(EXAMPLE), RenderOptions("registry.local/app:1", "demo"))
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway")
    command = gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    monkeypatch.setenv("EDGEFLOW_TOKEN", "probe-secret")
    app, holder = make_app(redis_server.url)
    with run_pipeline(app, holder, token="probe-secret") as running:
        code = command[2].replace("127.0.0.1:8000", f"127.0.0.1:{running.web.port}")
        assert code != command[2], "the probe targets the gateway's HTTP port"

        def probe(token: str) -> int:
            env = dict(os.environ, EDGEFLOW_TOKEN=token)
            return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30).returncode

        assert probe("probe-secret") == 0
        assert probe("wrong") != 0
