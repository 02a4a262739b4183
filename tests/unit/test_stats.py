"""Statistics: percentiles, snapshots, and the aggregator's live view (no network: records are fed in)."""

from __future__ import annotations

import logging
import time

import pytest

from edgeflow.runtime.stats import NodeStats, StatsAggregator, StatsReporter, percentile

GRAPH = {
    "nodes": [
        {"name": "cam", "type": "producer", "device": "camera", "replicas": 1},
        {"name": "det", "type": "consumer", "device": "gpu", "replicas": 2},
        {"name": "gw", "type": "gateway", "device": None, "replicas": 1},
    ],
    "links": [{"source": "cam", "target": "det", "qos": "realtime", "transport": "redis"}],
}


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_snapshot_rates_and_latency() -> None:
    st = NodeStats("det", "consumer", 1, "gpu")
    for _ in range(10):
        st.received(time.time() - 0.010)
        st.proc_ms.append(2.0)
    st.frames_out = 10
    snap = st.snapshot()
    assert snap["frames_in"] == 10 and snap["frames_out"] == 10
    assert snap["fps_in"] > 0
    assert 9.0 <= snap["e2e_ms_p50"] < 100.0
    assert snap["proc_ms_p99"] == 2.0
    assert snap["instance"].startswith("det@")


def test_aggregator_tells_nodes_of_one_process_apart_and_marks_gone() -> None:
    agg = StatsAggregator(broker=None, graph=GRAPH, gone_after=5.0)  # type: ignore[arg-type]
    cam, det0, det1 = NodeStats("cam", "producer"), NodeStats("det", "consumer", 0), NodeStats("det", "consumer", 1)
    det0.frames_in, det1.frames_in, det1.dropped = 5, 7, 2
    for st in (cam, det0, det1):
        st.state = "running"
        agg.ingest(st.snapshot())
    nodes = {n["name"]: n for n in agg.nodes()}
    assert nodes["cam"]["status"] == "up" and nodes["cam"]["replicas_alive"] == 1
    assert nodes["det"]["replicas_alive"] == 2, "replica 0 of two nodes in one process are two reports"
    assert nodes["det"]["frames_in"] == 12 and nodes["det"]["dropped"] == 2
    assert nodes["gw"]["status"] == "unknown"
    old = det1.snapshot()
    agg.ingest(old)
    agg._latest[old["instance"]]["seen"] = time.time() - 6  # its last heartbeat was 6 s ago
    nodes = {n["name"]: n for n in agg.nodes()}
    assert nodes["det"]["replicas_alive"] == 1
    assert nodes["det"]["status"] == "up"
    agg._latest[det0.instance]["seen"] = time.time() - 6
    assert {n["name"]: n for n in agg.nodes()}["det"]["status"] == "gone"
    assert agg.links()[0]["depth"] is None


def test_a_replica_that_reports_but_does_not_run_is_never_shown_up() -> None:
    agg = StatsAggregator(broker=None, graph=GRAPH, gone_after=5.0)  # type: ignore[arg-type]
    det0, det1 = NodeStats("det", "consumer", 0), NodeStats("det", "consumer", 1)
    det0.state, det1.state = "restarting", "running"
    for st in (det0, det1):
        agg.ingest(st.snapshot())
    det = {n["name"]: n for n in agg.nodes()}["det"]
    assert (det["status"], det["replicas_alive"]) == ("up", 1), "one of two replicas runs"
    det1.state = "restarting"
    agg.ingest(det1.snapshot())
    assert {n["name"]: n for n in agg.nodes()}["det"]["status"] == "restarting"
    det0.state = "failed"
    agg.ingest(det0.snapshot())
    det = {n["name"]: n for n in agg.nodes()}["det"]
    assert (det["status"], det["replicas_alive"]) == ("failed", 0)
    cam = NodeStats("cam", "producer")
    cam.state = "stopped"  # its stream ended; the process runs on for the others
    agg.ingest(cam.snapshot())
    assert {n["name"]: n for n in agg.nodes()}["cam"]["status"] == "stopped"


def test_an_exporter_that_fails_is_logged_once_not_every_second(caplog: pytest.LogCaptureFixture) -> None:
    """Two processes on one metrics port: the second's exporter fails at every report. It once logged a traceback
    each second."""

    class Broken:
        def export(self, record: dict[str, object]) -> None:
            raise OSError(98, "Address already in use")

    class Quiet:
        def emit(self, channel: str, message: bytes) -> None:
            pass

    reporter = StatsReporter(Quiet())  # type: ignore[arg-type]
    reporter.exporters = [Broken()]
    reporter.add(NodeStats("cam", "producer"))
    with caplog.at_level(logging.ERROR, logger="edgeflow.stats"):
        for _ in range(30):
            reporter.report_once()
    failures = [r for r in caplog.records if "metrics exporter" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None, "once, with the traceback"
    assert "Address already in use" in caplog.text
