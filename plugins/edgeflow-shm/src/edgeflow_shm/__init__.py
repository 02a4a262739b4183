"""EdgeFlow shared-memory data plane: frames cross processes on one host through /dev/shm, Redis keeps control."""

from __future__ import annotations

from ._pool import host_id, sweep
from .broker import SharedMemoryDataPlane, ShmBroker, StaleFrameError

__all__ = ["SharedMemoryDataPlane", "ShmBroker", "StaleFrameError", "host_id", "sweep"]
