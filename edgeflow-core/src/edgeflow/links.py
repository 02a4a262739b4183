"""Links between nodes: `app.link("a").to("b").to("c")`, checked as they are made; QoS is defined here, once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from .errors import ConfigurationError, LinkError
from .plugins import get_codec

if TYPE_CHECKING:
    from .app import EdgeApp

__all__ = ["QOS", "QOS_VALUES", "Link", "LinkBuilder"]

#: "realtime": the newest frame wins, stale ones are skipped (counted); "durable": every frame, at least once.
QOS = Literal["realtime", "durable"]
QOS_VALUES: tuple[str, ...] = get_args(QOS)
# Types whose output can be linked onward, and types that accept input.
_SENDERS = {"producer", "consumer", "fusion"}
_RECEIVERS = {"consumer", "fusion", "gateway", "sink"}


@dataclass(frozen=True)
class Link:
    """One edge of the pipeline: frames of the node `source`, published under `topic`, go to `target`."""

    source: str
    target: str
    qos: str = "realtime"
    transport: str = "redis"
    depth: int = 1
    max_attempts: int = 3
    claim_after: float = 15.0
    max_len: int = 10_000
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    codec: str | None = None
    #: The name the source publishes under (its `output_topic`; its node name unless declared otherwise).
    topic: str = ""
    #: durable: bytes of payload the link holds unacknowledged before the producer blocks (besides max_len).
    max_bytes: int = 512 << 20

    def __post_init__(self) -> None:
        if not self.topic:
            object.__setattr__(self, "topic", self.source)

    @property
    def variant(self) -> str:
        """How this link's frames are encoded on the wire: "" for raw, else the codec and its quality."""
        if self.codec is None:
            return ""
        quality = self.options.get("quality")
        return f"{self.codec}{quality}" if quality is not None else self.codec

    def describe(self) -> dict[str, Any]:
        """Return the link as a JSON-ready dict."""
        return {
            "source": self.source,
            "target": self.target,
            "topic": self.topic,
            "qos": self.qos,
            "transport": self.transport,
            "codec": self.variant or None,
        }


class LinkBuilder:
    """Chains links from one node: each `to()` links and returns a builder for the target."""

    def __init__(self, app: EdgeApp, source: str) -> None:
        self._app = app
        #: The source node; `app.link()` also takes the name of a topic, which stands for the node publishing it.
        self.source = app.resolve_source(source)

    def to(
        self,
        target: str,
        qos: str = "realtime",
        *,
        depth: int = 1,
        max_attempts: int = 3,
        claim_after: float = 15.0,
        max_len: int = 10_000,
        max_bytes: int = 512 << 20,
        codec: str | None = None,
        **options: Any,
    ) -> LinkBuilder:
        """Link this node to `target` and return a builder that links onward from `target`.

        Args:
            target: name of the receiving node.
            qos: "realtime" (newest frame wins; a slow reader skips stale frames, counted) or "durable"
                (every frame reaches the target at least once, acknowledged after `process()` returns).
            depth: frames a realtime link keeps for a slow reader before older ones are skipped.
            max_attempts: durable: tries of a failing frame before it goes to the dead-letter stream.
            claim_after: durable: seconds a frame may sit with a silent replica before a live one takes it over.
            max_len: durable: frames the link holds unacknowledged before the producer blocks (backpressure).
            max_bytes: durable: payload bytes the link holds unacknowledged before the producer blocks (512 MiB by
                default: 570 frames of 640x480x3, 19 s at 30 fps). Redis must have room for them.
            codec: encode frames for this link only, e.g. codec="jpeg", quality=80 for a slow network; each
                frame is encoded once for all the links that ask for the same codec, and decoded by the reader.
        """
        app = self._app
        app.require_node(target, "link")
        src, dst = app.nodes[self.source], app.nodes[target]
        if qos not in QOS_VALUES:
            raise LinkError(f"unknown qos {qos!r} for {self.source} -> {target}; use one of {QOS_VALUES}")
        if not isinstance(depth, int) or depth < 1 or depth > 10_000:
            raise LinkError(f"depth must be an int from 1 to 10000 for {self.source} -> {target}, got {depth!r}")
        if src.type not in _SENDERS:
            raise LinkError(
                f"can't link from {self.source!r}: a {src.type} node has no output; link from a producer, "
                "consumer or fusion node",
                source=self.source,
                target=target,
            )
        if dst.type not in _RECEIVERS:
            raise LinkError(
                f"can't link into {target!r}: a {dst.type} node takes no input",
                source=self.source,
                target=target,
            )
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise LinkError(f"max_attempts must be an int >= 1 for {self.source} -> {target}, got {max_attempts!r}")
        if not isinstance(claim_after, (int, float)) or not 0.05 <= claim_after <= 3600:
            raise LinkError(
                f"claim_after must be 0.05 to 3600 seconds for {self.source} -> {target}, got {claim_after!r}"
            )
        if not isinstance(max_len, int) or max_len < 2:
            raise LinkError(f"max_len must be an int >= 2 for {self.source} -> {target}, got {max_len!r}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1 << 16:
            raise LinkError(
                f"max_bytes must be an int of at least 65536 bytes for {self.source} -> {target}, got {max_bytes!r}"
            )
        transport = "tcp" if dst.type == "gateway" else "redis"
        if codec is not None:
            if transport == "tcp":
                raise LinkError(
                    f"{self.source} -> {target}: a gateway gets frames raw and JPEG-encodes them once for its "
                    "viewers; drop codec= from this link",
                    source=self.source,
                    target=target,
                )
            try:
                get_codec(codec).check(dict(options))
            except ConfigurationError as exc:
                raise LinkError(f"{self.source} -> {target}: {exc}", source=self.source, target=target) from exc
        if transport == "tcp" and qos == "durable":
            raise LinkError(
                f"{self.source} -> {target}: links into a gateway are realtime (viewers want the newest frame); "
                "link a sink node with qos='durable' to keep every frame",
                source=self.source,
                target=target,
            )
        link = Link(
            self.source, target, qos, transport, depth, max_attempts, float(claim_after), max_len, dict(options), codec,
            src.topic, max_bytes,
        )  # fmt: skip
        for existing in app.links:
            if existing.source == self.source and existing.target == target:
                if existing == link:
                    return LinkBuilder(app, target)
                raise LinkError(
                    f"{self.source} -> {target} is already linked with qos={existing.qos!r}; link it once",
                    source=self.source,
                    target=target,
                )
        cycle = app.path(target, self.source)
        if cycle is not None:
            raise LinkError(
                f"linking {self.source} -> {target} makes a cycle: {' -> '.join([self.source, *cycle])}",
                source=self.source,
                target=target,
            )
        app.links.append(link)
        return LinkBuilder(app, target)
