"""A node replica's outputs: one publisher per encoding of its topic, one TCP sender per linked gateway."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import settings
from ..errors import BackpressureError, BrokerError
from ..frame import Frame, decode, encode
from ..plugins import get_codec
from ..tcp import FrameSender
from .addresses import gateway_addresses
from .outage import Outage
from .stats import NodeStats
from .trace import Tracer

if TYPE_CHECKING:
    from ..app import NodeSpec
    from ..broker import GatewayPath, Publisher
    from ..links import Link
    from .workers import RunContext

__all__ = ["Outputs"]


class _LocalGateway:
    """Frames for a gateway of this process: decoded into read-only views of the producer's memory and handed to
    it on the producer's thread (its interfaces only swap references). Until it is up, frames are dropped,
    counted, as a sender's full outbox would."""

    def __init__(self, worker: Any, topic: str) -> None:
        self.worker = worker
        self.topic = topic
        self.dropped = 0
        self.sent = 0

    def send(self, frame: Frame, encoded: tuple[bytes, Any] | None = None) -> None:
        deliver = self.worker.deliver
        if deliver is None:
            self.dropped += 1
            return
        header, payload = encoded or encode(frame)
        if isinstance(frame.data, np.ndarray) and frame.data.flags.writeable:
            frame.data.flags.writeable = False  # the gateway views this memory: the producer sends new arrays
        deliver(self.topic, decode(header, payload.toreadonly() if isinstance(payload, memoryview) else payload))
        self.sent += 1

    def close(self, timeout: float = 0.0) -> None:
        """Nothing is queued."""


class _ViaBroker:
    """A gateway link whose frames the broker hands over on this host (`GatewayPath`), and over TCP otherwise."""

    def __init__(self, path: GatewayPath, tcp: FrameSender) -> None:
        self.path = path
        self.tcp = tcp
        self.via_path = False

    @property
    def dropped(self) -> int:
        """Frames dropped by design on either way (counted by each)."""
        return self.path.dropped + self.tcp.dropped

    def send(self, frame: Frame, encoded: tuple[bytes, Any] | None = None) -> None:
        raw = encoded or encode(frame)
        if self.path.send(frame, raw):
            if not self.via_path:
                # Newest wins: frames still queued for TCP are older than this one and must not arrive after it.
                self.via_path = True
                self.tcp.discard()
            return
        self.via_path = False
        self.tcp.send(frame, raw)

    def close(self, timeout: float = 0.0) -> None:
        self.path.close()
        self.tcp.close(timeout)


class Outputs:
    """Fans a node's frames out: each encoding is made once per frame, for all the links that asked for it."""

    def __init__(
        self,
        ctx: RunContext,
        spec: NodeSpec,
        stats: NodeStats,
        logger: logging.Logger,
        errors: Callable[..., None],
        outage: Outage,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.stats = stats
        self.logger = logger
        self.errors = errors
        self.outage = outage
        # (codec or None for raw, its parameters, the publisher of that encoding)
        self.publishers: list[tuple[Any, dict[str, Any], Publisher]] = []
        self.senders: list[FrameSender | _LocalGateway | _ViaBroker] = []
        self.outage_dropped = 0
        self.backpressure_since: float | None = None
        self.tracer = Tracer(ctx.app, spec.name, stats)

    def open(self) -> None:
        """Open a publisher per encoding (retrying while the broker is down) and a sender per gateway link."""
        app, name, topic = self.ctx.app, self.spec.name, self.spec.topic
        links = app.links_from(name)
        groups: dict[str, list[Link]] = {}
        for ln in links:
            if ln.transport == "redis":
                groups.setdefault(ln.variant, []).append(ln)
        # An unlinked output still exists as a realtime topic that others may read through input_topics.
        if not links:
            groups[""] = []
        for variant_links in groups.values():
            first = variant_links[0] if variant_links else None
            codec = get_codec(first.codec) if first is not None and first.codec else None
            params = dict(first.options) if first is not None else {}
            while True:
                try:
                    self.publishers.append((codec, params, self.ctx.broker.publisher(topic, variant_links)))
                    break
                except BrokerError as exc:
                    if self.ctx.stop.is_set():
                        raise
                    self.outage.failed(exc)
        for ln in links:
            if ln.transport == "tcp":
                here = next((w for w in self.ctx.workers if w.spec.name == ln.target), None)
                if here is not None:
                    # The gateway runs in this process: frames go to it in memory, without a socket or a copy.
                    self.senders.append(_LocalGateway(here, topic))
                    continue
                gw = gateway_addresses(app)[ln.target]  # several gateways: each its own (addresses.py)
                tcp = FrameSender(gw.host, gw.port, topic, settings.EDGEFLOW_TOKEN, app=app.name)
                path = self.ctx.broker.gateway_path(topic, ln)  # e.g. shared memory when the gateway is on this host
                self.senders.append(tcp if path is None else _ViaBroker(path, tcp))

    def emit(self, frame: Frame) -> bool:
        """Send `frame` on every output link; False when the broker could not take it (counted)."""
        raw: tuple[bytes, Any] | None = None
        self.tracer.written(frame)
        if self.senders or any(codec is None for codec, _, _ in self.publishers):
            raw = encode(frame)
        for sender in self.senders:
            sender.send(frame, raw)
        ok = True
        for codec, params, publisher in self.publishers:
            encoded = raw if codec is None else encode(frame, codec, params)
            assert encoded is not None
            ok = self._publish(publisher, frame, encoded) and ok
        if not ok:
            return False
        self.stats.frames_out += 1
        return True

    def _publish(self, publisher: Publisher, frame: Frame, encoded: tuple[bytes, Any]) -> bool:
        durable = publisher.durable
        while True:
            if not durable and not self.outage.should_try():
                # Realtime only, broker down: this frame is stale by the time it is back. Drop it, counted.
                self.outage_dropped += 1
                return False
            try:
                publisher.publish(frame, encoded)
                self.outage.ok()
                if self.backpressure_since is not None:
                    self.logger.info("%s: durable targets caught up after %.1fs", self.spec.name,
                                     time.monotonic() - self.backpressure_since)  # fmt: skip
                    self.backpressure_since = None
                return True
            except BackpressureError as exc:
                if self.backpressure_since is None:
                    self.backpressure_since = time.monotonic()
                    self.logger.warning("%s", exc)
                if self.ctx.stop.wait(0.02):
                    break
            except BrokerError as exc:
                if self.ctx.stop.is_set():
                    break
                if not durable:
                    self.outage_dropped += 1
                    self.outage.failed(exc, wait=False)
                    return False
                # Durable: hold the frame in hand and retry; the producer waits, nothing is lost.
                self.outage.failed(exc)
        self.stats.failed += 1
        self.errors(f"node {self.spec.name!r}: frame {frame.frame_id} not written: stopping while the broker "
                    "could not take it")  # fmt: skip
        return False

    def dropped(self) -> int:
        """Frames the outputs dropped by design (counted): full gateway outboxes, outages, full data planes."""
        sent = sum(s.dropped for s in self.senders)
        if self.senders:
            self.stats.extra["gateway_dropped"] = sent
        return sent + self.outage_dropped + sum(p.dropped for _, _, p in self.publishers)

    def drop_reasons(self) -> dict[str, int]:
        """`dropped()` by reason: a full gateway outbox, a broker outage, a full data plane."""
        return {
            "gateway_outbox": sum(s.dropped for s in self.senders),
            "broker_down": self.outage_dropped,
            "data_plane": sum(p.dropped for _, _, p in self.publishers),
        }

    def close(self) -> None:
        """Send what is queued to the gateways (up to a second), then close the publishers."""
        for sender in self.senders:
            sender.close(timeout=1.0)
        for _, _, publisher in self.publishers:
            publisher.close()
