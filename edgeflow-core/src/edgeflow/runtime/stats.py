"""Live statistics: each node replica counts, a reporter publishes, the gateway aggregates."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backoff import Backoff
from ..errors import BrokerError
from ..names import is_name
from ..tracing import TraceSampler, breakdown, percentile
from .supervisor import start_supervised

if TYPE_CHECKING:
    from ..broker import Broker

__all__ = [
    "BUCKETS",
    "STATS_CHANNEL",
    "Histogram",
    "NodeStats",
    "StatsAggregator",
    "StatsReporter",
    "cross_hosts",
    "host_of",
    "percentile",
]

log = logging.getLogger("edgeflow.stats")
STATS_CHANNEL = "stats"
GONE_AFTER = 5.0
_SAMPLES = 512
#: End-to-end latencies beyond this many seconds (or below zero) are clock trouble, not latency.
MAX_LATENCY = 3600.0
#: Upper bounds (seconds) of the histograms' buckets: process times and latencies from 100 us to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Sampled traces the aggregator keeps per path, and for how long.
_TRACE_KEEP = 1024
_TRACE_WINDOW = 30.0


def host_of(instance: str) -> str:
    """Return the host part of a replica's `instance` ("node@host:pid:replica")."""
    return instance.partition("@")[2].rsplit(":", 2)[0]


class Histogram:
    """Counts of observations per bucket of `BUCKETS`, and their sum: what a Prometheus histogram is made of."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of `seconds`."""
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def state(self) -> dict[str, Any]:
        """Return the cumulative count at each bound ("le"), the total count and the sum, JSON-ready."""
        cumulative, n = [], 0
        for c in self.counts:
            n += c
            cumulative.append(n)
        return {"le": list(BUCKETS), "buckets": cumulative[:-1], "count": n, "sum": round(self.sum, 6)}


class _Timings(deque[float]):
    """The recent process times in ms (for percentiles), each also counted in a histogram (for the metrics)."""

    def __init__(self, histogram: Histogram) -> None:
        super().__init__(maxlen=_SAMPLES)
        self.histogram = histogram

    def append(self, ms: float) -> None:
        super().append(ms)
        self.histogram.observe(ms / 1000.0)


class NodeStats:
    """Counters of one node replica; written by its worker thread, read by the reporter."""

    def __init__(self, node: str, node_type: str, replica: int = 0, device: str | None = None) -> None:
        self.node = node
        self.node_type = node_type
        self.replica = replica
        self.device = device
        # Unique per replica across processes and hosts; in one process every node has a replica 0.
        self.instance = f"{node}@{socket.gethostname()}:{os.getpid()}:{replica}"
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.failed = 0
        self.rejected = 0
        self.last_input = 0.0
        #: starting, running, restarting (after an unexpected death), stopped or failed; only "running" is up.
        self.state = "starting"
        self.process_seconds = Histogram()
        self.proc_ms: deque[float] = _Timings(self.process_seconds)
        self.e2e_ms: deque[float] = deque(maxlen=_SAMPLES)
        #: Creation-to-arrival latency per source node.
        self.latency: dict[str, Histogram] = {}
        self.extra: dict[str, Any] = {}
        #: Sampled traces of the paths that end here (gateways and sinks), drained at each snapshot.
        self.traces: TraceSampler | None = None
        #: Called at each snapshot for figures the worker keeps elsewhere (drops by reason, reconnects, errors).
        self.probe: Callable[[], dict[str, Any]] | None = None
        self._last_report = (time.monotonic(), 0, 0)

    def received(self, timestamp: float | None = None, source: str | None = None) -> None:
        """Count one incoming frame; `timestamp` is its creation time, for end-to-end latency from `source`."""
        self.frames_in += 1
        now = time.time()
        self.last_input = now
        if timestamp is not None:
            latency = now - timestamp
            # Timestamps are data: a stamp from the future or from long ago (a clock that jumped, a bogus frame)
            # says nothing of latency, and is counted instead of skewing the percentiles.
            if 0.0 <= latency <= MAX_LATENCY:
                self.e2e_ms.append(latency * 1000.0)
                if source is not None:
                    hist = self.latency.get(source)
                    if hist is None:
                        hist = self.latency[source] = Histogram()
                    hist.observe(latency)
            else:
                self.extra["clock_skewed"] = self.extra.get("clock_skewed", 0) + 1

    def seconds_since_input(self) -> float:
        """Return seconds since the last incoming frame (infinite when none came)."""
        return time.time() - self.last_input if self.last_input else float("inf")

    def snapshot(self) -> dict[str, Any]:
        """Return the counters, rates since the previous snapshot and latency percentiles."""
        now = time.monotonic()
        t0, in0, out0 = self._last_report
        dt = max(now - t0, 1e-6)
        self._last_report = (now, self.frames_in, self.frames_out)
        proc, e2e = list(self.proc_ms), list(self.e2e_ms)
        return {
            "node": self.node,
            "type": self.node_type,
            "device": self.device,
            "instance": self.instance,
            "replica": self.replica,
            "state": self.state,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "fps_in": round((self.frames_in - in0) / dt, 2),
            "fps_out": round((self.frames_out - out0) / dt, 2),
            "dropped": self.dropped,
            "failed": self.failed,
            "rejected": self.rejected,
            "proc_ms_p50": percentile(proc, 50),
            "proc_ms_p99": percentile(proc, 99),
            "e2e_ms_p50": percentile(e2e, 50),
            "e2e_ms_p99": percentile(e2e, 99),
            "ts": time.time(),
            **self.extra,
            **self._observability(),
        }

    def _observability(self) -> dict[str, Any]:
        """The fields the metrics exporters and the trace breakdown read (added in wire-compatible records)."""
        out: dict[str, Any] = {"process_seconds": self.process_seconds.state()}
        if self.latency:
            out["latency_seconds"] = {src: h.state() for src, h in list(self.latency.items())}
        if self.traces is not None:
            out["traces"] = self.traces.drain()
        if self.probe is not None:
            out.update(self.probe())
        return out


class StatsReporter:
    """Publishes every registered replica's snapshot on the control plane once per `interval`."""

    def __init__(self, broker: Broker, interval: float = 1.0) -> None:
        self.broker = broker
        self.interval = interval
        self.stats: list[NodeStats] = []
        self.exporters: list[Any] = []
        self._exporter_errors: dict[int, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False

    def _exporter_failed(self, exporter: Any, exc: Exception) -> None:
        """Log an exporter's failure with its traceback once, then once a minute with a count (not every second)."""
        now = time.monotonic()
        last, count = self._exporter_errors.get(id(exporter), (0.0, 0))
        if count == 0:
            log.exception("metrics exporter %r failed; its figures are not exported while it does", exporter)
            last = now
        elif now - last >= 60.0:
            log.error("metrics exporter %r still fails (%d times in the last minute): %s", exporter, count, exc)
            last, count = now, 0
        self._exporter_errors[id(exporter)] = (last, count + 1)

    def add(self, stats: NodeStats) -> None:
        """Report `stats` from now on."""
        self.stats.append(stats)

    def report_once(self) -> None:
        """Publish one snapshot of every replica now."""
        for st in list(self.stats):
            record = st.snapshot()
            for exporter in self.exporters:
                try:
                    exporter.export(record)
                except Exception as exc:
                    self._exporter_failed(exporter, exc)
            try:
                self.broker.emit(STATS_CHANNEL, json.dumps(record).encode())
                if self._down:
                    log.info("statistics are reaching the broker again")
                self._down = False
            except BrokerError as exc:
                if not self._down:
                    log.warning("can't publish statistics: %s", exc)
                self._down = True

    def start(self) -> None:
        """Start reporting in a daemon thread."""
        self._thread = start_supervised(self._loop, "edgeflow-stats", self._stop, log)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.report_once()
        self.report_once()  # the last figures, from this thread: a frozen broker never holds up a shutdown

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reporting after one last report, waiting for it at most `timeout` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning("the last statistics did not reach the broker within %.1fs; left behind", timeout)
        else:
            self.report_once()


#: Replicas an aggregator keeps track of; more (made up by someone on the control plane) push the silent ones out.
MAX_INSTANCES = 4096
#: The largest statistics report taken from the control plane.
MAX_REPORT_BYTES = 64 * 1024


def _traces(value: Any) -> list[tuple[tuple[tuple[str, str], ...], list[list[float]]]]:
    """A report's sampled traces as the aggregator keeps them: 64 paths of short names, 256 samples of finite
    numbers each, at most; anything else in them is left out."""
    out: list[tuple[tuple[tuple[str, str], ...], list[list[float]]]] = []
    for entry in value[:64] if isinstance(value, list) else []:
        try:
            key = tuple((str(n)[:64], str(k)[:16]) for n, k in entry["path"][:64])
            samples = [[float(v) for v in s[: len(key) - 1]] for s in entry["samples"][:256]]
        except (KeyError, TypeError, ValueError):
            continue
        out.append((key, [s for s in samples if all(math.isfinite(v) for v in s)]))
    return out


def _clean(value: Any, depth: int = 0) -> Any:
    """A report's value as the aggregator keeps it: finite numbers (others None), short strings, small nestings."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:256]
    if depth >= 4:
        return None
    if isinstance(value, dict):
        return {str(k)[:64]: _clean(v, depth + 1) for k, v in list(value.items())[:128]}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value[:256]]
    return None


class StatsAggregator:
    """Gathers every node's reports from the control plane into a live view of the pipeline."""

    def __init__(self, broker: Broker, graph: dict[str, Any], gone_after: float = GONE_AFTER) -> None:
        self.broker = broker
        self.graph = graph
        self.gone_after = gone_after
        self._latest: dict[str, dict[str, Any]] = {}
        #: Reports from the control plane that were not valid (counted, dropped).
        self.rejected = 0
        self._depths: dict[tuple[str, str], int | None] = {}
        self._pending: dict[tuple[str, str], int | None] = {}
        self._traces: dict[tuple[tuple[str, str], ...], deque[tuple[float, list[float]]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def ingest(self, record: dict[str, Any]) -> bool:
        """Take one replica's report; False when it is not a valid report (the control plane is not trusted)."""
        traces = _traces(record.pop("traces", None)) if isinstance(record, dict) else []
        clean = _clean(record)
        if not isinstance(clean, dict) or not is_name(clean.get("node")) or not isinstance(clean.get("instance"), str):
            self.rejected += 1
            return False
        clean["seen"] = now = time.time()
        with self._lock:
            self._latest[clean["instance"]] = clean
            if len(self._latest) > MAX_INSTANCES:  # a flood of made-up replicas: the longest silent ones go
                for key in sorted(self._latest, key=lambda k: self._latest[k]["seen"])[: len(self._latest) // 4]:
                    del self._latest[key]
            for path, samples in traces:
                kept = self._traces.get(path)
                if kept is None:
                    if len(self._traces) >= 64:
                        continue
                    kept = self._traces[path] = deque(maxlen=_TRACE_KEEP)
                kept.extend((now, s) for s in samples)
        return True

    def _listen(self) -> None:
        listener = None
        backoff = Backoff(0.2, 2.0)
        while not self._stop.is_set():
            try:
                if listener is None:
                    listener = self.broker.listen(STATS_CHANNEL)
                raw = listener.get(timeout=0.5)
                backoff.reset()
            except BrokerError:
                listener = None
                backoff.wait(self._stop)
                continue
            if raw is None:
                continue
            try:
                record = json.loads(raw) if len(raw) <= MAX_REPORT_BYTES else None
            except (ValueError, RecursionError):
                record = None
            if isinstance(record, dict):
                self.ingest(record)  # it counts what it refuses
            else:
                self.rejected += 1
        if listener is not None:
            listener.close()

    def _poll_depths(self) -> None:
        while True:
            for link in self.graph.get("links", []):
                if link["transport"] != "redis":
                    continue
                backlog = self.broker.link_backlog(link.get("topic") or link["source"], link["target"],
                                                   link.get("codec") or "")  # fmt: skip
                with self._lock:
                    self._depths[(link["source"], link["target"])] = backlog[0] if backlog else None
                    self._pending[(link["source"], link["target"])] = backlog[1] if backlog else None
            if self._stop.wait(1.0):
                return

    def start(self) -> None:
        """Start listening and polling in daemon threads."""
        for target in (self._listen, self._poll_depths):
            self._threads.append(start_supervised(target, f"edgeflow-agg{target.__name__}", self._stop, log))

    def stop(self) -> None:
        """Stop the threads."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)

    def nodes(self) -> list[dict[str, Any]]:
        """Return each node of the graph with its live figures summed over the replicas alive."""
        now = time.time()
        with self._lock:
            records = list(self._latest.values())
        out = []
        for spec in self.graph.get("nodes", []):
            mine = [r for r in records if r.get("node") == spec["name"]]
            alive = [r for r in mine if now - r["seen"] <= self.gone_after]
            entry: dict[str, Any] = dict(spec)
            running = [r for r in alive if r.get("state", "running") == "running"]
            entry["replicas_alive"] = len(running)
            if running:
                entry["status"] = "up"
            elif alive:
                # Reporting, but not running: failed for good, restarting after a death, starting, or stopped.
                states = {str(r.get("state")) for r in alive}
                entry["status"] = next((s for s in ("failed", "restarting", "starting") if s in states), "stopped")
            else:
                entry["status"] = "gone" if mine else "unknown"
            for key in ("frames_in", "frames_out", "dropped", "failed", "rejected"):
                entry[key] = sum(int(r.get(key) or 0) for r in mine)
            for key in ("fps_in", "fps_out"):
                entry[key] = round(sum(float(r.get(key) or 0) for r in alive), 2)
            for key in ("proc_ms_p50", "proc_ms_p99", "e2e_ms_p50", "e2e_ms_p99"):
                vals = [r[key] for r in alive if r.get(key) is not None]
                entry[key] = round(max(vals), 3) if vals else None
            entry["last_seen"] = max((r["seen"] for r in mine), default=None)
            errors = [r["last_error"] for r in mine if isinstance(r.get("last_error"), dict)]
            entry["last_error"] = max(errors, key=lambda e: e.get("ts") or 0.0) if errors else None
            out.append(entry)
        return out

    def records(self) -> list[dict[str, Any]]:
        """Return every replica's latest record (gone ones too, so that summed counters never go back), each with
        `alive` saying whether it still reports."""
        now = time.time()
        with self._lock:
            records = [dict(r) for r in self._latest.values()]
        for r in records:
            r["alive"] = bool(r.get("alive", True)) and now - r["seen"] <= self.gone_after
        return records

    def hosts(self) -> dict[str, set[str]]:
        """Return the hosts each node reports from."""
        with self._lock:
            instances = [str(r.get("instance", "")) for r in self._latest.values()]
        out: dict[str, set[str]] = {}
        for inst in instances:
            out.setdefault(inst.partition("@")[0], set()).add(host_of(inst))
        return out

    def traces(self, window: float = _TRACE_WINDOW) -> list[dict[str, Any]]:
        """Return the per-stage breakdown of every traced path over the last `window` seconds."""
        since = time.time() - window
        with self._lock:
            paths = [(key, [s for t, s in kept if t >= since]) for key, kept in self._traces.items()]
        return breakdown(paths, cross_hosts(self.hosts()))

    def links(self) -> list[dict[str, Any]]:
        """Return each link of the graph with the queue depth of Redis links."""
        with self._lock:
            depths, pending = dict(self._depths), dict(self._pending)
        return [
            dict(link, depth=depths.get((link["source"], link["target"])),
                 pending=pending.get((link["source"], link["target"])))
            for link in self.graph.get("links", [])
        ]  # fmt: skip


def cross_hosts(hosts: dict[str, set[str]]) -> Callable[[str, str], bool]:
    """Return a test of whether two nodes may run on different hosts, from the hosts each reports from."""

    def test(a: str, b: str) -> bool:
        ha, hb = hosts.get(a), hosts.get(b)
        return not (ha and hb and len(ha | hb) == 1)

    return test
