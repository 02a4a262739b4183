"""The loops the runner owns: one worker per node replica, each in its own thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .app import EdgeApp, NodeSpec
from .broker import Broker, Delivery, Publisher, Subscription
from .codecs import get_codec
from .comms.tcp import FrameSender, FrameServer
from .config import settings
from .errors import BackpressureError, BrokerError, ConfigurationError, FrameError, NodeError
from .frame import Frame, encode
from .linker import Link
from .nodes import IDLE, FusionNode, GatewayNode, Node
from .stats import NodeStats, StatsAggregator, StatsReporter
from .sync import Synchronizer

__all__ = ["RunContext", "Worker", "make_worker"]

log = logging.getLogger("edgeflow.runner")
_READ_TIMEOUT = 0.2


@dataclass
class RunContext:
    """What every worker of one process shares."""

    app: EdgeApp
    broker: Broker
    stop: threading.Event
    reporter: StatsReporter
    workers: list[Worker] = field(default_factory=list)


class _ErrorLog:
    """One log line per failure, with the traceback at most once a second."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last_tb = 0.0

    def __call__(self, message: str, exc: BaseException | None = None) -> None:
        now = time.monotonic()
        if exc is not None and now - self._last_tb >= 1.0:
            self._last_tb = now
            tb = "".join(traceback.format_exception(exc)).rstrip()
            self.logger.error("%s\n%s", message, tb)
        else:
            self.logger.error("%s", message)


class _Outage:
    """Logs a broker outage once when it starts and once when it ends; backs off in between."""

    def __init__(self, logger: logging.Logger, stop: threading.Event) -> None:
        self.logger = logger
        self.stop = stop
        self.since: float | None = None
        self.delay = 0.1
        self.next_try = 0.0

    def failed(self, exc: BrokerError, *, wait: bool = True) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning("broker unreachable, retrying with backoff: %s", exc)
        self.next_try = time.monotonic() + self.delay
        if wait:
            self.stop.wait(self.delay)
        self.delay = min(self.delay * 2, 2.0)

    def should_try(self) -> bool:
        """False while a backoff after a failure has not run out."""
        return self.since is None or time.monotonic() >= self.next_try

    def ok(self) -> None:
        if self.since is not None:
            self.logger.warning("broker reachable again after %.1fs", time.monotonic() - self.since)
            self.since, self.delay = None, 0.1


def _as_output(node: str, result: Any, source: Frame | None, frame_id: int) -> Frame | None:
    """Turn what a node returned into the frame it sends, keeping the input's id and timestamp."""
    if result is None:
        return None
    if isinstance(result, Frame):
        return result
    meta: dict[str, Any] = dict(source.meta) if source is not None else {}
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], dict):
            raise NodeError(
                f"node {node!r} returned a tuple of {len(result)} items; return data, (data, meta_dict) or None",
                node=node,
            )
        result, extra = result
        meta.update(extra)
        if result is None:
            return None
    if source is None:
        return Frame(frame_id, time.time(), meta, result)
    return Frame(source.frame_id, source.timestamp, meta, result)


class Worker:
    """One replica of one node: builds the node, runs its loop in a thread, stops it cleanly."""

    def __init__(self, ctx: RunContext, spec: NodeSpec, replica: int) -> None:
        self.ctx = ctx
        self.spec = spec
        self.replica = replica
        self.stats = NodeStats(spec.name, spec.type, replica, spec.device)
        self.logger = logging.getLogger(f"edgeflow.node.{spec.name}" + (f".{replica}" if spec.replicas > 1 else ""))
        self.errors = _ErrorLog(self.logger)
        self.outage = _Outage(self.logger, ctx.stop)
        self.node: Node | None = None
        self.thread: threading.Thread | None = None
        self.finished = threading.Event()
        # One publisher per encoding of this node's output: raw, and one per link codec asked for.
        self.publishers: list[tuple[Any, dict[str, Any], Publisher]] = []
        self.senders: list[FrameSender] = []
        self.consumer_name = f"{socket.gethostname()}-{os.getpid()}-{replica}"
        self.outage_dropped = 0
        self.backpressure_since: float | None = None

    # Set-up -------------------------------------------------------------------------------------------
    def build(self) -> Node:
        """Instantiate and configure the node."""
        spec = self.spec
        cls: type[Node] = spec.cls
        node = cls.__new__(cls)
        node._bind(
            name=spec.name, app_name=self.ctx.app.name, device=spec.device, replicas=spec.replicas,
            replica=self.replica, broker=self.ctx.broker, stats=self.stats, params=spec.params,
        )  # fmt: skip
        cls.__init__(node)
        node.configure()
        self.node = node
        return node

    def _open_outputs(self) -> None:
        app, name = self.ctx.app, self.spec.name
        links = app.links_from(name)
        redis_links = [ln for ln in links if ln.transport == "redis"]
        groups: dict[str, list[Link]] = {}
        for ln in redis_links:
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
                    self.publishers.append((codec, params, self.ctx.broker.publisher(name, variant_links)))
                    break
                except BrokerError as exc:
                    if self.ctx.stop.is_set():
                        raise
                    self.outage.failed(exc)
        for ln in links:
            if ln.transport == "tcp":
                gw = app.nodes[ln.target]
                port = int(gw.params.get("tcp_port", settings.GATEWAY_TCP_PORT))
                self.senders.append(FrameSender(settings.GATEWAY_HOST, port, name, settings.EDGEFLOW_TOKEN))

    def emit(self, frame: Frame) -> bool:
        """Send `frame` on every output link; False when the broker could not take it (counted)."""
        raw: tuple[bytes, Any] | None = None
        if self.senders or any(codec is None for codec, _, _ in self.publishers):
            raw = encode(frame)
        for sender in self.senders:
            sender.send(frame, raw)
        ok = True
        for codec, params, publisher in self.publishers:
            # Each encoding is made once per frame, for all the links that asked for it.
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

    def start(self) -> None:
        """Build the node and start its loop thread."""
        self.thread = threading.Thread(target=self._main, name=f"edgeflow-{self.spec.name}-{self.replica}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:
            self.errors(f"node {self.spec.name!r} stopped: {type(exc).__name__}: {exc}", exc)
        finally:
            self._teardown()
            self.finished.set()

    def _teardown(self) -> None:
        if self.node is not None:
            try:
                self.node.close()
            except Exception as exc:
                self.errors(f"node {self.spec.name!r}: close() failed: {exc}", exc)
        for sender in self.senders:
            sender.close(timeout=1.0)
        self.sync_counters()
        for _, _, publisher in self.publishers:
            publisher.close()

    def run(self) -> None:
        """The node's loop; returns when the context stops or the node ends."""
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        """Wait for the loop thread."""
        if self.thread is not None:
            self.thread.join(timeout)

    def input_dropped(self) -> int:
        """Frames skipped or dropped by design on this replica's inputs."""
        return 0

    def sync_counters(self) -> None:
        """Fold the transport's counters into the node's statistics."""
        sent_dropped = sum(s.dropped for s in self.senders)
        if self.senders:
            self.stats.extra["gateway_dropped"] = sent_dropped
        published_dropped = sum(p.dropped for _, _, p in self.publishers)
        self.stats.dropped = self.input_dropped() + sent_dropped + self.outage_dropped + published_dropped


class ProducerWorker(Worker):
    """Calls `produce()` at `fps`, on an absolute schedule so that the rate does not drift."""

    def run(self) -> None:
        node = self.build()
        self._open_outputs()
        fps = getattr(node, "fps", None)
        period = 1.0 / float(fps) if fps else 0.0
        stop = self.ctx.stop
        seq = 0
        next_t = time.monotonic()
        produce: Callable[[], Any] = node.produce  # type: ignore[attr-defined]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                out = produce()
            except Exception as exc:
                self.stats.failed += 1
                self.errors(
                    f"node {self.spec.name!r}: produce() raised on frame {seq}: {type(exc).__name__}: {exc}", exc
                )
                out = ...
            if out is IDLE:
                continue  # nothing came within produce()'s own timeout: no frame, no count, no pacing sleep
            if out is None:
                self.logger.info(
                    "node %r: produce() returned None, the stream ended after %d frames", self.spec.name, seq
                )
                break
            if out is not ...:
                try:
                    frame = self._frame(out, seq)
                    if self.emit(frame):
                        seq += 1
                        self.stats.proc_ms.append((time.perf_counter() - t0) * 1000.0)
                except (FrameError, NodeError) as exc:
                    self.stats.failed += 1
                    self.errors(f"node {self.spec.name!r}: frame {seq} not sent: {exc}")
            self.sync_counters()
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -period:
                    next_t = time.monotonic()  # fell behind by more than a frame: don't burst to catch up

    def _frame(self, out: Any, seq: int) -> Frame:
        if isinstance(out, Frame):
            return out
        if isinstance(out, (np.ndarray, bytes, bytearray, memoryview, dict, list, str, int, float)) and not isinstance(
            out, bool
        ):
            return Frame(seq, time.time(), {}, out)
        raise NodeError(
            f"produce() returned {type(out).__name__}; return a numpy ndarray, bytes, JSON data or a Frame",
            node=self.spec.name,
        )


class _ReaderWorker(Worker):
    """Shared loop of the nodes that read from the broker."""

    sub: Subscription
    last_error: str = ""

    def inputs(self, node: Node) -> list[Link]:
        """The links this node reads: those into it, then `input_topics` not already linked, as realtime links."""
        app, name = self.ctx.app, self.spec.name
        links = [ln for ln in app.links_into(name) if ln.transport == "redis"]
        for topic in getattr(node, "input_topics", None) or []:
            if topic not in app.nodes:
                raise ConfigurationError(
                    f"node {name!r}: input_topics names {topic!r}, which is not a node; "
                    f"known nodes: {', '.join(sorted(app.nodes))}"
                )
            if all(ln.source != topic for ln in links):
                links.append(Link(topic, name))
        return links

    def run(self) -> None:
        node = self.build()
        links = self.inputs(node)
        if not links:
            raise ConfigurationError(
                f"node {self.spec.name!r} has no inputs: link a node to it or set self.input_topics in configure()"
            )
        if self.spec.type != "sink":
            self._open_outputs()
        self.prepare(node, list(dict.fromkeys(ln.source for ln in links)))
        self.sub = self._subscribe(links)
        stop = self.ctx.stop
        while not stop.is_set():
            try:
                deliveries = self.sub.read(_READ_TIMEOUT)
                self.outage.ok()
            except BrokerError as exc:
                self.outage.failed(exc)
                continue
            done: list[Delivery] = []
            try:
                for d in deliveries:
                    if stop.is_set() and done:
                        break  # stop taking work; unacknowledged durable frames go to a live replica
                    self.stats.received(d.frame.timestamp)
                    self._handle_with_retries(node, d)
                    done.append(d)
                if done:
                    self.sub.ack(done)
            except BrokerError as exc:
                self.outage.failed(exc)  # unacknowledged frames are delivered again: at least once
            self.stats.rejected = self.sub.rejected
            self.stats.extra["dead_letters"] = self.sub.dead
            self.stats.extra["lost"] = self.sub.lost
            self.sync_counters()
        self.sub.close()

    def _handle_with_retries(self, node: Node, d: Delivery) -> None:
        node.current_source = d.source
        ok = self.handle(node, d.source, d.frame)
        while not ok and d.qos == "durable":
            if d.attempts >= d.max_attempts:
                self.sub.dead_letter(d, self.last_error)
                return
            d.attempts += 1
            if self.ctx.stop.wait(min(0.05 * d.attempts, 1.0)):
                return  # not acknowledged by the caller either: a live replica takes it over
            ok = self.handle(node, d.source, d.frame)

    def _subscribe(self, links: list[Link]) -> Subscription:
        while True:
            try:
                return self.ctx.broker.subscribe(links, self.consumer_name)
            except BrokerError as exc:
                if self.ctx.stop.is_set():
                    raise
                self.outage.failed(exc)

    def prepare(self, node: Node, sources: list[str]) -> None:
        """Hook for set-up that needs the inputs."""

    def input_dropped(self) -> int:
        sub = getattr(self, "sub", None)
        return (sub.skipped if sub is not None else 0) + self.extra_dropped()

    def extra_dropped(self) -> int:
        """Drops made by the node type itself (fusion: frames that can never match)."""
        return 0

    def call(self, node: Node, fn: Callable[[Any], Any], arg: Any, frame: Frame) -> tuple[bool, Any]:
        node.current_frame = frame
        t0 = time.perf_counter()
        try:
            result = fn(arg)
        except Exception as exc:
            self.stats.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.errors(f"node {self.spec.name!r}: process() raised on frame {frame.frame_id}: {self.last_error}", exc)
            return False, None
        finally:
            node.current_frame = None
        self.stats.proc_ms.append((time.perf_counter() - t0) * 1000.0)
        return True, result

    def send_result(self, result: Any, source: Frame) -> None:
        """Send what `process()` returned, keeping the input frame's id and timestamp."""
        try:
            out = _as_output(self.spec.name, result, source, source.frame_id)
            if out is not None:
                self.emit(out)
        except (FrameError, NodeError) as exc:
            self.stats.failed += 1
            self.errors(f"node {self.spec.name!r}: result for frame {source.frame_id} not sent: {exc}")

    def handle(self, node: Node, source: str, frame: Frame) -> bool:
        """Process one frame; False when the node's code raised."""
        raise NotImplementedError


class ConsumerWorker(_ReaderWorker):
    """Calls `process(data)` for each frame and sends the result on."""

    def handle(self, node: Node, source: str, frame: Frame) -> bool:
        ok, result = self.call(node, node.process, frame.data, frame)  # type: ignore[attr-defined]
        if ok:
            self.send_result(result, frame)
        return ok


class SinkWorker(_ReaderWorker):
    """Calls `process(data)` for each frame; a sink sends nothing on."""

    def handle(self, node: Node, source: str, frame: Frame) -> bool:
        return self.call(node, node.process, frame.data, frame)[0]  # type: ignore[attr-defined]


class FusionWorker(_ReaderWorker):
    """Matches frames of its inputs by timestamp and calls `process(frames)` for each matched set."""

    sync: Synchronizer

    def prepare(self, node: Node, sources: list[str]) -> None:
        assert isinstance(node, FusionNode)
        try:
            self.sync = Synchronizer(sources, float(node.slop), int(node.queue_size))
        except ValueError as exc:
            raise ConfigurationError(f"fusion node {self.spec.name!r}: {exc}") from exc

    def extra_dropped(self) -> int:
        sync = getattr(self, "sync", None)
        return sync.dropped if sync is not None else 0

    def handle(self, node: Node, source: str, frame: Frame) -> bool:
        # A frame is handled once the synchronizer holds it; a failing match is counted, not retried.
        for match in self.sync.add(source, frame):
            first = min(match, key=lambda f: f.timestamp)
            ok, result = self.call(node, node.process, match, first)  # type: ignore[attr-defined]
            if ok:
                self.send_result(result, first)
        return True


class GatewayWorker(Worker):
    """Receives frames over TCP, hands them to the interfaces and gathers the pipeline's statistics."""

    def run(self) -> None:
        node = self.build()
        assert isinstance(node, GatewayNode)
        app = self.ctx.app
        node.topics = [ln.source for ln in app.links_into(self.spec.name)]
        node.graph = app.describe()
        node.aggregator = StatsAggregator(self.ctx.broker, node.graph)
        if not hasattr(node, "interfaces"):
            node.interfaces = []
        port = int(self.spec.params.get("tcp_port", settings.GATEWAY_TCP_PORT))
        host = str(self.spec.params.get("tcp_host", "0.0.0.0"))
        lock = threading.Lock()

        def on_frame(topic: str, frame: Frame) -> None:
            with lock:
                self.stats.received(frame.timestamp)
            try:
                node.on_frame(topic, frame)
            except Exception as exc:
                self.stats.failed += 1
                self.errors(
                    f"gateway {self.spec.name!r}: on_frame failed for {topic!r} frame {frame.frame_id}: {exc}", exc
                )

        def on_reject(source: str, why: str) -> None:
            self.stats.rejected += 1

        server = FrameServer(
            host,
            port,
            on_frame,
            token=settings.EDGEFLOW_TOKEN,
            max_frame_bytes=settings.MAX_FRAME_BYTES,
            on_reject=on_reject,
        )
        server.start()
        node.aggregator.start()
        self.logger.info("gateway %r receives frames on tcp %s:%d", self.spec.name, host, server.port)
        started = []
        try:
            for interface in node.interfaces:
                interface.start()
                started.append(interface)
            self.ctx.stop.wait()
        finally:
            for interface in started:
                try:
                    interface.stop(timeout=2.0)
                except Exception as exc:
                    self.errors(f"gateway {self.spec.name!r}: stopping {interface!r} failed: {exc}", exc)
            server.stop()
            node.aggregator.stop()


_WORKERS: dict[str, type[Worker]] = {
    "producer": ProducerWorker,
    "consumer": ConsumerWorker,
    "sink": SinkWorker,
    "fusion": FusionWorker,
    "gateway": GatewayWorker,
}


def make_worker(ctx: RunContext, spec: NodeSpec, replica: int) -> Worker:
    """Return the worker that runs replica `replica` of `spec`."""
    return _WORKERS[spec.type](ctx, spec, replica)
