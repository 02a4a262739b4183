"""Communication under the seed's import path: the broker contract, the Redis broker and the frame."""

from __future__ import annotations

from ..broker import Broker
from ..brokers.redis import RedisBroker
from ..frame import Frame

__all__ = ["Broker", "Frame", "RedisBroker"]
