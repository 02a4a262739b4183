"""EdgeFlow dualredis plugin: DualRedisBroker keeps payloads on a second Redis, apart from the control plane."""

from __future__ import annotations

from .broker import DualRedisBroker
from .plane import DataRedisPlane

__all__ = ["DataRedisPlane", "DualRedisBroker"]
