"""Fault injection with real processes and real redis-servers: nothing is lost on durable links.

Each case reports frames sent, received, lost and duplicated and the time to recover (see
docs/reliability.md). Lost must be 0 for every durable case.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeflow.embedded import EmbeddedRedis, free_port
from edgeflow.testing import wait_for

from .conftest import APPS, Proc, read_records, report

APP = str(APPS / "durable.py")


def stored(env: dict[str, str], what: str = "store") -> list[int]:
    return [int(r[1]) for r in read_records(env) if r[0] == what]


def tally(case: str, sent: int, got: list[int], **extra: object) -> dict[str, object]:
    unique = set(got)
    figures: dict[str, object] = {
        "sent": sent,
        "received": len(got),
        "lost": len(set(range(1, sent + 1)) - unique),
        "duplicated": len(got) - len(unique),
        **extra,
    }
    report(case, **figures)
    return figures


def test_kill_9_one_of_two_replicas_mid_stream(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    env.update(FRAMES="400", FPS="200", WORK_SECONDS="0.004", CLAIM_AFTER="1.0")
    a = Proc([APP, "--node", "store", "--replicas", "1"], env, tmp_path / "a.log")
    b = Proc([APP, "--node", "store", "--replicas", "1"], env, tmp_path / "b.log")
    double = Proc([APP, "--node", "double"], env, tmp_path / "double.log")
    procs.extend([a, b, double])
    time.sleep(1.0)
    producer = Proc([APP, "--node", "numbers"], env, tmp_path / "numbers.log")
    procs.append(producer)
    assert wait_for(lambda: len(stored(env)) > 100, timeout=30), a.output()
    by_pid = {r[2] for r in read_records(env)}
    assert str(a.p.pid) in by_pid and str(b.p.pid) in by_pid, "both replicas took work"
    a.p.kill()  # SIGKILL: no chance to acknowledge what it holds
    killed_at = time.time()
    a.p.wait()
    assert producer.p.wait(timeout=30) == 0
    assert wait_for(lambda: set(stored(env)) >= set(range(1, 401)), timeout=30), b.output()
    done_at = max(float(r[3]) for r in read_records(env) if r[0] == "store")
    figures = tally("kill -9 one of two replicas (durable)", 400, stored(env),
                    recover_s=round(done_at - killed_at, 2))  # fmt: skip
    assert figures["lost"] == 0
    assert "took over frame" in b.output() or figures["duplicated"] == 0


@pytest.fixture
def aof_redis(tmp_path: Path) -> EmbeddedRedis:
    server = EmbeddedRedis(port=free_port(), extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    return server.start()


def test_redis_stops_and_comes_back_with_aof(
    env: dict[str, str], procs: list[Proc], tmp_path: Path, aof_redis: EmbeddedRedis
) -> None:
    env.update(REDIS_URL=aof_redis.url, FRAMES="300", FPS="60", WORK_SECONDS="0")
    app = Proc([APP], env, tmp_path / "app.log")
    procs.append(app)
    try:
        assert wait_for(lambda: len(stored(env)) > 60, timeout=30), app.output()
        aof_redis.terminate()
        down_at = time.time()
        time.sleep(3.0)
        aof_redis.start()  # same port, same folder: the AOF brings the streams back
        up_at = time.time()
        assert wait_for(lambda: set(stored(env)) >= set(range(1, 301)), timeout=60), app.output()
        after = [float(r[3]) for r in read_records(env) if r[0] == "store" and float(r[3]) > up_at]
        live_after = [int(r[1]) for r in read_records(env) if r[0] == "live" and float(r[3]) > up_at]
        figures = tally("Redis stopped 3 s and restarted with AOF (durable)", 300, stored(env),
                        recover_s=round(min(after) - up_at, 2) if after else None,
                        outage_s=round(up_at - down_at, 2))  # fmt: skip
        assert figures["lost"] == 0
        assert live_after, "the realtime link resumed with new frames"
        log = app.output()
        assert log.count("broker unreachable") <= 6, "one log line per outage and node, not one per frame"
        assert "Traceback" not in log
        code, _ = app.stop()
        assert code == 0
    finally:
        aof_redis.stop()


def test_gateway_stops_and_restarts_while_producers_keep_their_pace(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    env.update(FPS="50")
    gw = Proc([APP, "--node", "gateway"], env, tmp_path / "gw1.log")
    producer = Proc([APP, "--node", "numbers"], env, tmp_path / "numbers.log")
    procs.extend([gw, producer])
    assert wait_for(lambda: len(stored(env, "gateway")) > 25, timeout=20), gw.output()
    assert gw.stop()[0] == 0
    last_before = max(stored(env, "gateway"))
    down_at = time.time()
    time.sleep(2.0)
    gw2 = Proc([APP, "--node", "gateway"], env, tmp_path / "gw2.log")
    procs.append(gw2)
    assert wait_for(lambda: max(stored(env, "gateway")) > last_before + 10, timeout=20), gw2.output()
    first_after = min(n for n in stored(env, "gateway") if n > last_before)
    back_at = min(float(r[3]) for r in read_records(env) if r[0] == "gateway" and int(r[1]) == first_after)
    produced_meanwhile = first_after - last_before
    figures = {
        "outage_s": round(back_at - down_at, 2),
        "frames_produced_during_outage": produced_meanwhile,
        "expected_at_50fps": round(50 * (back_at - down_at)),
    }
    report("gateway stopped 2 s and restarted (realtime)", **figures)
    # The producer never waited for the gateway: its frame numbers advanced at its own pace meanwhile.
    assert produced_meanwhile >= 0.7 * 50 * (back_at - down_at)
    assert producer.p.poll() is None
    assert producer.stop()[0] == 0


@pytest.mark.parametrize("node", ["numbers", "double", "store", "live", "gateway"])
def test_sigterm_stops_every_node_type_within_5s(
    env: dict[str, str], procs: list[Proc], tmp_path: Path, node: str
) -> None:
    env.update(FPS="50")
    others = [Proc([APP, "--node", n], env, tmp_path / f"{n}.log") for n in ("numbers", "double", "store", "live",
                                                                          "gateway") if n != node]  # fmt: skip
    procs.extend(others)
    target = Proc([APP, "--node", node], env, tmp_path / "target.log")
    procs.append(target)
    what = {"numbers": "live", "double": "store", "store": "store", "live": "live", "gateway": "gateway"}[node]
    assert wait_for(lambda: len(stored(env, what)) > 10, timeout=20), target.output()
    code, took = target.stop(signal.SIGTERM)
    assert code == 0, target.output()
    assert took < 5.0
    report(f"SIGTERM to {node}", exit_code=code, stop_s=round(took, 2))


def test_sigterm_finishes_and_acknowledges_the_frame_in_hand(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    env.update(FRAMES="30", FPS="100", WORK_SECONDS="0.4", CLAIM_AFTER="0.5")
    first = Proc([APP, "--node", "store", "--replicas", "1"], env, tmp_path / "s1.log")
    double = Proc([APP, "--node", "double"], env, tmp_path / "double.log")
    producer = Proc([APP, "--node", "numbers"], env, tmp_path / "numbers.log")
    procs.extend([first, double, producer])
    assert wait_for(lambda: len(stored(env)) >= 3, timeout=20), first.output()
    code, took = first.stop(signal.SIGTERM)
    assert code == 0 and took < 5.0
    done_by_first = stored(env)
    second = Proc([APP, "--node", "store", "--replicas", "1"], env, tmp_path / "s2.log")
    procs.append(second)
    assert wait_for(lambda: set(stored(env)) >= set(range(1, 31)), timeout=40), second.output()
    got = stored(env)
    figures = tally("SIGTERM mid-frame, another replica resumes (durable)", 30, got)
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0, "the frame in hand was finished and acknowledged, not redone"
    assert len(done_by_first) >= 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=2048))
def test_fuzz_the_gateway_tcp_intake(data: bytes) -> None:
    import socket
    import struct

    from edgeflow.tcp import HELLO_MAGIC, FrameServer

    got: list[object] = []
    server = FrameServer("127.0.0.1", 0, lambda s, f: got.append(f), max_frame_bytes=1 << 16)
    server.start()
    try:
        for prefix in (b"", struct.pack("<4sBHH", HELLO_MAGIC, 1, 0, 1) + b"x"):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                try:
                    s.sendall(prefix + data)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(2)
                    while s.recv(4096):
                        pass
                except OSError:
                    pass  # reset by the server: a fine way to refuse garbage
        # The server survived and still accepts a well-formed frame.
        from edgeflow.frame import Frame
        from edgeflow.tcp import FrameSender

        sender = FrameSender("127.0.0.1", server.port, "ok")
        sender.send(Frame(1, 0.0, {}, b"fine"))
        assert wait_for(lambda: any(getattr(f, "data", None) == b"fine" for f in got), timeout=5)
        sender.close()
    finally:
        server.stop()
