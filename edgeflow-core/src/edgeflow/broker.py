"""The broker contract: how frames move between nodes and how the control plane talks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import BrokerError
from .frame import Buffer, Frame
from .links import QOS

if TYPE_CHECKING:
    from typing_extensions import Self

    from .links import Link

__all__ = [
    "QOS",
    "Broker",
    "Delivery",
    "ForwardingSubscription",
    "GatewayPath",
    "Listener",
    "Publisher",
    "ServiceSpec",
    "Subscription",
]


@dataclass(frozen=True)
class ServiceSpec:
    """A server that a deployment must run for a broker, and the environment that points nodes at it."""

    name: str
    port: int
    host_env: str
    port_env: str
    image: str = "redis:7.2-alpine"
    role: str = "control"
    #: Extra server arguments, e.g. ("--maxmemory-policy", "noeviction") for a data plane.
    args: tuple[str, ...] = ()


@dataclass(slots=True)
class Delivery:
    """A frame handed to a reader, with what the broker needs to acknowledge it."""

    source: str
    frame: Frame
    entry_id: bytes = b""
    qos: str = "realtime"
    #: How many times this frame has been tried, this delivery included.
    attempts: int = 1
    #: Tries allowed before the frame goes to the dead-letter stream (durable links).
    max_attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Publisher(ABC):
    """Writes the frames of one source node to its links."""

    #: True when some link is durable: the runner then holds a frame it could not write and retries it.
    durable: bool = False
    #: Realtime frames the publisher dropped by design (a data plane with no room for them): counted.
    dropped: int = 0

    @abstractmethod
    def publish(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        """Send `frame` (already `encode`d when `encoded` is given) to every target; raises BrokerError when down."""

    def close(self) -> None:  # noqa: B027 - optional for publishers that hold nothing
        """Release what the publisher holds."""


class Subscription(ABC):
    """Reads frames for one target node (one replica) from one or more sources."""

    #: Realtime frames skipped by design (a newer frame won).
    skipped: int = 0
    #: Frames that were not valid EdgeFlow frames.
    rejected: int = 0
    #: Durable frames moved to the dead-letter stream.
    dead: int = 0
    #: Durable frames whose payload was gone when read (a data plane lost it): counted, never silent.
    lost: int = 0

    @abstractmethod
    def read(self, timeout: float) -> list[Delivery]:
        """Return the next deliveries, waiting at most `timeout` seconds; empty when none came."""

    def ack(self, deliveries: Sequence[Delivery]) -> None:  # noqa: B027 - realtime reads need no ack
        """Acknowledge deliveries once processed; a durable frame is never delivered again after this."""

    #: Seconds after which deliveries still being processed should be kept alive with `keepalive()`.
    keepalive_every: float = float("inf")

    def keepalive(self, deliveries: Sequence[Delivery]) -> None:  # noqa: B027 - for subscriptions with no takeover
        """Tell the broker these deliveries are still being processed, so that no other replica takes them over."""

    def flush(self) -> None:  # noqa: B027 - for subscriptions that batch nothing
        """Send what the subscription batches (skip counts, acknowledgements) now."""

    def dead_letter(self, delivery: Delivery, error: str) -> None:  # noqa: B027
        """Move a frame that kept failing to the target's dead-letter stream, with `error`, and acknowledge it."""

    def close(self) -> None:  # noqa: B027
        """Release the subscription's connection."""


class ForwardingSubscription(Subscription):
    """A subscription that serves some frames itself and forwards the rest to the broker's own (`inner`).

    Its counts are the inner subscription's plus what it skipped or rejected itself (`local_skipped`,
    `local_rejected`); deliveries it `owns()` are never passed to the inner one.
    """

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.keepalive_every = inner.keepalive_every
        self.local_skipped = 0
        self.local_rejected = 0

    def owns(self, delivery: Delivery) -> bool:
        """True for a delivery this subscription made itself (not acknowledged or kept alive through the inner)."""
        return False

    def read(self, timeout: float) -> list[Delivery]:
        try:
            return self._read(timeout)
        finally:
            self._count()

    @abstractmethod
    def _read(self, timeout: float) -> list[Delivery]:
        """Return what `read` returns; the counts are brought up to date afterwards, whatever happens."""

    def _count(self) -> None:
        inner = self.inner
        self.skipped = inner.skipped + self.local_skipped
        self.rejected = inner.rejected + self.local_rejected
        self.lost = inner.lost
        self.dead = inner.dead

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.ack([d for d in deliveries if not self.owns(d)])

    def keepalive(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.keepalive([d for d in deliveries if not self.owns(d)])

    def flush(self) -> None:
        self.inner.flush()
        self._count()

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        self.inner.dead_letter(delivery, error)
        self._count()

    def close(self) -> None:
        self.inner.close()
        self._count()


class GatewayPath(ABC):
    """A broker's own way of handing one source's frames to a gateway on the producer's host, in place of TCP.

    The producer still holds a TCP sender for the same gateway: a frame this path does not take goes over TCP, so
    a gateway elsewhere (or one that left) keeps getting frames. A path never takes a frame and sends it nowhere
    unless it counts it in `dropped`.
    """

    #: Frames the path took and then dropped by design (no free slot, a gateway that left with frames unread).
    dropped: int = 0

    @abstractmethod
    def send(self, frame: Frame, encoded: tuple[bytes, Buffer]) -> bool:
        """Hand `frame` to the gateway; False when this path can't take it now (the caller sends it over TCP)."""

    def close(self) -> None:  # noqa: B027 - optional for paths that hold nothing
        """Release what the path holds."""


class Listener(ABC):
    """Receives control-plane messages on a channel."""

    @abstractmethod
    def get(self, timeout: float) -> bytes | None:
        """Return the next message, or None after `timeout` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening."""


class Broker(ABC):
    """Moves frames between nodes and carries the control plane; adapters subclass it."""

    name: str = "broker"

    def __init__(self) -> None:
        self.namespace = "edgeflow"

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Return a broker for the server at `url`, with adapter-specific `options`."""

    @classmethod
    def contract_variants(cls) -> dict[str, Callable[[Sequence[str]], Broker]]:
        """Return the configurations of this broker that the contract suite (`edgeflow.testing.contract`) holds
        to its promises: by name, a factory taking the URLs of two empty Redis-compatible servers."""
        return {cls.name: lambda urls: cls.from_url(urls[0])}

    def bind(self, app_name: str) -> None:
        """Scope every key and channel of this broker to the app `app_name`."""
        self.namespace = app_name

    def running_here(self, nodes: Sequence[str]) -> None:  # noqa: B027 - a hint most brokers need not take
        """Hear which nodes of the app this process runs (for shortcuts between them); the default ignores it."""

    @property
    @abstractmethod
    def display_url(self) -> str:
        """Where the broker connects, with any secret redacted."""

    @abstractmethod
    def connect(self) -> None:
        """Connect, retrying with backoff; raises BrokerConnectionError when the server stays unreachable."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""

    @abstractmethod
    def ping(self) -> bool:
        """Return True when the broker's servers answer."""

    @abstractmethod
    def publisher(self, source: str, links: Sequence[Link]) -> Publisher:
        """Return a publisher for `source` that feeds the broker-carried `links` out of it."""

    @abstractmethod
    def subscribe(self, links: Sequence[Link], consumer: str) -> Subscription:
        """Read the frames of the `links` into one target node, as `consumer` (one replica of it)."""

    def gateway_path(self, source: str, link: Link) -> GatewayPath | None:
        """A path for `source`'s frames to `link`'s gateway that is cheaper than TCP on one host; None keeps TCP."""
        return None

    def gateway_feed(self, link: Link, consumer: str) -> Subscription | None:
        """The gateway's end of `gateway_path`: `link`'s frames from producers on this host; None: TCP only."""
        return None

    @abstractmethod
    def emit(self, channel: str, message: bytes) -> None:
        """Publish a control-plane message on `channel`."""

    @abstractmethod
    def listen(self, channel: str) -> Listener:
        """Listen to a control-plane channel."""

    def ensure_server(self, start_embedded: Callable[[], str]) -> bool:
        """Start a private server through `start_embedded` (which returns its URL) when none is configured.

        Returns True when it did; the default broker needs no server of its own.
        """
        return False

    def tail(self, topic: str) -> Subscription:
        """Watch `topic`'s frames from now on without taking part in any group; not every broker can."""
        raise BrokerError(f"{type(self).__name__} can't watch a topic from outside")

    def link_depth(self, source: str, group: str, variant: str = "") -> int | None:
        """Return how many frames of `source` wait for `group`, or None when unknown."""
        return None

    def link_backlog(self, source: str, group: str, variant: str = "") -> tuple[int, int] | None:
        """Return (depth, pending) of `group` on `source`: frames waiting or delivered but not yet acknowledged, and
        of those the delivered ones; None when unknown."""
        depth = self.link_depth(source, group, variant)
        return None if depth is None else (depth, 0)

    def dead_letters(self, target: str, count: int = 100) -> list[dict[str, Any]]:
        """Return the dead letters of `target`'s durable links: id, source, frame_id, attempts, error."""
        raise BrokerError(f"{type(self).__name__} keeps no dead letters")

    def replay_dead_letters(self, target: str, ids: Sequence[str] | None = None) -> int:
        """Give dead letters of `target` back to it once more; return how many."""
        raise BrokerError(f"{type(self).__name__} keeps no dead letters")

    def replay_from(self, links: Sequence[Link], seconds: float, timeout: float = 30.0) -> dict[str, int]:
        """Give the frames of the last `seconds` that durable `links`' streams still hold to their targets once
        more; return how many each target got."""
        raise BrokerError(f"{type(self).__name__} keeps no stream history to replay")

    def remove_reader(self, links: Sequence[Link]) -> None:  # noqa: B027 - brokers that keep nothing per reader
        """Delete what `subscribe(links)` created for their target (its groups), so that a reader that is gone
        for good holds no durable frame back."""

    def __enter__(self) -> Broker:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
