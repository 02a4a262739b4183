"""Sinks as real processes on a real redis-server: SIGKILL mid-stream loses and doubles nothing; a replay gives
back the live run bit for bit; `edgeflow record` and `edgeflow replay --from-broker` from the command line."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from edgeflow import RedisBroker
from edgeflow.plugins import get_plugin_manager
from edgeflow.sinks import sink_for
from edgeflow.testing import wait_for

from .conftest import APPS, Proc, read_records, report

APP = str(APPS / "recorder.py")
EDGEFLOW = [sys.executable, "-m", "edgeflow.cli"]
pytestmark = pytest.mark.slow

# sink -> the path it writes
PATHS = {"sqlite": "run.db", "file": "run/", "mcap": "run.mcap"}


@pytest.fixture(autouse=True)
def _mcap_plugin() -> object:
    """The test process reads MCAP recordings back: it registers the plugin (its subprocesses load it anyway)."""
    from edgeflow_mcap import plugin

    pm = get_plugin_manager()
    pm.register(plugin, name="mcap-test")
    yield
    pm.unregister(name="mcap-test")


def stored(path: str) -> list[tuple[str, int]]:
    """The (source, frame_id) of every frame a recording holds, read back through its sink's reader."""
    _, cls = sink_for(path)
    rec = cls.open_recording(path)
    try:
        return [(source, frame.frame_id) for source, frame in rec.frames()]
    finally:
        rec.close()


def stored_so_far(path: str) -> int:
    """How many frames a recording being written holds so far (0 before it exists or has a readable header)."""
    try:
        return len(stored(path))
    except Exception:  # the sink is writing it: a file not made yet, or its first bytes still on their way
        return 0


def unacknowledged(broker: RedisBroker) -> int:
    """How many camera frames the store group holds unacknowledged on its durable link."""
    try:
        return int(broker.client.xpending(broker.stream_key("camera", "durable"), "store")["pending"])
    except redis.ResponseError:  # the group is not made yet
        return 0


def checks(env: dict[str, str]) -> dict[int, tuple[str, ...]]:
    return {int(r[1]): tuple(r[2:6]) for r in read_records(env) if r[0] == "check"}


@pytest.mark.parametrize("sink", ["sqlite", "file", "mcap"])
def test_sigkill_of_a_sink_twice_mid_stream_then_a_restart_stores_every_frame_exactly_once(
    sink: str, env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    path = str(tmp_path / PATHS[sink])
    env.update(SINK=sink, STORE=path, FRAMES="300", FPS="100", CLAIM_AFTER="1.0")
    store = Proc([APP, "--node", "store"], env, tmp_path / "store1.log")
    procs.append(store)
    stores = [store]
    probe = RedisBroker(env["REDIS_URL"])
    probe.bind(env["APP_NAME"])
    time.sleep(1.5)
    camera = Proc([APP, "--node", "camera"], env, tmp_path / "camera.log")
    procs.append(camera)
    for n in (2, 3):
        # Kill it once it stores frames (a slow start on a loaded machine must not make the kill come too early),
        # while it holds frames it has not acknowledged: mid-batch.
        before = stored_so_far(path)
        assert wait_for(lambda b=before: stored_so_far(path) >= b + 20, timeout=30), store.output()
        assert wait_for(lambda: unacknowledged(probe) > 0, timeout=10, interval=0.002), store.output()
        store.p.send_signal(signal.SIGKILL)  # mid-batch: written, not committed, not acknowledged
        store.p.wait()
        store = Proc([APP, "--node", "store"], env, tmp_path / f"store{n}.log")
        procs.append(store)
        stores.append(store)
    probe.close()
    assert camera.p.wait(timeout=30) == 0
    # The frames the killed ones held come again once claim_after passes; the last process stores them.
    assert wait_for(lambda: len(set(stored(path))) >= 300, timeout=40), store.output()
    code, _ = store.stop()
    assert code == 0, store.output()
    got = stored(path)
    counts = collections.Counter(fid for _, fid in got)
    report(f"SIGKILL of a {sink} sink twice mid-stream (durable)", sent=300, stored=len(got),
           lost=300 - len(counts), duplicated=sum(c - 1 for c in counts.values()))  # fmt: skip
    assert sorted(counts) == list(range(300)), "every frame on disk (ids count from 0)"
    assert max(counts.values()) == 1, "and only once"
    assert any("took over" in p.output() for p in stores), "the kills left frames unacknowledged, delivered again"


@pytest.mark.parametrize("sink", ["sqlite", "file", "mcap"])
def test_a_replay_gives_what_the_live_run_gave_bit_for_bit(
    sink: str, env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    path = str(tmp_path / PATHS[sink])
    env.update(SINK=sink, STORE=path, FRAMES="60", FPS="60")
    live = Proc([APP], env, tmp_path / "live.log")
    procs.append(live)
    assert live.p.wait(timeout=40) == 0, live.output()
    made = checks(env)
    assert sorted(made) == list(range(60))
    assert len(stored(path)) == 60
    Path(env["RECORD"]).unlink()
    check = Proc([APP, "--node", "check"], env, tmp_path / "check.log")
    procs.append(check)
    time.sleep(1.0)
    t0 = time.monotonic()
    done = subprocess.run([*EDGEFLOW, "replay", path, APP, "--topics", "camera"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 60 frame(s)" in done.stdout
    assert wait_for(lambda: len(checks(env)) >= 60, timeout=20), check.output()
    again = checks(env)
    same = {k: v[:3] for k, v in again.items()} == {k: v[:3] for k, v in made.items()}
    assert same, "same ids, same dtype and shape, same bytes (sha256)"
    assert all(v[3] != "-" for v in again.values()), "the original timestamp is kept in meta"
    assert took >= 0.8, "at the recorded pace: 60 frames made at 60/s take about a second"
    check.stop()


def test_edgeflow_record_keeps_every_frame_of_a_durable_topic(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    out = str(tmp_path / "rec.mcap")
    env.update(FRAMES="150", FPS="150")
    recorder = Proc(["-m", "edgeflow.cli", "record", APP, "-o", out, "--topics", "camera", "--seconds", "30"], env,
                    tmp_path / "record.log")  # fmt: skip
    procs.append(recorder)
    time.sleep(2.0)
    camera = Proc([APP, "--node", "camera"], env, tmp_path / "camera.log")
    procs.append(camera)
    assert camera.p.wait(timeout=30) == 0
    time.sleep(1.5)
    code, _ = recorder.stop(signal.SIGINT)
    assert code == 0, recorder.output()
    assert "recorded 150 frame(s)" in recorder.output(), recorder.output()
    got = stored(out)
    assert sorted(fid for _, fid in got) == list(range(150))
    assert {s for s, _ in got} == {"camera"}


def test_replay_from_the_broker_hands_retained_frames_to_a_target_once_more(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    env.update(FRAMES="40", FPS="100", SINK="sqlite", STORE=str(tmp_path / "run.db"))
    check = Proc([APP, "--node", "check"], env, tmp_path / "check.log")
    procs.append(check)
    time.sleep(1.0)
    camera = Proc([APP, "--node", "camera"], env, tmp_path / "camera.log")
    procs.append(camera)
    assert camera.p.wait(timeout=30) == 0
    assert wait_for(lambda: len(read_records(env)) >= 40, timeout=20), check.output()
    first = checks(env)
    done = subprocess.run([*EDGEFLOW, "replay", "--from-broker", APP, "camera", "--since", "60s", "--to", "check"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 40 frame(s) of camera from the last 60s to check" in done.stdout
    assert wait_for(lambda: len(read_records(env)) >= 80, timeout=20), check.output()
    lines = [r for r in read_records(env) if r[0] == "check"]
    assert len(lines) == 80
    assert checks(env) == first, "the same frames, bit for bit, a second time"
    check.stop()
