"""Hook implementations of the k8s plugin; heavy imports (click commands, kubernetes) happen inside them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeflow.hookspecs import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    """Add `status`, `logs` and `delete` to the `edgeflow` command (`deploy` finds the deployer below)."""
    from .commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


@hookimpl
def register_deployers(register: Callable[[str, Any], None]) -> None:
    """Register the Kubernetes deployer: `edgeflow deploy main.py --registry ...` runs its command."""
    from .deployer import KubernetesDeployer

    register("kubernetes", KubernetesDeployer())


@hookimpl
def register_metrics(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Register `k8s`: Prometheus metrics and probe endpoints inside each deployed node's pod."""
    from .telemetry import PodTelemetry

    register("k8s", PodTelemetry)
