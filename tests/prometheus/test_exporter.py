"""The prometheus exporter in one process: found by name, one port for every node, a taken port logged once."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest

from edgeflow.plugins import get_exporter
from edgeflow.runtime.stats import NodeStats
from edgeflow_prometheus import PrometheusExporter

from ..web.support import free_port


def test_exporters_of_one_process_share_one_port_and_serve_every_node() -> None:
    port = free_port()
    factory = get_exporter("prometheus")
    a, b = factory(), factory()
    a.port = b.port = port
    a.host = b.host = "127.0.0.1"
    cam, det = NodeStats("cam", "producer"), NodeStats("det", "consumer")
    cam.frames_out, det.frames_in = 3, 2
    a.export(cam.snapshot())
    b.export(det.snapshot())
    assert a.endpoint is b.endpoint
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert 'edgeflow_frames_total{direction="out",node="cam",replica="0"} 3.0' in body
    assert 'edgeflow_frames_total{direction="in",node="det",replica="0"} 2.0' in body


def test_a_port_already_taken_is_one_clear_error_and_the_process_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = PrometheusExporter(port=port, host="127.0.0.1")
        with caplog.at_level(logging.INFO, logger="edgeflow.metrics"):
            for i in range(5):  # five reports, as five seconds of a running node
                st = NodeStats("cam", "producer")
                st.frames_out = i
                exporter.export(st.snapshot())
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None, "one line, no traceback"
        assert f"127.0.0.1:{port}" in errors[0].getMessage() and "EDGEFLOW_METRICS_PORT" in errors[0].getMessage()
        assert exporter.endpoint is not None and exporter.endpoint.latest()[0]["frames_out"] == 4
