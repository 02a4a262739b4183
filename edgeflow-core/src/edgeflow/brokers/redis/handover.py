"""A replica that stops hands its unacknowledged durable frames to the others, as a dead one's are taken over.

A reader's durable frames stay its own until it acknowledges them; when it dies, the others take them over once
they sat `claim_after` seconds. A replica that stops cleanly (a scale-down, a rolling update, SIGTERM) need not
make them wait: it marks every frame it still holds as idle for `claim_after` (XCLAIM ... IDLE, JUSTID: no
delivery is counted), and the next replica to look for abandoned frames, within CLAIM_CHECK seconds, takes them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .subscription import RedisSubscription

__all__ = ["CLAIM_CHECK", "release_pending"]

log = logging.getLogger("edgeflow.broker")

#: The longest a live replica goes without looking for frames to take over (besides claim_after / 2).
CLAIM_CHECK = 1.0
_PAGE = 500
_MAX_RELEASED = 100_000


def release_pending(sub: RedisSubscription) -> int:
    """Make the durable frames `sub`'s consumer holds look abandoned, so a live replica takes them; return how many."""
    if not sub.claim_after:
        return 0
    client: Any = sub.broker.client
    idle_ms = int(sub.claim_after * 1000)
    released = 0
    try:
        for key, stream in sub._streams.items():
            if stream.qos != "durable":
                continue
            low = "-"
            while released < _MAX_RELEASED:
                pending = client.xpending_range(key, sub.group, min=low, max="+", count=_PAGE,
                                                consumername=sub.consumer)  # fmt: skip
                ids = [p["message_id"] for p in pending]
                if not ids:
                    break
                client.xclaim(key, sub.group, sub.consumer, 0, ids, idle=idle_ms, justid=True)
                released += len(ids)
                last = ids[-1]
                low = "(" + (last.decode() if isinstance(last, bytes) else str(last))
                if len(ids) < _PAGE:
                    break
    except redis.RedisError as exc:
        log.warning("%s: could not hand %s's unacknowledged frames over (%s); the other replicas take them over "
                    "after claim_after=%gs", sub.group, sub.consumer, exc, sub.claim_after)  # fmt: skip
        return released
    if released:
        log.info("%s: handed %d unacknowledged durable frame(s) of %s over to the other replicas", sub.group,
                 released, sub.consumer)  # fmt: skip
    return released
