"""DualRedisBroker: stream entries on the control Redis, large payloads on a second, data-plane Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgeflow.broker import Broker
from edgeflow.brokers.redis import RedisBroker

from .plane import DataRedisPlane

__all__ = ["DualRedisBroker"]


class DualRedisBroker(RedisBroker):
    """RedisBroker composed with `DataRedisPlane`: the control Redis only carries small entries and references.

    Args:
        control_url: the control plane (REDIS_URL, or REDIS_HOST / REDIS_PORT by default).
        data_url: the data plane (DATA_REDIS_URL, or DATA_REDIS_HOST / DATA_REDIS_PORT, default localhost:6380).
        inline_threshold: payloads smaller than this stay inline in the stream entry.
        realtime_ttl, durable_ttl: the longest a realtime or durable payload lives on the data plane, in seconds.
    """

    name = "dualredis"
    data_plane: DataRedisPlane

    def __init__(
        self,
        control_url: str | None = None,
        data_url: str | None = None,
        *,
        inline_threshold: int = 4096,
        realtime_ttl: float = 60.0,
        durable_ttl: float = 7 * 86400.0,
        **options: Any,
    ) -> None:
        plane = DataRedisPlane(
            data_url, inline_threshold=inline_threshold, realtime_ttl=realtime_ttl, durable_ttl=durable_ttl
        )
        super().__init__(control_url, data_plane=plane, **options)

    @property
    def data_url(self) -> str:
        """The data-plane URL, from the constructor, DATA_REDIS_URL, or DATA_REDIS_HOST / DATA_REDIS_PORT."""
        return self.data_plane.data_url

    @property
    def data_display_url(self) -> str:
        """The data-plane URL with any password redacted."""
        return self.data_plane.display_url

    @classmethod
    def contract_variants(cls) -> dict[str, Callable[[Sequence[str]], Broker]]:
        """As configured by default, and with every payload on the data plane (the contract's frames are small)."""
        return {
            "dualredis": lambda urls: cls(urls[0], urls[1]),
            "dualredis-refs": lambda urls: cls(urls[0], urls[1], inline_threshold=0),
        }
