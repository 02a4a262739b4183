"""Hook implementations of the dualredis plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeflow.hookspecs import hookimpl

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp
    from edgeflow.broker import Broker, ServiceSpec


@hookimpl
def register_brokers(register: Any) -> None:
    """Register DualRedisBroker as `dualredis`."""
    from .broker import DualRedisBroker

    register("dualredis", DualRedisBroker)


@hookimpl
def broker_services(broker: Broker, app: EdgeApp) -> list[ServiceSpec] | None:
    """A DualRedisBroker needs two Redis servers: `redis` (control plane) and `redis-data` (payloads)."""
    from edgeflow.broker import ServiceSpec

    from .plane import DataRedisPlane

    if not isinstance(getattr(broker, "data_plane", None), DataRedisPlane):
        return None
    return [
        ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT"),
        # A data plane that evicts would lose durable payloads: refuse writes instead, loudly.
        ServiceSpec(
            "redis-data",
            6380,
            "DATA_REDIS_HOST",
            "DATA_REDIS_PORT",
            role="data",
            args=("--maxmemory-policy", "noeviction"),
        ),
    ]
