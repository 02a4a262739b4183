"""Where a payload lives: the one seam of the Redis broker that data planes implement.

The Redis broker always keeps a frame's header, its acknowledgements and its skip counts in the stream entry.
Its payload may live elsewhere: inline in the entry (`InlinePlane`, the default), on a second Redis
(edgeflow-dualredis), in shared memory (edgeflow-shm). A data plane does three things:

* **place** a payload for a publisher and say which entry fields carry it (`Placer.place`);
* **resolve** a batch of entries read by a subscription back into payloads (`PayloadReader.resolve`);
* **release** the payloads of durable entries that every target acknowledged, when they are trimmed.

The broker composes one (`RedisBroker(url, data_plane=...)`); nothing subclasses the publisher or the
subscription for it. A plane may also wrap the publisher and the subscription it is given (`publisher`,
`subscription`) to add a path of its own, as edgeflow-shm does for readers on the producer's host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..frame import Buffer

if TYPE_CHECKING:
    from ..broker import GatewayPath, Publisher, Subscription
    from ..links import Link
    from .redis.broker import RedisBroker
    from .redis.publisher import RedisPublisher
    from .redis.subscription import RedisSubscription

__all__ = ["DataPlane", "Fields", "InlinePlane", "Missing", "PayloadReader", "Placer"]

#: A stream entry's fields as Redis returns them.
Fields = dict[bytes, Any]


class Missing:
    """A payload that can't be had, how the subscription counts it, and why (for the log)."""

    __slots__ = ("count", "why")

    def __init__(self, count: Literal["skipped", "lost", "rejected"], why: str) -> None:
        #: "skipped": a realtime frame gone stale; "lost": a durable payload gone; "rejected": a bad reference.
        self.count = count
        self.why = why

    def __repr__(self) -> str:
        return f"Missing({self.count!r}, {self.why!r})"


class Placer:
    """Places the payloads of one publisher; the default keeps them inline in the entry."""

    def place(self, header: bytes, payload: Buffer) -> dict[str, Any]:
        """Return the stream-entry fields that carry `payload` (the publisher adds the header as `h`)."""
        return {"d": payload}

    def close(self) -> None:
        """Release what the placer holds."""


class PayloadReader:
    """Resolves the payloads of one subscription's entries; the default reads them from the entry."""

    def resolve(self, entries: Sequence[Fields]) -> list[Buffer | Missing]:
        """Return the payload of each entry, in order; views of it stay valid until `release()` or `close()`."""
        return [fields.get(b"d", b"") for fields in entries]

    def release(self) -> None:
        """The frames of the previous read are done with: their views may be let go (called as each read starts)."""

    def close(self) -> None:
        """Let go of the views handed out and what the reader holds."""


class DataPlane:
    """Keeps payloads inline; data planes override what they place elsewhere."""

    #: Shown in logs and `--list`.
    name = "inline"
    #: True when trimmed durable entries' payloads must be released (`release`).
    frees_payloads = False

    def attach(self, broker: RedisBroker) -> None:
        """Called once by the broker that composes this plane."""
        self.broker = broker

    def ensure_server(self, start_embedded: Callable[[], str], control_embedded: bool) -> None:
        """Start a private server through `start_embedded` if the plane needs one and none is configured."""

    def connect(self) -> None:
        """Connect to the plane's own servers, if any; raises BrokerError when they can't be reached."""

    def close(self) -> None:
        """Close the plane's connections and release its resources."""

    def ping(self) -> bool:
        """Return True when the plane's own servers answer."""
        return True

    def available(self) -> bool:
        """Return True unless the plane is known to be down right now (readers then take over no frames)."""
        return True

    def describe(self) -> str:
        """Say where payloads live, for the log."""
        return "payloads inline in the stream entries"

    def placer(self, publisher: RedisPublisher) -> Placer:
        """Return the placer for `publisher`'s payloads."""
        return _INLINE_PLACER

    def reader(self, subscription: RedisSubscription | None) -> PayloadReader:
        """Return the payload reader of `subscription`; None: a one-off read whose payloads are copied."""
        return _INLINE_READER

    def release(self, entries: Sequence[Fields]) -> None:
        """Release the payloads of durable entries that every target acknowledged (they are being trimmed)."""

    def dead_letter_fields(self, fields: Fields, payload: Buffer, target: str, keep: int) -> dict[str, Any]:
        """Return the fields that keep an entry's payload in `target`'s dead-letter stream, beyond the entry's life.

        The stream keeps its newest `keep` letters; a plane that keeps payloads elsewhere keeps no more than that.
        """
        return {"d": payload}

    def publisher(self, publisher: RedisPublisher) -> Publisher:
        """Return the publisher the broker hands out for `publisher` (a plane may wrap it)."""
        return publisher

    def subscription(self, make: Callable[[], RedisSubscription], links: Sequence[Link], consumer: str) -> Subscription:
        """Return the subscription the broker hands out; `make()` builds the Redis one (a plane may wrap it)."""
        return make()

    def gateway_path(self, source: str, link: Link) -> GatewayPath | None:
        """Return a path to `link`'s gateway that skips TCP on this host, or None (the default: TCP)."""
        return None

    def gateway_feed(self, link: Link, consumer: str) -> Subscription | None:
        """Return the gateway's end of `gateway_path`, or None (the default: the gateway takes TCP only)."""
        return None


InlinePlane = DataPlane
_INLINE_PLACER = Placer()
_INLINE_READER = PayloadReader()
