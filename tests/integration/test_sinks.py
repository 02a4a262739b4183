"""Built-in sinks in a running pipeline on a real redis-server: acknowledgements held until the commit, bad input
dead-lettered with its reason, retention by time and replay from the broker's log."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.sinks import FileSink, SQLiteSink
from edgeflow.testing import RunningApp, wait_for


def _producer(app: EdgeApp, count: int, make: Any = None, fps: float | None = None) -> None:
    @app.node(name="src", type="producer", fps=fps)
    class Src(ProducerNode):
        def configure(self) -> None:
            self.n = 0

        def produce(self) -> Any:
            if self.n >= count:
                return None
            self.n += 1
            return make(self.n) if make else {"n": self.n}


def _pending(broker: RedisBroker, group: str) -> int:
    return int(broker.client.xpending(broker.stream_key("src", "durable"), group)["pending"])


def test_a_sink_acknowledges_a_frame_only_after_the_commit_that_covers_it(
    redis_url: str, app_name: str, tmp_path: Path
) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    probe = RedisBroker(redis_url)
    probe.bind(app_name)
    seen: list[tuple[int, int]] = []  # (frames committed so far, pending in Redis at that commit)
    _producer(app, 400, lambda n: np.full((32, 32, 3), n % 256, np.uint8), fps=400)

    @app.node(name="store", type="sink", path=str(tmp_path / "f.db"), flush_frames=50, flush_seconds=5)
    class Store(SQLiteSink):
        def commit(self) -> None:
            # Every frame written since the last commit is still unacknowledged while it commits.
            seen.append((self._pending_frames, _pending(probe, "store")))
            super().commit()

    app.link("src").to("store")  # durable: the default into a sink
    assert app.links[0].qos == "durable"
    RunningApp(app).start().wait(timeout=30)
    rows = sqlite3.connect(tmp_path / "f.db").execute('SELECT frame_id FROM "src" ORDER BY frame_id').fetchall()
    assert [r[0] for r in rows] == list(range(400))
    assert len(seen) >= 8, "committed in batches of at most 50 frames"
    assert all(pending >= batch for batch, pending in seen), seen
    assert all(batch <= 50 for batch, _ in seen)
    assert _pending(probe, "store") == 0, "all acknowledged at the end"
    probe.close()


def test_a_frame_a_sink_cannot_store_is_dead_lettered_with_its_reason(
    redis_url: str, app_name: str, tmp_path: Path
) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    _producer(app, 20, lambda n: b"x" * (5000 if n == 7 else 100))

    @app.node(name="store", type="sink", path=str(tmp_path / "f.db"), max_frame_bytes=1000)
    class Store(SQLiteSink):
        pass

    app.link("src").to("store")
    summary = RunningApp(app).start().wait(timeout=30)
    assert summary["store"]["dead_letters"] == 1
    rows = sqlite3.connect(tmp_path / "f.db").execute('SELECT frame_id FROM "src" ORDER BY frame_id').fetchall()
    assert [r[0] for r in rows] == [n for n in range(20) if n != 6], "the pipeline went on"
    broker = RedisBroker(redis_url)
    broker.bind(app_name)
    (letter,) = broker.dead_letters("store")
    broker.close()
    assert letter["frame_id"] == 6
    assert "UnstorableFrameError" in letter["error"] and "max_frame_bytes=1,000" in letter["error"]
    assert "5,000 bytes" in letter["error"]


def test_file_sink_rotates_and_reads_back_every_kind(redis_url: str, app_name: str, tmp_path: Path) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    kinds = [lambda n: np.full((40, 50, 3), n, np.uint8), lambda n: {"n": n}, lambda n: b"b" * (n * 200),
             lambda n: np.arange(3000, dtype=">f8") * n]  # fmt: skip
    _producer(app, 40, lambda n: kinds[n % 4](n))

    @app.node(name="store", type="sink", path=str(tmp_path / "run"), rotate_bytes=20_000, flush_frames=5)
    class Store(FileSink):
        pass

    app.link("src").to("store")
    RunningApp(app).start().wait(timeout=30)
    segments = sorted(p for p in (tmp_path / "run").iterdir() if p.is_dir())
    assert len(segments) >= 3, "rotated by size"
    files = [f.suffix for seg in segments for f in (seg / "src").iterdir()]
    assert {".png", ".npy", ".bin"} <= set(files), "images as PNG, big arrays as .npy, big bytes as .bin"
    rec = FileSink.open_recording(str(tmp_path / "run"))
    got = list(rec.frames())
    assert [f.frame_id for _, f in got] == list(range(40))
    for _, f in got:
        n = f.frame_id + 1
        want = kinds[n % 4](n)
        if isinstance(want, np.ndarray):
            assert f.data.dtype == want.dtype and f.data.shape == want.shape and f.data.tobytes() == want.tobytes()
        else:
            assert f.data == want


def test_retained_frames_replay_from_the_broker_and_do_not_hold_the_producer_back(
    redis_url: str, app_name: str
) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    got: list[int] = []
    _producer(app, 60)

    @app.node(name="keep", type="sink")
    class Keep(SinkNode):
        def process(self, data: Any) -> None:
            got.append(data["n"])

    # max_len 10 with 60 frames kept: the cap counts what waits for a target, not what is retained.
    app.link("src").to("keep", max_len=10, retain_seconds=60)
    RunningApp(app).start().wait(timeout=30)
    assert got == list(range(1, 61))
    got.clear()
    run = RunningApp(app, ["keep"]).start()  # the replay waits for it: never more unread than max_len
    broker = RedisBroker(redis_url)
    broker.bind(app_name)
    try:
        key = broker.stream_key("src", "durable")
        assert broker.client.xlen(key) >= 55, "acknowledged frames kept for 60 s"
        counts = broker.replay_from(app.links_from("src"), 30.0)
        assert counts == {"keep": broker.client.xlen(key)}
    finally:
        broker.close()
    assert wait_for(lambda: len(got) >= counts["keep"], timeout=20)
    run.stop()
    assert got == list(range(61 - counts["keep"], 61)), "the retained frames once more, in order"


def test_sqlite_sink_stores_a_redelivered_frame_once(tmp_path: Path) -> None:
    from edgeflow.runtime.stats import NodeStats

    sink = SQLiteSink()
    sink._bind(name="s", app_name="a", device=None, replicas=1, replica=0, broker=None,  # type: ignore[arg-type]
               stats=NodeStats("s", "sink"), params={"path": str(tmp_path / "x.db")})  # fmt: skip
    sink.configure()
    for ts in (1.0, 1.0, 2.0):  # the same id twice, then the same id again from a producer that restarted
        sink.current_frame, sink.current_source = Frame(0, ts, {}, b"p"), "cam"
        sink.process(b"p")
    sink.flush()
    sink.close()
    rows = sqlite3.connect(tmp_path / "x.db").execute('SELECT frame_id, ts FROM "cam"').fetchall()
    assert sorted(rows) == [(0, 1.0), (0, 2.0)]
    assert sink.stats.extra["duplicates"] == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (this machine's tests run as root, as CI does; a user without root can't mount one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"can't mount a tmpfs for the full-disk test (it needs root, as CI runs): {done.stderr}",
                    pytrace=False)  # fmt: skip
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("sink", [SQLiteSink, FileSink])
def test_a_full_disk_is_an_error_naming_the_path_and_the_frames_wait_until_there_is_room(
    sink: type[SQLiteSink | FileSink], redis_url: str, app_name: str, small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A real full disk: a 1 MiB tmpfs fills up (ENOSPC), then grows (mount -o remount) and the sink resumes."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    _producer(app, 40, lambda n: np.random.default_rng(n).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes())
    path = small_disk / ("f.db" if sink is SQLiteSink else "run")

    @app.node(name="store", type="sink", path=str(path), flush_frames=4)
    class Store(sink):  # type: ignore[valid-type, misc]
        pass

    app.link("src").to("store", max_len=8, claim_after=1.0)
    caplog.set_level(logging.ERROR, logger="edgeflow")
    run = RunningApp(app).start()
    assert wait_for(lambda: "the disk is full writing" in caplog.text, timeout=20)
    assert str(path) in caplog.text, "the error names the path"
    time.sleep(1.0)
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    summary = run.wait(timeout=60)
    assert summary["store"]["dead_letters"] == 0, "a full disk is not the frame's fault"
    assert summary["store"]["disk_full"] >= 1
    rec = sink.open_recording(str(path))
    ids = [f.frame_id for _, f in rec.frames()]
    rec.close()
    assert sorted(ids) == list(range(40)), "every frame stored once there was room, none twice"
