"""The control plane's listener: one Redis Pub/Sub channel."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import redis

from ...broker import Listener
from ...errors import BrokerConnectionError
from .errors import translate

if TYPE_CHECKING:
    from .broker import RedisBroker

__all__ = ["RedisListener"]


class RedisListener(Listener):
    """Receives the messages of one channel; reconnects on the next `get()` after a failure."""

    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self._pubsub: Any = None

    def get(self, timeout: float) -> bytes | None:
        """Return the next message, or None after `timeout` seconds."""
        try:
            if self._pubsub is None:
                self._pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
                (self._pubsub.ssubscribe if self.broker.sharded_pubsub else self._pubsub.subscribe)(self.channel)
            if self.broker.sharded_pubsub:  # a cluster's sharded channel (RedisBroker.sharded_pubsub)
                msg = self._pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=timeout)
            else:
                msg = self._pubsub.get_message(timeout=timeout)
        except (redis.RedisError, OSError) as exc:
            self._drop()
            raise translate(exc, self.broker.display_url) from exc
        except (TypeError, ValueError, AttributeError) as exc:  # redis-py on a connection closed under it
            self._drop()
            raise BrokerConnectionError(
                f"the control-plane connection to {self.broker.display_url} was closed: {exc!r}",
                url=self.broker.display_url,
            ) from exc
        if msg is None or msg.get("type") not in ("message", "smessage"):
            return None
        data = msg["data"]
        return bytes(data) if not isinstance(data, bytes) else data

    def _drop(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None

    def close(self) -> None:
        """Stop listening."""
        self._drop()
