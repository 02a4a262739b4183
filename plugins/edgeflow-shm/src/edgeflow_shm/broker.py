"""`ShmBroker`: the Redis broker composed with the shared-memory data plane."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgeflow.broker import Broker
from edgeflow.brokers.redis import RedisBroker

from .plane import SharedMemoryPlane

__all__ = ["ShmBroker"]


class ShmBroker(RedisBroker):
    """RedisBroker with payloads in shared memory: `ShmBroker(url, shm_slots=64, shm_min_bytes=65536)`.

    The keyword arguments of `SharedMemoryPlane` (shm_min_bytes, shm_slots, shm_max_bytes, shm_local,
    shm_gateway) choose its data plane; the rest go to RedisBroker.
    """

    name = "shm"
    data_plane: SharedMemoryPlane

    def __init__(
        self,
        url: str | None = None,
        *,
        shm_min_bytes: int = 65_536,
        shm_slots: int = 8,
        shm_max_bytes: int = 256 << 20,
        shm_local: bool = True,
        shm_gateway: bool = True,
        **options: Any,
    ) -> None:
        plane = SharedMemoryPlane(
            shm_min_bytes=shm_min_bytes,
            shm_slots=shm_slots,
            shm_max_bytes=shm_max_bytes,
            shm_local=shm_local,
            shm_gateway=shm_gateway,
        )
        super().__init__(url, data_plane=plane, **options)

    @classmethod
    def contract_variants(cls) -> dict[str, Callable[[Sequence[str]], Broker]]:
        """Every payload through shared memory with stream entries (as for readers elsewhere), and the channel."""
        return {
            "shm": lambda urls: cls(urls[0], shm_min_bytes=0, shm_local=False),
            "shm-channel": lambda urls: cls(urls[0]),
        }
