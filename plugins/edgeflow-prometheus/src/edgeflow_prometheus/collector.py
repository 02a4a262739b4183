"""A prometheus-client Collector over the statistics records the runner makes (`edgeflow.runtime.stats`).

The records are the ones every replica publishes once a second; this module only renames and sums them into
Prometheus families: counters as counters (`_total`), histograms with their buckets, base units (seconds),
labels of low cardinality (node, replica, direction, reason, source, target; never a frame id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["RecordCollector"]

Records = Callable[[], list[dict[str, Any]]]


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class _Hist:
    """Histogram states of several replicas summed (they share their bucket bounds)."""

    def __init__(self) -> None:
        self.le: list[float] | None = None
        self.buckets: list[float] = []
        self.count = 0.0
        self.sum = 0.0

    def add(self, state: Any) -> None:
        if not isinstance(state, dict):
            return
        le, buckets = state.get("le"), state.get("buckets")
        if not isinstance(le, list) or not isinstance(buckets, list) or len(le) != len(buckets):
            return
        if self.le is None:
            self.le, self.buckets = [float(x) for x in le], [0.0] * len(le)
        elif [float(x) for x in le] != self.le:
            return  # a replica of another EdgeFlow version with other bounds: left out rather than mixed in
        self.buckets = [a + _num(b) for a, b in zip(self.buckets, buckets, strict=True)]
        self.count += _num(state.get("count"))
        self.sum += _num(state.get("sum"))

    def samples(self) -> list[tuple[str, float]]:
        return [(floatToGoString(le), n) for le, n in zip(self.le or [], self.buckets, strict=True)] + [
            ("+Inf", self.count)
        ]


class RecordCollector(Collector):
    """Builds EdgeFlow's metric families from replica records at each scrape.

    Args:
        records: returns the latest record of each replica (each may say `alive`).
        links: returns the links with `depth` and `pending` (the gateway's aggregator); by default the backlogs
            that the records of the target nodes carry.
    """

    def __init__(self, records: Records, links: Records | None = None) -> None:
        self._records = records
        self._links = links

    def describe(self) -> list[Metric]:
        # Nothing to describe before the first record: registering must not collect.
        return []

    def collect(self) -> Iterator[Metric]:
        records = [r for r in self._records() if isinstance(r, dict) and r.get("node")]
        frames = CounterMetricFamily(
            "edgeflow_frames", "Frames a node replica received (in) or sent on (out).",
            labels=["node", "replica", "direction"],
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "edgeflow_dropped", "Frames dropped by design, by reason (stale: a newer frame won on a realtime link).",
            labels=["node", "reason"],
        )  # fmt: skip
        failed = CounterMetricFamily(
            "edgeflow_failed", "Frames the node's code failed on (process() or produce() raised).", labels=["node"]
        )
        rejected = CounterMetricFamily("edgeflow_rejected", "Inputs that were not valid frames.", labels=["node"])
        dead = CounterMetricFamily(
            "edgeflow_dead_letters", "Durable frames moved to the dead-letter stream.", labels=["node"]
        )
        lost = CounterMetricFamily("edgeflow_lost", "Durable frames whose payload was gone.", labels=["node"])
        reconnects = CounterMetricFamily(
            "edgeflow_broker_reconnects", "Broker outages the node came back from.", labels=["node"]
        )
        alive = GaugeMetricFamily(
            "edgeflow_replicas_alive", "Replicas of the node that run and report.", labels=["node"]
        )
        process = HistogramMetricFamily(
            "edgeflow_process_seconds", "Time the node's code took per frame (process(); produce() and send).",
            labels=["node"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "edgeflow_latency_seconds", "Time from a frame's creation at its producer to its arrival at the node.",
            labels=["node", "source"],
        )  # fmt: skip

        frame_counts: dict[tuple[str, str, str], float] = {}
        by_node: dict[str, dict[str, float]] = {}
        drops: dict[tuple[str, str], float] = {}
        proc: dict[str, _Hist] = {}
        lat: dict[tuple[str, str], _Hist] = {}
        for r in records:
            node, replica = str(r["node"]), str(int(_num(r.get("replica"))))
            for direction in ("in", "out"):
                key = (node, replica, direction)
                frame_counts[key] = frame_counts.get(key, 0.0) + _num(r.get(f"frames_{direction}"))
            totals = by_node.setdefault(
                node, dict.fromkeys(("failed", "rejected", "dead", "lost", "reconn", "up"), 0.0)
            )
            totals["failed"] += _num(r.get("failed"))
            totals["rejected"] += _num(r.get("rejected"))
            totals["dead"] += _num(r.get("dead_letters"))
            totals["lost"] += _num(r.get("lost"))
            totals["reconn"] += _num(r.get("broker_reconnects"))
            totals["up"] += 1.0 if r.get("alive", True) and r.get("state", "running") == "running" else 0.0
            reasons = r.get("drops") if isinstance(r.get("drops"), dict) else {}
            named = 0.0
            for reason, n in reasons.items():
                drops[(node, str(reason))] = drops.get((node, str(reason)), 0.0) + _num(n)
                named += _num(n)
            rest = _num(r.get("dropped")) - named
            if rest > 0:
                drops[(node, "other")] = drops.get((node, "other"), 0.0) + rest
            proc.setdefault(node, _Hist()).add(r.get("process_seconds"))
            sources = r.get("latency_seconds")
            for source, state in sources.items() if isinstance(sources, dict) else []:
                lat.setdefault((node, str(source)), _Hist()).add(state)

        for key, value in sorted(frame_counts.items()):
            frames.add_metric(list(key), value)
        for (node, reason), value in sorted(drops.items()):
            dropped.add_metric([node, reason], value)
        for node, totals in sorted(by_node.items()):
            failed.add_metric([node], totals["failed"])
            rejected.add_metric([node], totals["rejected"])
            dead.add_metric([node], totals["dead"])
            lost.add_metric([node], totals["lost"])
            reconnects.add_metric([node], totals["reconn"])
            alive.add_metric([node], totals["up"])
        for node, hist in sorted(proc.items()):
            if hist.le is not None:
                process.add_metric([node], hist.samples(), hist.sum)
        for (node, source), hist in sorted(lat.items()):
            if hist.le is not None:
                latency.add_metric([node, source], hist.samples(), hist.sum)
        yield from (frames, dropped, failed, rejected, dead, lost, reconnects, alive, process, latency)
        yield from self._link_families(records)

    def _link_families(self, records: list[dict[str, Any]]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "edgeflow_link_depth", "Frames waiting in a link or delivered and not yet acknowledged.",
            labels=["source", "target"],
        )  # fmt: skip
        pending = GaugeMetricFamily(
            "edgeflow_link_pending", "Durable frames delivered to the target and not yet acknowledged.",
            labels=["source", "target"],
        )  # fmt: skip
        latest: dict[tuple[str, str], tuple[float, Any, Any]] = {}
        if self._links is not None:
            for ln in self._links():
                latest[(str(ln.get("source")), str(ln.get("target")))] = (0.0, ln.get("depth"), ln.get("pending"))
        else:
            for r in records:
                for ln in r.get("links") or []:
                    if not isinstance(ln, dict):
                        continue
                    key = (str(ln.get("source")), str(ln.get("target")))
                    ts = _num(r.get("ts"))
                    if key not in latest or ts >= latest[key][0]:
                        latest[key] = (ts, ln.get("depth"), ln.get("pending"))
        for (source, target), (_, d, p) in sorted(latest.items()):
            if d is not None:
                depth.add_metric([source, target], _num(d))
            if p is not None:
                pending.add_metric([source, target], _num(p))
        yield from (depth, pending)
