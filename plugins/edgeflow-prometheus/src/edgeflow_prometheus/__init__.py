"""EdgeFlow's Prometheus metrics: every node's statistics at /metrics, on prometheus-client."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_PORT", "PrometheusExporter"]


def __getattr__(name: str) -> Any:
    # Lazy: loading the plugin (its entry point, edgeflow_prometheus.plugin) must not import prometheus-client.
    if name in __all__:
        from . import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
