"""The gateway's loop: frames in over TCP (or the broker's same-host feed), handed to the interfaces; the
pipeline's statistics gathered."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..backoff import Backoff
from ..broker import Subscription
from ..config import settings
from ..errors import ConfigurationError
from ..frame import Frame
from ..nodes import GatewayNode
from ..tcp import FrameServer
from .addresses import gateway_addresses
from .stats import StatsAggregator
from .workers import Worker

__all__ = ["GatewayWorker"]


class GatewayWorker(Worker):
    """Receives frames over TCP, hands them to the interfaces and gathers the pipeline's statistics."""

    #: Set once the gateway takes frames: how producers in this process hand theirs over without a socket.
    deliver: Callable[[str, Frame], None] | None = None
    _feeds: list[Subscription] = []  # noqa: RUF012 - replaced per run, never mutated in place
    tcp_rejected = 0

    def run(self) -> None:
        self.deliver = None
        node = self.build()
        assert isinstance(node, GatewayNode)
        app = self.ctx.app
        node.topics = [ln.topic for ln in app.links_into(self.spec.name)]
        node.graph = app.describe()
        node.aggregator = StatsAggregator(self.ctx.broker, node.graph)
        if not hasattr(node, "interfaces"):
            node.interfaces = []
        address = gateway_addresses(app)[self.spec.name]
        host, port = address.bind, address.port
        lock = threading.Lock()
        publishers = app.topics()
        tracer = self.outputs.tracer

        def on_frame(topic: str, frame: Frame) -> None:
            source = publishers.get(topic, topic)
            with lock:
                self.stats.received(frame.timestamp, source)
                tracer.received(frame, source)
            try:
                node.on_frame(topic, frame)
            except Exception as exc:
                self.stats.failed += 1
                self.errors(
                    f"gateway {self.spec.name!r}: on_frame failed for {topic!r} frame {frame.frame_id}: {exc}", exc
                )

        self.tcp_rejected = 0

        def on_reject(source: str, why: str) -> None:
            self.tcp_rejected += 1
            self.sync_counters()

        where = address.setting
        try:
            server = FrameServer(
                host,
                port,
                on_frame,
                token=settings.EDGEFLOW_TOKEN,
                app=app.name,
                sources=node.topics,
                max_frame_bytes=settings.MAX_FRAME_BYTES,
                on_reject=on_reject,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"gateway {self.spec.name!r} can't receive frames on tcp {host}:{port}: {exc.strerror or exc}; "
                f"free the port or set {where} to another one"
            ) from exc
        node.intake = server
        server.start()
        feeds = self._open_feeds(on_frame)
        node.aggregator.start()
        self.logger.info("gateway %r receives frames on tcp %s:%d (%s)", self.spec.name, host, server.port,
                         address.source)  # fmt: skip
        started = []
        try:
            for interface in node.interfaces:
                interface.start()
                started.append(interface)
            self.deliver = on_frame  # producers of this process hand their frames over here, in memory
            self.ready.set()
            self.ctx.stop.wait()
        finally:
            for interface in started:
                try:
                    interface.stop(timeout=2.0)
                except Exception as exc:
                    self.errors(f"gateway {self.spec.name!r}: stopping {interface!r} failed: {exc}", exc)
            self.deliver = None
            server.stop()
            for feed, thread in feeds:
                thread.join(2.0)
                feed.close()
            node.aggregator.stop()

    def _open_feeds(self, on_frame: Callable[[str, Frame], None]) -> list[tuple[Subscription, threading.Thread]]:
        """Ask the broker for a same-host feed of each link into this gateway; each is read on its own thread."""
        feeds = []
        for ln in self.ctx.app.links_into(self.spec.name):
            feed = self.ctx.broker.gateway_feed(ln, self.consumer_name)
            if feed is None:
                continue
            thread = threading.Thread(target=self._read_feed, args=(feed, ln.topic, on_frame),
                                      name=f"edgeflow-feed-{ln.topic}", daemon=True)  # fmt: skip
            thread.start()
            feeds.append((feed, thread))
        self._feeds = [feed for feed, _ in feeds]
        return feeds

    def input_dropped(self) -> int:
        return sum(feed.skipped for feed in self._feeds)

    def sync_counters(self) -> None:
        self.stats.rejected = self.tcp_rejected + sum(feed.rejected for feed in self._feeds)
        super().sync_counters()

    def input_drop_reasons(self) -> dict[str, int]:
        return {"stale": self.input_dropped()} if self._feeds else {}

    def _read_feed(self, feed: Subscription, topic: str, on_frame: Callable[[str, Frame], None]) -> None:
        """Hand a feed's frames to the interfaces until the run stops; a failing read is reported and retried."""
        backoff = Backoff(0.1, 2.0)
        while not self.ctx.stop.is_set():
            try:
                for delivery in feed.read(0.25):
                    on_frame(topic, delivery.frame)
                backoff.reset()
                self.sync_counters_soon()
            except Exception as exc:
                self.errors(f"gateway {self.spec.name!r}: reading {topic!r} from the broker's feed failed: {exc}", exc)
                self.ctx.stop.wait(backoff.failed())
