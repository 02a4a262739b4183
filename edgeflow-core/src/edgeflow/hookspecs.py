"""The hooks that EdgeFlow plugins implement; every kind of plugin is told apart by its hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .app import EdgeApp
    from .broker import Broker, ServiceSpec

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("edgeflow")
hookimpl = pluggy.HookimplMarker("edgeflow")


@hookspec
def register_brokers(register: Callable[[str, type[Broker]], None]) -> None:
    """Register broker classes by name: `register("redis", RedisBroker)`."""


@hookspec
def register_interfaces(register: Callable[[str, type[Any]], None]) -> None:
    """Register gateway interface classes by name: `register("web", WebInterface)`."""


@hookspec
def register_deployers(register: Callable[[str, Any], None]) -> None:
    """Register deployers by name: `register("kubernetes", KubernetesDeployer())` (see `edgeflow deploy`).

    A deployer has `name`, `help` and a click `command` (`edgeflow deploy`), and may have a `status_command` and a
    `logs_command` that `edgeflow status` and `edgeflow logs` run for a deployed app (edgeflow/status.py).
    """


@hookspec
def register_metrics(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Register metrics exporter factories by name; an exporter has `export(record: dict) -> None`."""


@hookspec
def register_codecs(register: Callable[[str, Any], None]) -> None:
    """Register link codecs by name: `register("jpeg", JpegCodec())` (see `edgeflow.codecs.Codec`)."""


@hookspec
def register_sinks(register: Callable[[str, type[Any]], None]) -> None:
    """Register sink node classes by name: `register("mcap", McapSink)` (see `edgeflow.sinks`)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the `edgeflow` click group."""


@hookspec(firstresult=True)
def broker_services(broker: Broker, app: EdgeApp) -> list[ServiceSpec] | None:
    """Return the servers a deployment must run for `broker` (first answer wins)."""
