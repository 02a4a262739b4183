"""The gateway's loop: frames in over TCP, handed to the interfaces; the pipeline's statistics gathered."""

from __future__ import annotations

import threading
from collections.abc import Callable

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

        def on_reject(source: str, why: str) -> None:
            self.stats.rejected += 1

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
            node.aggregator.stop()
