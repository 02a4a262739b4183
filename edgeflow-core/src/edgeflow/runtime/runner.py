"""Runs an app: every node in one process (`app.run()`), or one node (`--node NAME`)."""

from __future__ import annotations

import argparse
import atexit
import contextvars
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..embedded import EmbeddedRedis
from ..errors import ConfigurationError, EdgeFlowError
from ..plugins import get_exporter
from .gateway import GatewayWorker
from .producer import ProducerWorker
from .readers import ConsumerWorker, FusionWorker, SinkWorker
from .stats import StatsReporter
from .workers import RunContext, Worker

if TYPE_CHECKING:
    from ..app import EdgeApp, NodeSpec

__all__ = ["AppLoaded", "loading", "main", "run_app"]

log = logging.getLogger("edgeflow.runner")
#: Seconds the nodes get to stop after SIGTERM; the process exits within about STOP_TIMEOUT + 0.5 s.
STOP_TIMEOUT = 4.0
#: The longest a process's producers wait for its readers and gateways to take input before they start anyway.
READY_TIMEOUT = 10.0
#: Set while `edgeflow.loader.load_app` imports a file: `app.run()` then hands the app back instead of running.
loading: contextvars.ContextVar[bool] = contextvars.ContextVar("edgeflow_loading", default=False)


class AppLoaded(BaseException):
    """Raised by `app.run()` while a file is being loaded, carrying the app out."""

    def __init__(self, app: EdgeApp) -> None:
        super().__init__(app.name)
        self.app = app


def _positive(text: str) -> int:
    """A count of at least 1, for --replicas."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}: a node with no replica runs nothing")
    return value


def _parser(app: EdgeApp) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=sys.argv[0] if sys.argv else app.name, description=f"Run the EdgeFlow app {app.name!r}."
    )
    p.add_argument("--node", metavar="NAME", help="run only this node (default: every node in this process)")
    p.add_argument("--replicas", type=_positive, metavar="N", help="replicas of --node to run here (default: declared)")
    p.add_argument("--list", action="store_true", help="print the nodes and links, then exit")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return p


def _print_graph(app: EdgeApp) -> None:
    print(f"app {app.name}  broker {type(app.broker).__name__} at {app.broker.display_url}")
    print("nodes:")
    for spec in app.nodes.values():
        extras = " ".join(f"{k}={v}" for k, v in spec.params.items())
        print(
            f"  {spec.name:<20} {spec.type:<9} replicas={spec.replicas} device={spec.device or '-'} {extras}".rstrip()
        )
    print("links:")
    for ln in app.links:
        print(f"  {ln.source} -> {ln.target}  [{ln.transport}, {ln.qos}]")


def _setup_logging(level: str | None) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("edgeflow").setLevel((level or "INFO").upper())


def main(app: EdgeApp, argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run `app`; the entry point behind `app.run()`."""
    if loading.get():
        raise AppLoaded(app)
    args = _parser(app).parse_args(sys.argv[1:] if argv is None else list(argv))
    _setup_logging(args.log_level)
    if args.list:
        _print_graph(app)
        return
    try:
        if args.node:
            if args.node not in app.nodes:
                known = ", ".join(sorted(app.nodes))
                raise ConfigurationError(f"--node {args.node!r}: no node of that name. Known nodes: {known}")
            run_app(app, [args.node], replicas=args.replicas, embedded=False)
        else:
            run_app(app, list(app.nodes), embedded=True)
    except EdgeFlowError as exc:
        log.error("%s", exc)
        sys.exit(2)


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


def _exporters() -> list[Any]:
    """The metrics exporters EDGEFLOW_METRICS names (comma-separated), each found by name."""
    wanted = [n.strip() for n in os.environ.get("EDGEFLOW_METRICS", "").split(",") if n.strip()]
    return [get_exporter(name)() for name in dict.fromkeys(wanted)]


class _StoppedWhileStarting(BaseException):
    """Raised by the signal handler while the runner starts, to leave a blocking connect at once."""


def run_app(
    app: EdgeApp,
    names: Sequence[str],
    *,
    replicas: int | None = None,
    embedded: bool = True,
    stop: threading.Event | None = None,
    install_signals: bool = True,
    started: Callable[[RunContext], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the nodes `names` of `app` until SIGINT/SIGTERM, `stop`, or the end of their streams.

    `started` is called with the run's context once every worker started (for tools and tests that watch it).

    Returns each node's final counters, summed over the replicas run here. SIGINT and SIGTERM are handled from
    the first moment: during start-up (a Redis that does not answer, say) they end the run at once; once the
    nodes run, they stop within STOP_TIMEOUT seconds, giving up on a broker that does not answer by then.
    """
    stop = stop or threading.Event()
    starting = [True]
    previous: dict[int, Any] = {}
    if install_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                return
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()
            if starting[0]:
                raise _StoppedWhileStarting

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    broker = app.broker
    server: list[EmbeddedRedis] = []
    ctx: RunContext | None = None
    try:
        ctx = _start(app, names, replicas, embedded, stop, server)
        starting[0] = False
        if started is not None:
            started(ctx)
        if stop.is_set():
            return _summary(ctx)
        _wait(ctx)
    except _StoppedWhileStarting:
        log.info("app %r stopped while it was starting", app.name)
    finally:
        starting[0] = False
        stop.set()
        _shut_down(ctx, broker, server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if ctx is None:
        return {}
    log.info("app %r stopped", app.name)
    fatal = next((w.fatal for w in ctx.workers if w.fatal is not None), None)
    if fatal is not None:
        raise fatal
    return _summary(ctx)


def _start(
    app: EdgeApp,
    names: Sequence[str],
    replicas: int | None,
    embedded: bool,
    stop: threading.Event,
    server: list[EmbeddedRedis],
) -> RunContext:
    broker = app.broker
    broker.bind(app.name)

    def start_embedded() -> str:
        srv = EmbeddedRedis().start()
        server.append(srv)
        atexit.register(srv.stop)
        log.info(
            "no Redis configured and none on localhost:6379: started an embedded Redis (%s) on %s for this run",
            srv.binary,
            srv.url,
        )
        return srv.url

    if embedded:
        broker.ensure_server(start_embedded)
    broker.connect()
    log.info("app %r: broker %s at %s", app.name, type(broker).__name__, broker.display_url)
    reporter = StatsReporter(broker)
    reporter.exporters = _exporters()
    ctx = RunContext(app, broker, stop, reporter)
    specs: list[NodeSpec] = [app.nodes[n] for n in names]
    broker.running_here([s.name for s in specs])
    order = {"gateway": 0, "sink": 1, "consumer": 1, "fusion": 1, "producer": 2}
    for spec in sorted(specs, key=lambda s: order[s.type]):
        count = replicas if (replicas and len(specs) == 1) else spec.replicas
        for i in range(count):
            w = make_worker(ctx, spec, i)
            ctx.workers.append(w)
            reporter.add(w.stats)
    readers = [w for w in ctx.workers if w.spec.type != "producer"]
    for w in readers:
        w.start()
    reporter.start()  # a reader that can't start is reported (restarting, failed) while the producers wait
    _wait_ready(readers, stop)
    for w in ctx.workers:
        if w.spec.type == "producer":
            w.start()
    return ctx


def _wait_ready(workers: Sequence[Any], stop: threading.Event) -> None:
    """Wait (at most READY_TIMEOUT) until `workers` take input: a frame produced before its reader subscribed
    would be skipped on a realtime link, and the first frames of a short run would be lost."""
    deadline = time.monotonic() + READY_TIMEOUT
    for w in workers:
        # A replica that died starting is being restarted with backoff: the producers need not wait for it.
        while not w.ready.wait(0.05) and not stop.is_set() and not w.stats.extra.get("restarts"):
            if time.monotonic() >= deadline:
                log.warning("node %r is not taking input after %.0f s: starting the producers anyway",
                            w.spec.name, READY_TIMEOUT)  # fmt: skip
                return


def _shut_down(ctx: RunContext | None, broker: Any, server: list[EmbeddedRedis]) -> None:
    """Join the workers and the reporter within STOP_TIMEOUT, then close the broker whatever they are doing."""
    deadline = time.monotonic() + STOP_TIMEOUT
    if ctx is not None:
        for w in ctx.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.thread.name for w in ctx.workers if w.thread is not None and w.thread.is_alive()]
        if stuck:
            log.warning("threads still busy at shutdown (left to exit with the process): %s", ", ".join(stuck))
        ctx.reporter.stop(timeout=max(0.2, deadline - time.monotonic()))
    broker.close()
    for srv in server:
        srv.stop()


def summary(ctx: RunContext, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each node's counters now, summed over its replicas in this process."""
    return _summary(ctx, names)


def _summary(ctx: RunContext, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for w in ctx.workers:
        if names is not None and w.spec.name not in names:
            continue
        w.sync_counters()
        st = w.stats
        agg = out.setdefault(w.spec.name, {})
        for key in ("frames_in", "frames_out", "dropped", "failed", "rejected"):
            agg[key] = agg.get(key, 0) + getattr(st, key)
        for key, value in st.extra.items():
            agg[key] = agg.get(key, 0) + value
    return out


def _wait(ctx: RunContext) -> None:
    """Return when stopped, when every worker ended, or when producers ended and their frames drained."""
    workers = ctx.workers
    producers = [w for w in workers if w.spec.type == "producer"]
    has_gateway = any(w.spec.type == "gateway" for w in workers)
    readers = [w for w in workers if w.spec.type in ("consumer", "fusion", "sink")]
    quiet_since: float | None = None
    last_in = -1
    while not ctx.stop.wait(0.1):
        if all(w.finished.is_set() for w in workers) or any(w.fatal is not None for w in workers):
            return
        if not producers or has_gateway or not all(w.finished.is_set() for w in producers):
            continue
        # Every producer ended and nothing serves viewers: stop once the readers have gone quiet.
        seen = sum(w.stats.frames_in for w in readers)
        if seen != last_in:
            last_in, quiet_since = seen, time.monotonic()
        elif quiet_since is not None and time.monotonic() - quiet_since > 1.0:
            log.info("every producer ended and the pipeline drained: stopping")
            return
