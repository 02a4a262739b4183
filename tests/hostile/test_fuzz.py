"""Fuzzing a running pipeline: random and mutated stream entries into a durable link, random and mutated frames
into the gateway's TCP intake. The nodes keep running, every input is counted exactly once (delivered or
rejected), and memory stays bounded."""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.embedded import EmbeddedRedis, free_port
from edgeflow.frame import encode, pack
from edgeflow.nodes import IDLE, GatewayNode, ProducerNode, SinkNode
from edgeflow.tcp import hello
from edgeflow.testing import RunningApp, wait_for

VALID = [
    Frame(1, 1.0, {"k": [1, 2, {"x": None}]}, np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
    Frame(2, 2.0, {}, b"raw bytes"),
    Frame(3, 3.0, {"m": "text"}, {"boxes": [[1, 2, 3, 4]], "ok": True}),
]


class Pipeline:
    """A pipeline run in this process for the whole module: a producer that sends nothing itself, linked durable
    into a sink and into a gateway, so that everything those two get is fuzz."""

    def __init__(self, url: str) -> None:
        self.name = f"fuzz{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        os.environ["GATEWAY_TCP_PORT"] = str(self.port)
        self.app = app = EdgeApp(self.name, broker=RedisBroker(url))
        self.stored: list[Any] = []
        lock = threading.Lock()
        stored = self.stored

        @app.node(name="feed", type="producer", fps=2)
        class Feed(ProducerNode):
            def produce(self) -> Any:
                return IDLE

        @app.node(name="store", type="sink")
        class Store(SinkNode):
            def process(self, data: Any) -> None:
                with lock:
                    stored.append(data)

        @app.node(name="gateway", type="gateway")
        class Gateway(GatewayNode):
            pass

        app.link("feed").to("store", qos="durable")
        app.link("feed").to("gateway")
        self.run = RunningApp(app).start()
        self.admin = redis.Redis.from_url(url)
        self.key = f"ef:{self.name}:dur:feed"


@pytest.fixture(scope="module")
def pipeline(redis_server: EmbeddedRedis) -> Iterator[Pipeline]:
    p = Pipeline(redis_server.url)
    assert wait_for(lambda: p.run.alive("store") and p.run.alive("gateway"), timeout=20), "the pipeline runs"
    yield p
    p.run.stop()
    p.admin.close()
    os.environ.pop("GATEWAY_TCP_PORT", None)


def _counts(p: Pipeline) -> tuple[int, int, int, int]:
    store = p.run.stats("store")
    gateway = p.run.stats("gateway")
    return store["frames_in"], store["rejected"], gateway["frames_in"], gateway["rejected"]


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 8), label="mutations")):
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)), label="cut")
    return bytes(buf[:cut]) if data.draw(st.booleans(), label="truncate") else bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.data())
def test_stream_entries_are_each_delivered_or_rejected_and_the_reader_runs_on(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    header, payload = encode(data.draw(st.sampled_from(VALID)))
    fields: dict[str, Any] = {
        "h": _mutate(data, header) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200)),
        "d": _mutate(data, bytes(payload)) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200)),
        "w": data.draw(st.text(max_size=8)),
        "q": data.draw(st.one_of(st.integers(0, 2**70).map(str), st.text(max_size=6))),
    }
    if data.draw(st.booleans()):
        fields.pop(data.draw(st.sampled_from(sorted(fields))))
    for name in data.draw(st.lists(st.text(min_size=1, max_size=4), max_size=3)):
        fields.setdefault(name, data.draw(st.binary(max_size=20)))
    before = _counts(pipeline)
    pipeline.admin.xadd(pipeline.key, fields)
    assert wait_for(lambda: sum(_counts(pipeline)[:2]) > sum(before[:2]), timeout=5), "counted"
    after = _counts(pipeline)
    assert (after[0] - before[0]) + (after[1] - before[1]) == 1, "once: delivered or rejected"
    assert pipeline.run.alive("store"), "the reader runs on"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.data())
def test_tcp_frames_are_each_delivered_or_rejected_and_the_intake_runs_on(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    frame = data.draw(st.sampled_from(VALID))
    raw = b"".join(bytes(b) for b in pack(frame))
    body = _mutate(data, raw) if data.draw(st.booleans()) else data.draw(st.binary(max_size=300))
    # Mostly a length that matches what follows (the content fuzzed): then each frame counts exactly once. Else a
    # random one: what follows the announced bytes is read as further frames, each counted too.
    framed = data.draw(st.integers(0, 9)) > 0
    length = len(body) if framed else data.draw(st.integers(0, 2**32 - 1))
    before = _counts(pipeline)
    with socket.create_connection(("127.0.0.1", pipeline.port), timeout=5) as s:
        s.sendall(hello(None, pipeline.name, "feed"))
        assert s.recv(2) == b"OK"
        s.settimeout(5)
        try:
            s.sendall(struct.pack("<I", length) + body)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):  # until the gateway is done with this connection: then all is counted
                pass
        except OSError:  # it closed the connection first (a bogus length): counted before it closed
            pass
    assert wait_for(lambda: sum(_counts(pipeline)[2:]) > sum(before[2:]), timeout=5), "counted"
    if framed:
        after = _counts(pipeline)
        assert (after[2] - before[2]) + (after[3] - before[3]) == 1, "once: delivered or rejected"
    assert pipeline.run.alive("gateway"), "the intake runs on"


def test_memory_stays_bounded_under_a_flood_of_bad_input(pipeline: Pipeline) -> None:
    me = psutil.Process()
    rss0 = me.memory_info().rss
    rng = np.random.default_rng(3)
    for i in range(2000):
        pipeline.admin.xadd(pipeline.key, {"h": rng.bytes(64), "d": rng.bytes(int(rng.integers(0, 4096))), "q": i})
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", pipeline.port), timeout=5) as s:
            s.sendall(hello(None, pipeline.name, "feed"))
            s.recv(2)
            s.sendall(struct.pack("<I", 200 << 20) + rng.bytes(1000))
    assert wait_for(lambda: pipeline.run.stats("store")["rejected"] >= 2000, timeout=30)
    grown = me.memory_info().rss - rss0
    assert grown < 64 << 20, f"grew by {grown >> 20} MiB"
    assert pipeline.run.alive("store") and pipeline.run.alive("gateway")
