"""The `k8s` metrics exporter that backs the node pods' probes and Prometheus annotations.

No kubelet here: the exporter's real HTTP server is queried the way the kubelet would query it, fed by the real
core StatsReporter through the `register_metrics` hook, as a node's pod does. (A real Prometheus scrapes the same
exposition, edgeflow-prometheus's, in tests/prometheus.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from edgeflow.plugins import registry
from edgeflow.runtime.stats import NodeStats, StatsReporter
from edgeflow_k8s.telemetry import PodTelemetry


class _NoBroker:
    """The reporter also publishes on the broker; the exporter is what's under test, so emits are dropped."""

    def emit(self, channel: str, message: bytes) -> None:
        pass


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def telemetry(k8s_plugin: None) -> Iterator[PodTelemetry]:
    factory = registry("register_metrics")["k8s"]
    exporter = factory()
    assert isinstance(exporter, PodTelemetry)
    exporter.port = 0  # a free port, not the pods' 9464
    exporter.host = "127.0.0.1"
    yield exporter
    exporter.close()


def test_metrics_and_probes_follow_the_runner_reports(telemetry: PodTelemetry) -> None:
    """After a report, /metrics has the node's counters and /healthz, /readyz answer 200; stale, they fail."""
    reporter = StatsReporter(_NoBroker())  # type: ignore[arg-type]
    reporter.exporters = [telemetry]
    stats = NodeStats("gpu_processor", "consumer")
    stats.frames_in, stats.frames_out = 7, 5
    reporter.add(stats)
    reporter.report_once()

    status, body = _get(telemetry.port, "/metrics")
    assert status == 200
    assert 'edgeflow_frames_total{direction="in",node="gpu_processor",replica="0"} 7.0' in body
    assert 'edgeflow_frames_total{direction="out",node="gpu_processor",replica="0"} 5.0' in body
    assert "# TYPE edgeflow_frames_total counter" in body, "counters are counters now, not gauges"
    assert "# TYPE edgeflow_process_seconds histogram" in body
    assert _get(telemetry.port, "/healthz")[0] == 200
    assert _get(telemetry.port, "/readyz")[0] == 200

    telemetry.last_export -= 10  # as if the reporter had stopped 10 s ago
    status, body = _get(telemetry.port, "/readyz")
    assert status == 503 and json.loads(body)["ok"] is False
    assert _get(telemetry.port, "/healthz")[0] == 200
    telemetry.last_export -= 30
    assert _get(telemetry.port, "/healthz")[0] == 503
    assert _get(telemetry.port, "/nope")[0] == 404


def test_with_a_token_metrics_want_it_and_the_probes_do_not(k8s_plugin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet's httpGet probes carry no secret; Prometheus sends the token in its scrape config."""
    monkeypatch.setenv("EDGEFLOW_TOKEN", "pod-secret")
    exporter = PodTelemetry(port=0, host="127.0.0.1")
    try:
        exporter.export(NodeStats("cam", "producer").snapshot())
        assert _get(exporter.port, "/metrics")[0] == 401
        assert _get(exporter.port, "/metrics?token=pod-secret")[0] == 200
        assert _get(exporter.port, "/healthz")[0] == 200 and _get(exporter.port, "/readyz")[0] == 200
    finally:
        exporter.close()
