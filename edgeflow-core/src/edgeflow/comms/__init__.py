"""Communication: brokers and the frame format (the seed's import path)."""

from __future__ import annotations

from ..broker import Broker
from ..brokers.redis import RedisBroker
from ..frame import Frame

__all__ = ["Broker", "Frame", "RedisBroker"]
