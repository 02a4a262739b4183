"""The Redis broker: streams, consumer groups and Pub/Sub on one Redis; payloads where its data plane puts them."""

from __future__ import annotations

from .broker import RedisBroker
from .errors import CONN_ERRORS, translate
from .publisher import RedisPublisher
from .subscription import RedisSubscription

__all__ = ["CONN_ERRORS", "RedisBroker", "RedisPublisher", "RedisSubscription", "translate"]
