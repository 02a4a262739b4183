"""The base of the loops the runner owns: one worker per node replica, each in its own thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backoff import Backoff
from ..errors import ConfigurationError, EdgeFlowError, NodeError
from ..nodes import Node
from .logring import LogRing
from .outage import Outage
from .outputs import Outputs
from .stats import NodeStats, StatsReporter

if TYPE_CHECKING:
    from ..app import EdgeApp, NodeSpec
    from ..broker import Broker
    from ..frame import Frame

__all__ = ["ErrorLog", "RunContext", "Worker", "describe"]

log = logging.getLogger("edgeflow.runner")

#: A replica that dies this many times within RESTART_WINDOW seconds is given up, and the process fails.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def describe(exc: BaseException) -> str:
    """The exception a node's code raised, with what to do about it where EdgeFlow knows."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError) and "read-only" in str(exc):
        # The arrays a node sends reach readers in its process without a copy; writing into one again would
        # change frames they are still reading.
        text += (" (arrays sent on a link and arrays received are read-only: readers in this process view them "
                 "without a copy. Return a new array each time, or write into array.copy())")  # fmt: skip
    return text


@dataclass
class RunContext:
    """What every worker of one process shares."""

    app: EdgeApp
    broker: Broker
    stop: threading.Event
    reporter: StatsReporter
    workers: list[Worker] = field(default_factory=list)


class ErrorLog:
    """One log line per failure, with the traceback at most once a second."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last_tb = 0.0
        #: The last failure: its message and time.time(), for the dashboard and `edgeflow trace`.
        self.last: tuple[str, float] | None = None

    def __call__(self, message: str, exc: BaseException | None = None) -> None:
        """Log `message`, with `exc`'s traceback unless one was logged less than a second ago."""
        now = time.monotonic()
        self.last = (message, time.time())
        if exc is not None and now - self._last_tb >= 1.0:
            self._last_tb = now
            tb = "".join(traceback.format_exception(exc)).rstrip()
            self.logger.error("%s\n%s", message, tb)
        else:
            self.logger.error("%s", message)


class Worker:
    """One replica of one node: builds the node, runs its loop in a thread, stops it cleanly."""

    def __init__(self, ctx: RunContext, spec: NodeSpec, replica: int) -> None:
        self.ctx = ctx
        self.spec = spec
        self.replica = replica
        self.stats = NodeStats(spec.name, spec.type, replica, spec.device)
        self.logger = logging.getLogger(f"edgeflow.node.{spec.name}" + (f".{replica}" if spec.replicas > 1 else ""))
        self.errors = ErrorLog(self.logger)
        #: The replica's recent log lines, for `edgeflow logs` (published in its statistics record).
        self.log_ring = LogRing()
        self.logger.addHandler(self.log_ring)
        self.outage = Outage(self.logger, ctx.stop)
        self.outputs = Outputs(ctx, spec, self.stats, self.logger, self.errors, self.outage)
        self.stats.probe = self.probe
        self.node: Node | None = None
        self.thread: threading.Thread | None = None
        self.finished = threading.Event()
        #: Set once the replica takes input (a reader subscribed, a gateway serving), or once it ended: the runner
        #: starts a process's producers after its readers, so that the first frames find them.
        self.ready = threading.Event()
        #: Why the replica can't go on (a mistake in the app, or dying again and again): the runner stops and
        #: raises it, so the process exits non-zero.
        self.fatal: EdgeFlowError | None = None
        self._deaths: list[float] = []
        self.consumer_name = f"{socket.gethostname()}-{os.getpid()}-{replica}"

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
        node.output_topic = spec.topic
        cls.__init__(node)
        node.configure()
        if node.output_topic != spec.topic:
            raise ConfigurationError(
                f"node {spec.name!r}: configure() set output_topic={node.output_topic!r}, but links and other "
                f"nodes' input_topics know it as {spec.topic!r} before any node starts; declare it with "
                f"`output_topic = {node.output_topic!r}` on the class or @app.node(..., output_topic=...)"
            )
        self.node = node
        self.stats.state = "running"
        return node

    def emit(self, frame: Frame) -> bool:
        """Send `frame` on every output link; False when the broker could not take it (counted)."""
        return self.outputs.emit(frame)

    def start(self) -> None:
        """Start the loop thread (which builds the node)."""
        self.thread = threading.Thread(target=self._main, name=f"edgeflow-{self.spec.name}-{self.replica}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        """Run the loop; a replica that dies of an unexpected error is built again and restarted with backoff."""
        backoff = Backoff(0.5, 10.0)
        try:
            while True:
                self.stats.state = "starting"
                try:
                    self.run()
                    return
                except ConfigurationError as exc:
                    self.fatal = exc
                    self.errors(f"node {self.spec.name!r} can't run: {exc}")
                    return
                except Exception as exc:
                    if not self._died(exc) or backoff.wait(self.ctx.stop):
                        return
                self._teardown()
                self.outputs = Outputs(self.ctx, self.spec, self.stats, self.logger, self.errors, self.outage)
                self.node = None
        finally:
            self.stats.state = "failed" if self.fatal is not None else "stopped"
            self._teardown()
            # Loggers live as long as the process; the ring keeps its lines for the last report.
            self.logger.removeHandler(self.log_ring)
            self.ready.set()
            self.finished.set()

    def _died(self, exc: Exception) -> bool:
        """Count an unexpected death; True when the replica is restarted, False when it is given up."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        self.stats.extra["restarts"] = self.stats.extra.get("restarts", 0) + 1
        why = f"{type(exc).__name__}: {exc}"
        if len(self._deaths) >= MAX_RESTARTS:
            self.fatal = NodeError(
                f"node {self.spec.name!r} (replica {self.replica}) died {len(self._deaths)} times within "
                f"{RESTART_WINDOW:.0f} s, the last of {why}; the process stops so that its supervisor (or you) can "
                "see it: fix the node, or what it depends on, and start it again",
                node=self.spec.name,
            )
            self.errors(str(self.fatal), exc)
            return False
        self.stats.state = "restarting"
        self.errors(f"node {self.spec.name!r} died of {why}; restarting it (death {len(self._deaths)} of "
                    f"{MAX_RESTARTS} allowed within {RESTART_WINDOW:.0f} s)", exc)  # fmt: skip
        return not self.ctx.stop.is_set()

    def _teardown(self) -> None:
        if self.node is not None:
            node, self.node = self.node, None
            try:
                node.close()
            except Exception as exc:
                self.errors(f"node {self.spec.name!r}: close() failed: {exc}", exc)
        self.sync_counters()
        try:
            self.outputs.close()
        except Exception as exc:
            self.errors(f"node {self.spec.name!r}: closing its outputs failed: {exc}", exc)

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
        self.stats.dropped = self.input_dropped() + self.outputs.dropped()

    _synced_at = 0.0

    def sync_counters_soon(self) -> None:
        """`sync_counters()` at most every 20 ms: the loops call this per frame, the reporter reads once a second
        (and the run's end syncs them again)."""
        now = time.monotonic()
        if now - self._synced_at >= 0.02:
            self._synced_at = now
            self.sync_counters()

    def input_drop_reasons(self) -> dict[str, int]:
        """`input_dropped()` by reason."""
        return {}

    def probe(self) -> dict[str, Any]:
        """What the statistics reporter adds to each snapshot: drops by reason, reconnections, liveness, the last
        error. Runs on the reporter's thread, once a second."""
        out: dict[str, Any] = {
            "drops": {**self.input_drop_reasons(), **self.outputs.drop_reasons()},
            "broker_reconnects": self.outage.reconnects,
            "alive": self.stats.state == "running" and self.thread is not None and self.thread.is_alive(),
        }
        last = self.errors.last
        if last is not None:
            out["last_error"] = {"message": last[0][:500], "ts": last[1]}
        if self.log_ring.lines:
            out["log"] = self.log_ring.snapshot()
        return out
