"""The Redis broker's hook implementations: a built-in plugin, registered like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...broker import Broker, ServiceSpec
from ...hookspecs import hookimpl
from .broker import RedisBroker

if TYPE_CHECKING:
    from ...app import EdgeApp


@hookimpl
def register_brokers(register: Any) -> None:
    """Register the built-in Redis broker."""
    register("redis", RedisBroker)


@hookimpl(trylast=True)
def broker_services(broker: Broker, app: EdgeApp) -> list[ServiceSpec] | None:
    """One Redis for any broker that no plugin answered for."""
    return [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")]
