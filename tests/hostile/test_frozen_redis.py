"""A Redis that stops answering (SIGSTOP: a hung server, or a partition with no reset): outages are logged, and
SIGTERM still ends every process with status 0 within 5 s, whether it comes while running or while starting."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeflow.embedded import EmbeddedRedis, find_server_binary
from edgeflow.testing import wait_for

from ..e2e.conftest import Proc
from ..helpers import user_env

APP = """
import os
from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import ProducerNode, SinkNode, ConsumerNode

app = EdgeApp(os.environ["APP_NAME"], broker=RedisBroker())

@app.node(name="sensor", type="producer", fps=50)
class Sensor(ProducerNode):
    def configure(self):
        self.i = 0
    def produce(self):
        self.i += 1
        return {"i": self.i}

@app.node(name="store", type="sink")
class Store(SinkNode):
    def process(self, data):
        with open(os.environ["RECORD"], "a") as f:
            f.write(f"{data['i']}\\n")

@app.node(name="viewer", type="consumer")
class Viewer(ConsumerNode):
    def process(self, data):
        return None

if __name__ == "__main__":
    app.link("sensor").to("store", qos="durable")
    app.link("sensor").to("viewer")
    app.run()
"""


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, to freeze with SIGSTOP; thawed and stopped at the end."""
    binary = find_server_binary()
    assert binary is not None, "apt-get install redis-server"
    server = EmbeddedRedis(binary).start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def _freeze(server: EmbeddedRedis) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def _app(tmp_path: Path, server: EmbeddedRedis, app_name: str) -> tuple[Proc, Path]:
    app = tmp_path / "main.py"
    app.write_text(textwrap.dedent(APP))
    record = tmp_path / "record.txt"
    env = user_env(REDIS_URL=server.url, APP_NAME=app_name, RECORD=str(record))
    return Proc([str(app)], env, tmp_path / "app.log"), record


def test_sigterm_ends_a_running_app_within_5_s_while_redis_is_frozen(
    tmp_path: Path, own_redis: EmbeddedRedis, app_name: str
) -> None:
    proc, record = _app(tmp_path, own_redis, app_name)
    try:
        assert wait_for(lambda: record.exists() and len(record.read_text().split()) >= 10, timeout=20), proc.output()
        _freeze(own_redis)
        # Long enough for every connection to give up on a read (socket_timeout 5 s) and say so.
        assert wait_for(lambda: proc.output().count("broker unreachable") >= 2, timeout=15), proc.output()
        code, seconds = proc.stop(signal.SIGTERM, within=5.0)
    finally:
        proc.kill()
    assert code == 0, proc.output()
    assert seconds < 5.0, f"{seconds:.1f} s to stop"
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_ends_the_app_at_once_and_cleanly(
    tmp_path: Path, own_redis: EmbeddedRedis, app_name: str, sig: signal.Signals
) -> None:
    _freeze(own_redis)  # the app's first connect now waits on a server that never answers
    proc, _ = _app(tmp_path, own_redis, app_name)
    try:
        time.sleep(1.5)
        assert proc.p.poll() is None, proc.output()
        code, seconds = proc.stop(sig, within=5.0)
    finally:
        proc.kill()
    assert code == 0, proc.output()
    assert seconds < 2.0, f"{seconds:.1f} s to stop"
    out = proc.output()
    assert "Traceback" not in out and "stopped while it was starting" in out, out
