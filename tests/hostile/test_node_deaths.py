"""A node that dies of an unexpected error is restarted with backoff, or fails the process non-zero; it is never
shown as up while it is not running."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from edgeflow import EdgeApp, RedisBroker
from edgeflow.errors import NodeError
from edgeflow.nodes import ConsumerNode, ProducerNode
from edgeflow.runtime.stats import StatsAggregator
from edgeflow.testing import RunningApp, wait_for

from ..e2e.conftest import Proc
from ..helpers import user_env

APP = """
import os, sys
from pathlib import Path
from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import ProducerNode, SinkNode

app = EdgeApp(os.environ["APP_NAME"], broker=RedisBroker())
tries = Path(os.environ["TRIES"])

@app.node(name="sensor", type="producer", fps=50)
class Sensor(ProducerNode):
    def configure(self):
        self.i = 0
    def produce(self):
        self.i += 1
        return {"i": self.i}

@app.node(name="store", type="sink")
class Store(SinkNode):
    def configure(self):
        n = int(tries.read_text() or 0) if tries.exists() else 0
        tries.write_text(str(n + 1))
        if n < int(os.environ["FAILURES"]):
            raise RuntimeError(f"the disk is not mounted yet (try {n + 1})")
    def process(self, data):
        with open(os.environ["RECORD"], "a") as f:
            f.write(f"{data['i']}\\n")

if __name__ == "__main__":
    app.link("sensor").to("store", qos="durable")
    app.run()
"""


def _start(tmp_path: Path, redis_url: str, app_name: str, failures: int) -> tuple[Proc, Path]:
    app = tmp_path / "main.py"
    app.write_text(textwrap.dedent(APP))
    record = tmp_path / "record.txt"
    env = user_env(REDIS_URL=redis_url, APP_NAME=app_name, TRIES=str(tmp_path / "tries"), FAILURES=str(failures),
                   RECORD=str(record))  # fmt: skip
    return Proc([str(app)], env, tmp_path / "app.log"), record


def test_a_node_whose_set_up_fails_is_restarted_and_then_runs(tmp_path: Path, redis_url: str, app_name: str) -> None:
    proc, record = _start(tmp_path, redis_url, app_name, failures=2)
    try:
        assert wait_for(lambda: record.exists() and len(record.read_text().split()) >= 20, timeout=30), proc.output()
        code, seconds = proc.stop()
    finally:
        proc.kill()
    out = proc.output()
    assert code == 0 and seconds < 5
    assert out.count("restarting it") == 2 and "the disk is not mounted yet (try 2)" in out
    ids = [int(x) for x in record.read_text().split()]
    assert ids[:20] == list(range(1, 21)), "a durable link kept every frame while the sink restarted"


@pytest.mark.slow
def test_a_node_that_keeps_dying_fails_the_process_non_zero(tmp_path: Path, redis_url: str, app_name: str) -> None:
    proc, _ = _start(tmp_path, redis_url, app_name, failures=1000)
    try:
        code = proc.p.wait(timeout=40)
    finally:
        proc.kill()
    out = proc.output()
    assert code != 0, out
    assert "died 5 times within 60 s" in out and "the disk is not mounted yet (try 5)" in out
    assert "app " in out and "stopped" in out, "the rest of the app stopped cleanly"


def test_a_replica_restarting_is_never_reported_up(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="sensor", type="producer", fps=20)
    class Sensor(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    @app.node(name="detector", type="consumer")
    class Detector(ConsumerNode):
        def configure(self) -> None:
            raise OSError("no GPU")

        def process(self, data: Any) -> Any:
            return data

    app.link("sensor").to("detector")
    aggregator = StatsAggregator(app.broker, app.describe())
    run = RunningApp(app).start()
    seen: set[str] = set()
    try:
        app.broker.connect()
        aggregator.start()
        deadline = time.monotonic() + 30
        while run._thread.is_alive() and time.monotonic() < deadline:
            nodes = {n["name"]: n for n in aggregator.nodes()}
            seen.add(nodes["detector"]["status"])
            time.sleep(0.05)
        with pytest.raises(NodeError, match=r"node 'detector' \(replica 0\) died 5 times within 60 s.*OSError: no GPU"):
            run.stop()
    finally:
        aggregator.stop()
    assert "restarting" in seen and "up" not in seen, seen


class _FlakyBroker(RedisBroker):
    """A broker whose first subscription fails once, after some reads, with an error nobody expects."""

    def __init__(self, url: str, fail_after: int) -> None:
        super().__init__(url, local_links=False)
        self.fail_after = fail_after
        self.failed = False

    def subscribe(self, links: Any, consumer: str) -> Any:
        sub = super().subscribe(links, consumer)
        if self.failed:
            return sub
        read, reads = sub.read, [0]

        def failing_read(timeout: float) -> Any:
            reads[0] += 1
            if reads[0] > self.fail_after and not self.failed:
                self.failed = True
                raise RuntimeError("a bug in the transport")
            return read(timeout)

        sub.read = failing_read  # type: ignore[method-assign]
        return sub


def test_the_counts_of_a_replica_add_up_over_its_restarts(redis_url: str, app_name: str) -> None:
    """What a reader skipped before it died and was restarted stays counted: nothing goes uncounted."""
    n = 400
    broker = _FlakyBroker(redis_url, fail_after=30)
    app = EdgeApp(app_name, broker=broker)
    got: list[int] = []

    @app.node(name="sensor", type="producer", fps=400)
    class Sensor(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i} if self.i <= n else None

    @app.node(name="slow", type="consumer")
    class Slow(ConsumerNode):
        def process(self, data: Any) -> None:
            time.sleep(0.005)  # slower than the sensor: the realtime link skips frames, and counts them
            got.append(data["i"])

    app.link("sensor").to("slow", qos="realtime", depth=1)
    with RunningApp(app) as run:
        assert wait_for(lambda: n in got, timeout=30)
        summary = run.stop()
    assert broker.failed, "the reader died once"
    slow = summary["slow"]
    assert slow["restarts"] == 1
    assert slow["dropped"] > 0 and slow["frames_in"] == len(got)
    assert slow["frames_in"] + slow["dropped"] == n, slow
