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

from ..errors import ConfigurationError
from ..nodes import Node
from .outage import Outage
from .outputs import Outputs
from .stats import NodeStats, StatsReporter

if TYPE_CHECKING:
    from ..app import EdgeApp, NodeSpec
    from ..broker import Broker
    from ..frame import Frame

__all__ = ["ErrorLog", "RunContext", "Worker"]

log = logging.getLogger("edgeflow.runner")


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
        self.outage = Outage(self.logger, ctx.stop)
        self.outputs = Outputs(ctx, spec, self.stats, self.logger, self.errors, self.outage)
        self.stats.probe = self.probe
        self.node: Node | None = None
        self.thread: threading.Thread | None = None
        self.finished = threading.Event()
        #: What ended the loop when it could not run at all (a mistake in the app): the runner stops and raises it.
        self.fatal: ConfigurationError | None = None
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
        return node

    def emit(self, frame: Frame) -> bool:
        """Send `frame` on every output link; False when the broker could not take it (counted)."""
        return self.outputs.emit(frame)

    def start(self) -> None:
        """Start the loop thread (which builds the node)."""
        self.thread = threading.Thread(target=self._main, name=f"edgeflow-{self.spec.name}-{self.replica}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except ConfigurationError as exc:
            self.fatal = exc
            self.errors(f"node {self.spec.name!r} can't run: {exc}")
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
        self.sync_counters()
        self.outputs.close()

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

    def input_drop_reasons(self) -> dict[str, int]:
        """`input_dropped()` by reason."""
        return {}

    def probe(self) -> dict[str, Any]:
        """What the statistics reporter adds to each snapshot: drops by reason, reconnections, liveness, the last
        error. Runs on the reporter's thread, once a second."""
        out: dict[str, Any] = {
            "drops": {**self.input_drop_reasons(), **self.outputs.drop_reasons()},
            "broker_reconnects": self.outage.reconnects,
            "alive": self.thread is not None and self.thread.is_alive() and not self.finished.is_set(),
        }
        last = self.errors.last
        if last is not None:
            out["last_error"] = {"message": last[0][:500], "ts": last[1]}
        return out
