"""EdgeFlow shared-memory data plane: frames cross processes on one host through /dev/shm, Redis keeps control."""

from __future__ import annotations

from ._pool import host_id, sweep
from .broker import ShmBroker
from .plane import SharedMemoryPlane

__all__ = ["SharedMemoryPlane", "ShmBroker", "host_id", "sweep"]
