"""The gateway's web side against hostile or odd input: half-sent requests, a chatty WebSocket, NaN on the control
plane, a frame from the far future, and too many topics."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from typing import Any

import pytest
import redis
from websockets.sync.client import connect as ws_connect

from edgeflow.frame import Frame
from edgeflow.tcp import FrameSender
from edgeflow.testing import wait_for
from edgeflow_web import WebInterface
from edgeflow_web._streams import StreamHub, TopicStream

from ..web.support import make_app, run_pipeline
from ..web.test_dashboard import _chromium


def test_half_sent_requests_are_closed_and_connections_capped(redis_url: str) -> None:
    app, holder = make_app(redis_url, web_kwargs={"header_timeout": 1.0, "max_connections": 20})
    with run_pipeline(app, holder) as running:
        port = running.web.port
        slow = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            slow.append(s)
        t0 = time.monotonic()
        for s in slow:
            s.settimeout(5)
            assert s.recv(100) == b"", "closed by the gateway, without an answer"
            s.close()
        assert time.monotonic() - t0 < 3
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        refused = 0
        for s in crowd:
            s.settimeout(2)
            try:
                refused += s.recv(10) == b""
            except TimeoutError:
                pass
        for s in crowd:
            s.close()
        assert refused >= 15, f"only {refused} of 40 connections over the cap of 20 were refused"
        with running.client() as c:
            assert c.get("/health").status_code == 200, "and the gateway serves the next honest request"


def test_a_chatty_websocket_client_gets_one_snapshot_a_second(redis_url: str) -> None:
    app, holder = make_app(redis_url)
    with run_pipeline(app, holder) as running:
        got = [0, 0]
        stop = threading.Event()

        def spam(i: int) -> None:
            with ws_connect(f"ws://127.0.0.1:{running.web.port}/ws", max_size=None) as ws:
                t_end = time.monotonic() + 3
                while time.monotonic() < t_end:
                    for _ in range(50):
                        ws.send("give me more")
                    try:
                        while True:
                            ws.recv(timeout=0.01)
                            got[i] += 1
                    except TimeoutError:
                        pass
                stop.set()

        threads = [threading.Thread(target=spam, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert all(2 <= n <= 5 for n in got), f"snapshots in 3 s per client: {got}"


def test_nan_on_the_control_plane_never_blanks_the_api_or_the_dashboard(redis_url: str) -> None:
    app, holder = make_app(redis_url)
    with run_pipeline(app, holder) as running:
        admin = redis.Redis.from_url(redis_url)
        channel = f"ef:{app.name}:ch:stats"
        forged = '{"node": "proc", "instance": "proc@evil:1:0", "fps_in": NaN, "e2e_ms_p50": Infinity, "replica": 0}'
        stop = threading.Event()

        def forge() -> None:
            while not stop.is_set():
                admin.publish(channel, forged)
                admin.publish(channel, '{"node": "x\\ny", "instance": "' + "i" * 10 + '"}')
                admin.publish(channel, "[" * 5000)
                time.sleep(0.2)

        forger = threading.Thread(target=forge)
        forger.start()
        try:
            time.sleep(1.5)
            with running.client() as c:
                body = c.get("/api/nodes").text
            nodes = json.loads(body)  # strict JSON: a NaN would not parse in a browser either
            assert "NaN" not in body and "Infinity" not in body
            assert {n["name"] for n in nodes["nodes"]} >= {"cam", "proc", "gw"}
            with tempfile.TemporaryDirectory() as user_dir:
                pw, ctx = _chromium(user_dir)
                try:
                    page = ctx.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.goto(running.base + "/dashboard")
                    page.wait_for_selector('#nodes tr[data-node="proc"]', timeout=15000)
                    first = page.eval_on_selector("#nodes", "e => e.textContent")
                    page.wait_for_function(
                        "t => document.querySelector('#nodes').textContent !== t", arg=first, timeout=10000
                    )
                finally:
                    ctx.close()
                    pw.stop()
            assert errors == [], errors
        finally:
            stop.set()
            forger.join()
            admin.close()


def test_a_frame_from_the_far_future_does_not_freeze_its_topic(redis_url: str) -> None:
    app, holder = make_app(redis_url)
    with run_pipeline(app, holder) as running:
        sender = FrameSender("127.0.0.1", int(app.nodes["gw"].params["tcp_port"]), "cam", app=app.name)
        try:
            sender.send(Frame(10**6, 1e300, {}, running.web.hub.stream("cam").last_frame.data))  # type: ignore[union-attr]
            assert wait_for(lambda: running.web.hub.stream("cam").clock_jumps >= 1, timeout=10)
            with running.client() as c:
                first = c.get("/api/status").json()["topics"]["cam"]["frame_id"]
                time.sleep(0.5)
                status = c.get("/api/status").json()["topics"]["cam"]
            assert status["frame_id"] != first and status["timestamp"] < 1e10, "real frames are shown again"
            assert status["late"] < 5, status
        finally:
            sender.close()


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_a_clock_that_steps_back_moves_the_baseline_instead_of_dropping_every_frame(delay: float) -> None:
    stream = TopicStream("cam", buffer_delay=delay)
    img: Any = __import__("numpy").zeros((4, 4, 3), "uint8")
    for i, ts in enumerate([100.0, 100.1, 100.05, 50.0, 50.1, 50.2]):
        stream.put(Frame(i, ts, {}, img))
        time.sleep(delay * 1.5)
    stream._release_due(time.monotonic() + 1)
    # A little older: late (or, with a jitter buffer, put back in order); much older: the clock jumped.
    assert (stream.late, stream.clock_jumps) == (0 if delay else 1, 1)
    assert stream._latest is not None and stream._latest.timestamp == 50.2


def test_topics_past_the_cap_are_dropped_and_counted() -> None:
    hub = StreamHub(max_topics=16)
    for i in range(40):
        hub.put(f"t{i}", Frame(0, 0.0, {}, b"x"))
    assert len(hub.names()) == 16 and hub.dropped == 24
    assert WebInterface(port=0).hub.max_topics == 256
