"""Durable links against a real redis-server: at-least-once, takeover, dead letters, backpressure, trimming."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.links import Link
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.testing import RunningApp


def dur(source: str, target: str, **kw: Any) -> Link:
    return Link(source, target, "durable", "redis", **kw)


def test_fan_out_durable_trims_only_what_the_slowest_target_acknowledged(broker: Any) -> None:
    """Redis-based brokers: the durable stream keeps what any group still needs, and no more."""
    a, b = dur("imu", "a"), dur("imu", "b")
    pub = broker.publisher("imu", [a, b])
    sa, sb = broker.subscribe([a], "c"), broker.subscribe([b], "c")
    for i in range(50):
        pub.publish(Frame(i, 0.0, {}, i))
    got_a = []
    while len(got_a) < 50:
        batch = sa.read(0.05)
        got_a.extend(d.frame.frame_id for d in batch)
        sa.ack(batch)
    assert pub.trim() == 50, "b has acknowledged nothing: nothing may be trimmed"  # type: ignore[attr-defined]
    got_b = []
    while len(got_b) < 50:
        batch = sb.read(0.05)
        got_b.extend(d.frame.frame_id for d in batch)
        sb.ack(batch)
    assert got_a == got_b == list(range(50))
    assert pub.trim() <= 1  # type: ignore[attr-defined]


def test_acknowledged_entries_are_trimmed(broker: Any) -> None:
    link = dur("imu", "logger")
    pub = broker.publisher("imu", [link])
    sub = broker.subscribe([link], "c0")
    for i in range(300):
        pub.publish(Frame(i, time.time(), {}, {"i": i}))
    got: list[int] = []
    deadline = time.monotonic() + 10
    while len(got) < 300 and time.monotonic() < deadline:
        batch = sub.read(0.05)
        got.extend(d.frame.frame_id for d in batch)
        sub.ack(batch)
    assert got == list(range(300))
    assert pub.trim() <= 1, "acknowledged entries are trimmed"  # type: ignore[attr-defined]


def pipeline_app(name: str, url: str, frames: int, fail: set[int], seen: list[int], **link_kw: Any) -> EdgeApp:
    app = EdgeApp(name, broker=RedisBroker(url))

    @app.node(name="imu", type="producer")
    class Imu(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return self.i if self.i <= frames else None

    lock = threading.Lock()

    @app.node(name="logger", type="sink", replicas=2)
    class Logger(SinkNode):
        def process(self, data: Any) -> None:
            if data in fail:
                raise RuntimeError(f"cannot store {data}")
            time.sleep(0.001)
            with lock:
                seen.append(data)

    app.link("imu").to("logger", qos="durable", **link_kw)
    return app


def test_unthrottled_producer_with_backpressure_loses_nothing(redis_url: str, app_name: str) -> None:
    seen: list[int] = []
    app = pipeline_app(app_name, redis_url, 2000, set(), seen, max_len=50)
    summary = RunningApp(app).start().wait(timeout=60)
    assert sorted(seen) == list(range(1, 2001)), "every frame, once each: no duplicates without failures"
    assert summary["logger"]["frames_in"] == 2000
    assert summary["imu"]["frames_out"] == 2000


def test_failing_frames_are_retried_then_dead_lettered_and_can_be_replayed(redis_url: str, app_name: str) -> None:
    seen: list[int] = []
    fail = {5, 9}
    app = pipeline_app(app_name, redis_url, 12, fail, seen, max_attempts=3)
    summary = RunningApp(app).start().wait(timeout=30)
    assert sorted(seen) == [i for i in range(1, 13) if i not in fail]
    assert summary["logger"]["failed"] == 6, "three tries each"
    assert summary["logger"]["dead_letters"] == 2
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    broker.connect()
    letters = broker.dead_letters("logger")
    assert sorted(x["frame_id"] for x in letters) == [4, 8]  # frame ids count from 0
    assert all(x["attempts"] == 3 and "RuntimeError: cannot store" in x["error"] for x in letters)
    # Replay once the bug is fixed: the target gets them again.
    fail.clear()
    assert broker.replay_dead_letters("logger") == 2
    assert broker.dead_letters("logger") == []
    broker.close()
    seen.clear()
    RunningApp(pipeline_app(app_name, redis_url, 0, set(), seen, max_attempts=3)).start().wait(timeout=30)
    assert sorted(seen) == [5, 9]


def test_dead_letters_command_lists_and_replays(redis_url: str, app_name: str, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    app_file = tmp_path / "main.py"
    app_file.write_text(
        textwrap.dedent(f"""
        from edgeflow import EdgeApp, RedisBroker
        from edgeflow.nodes import ProducerNode, SinkNode
        app = EdgeApp({app_name!r}, broker=RedisBroker())
        @app.node(name="imu", type="producer")
        class Imu(ProducerNode):
            def configure(self): self.i = 0
            def produce(self):
                self.i += 1
                return self.i if self.i <= 3 else None
        @app.node(name="logger", type="sink")
        class Logger(SinkNode):
            def process(self, data):
                if data == 2:
                    raise ValueError("bad reading 2")
        if __name__ == "__main__":
            app.link("imu").to("logger", qos="durable", max_attempts=2)
            app.run()
    """)
    )
    env = dict(os.environ, REDIS_URL=redis_url)
    run = subprocess.run([sys.executable, str(app_file)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    cli = [sys.executable, "-m", "edgeflow.cli", "dead-letters", str(app_file), "logger"]
    listed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "from imu  frame 1  attempts 2  ValueError: bad reading 2" in listed.stdout
    replayed = subprocess.run([*cli, "--replay"], env=env, capture_output=True, text=True, timeout=60)
    assert "replayed 1 dead letter(s) to logger" in replayed.stdout
    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert "no dead letters for logger" in again.stdout


def test_dead_letters_are_bounded_in_bytes(broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dead-letter stream keeps as many letters as DEAD_MAX_BYTES holds, newest kept, besides its count cap."""
    from edgeflow.brokers.redis import subscription

    monkeypatch.setattr(subscription, "DEAD_MAX_BYTES", 2_000_000)
    link = dur("cam", "archive", max_attempts=1)
    pub = broker.publisher("cam", [link])
    sub = broker.subscribe([link], "c0")
    for i in range(60):
        pub.publish(Frame(i, 0.0, {}, bytes([i % 256]) * 100_000))
    buried = 0
    while buried < 60:
        batch = sub.read(0.2)
        assert batch, f"only {buried} frames came"
        for d in batch:
            sub.dead_letter(d, "the disk said no")
            buried += 1
    letters = broker.dead_letters("archive", count=1000)
    assert len(letters) == 19, "2 MB of letters of 100 kB and their header"
    assert [x["frame_id"] for x in letters] == list(range(41, 60)), "the newest are kept"
    data = getattr(broker.data_plane, "client", None)
    if data is not None:  # a data plane keeps the letters' payloads: no more copies than letters
        assert len(list(data.scan_iter(match=broker.key("pl", "dead", "*")))) == 19
