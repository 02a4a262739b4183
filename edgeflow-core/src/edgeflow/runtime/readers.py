"""The loops of the nodes that read from the broker: consumers, sinks and fusion nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..backoff import Backoff
from ..broker import Delivery, Subscription
from ..errors import BrokerError, ConfigurationError, DiskFullError, FrameError, NodeError
from ..frame import Frame
from ..links import Link
from ..nodes import FusionNode, Node, SinkNode
from .sync import Synchronizer
from .workers import Worker, describe

__all__ = ["ConsumerWorker", "FusionWorker", "SinkWorker"]

_SUB_COUNTERS = ("skipped", "rejected", "lost", "dead")

_READ_TIMEOUT = 0.2


def as_output(node: str, result: Any, source: Frame | None, frame_id: int) -> Frame | None:
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
    return Frame(source.frame_id, source.timestamp, meta, result, source.trace)


class _ReaderWorker(Worker):
    """Shared loop of the nodes that read from the broker."""

    sub: Subscription
    last_error: str = ""
    #: The counters of subscriptions closed before (a restarted node opens a new one): they keep adding up.
    closed_counts: dict[str, int] | None = None

    def sub_count(self, name: str) -> int:
        """The subscriptions' counter `name` (skipped, rejected, lost, dead) over this replica's whole run."""
        sub = getattr(self, "sub", None)
        return (self.closed_counts or {}).get(name, 0) + (int(getattr(sub, name)) if sub is not None else 0)

    def inputs(self, node: Node) -> list[Link]:
        """The links this node reads: those into it, then `input_topics` not already linked, as realtime links."""
        app, name = self.ctx.app, self.spec.name
        links = [ln for ln in app.links_into(name) if ln.transport == "redis"]
        for topic in getattr(node, "input_topics", None) or []:
            source = app.resolve_topic(topic, name)
            if all(ln.source != source for ln in links):
                links.append(Link(source, name, topic=app.nodes[source].topic))
        return links

    def run(self) -> None:
        node = self.build()
        links = self.inputs(node)
        if not links:
            raise ConfigurationError(
                f"node {self.spec.name!r} has no inputs: link a node to it or set self.input_topics in configure()"
            )
        if self.spec.type != "sink":
            self.outputs.open()
        self.prepare(node, list(dict.fromkeys(ln.source for ln in links)))
        self.sub = self._subscribe(links)
        self.ready.set()
        stop = self.ctx.stop
        while not stop.is_set():
            try:
                deliveries = self.sub.read(_READ_TIMEOUT)
                read_at = time.time()
                self.outage.ok()
            except BrokerError as exc:
                self.outage.failed(exc)
                continue
            done: list[Delivery] = []
            alive_at = time.monotonic()
            try:
                for i, d in enumerate(deliveries):
                    if stop.is_set() and done:
                        break  # stop taking work; unacknowledged durable frames go to a live replica
                    self.stats.received(d.frame.timestamp, d.source)
                    self.outputs.tracer.read(d.frame, read_at)
                    if self._handle_with_retries(node, d):
                        done.append(d)
                    if time.monotonic() - alive_at >= self.sub.keepalive_every and i + 1 < len(deliveries):
                        # The whole batch is ours until acknowledged, the frames done included: no other replica
                        # takes it over.
                        self.sub.keepalive(deliveries)
                        alive_at = time.monotonic()
                settled = self.settle(node, done)
                if settled:
                    self.sub.ack(settled)
            except BrokerError as exc:
                self.outage.failed(exc)  # unacknowledged frames are delivered again: at least once
            self.sync_counters_soon()
        try:
            self.sub.ack(self.settle(node, [], final=True))
        except BrokerError as exc:
            self.errors(f"node {self.spec.name!r}: last acknowledgements not sent (those frames come again): {exc}")

    def settle(self, node: Node, done: list[Delivery], final: bool = False) -> list[Delivery]:
        """Called after each read with the deliveries handled; returns those to acknowledge now (the rest come
        again, or are held for later); `final` is the last call, as the loop ends."""
        return done

    def _teardown(self) -> None:
        sub = getattr(self, "sub", None)
        if sub is not None:
            try:
                sub.close()  # counts what it still held
            except Exception as exc:
                self.errors(f"node {self.spec.name!r}: closing its subscription failed: {exc}", exc)
            counts = self.closed_counts = dict(self.closed_counts or {})
            for name in _SUB_COUNTERS:
                counts[name] = counts.get(name, 0) + int(getattr(sub, name))
            del self.sub
        super()._teardown()

    def _handle_with_retries(self, node: Node, d: Delivery) -> bool:
        """Handle `d`, retrying a durable frame that failed; False when it was left unhandled (stopping)."""
        node.current_source = d.source
        ok = self.handle(node, d.source, d.frame)
        backoff: Backoff | None = None  # made only for a failed frame: this runs for every frame
        while not ok and d.qos == "durable":
            if d.attempts >= d.max_attempts:
                self.sub.dead_letter(d, self.last_error)
                return True
            d.attempts += 1
            backoff = backoff or Backoff(0.05, 1.0)
            if backoff.wait(self.ctx.stop):
                return False  # not acknowledged either: a live replica takes it over
            ok = self.handle(node, d.source, d.frame)
        return True

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

    def sync_counters(self) -> None:
        self.stats.rejected = self.sub_count("rejected")
        self.stats.extra["dead_letters"] = self.sub_count("dead")
        self.stats.extra["lost"] = self.sub_count("lost")
        super().sync_counters()

    def input_dropped(self) -> int:
        return self.sub_count("skipped") + self.extra_dropped()

    def extra_dropped(self) -> int:
        """Drops made by the node type itself (fusion: frames that can never match)."""
        return 0

    def input_drop_reasons(self) -> dict[str, int]:
        out = {"stale": self.sub_count("skipped")}
        if self.spec.type == "fusion":
            out["unmatched"] = self.extra_dropped()
        return out

    def probe(self) -> dict[str, Any]:
        out = super().probe()
        if self.replica == 0:
            # One replica per process reports its links' backlog: the group's, the same for every replica. The
            # links are kept once known, so that the last report, after the node closed, still has them.
            if getattr(self, "_probed", None) is None and self.node is not None:
                self._probed = self.inputs(self.node)
            out["links"] = self._backlogs(getattr(self, "_probed", None) or [])
        return out

    def _backlogs(self, links: list[Link]) -> list[dict[str, Any]]:
        out = []
        for ln in links:
            try:
                backlog = self.ctx.broker.link_backlog(ln.topic, ln.target, ln.variant)
            except BrokerError:
                backlog = None
            if backlog is not None:
                out.append({"source": ln.source, "target": ln.target, "depth": backlog[0], "pending": backlog[1]})
        return out

    def call(self, node: Node, fn: Callable[[Any], Any], arg: Any, frame: Frame) -> tuple[bool, Any]:
        """Run the node's code on one input; (False, None) when it raised (logged and counted)."""
        node.current_frame = frame
        tracer = self.outputs.tracer
        tracer.start()
        t0 = time.perf_counter()
        try:
            result = fn(arg)
        except Exception as exc:
            self.stats.failed += 1
            self.last_error = describe(exc)
            self.errors(f"node {self.spec.name!r}: process() raised on frame {frame.frame_id}: {self.last_error}", exc)
            return False, None
        finally:
            node.current_frame = None
        self.stats.proc_ms.append((time.perf_counter() - t0) * 1000.0)
        tracer.end(frame, node.current_source)
        return True, result

    def send_result(self, result: Any, source: Frame) -> None:
        """Send what `process()` returned, keeping the input frame's id and timestamp."""
        try:
            out = as_output(self.spec.name, result, source, source.frame_id)
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
    """Calls `process(data)` for each frame, and `flush()` when the sink says so (`flush_due()`).

    Durable frames are acknowledged only once a `flush()` after them returned: the worker holds their
    acknowledgements across reads until then, bounded so that a held frame is never taken over by another
    replica (a third of `claim_after`) nor holds the producer back (half of `max_len`).
    """

    def prepare(self, node: Node, sources: list[str]) -> None:
        self._held: list[Delivery] = []
        self._held_bytes = 0
        self._held_since = 0.0
        self._rollbacks = getattr(node, "rollbacks", 0)
        self._invalid = 0  # deliveries of this read handled before a rollback: not on disk after all
        self._handled = 0
        self._full: DiskFullError | None = None
        durable = [ln for ln in self.inputs(node) if ln.qos == "durable"]
        self._hold_max = max(1, min((ln.max_len for ln in durable), default=2) // 2)
        self._hold_age = min((ln.claim_after for ln in durable), default=15.0) / 3
        # The byte budget of durable links (issue 12), where the link has one.
        budgets = [b for b in (getattr(ln, "max_bytes", None) for ln in durable) if b]
        self._hold_bytes = min(budgets) // 2 if budgets else None

    def handle(self, node: Node, source: str, frame: Frame) -> bool:
        ok, result = self.call(node, self._store(node), frame.data, frame)
        if result is _FULL:
            assert self._full is not None
            raise _DiskFullError(self._full)
        return ok

    def _store(self, node: Node) -> Callable[[Any], Any]:
        def store(data: Any) -> Any:
            try:
                node.process(data)  # type: ignore[attr-defined]
            except DiskFullError as exc:
                self._full = exc
                return _FULL
            return None

        return store

    def _handle_with_retries(self, node: Node, d: Delivery) -> bool:
        # A full disk is not the frame's fault: it is not retried towards the dead letters but waits, unacknowledged
        # (the producer is held back by its durable link), and is stored once there is room again.
        backoff: Backoff | None = None  # made only for a full disk: this runs for every frame
        before = node.rollbacks if isinstance(node, SinkNode) else 0
        while True:
            try:
                done = super()._handle_with_retries(node, d)
                break
            except _DiskFullError as full:
                self.stats.extra["disk_full"] = self.stats.extra.get("disk_full", 0) + 1
                backoff = backoff or Backoff(0.5, 10.0)
                if backoff.failures == 0 or backoff.failures % 10 == 0:
                    self.errors(
                        f"sink {self.spec.name!r}: {full.exc}; frame {d.frame.frame_id} and those after it wait "
                        "unacknowledged and are tried again until there is room (nothing is dropped)"
                    )
                if backoff.wait(self.ctx.stop):
                    done = False
                    break
        if isinstance(node, SinkNode) and node.rollbacks != before:
            self._invalid = self._handled  # what this read handled before the rollback is gone with it
        if done:
            self._handled += 1
        return done

    def settle(self, node: Node, done: list[Delivery], final: bool = False) -> list[Delivery]:
        assert isinstance(node, SinkNode)
        invalid, self._invalid, self._handled = self._invalid, 0, 0
        if node.rollbacks != self._rollbacks:
            self._rollbacks = node.rollbacks
            self._drop_held(len(self._held) + invalid)
            done = done[invalid:]
        now = time.monotonic()
        for d in done:
            if d.qos != "durable":
                continue  # realtime frames need no acknowledgement
            if not self._held:
                self._held_since = now
            self._held_bytes += _size(d.frame.data)
            # Only the acknowledgement is held, not the frame: let go of its payload.
            d.frame.data = None
            d.extra.pop("payload", None)
            d.extra.pop("fields", None)
            self._held.append(d)
        held = len(self._held)
        due = final or node.flush_due()
        if held and not due:
            due = held >= self._hold_max or now - self._held_since >= self._hold_age
            due = due or (self._hold_bytes is not None and self._held_bytes >= self._hold_bytes)
        if not due:
            return []
        try:
            ok = node.flush() is not False
        except Exception as exc:
            self.stats.failed += 1
            if isinstance(exc, DiskFullError):
                self.stats.extra["disk_full"] = self.stats.extra.get("disk_full", 0) + 1
            self.errors(f"sink {self.spec.name!r}: flush() failed; {held} frame(s) stay unacknowledged and come "
                        f"again: {type(exc).__name__}: {exc}", exc)  # fmt: skip
            ok = False
        if not ok or node.rollbacks != self._rollbacks:
            self._rollbacks = node.rollbacks
            self._drop_held(0)
            return []
        out, self._held, self._held_bytes = self._held, [], 0
        return out

    def _drop_held(self, count: int) -> None:
        """Forget acknowledgements whose frames the sink dropped with a rollback: they come again."""
        if count:
            self.logger.warning("sink %r dropped writes not yet flushed: %d frame(s) stay unacknowledged and come "
                                "again", self.spec.name, count)  # fmt: skip
        self._held, self._held_bytes = [], 0


class _DiskFullError(Exception):
    """Carries a sink's DiskFullError out of the frame's ordinary retries."""

    def __init__(self, exc: DiskFullError) -> None:
        super().__init__(str(exc))
        self.exc = exc


_FULL = object()


def _size(data: Any) -> int:
    """Bytes of a frame's data, roughly (JSON data: its length if it has one)."""
    nbytes = getattr(data, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return len(data) if isinstance(data, (bytes, bytearray, memoryview, str, list, dict)) else 0


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
