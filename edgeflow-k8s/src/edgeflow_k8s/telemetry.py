"""The `k8s` metrics exporter that runs inside each node's pod: Prometheus `/metrics` and probe endpoints.

Nodes serve no HTTP of their own, so the deployment sets `EDGEFLOW_METRICS=k8s`: the runner's statistics
reporter then hands this exporter every replica's snapshot once a second. It is the `prometheus` exporter of
edgeflow-prometheus (prometheus-client, on EDGEFLOW_METRICS_PORT, 9464) with the kubelet's probes on the same
port: `/healthz` answers 200 while snapshots keep coming (the runner's reporter thread is alive and the process is
not frozen); `/readyz` is stricter. The probes need no token: they say only ok or not.
"""

from __future__ import annotations

import json
import time
from typing import Any

from edgeflow_prometheus.exporter import DEFAULT_PORT, PrometheusExporter

__all__ = ["DEFAULT_PORT", "LIVE_SECONDS", "READY_SECONDS", "PodTelemetry"]

LIVE_SECONDS = 30.0
READY_SECONDS = 5.0


class PodTelemetry(PrometheusExporter):
    """The prometheus exporter, and the probes that tell the kubelet whether the runner still reports."""

    def __init__(self, port: int | None = None, host: str = "0.0.0.0") -> None:
        super().__init__(port, host)
        self.last_export = 0.0

    def export(self, record: dict[str, Any]) -> None:
        """Keep `record` as its replica's latest snapshot; the first call starts the HTTP server with the probes."""
        first = self.endpoint is None
        ep = self.open()
        if first:
            for path in ("/healthz", "/readyz"):
                ep.routes[path] = lambda path=path: self.respond(path)  # type: ignore[misc]
                ep.open_paths.add(path)
        self.last_export = time.monotonic()
        ep.put(record)

    def age(self) -> float:
        """Return seconds since the last snapshot (infinite before the first)."""
        return time.monotonic() - self.last_export if self.last_export else float("inf")

    def respond(self, path: str) -> tuple[int, bytes, str]:
        """Return (status, body, content type) of a probe at `path` (/healthz or /readyz)."""
        limit = LIVE_SECONDS if path == "/healthz" else READY_SECONDS
        age = self.age()
        ok = age <= limit
        body = json.dumps({"ok": ok, "seconds_since_report": round(age, 1) if age != float("inf") else None})
        return (200 if ok else 503), body.encode(), "application/json"
