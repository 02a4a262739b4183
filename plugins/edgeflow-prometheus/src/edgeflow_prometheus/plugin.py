"""Hook implementations of the prometheus plugin; prometheus-client is imported only when an exporter is made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_metrics(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Register `prometheus`: /metrics of this process's nodes on EDGEFLOW_METRICS_PORT (9464)."""
    from .exporter import PrometheusExporter

    register("prometheus", PrometheusExporter)
