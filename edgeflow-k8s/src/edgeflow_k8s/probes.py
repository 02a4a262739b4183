"""The gateway's readiness probe, from the interfaces the gateway really has.

Interfaces are added in the gateway's `configure()`, so the only way to know them is to run it: the gateway is
built here as a replica would be (without a broker connection or a started interface) with the environment its
pod will have, and each interface is asked for its `readiness()` endpoint (edgeflow-web's WebInterface: `/ready`
on its port, which answers without the token and then says only ready or not). The first one found becomes an
httpGet probe, so the kubelet starts no interpreter for it. A gateway with no HTTP interface (ROS 2 only, or
none), or whose `configure()` can't run here, is judged as every other node is: by its runner's reports on the
k8s telemetry exporter's `/readyz`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edgeflow.runtime.stats import NodeStats

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp, NodeSpec

__all__ = ["REPORTS_PROBE", "gateway_readiness"]

log = logging.getLogger("edgeflow.k8s")
#: Every node pod's readiness: the runner reported in the last 5 s (edgeflow_k8s.telemetry).
REPORTS_PROBE: dict[str, Any] = {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block (the pod's settings, read by `configure()`), then restore it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _interfaces(app: EdgeApp, spec: NodeSpec, env: dict[str, str]) -> list[Any]:
    node = spec.cls.__new__(spec.cls)
    node._bind(
        name=spec.name, app_name=app.name, device=spec.device, replicas=spec.replicas, replica=0,
        broker=app.broker, stats=NodeStats(spec.name, spec.type), params=spec.params,
    )  # fmt: skip
    node.output_topic = spec.topic
    with _environment(env):
        spec.cls.__init__(node)
        node.configure()
    return list(getattr(node, "interfaces", []))


def gateway_readiness(app: EdgeApp, spec: NodeSpec, env: dict[str, str]) -> tuple[dict[str, Any], int | None]:
    """Return the gateway's readinessProbe and the HTTP port it serves on (None: no HTTP interface found)."""
    try:
        interfaces = _interfaces(app, spec, env)
    except Exception as exc:
        log.warning(
            "gateway %r: its configure() can't run here (%s: %s), so its interfaces are unknown; its readiness is "
            "its runner's reports",
            spec.name,
            type(exc).__name__,
            exc,
        )
        return dict(REPORTS_PROBE), None
    for interface in interfaces:
        readiness = getattr(interface, "readiness", None)
        found = readiness() if callable(readiness) else None
        if found is not None:
            port, path = found
            # timeoutSeconds: /ready pings the broker; a slow Redis must not make the probe flap at once.
            probe = {"httpGet": {"path": path, "port": int(port)}, "periodSeconds": 5, "timeoutSeconds": 3}
            return probe, int(port)
    names = ", ".join(type(i).__name__ for i in interfaces) or "none"
    log.info("gateway %r serves no HTTP (interfaces: %s): its readiness is its runner's reports", spec.name, names)
    return dict(REPORTS_PROBE), None
