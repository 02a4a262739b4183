"""Replay from the broker's own log: what durable streams still hold goes to their targets once more.

Durable streams keep a frame until every target acknowledged it, and longer with a link's `retain_seconds`.
`replay_streams` copies the entries of the last N seconds into each target's replay stream (the one dead-letter
replay uses), in chunks, never more unread entries there than the link's `max_len`: it waits for the target to
read, so a long replay is never trimmed away unread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from ...errors import BrokerError, ConfigurationError
from ..dataplane import Missing
from .errors import translate
from .subscription import DEAD_MAX_LEN

if TYPE_CHECKING:
    from ...links import Link
    from .broker import RedisBroker

__all__ = ["remove_groups", "replay_streams"]

log = logging.getLogger("edgeflow.broker")
_CHUNK = 32
# Below the dead-letter replay's approximate MAXLEN (10,000), so that it never trims our unread entries.
_ROOM = 5_000


def _unread(client: Any, key: str, group: str) -> int:
    """Entries of `key` that `group` has not acknowledged (Redis 7's lag plus pending); trims the others."""
    for info in client.xinfo_groups(key):
        if info.get("name") not in (group, group.encode()):
            continue
        pending = int(info.get("pending") or 0)
        low = client.xpending(key, group).get("min") if pending else info.get("last-delivered-id")
        if low is not None:
            client.xtrim(key, minid=low, approximate=False)  # what the group acknowledged is done with
        lag = info.get("lag")
        return pending + (int(lag) if lag is not None else int(client.xlen(key)))
    return int(client.xlen(key))


def _wait_for_room(broker: RedisBroker, ln: Link, need: int, timeout: float, done: int) -> None:
    key = broker.replay_key(ln.target)
    room = min(ln.max_len, _ROOM)
    deadline = time.monotonic() + timeout
    while _unread(broker.client, key, ln.target) + need > room:
        if time.monotonic() > deadline:
            raise BrokerError(
                f"{ln.target!r} took no replayed frame for {timeout:.0f}s ({done} handed to it so far, {room} wait "
                f"unread); start {ln.target!r}, then replay the rest",
                url=broker.display_url,
            )
        time.sleep(0.05)


def replay_streams(broker: RedisBroker, links: Sequence[Link], seconds: float, timeout: float = 30.0) -> dict[str, int]:
    """Copy the entries of the last `seconds` of the durable `links`' streams to their targets' replay streams."""
    durable = [ln for ln in links if ln.qos == "durable"]
    if not durable:
        raise ConfigurationError("replay from the broker needs durable links: only durable streams keep frames")
    client: Any = broker.client
    counts = {ln.target: 0 for ln in durable}
    streams: dict[str, list[Link]] = {}
    for ln in durable:
        streams.setdefault(broker.stream_key(ln.topic, "durable", ln.variant), []).append(ln)
    try:
        sec, usec = client.time()
        start = b"%d-0" % max(0, int(sec * 1000 + usec // 1000 - seconds * 1000))
        for key, targets in streams.items():
            newest = client.xrevrange(key, count=1)
            if not newest:
                continue
            last = newest[0][0]  # frames written while we replay are theirs already
            for ln in targets:
                broker.ensure_group_key(broker.replay_key(ln.target), ln.target)
            cursor: bytes = start
            while True:
                entries = client.xrange(key, min=cursor, max=last, count=_CHUNK)
                if not entries:
                    break
                cursor = b"(" + entries[-1][0]
                reader = broker.data_plane.reader(None)
                try:
                    payloads = reader.resolve([fields for _, fields in entries])
                    letters: list[dict[Any, Any]] = []
                    for (entry_id, fields), payload in zip(entries, payloads, strict=True):
                        if isinstance(payload, Missing) or b"h" not in fields:
                            log.warning("replay of %s: entry %s has no payload any more (%s); skipped", key,
                                        entry_id, payload)  # fmt: skip
                            continue
                        letter: dict[Any, Any] = {b"h": fields[b"h"]}
                        # The payload is kept as a dead letter's is: it must outlive the entry it came from.
                        letter.update(broker.data_plane.dead_letter_fields(fields, payload, "replay", DEAD_MAX_LEN))
                        letters.append(letter)
                finally:
                    reader.close()
                for ln in targets:
                    step = max(1, min(ln.max_len, _ROOM) // 2)
                    for i in range(0, len(letters), step):
                        part = letters[i : i + step]
                        _wait_for_room(broker, ln, len(part), timeout, counts[ln.target])
                        pipe = client.pipeline(transaction=False)
                        for letter in part:
                            pipe.xadd(broker.replay_key(ln.target), {**letter, "s": ln.source})
                        pipe.execute()
                        counts[ln.target] += len(part)
                if entries[-1][0] == last:
                    break
    except redis.RedisError as exc:
        raise translate(exc, broker.display_url) from exc
    return counts


def remove_groups(broker: RedisBroker, links: Sequence[Link]) -> None:
    """Destroy the links' target's groups on their streams, its replay stream and its skip accounting."""
    client: Any = broker.client
    try:
        pipe = client.pipeline(transaction=False)
        for ln in links:
            key = broker.stream_key(ln.topic, ln.qos, ln.variant)
            if client.exists(key):
                pipe.xgroup_destroy(key, ln.target)
            pipe.delete(broker.seen_key(ln.topic, ln.target))
        if links:
            pipe.delete(broker.replay_key(links[0].target))
        pipe.execute()
    except redis.RedisError as exc:
        raise translate(exc, broker.display_url) from exc
