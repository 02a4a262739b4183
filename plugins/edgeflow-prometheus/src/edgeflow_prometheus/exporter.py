"""`prometheus`: the metrics exporter that serves each process's node replicas at /metrics."""

from __future__ import annotations

import os
from typing import Any

from edgeflow.config import int_env, settings

from .server import MetricsEndpoint, endpoint, release

__all__ = ["DEFAULT_PORT", "PrometheusExporter"]

DEFAULT_PORT = 9464


class PrometheusExporter:
    """Fed every replica's statistics record once a second by the runner (EDGEFLOW_METRICS=prometheus).

    Args:
        port: where to serve; default EDGEFLOW_METRICS_PORT, or 9464 (0: any free port, read `.port` after the
            first export).
        host: the address to listen on; default EDGEFLOW_METRICS_HOST, or every interface.
    """

    def __init__(self, port: int | None = None, host: str | None = None) -> None:
        self.port = int_env("EDGEFLOW_METRICS_PORT", DEFAULT_PORT) if port is None else int(port)
        self.host = host or os.environ.get("EDGEFLOW_METRICS_HOST") or "0.0.0.0"
        self.endpoint: MetricsEndpoint | None = None

    def open(self) -> MetricsEndpoint:
        """Return this exporter's endpoint, serving it on first use."""
        if self.endpoint is None:
            self.endpoint = endpoint(self.host, self.port, settings.EDGEFLOW_TOKEN)
            if self.endpoint.start():
                self.port = self.endpoint.port
        return self.endpoint

    def export(self, record: dict[str, Any]) -> None:
        """Keep `record` as its replica's latest; the first call starts the HTTP server."""
        self.open().put(record)

    def close(self) -> None:
        """Stop serving."""
        if self.endpoint is not None:
            release(self.endpoint)
            self.endpoint = None
