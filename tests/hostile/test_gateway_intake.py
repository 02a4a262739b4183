"""The gateway's TCP intake against hostile peers: bounded memory before and after the hello, deadlines, caps on
connections and sources, other apps refused, and an accept loop that outlives a full file table."""

from __future__ import annotations

import resource
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from edgeflow.embedded import free_port
from edgeflow.frame import Frame, pack
from edgeflow.tcp import FrameSender, FrameServer, hello
from edgeflow.testing import wait_for

from ..e2e.conftest import Proc
from ..helpers import user_env


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Frame]] = []
        self.rejects: list[str] = []
        self.lock = threading.Lock()

    def on_frame(self, source: str, frame: Frame) -> None:
        with self.lock:
            self.frames.append((source, frame))

    def on_reject(self, who: str, why: str) -> None:
        with self.lock:
            self.rejects.append(why)


def serve(sink: Sink, **kwargs: Any) -> FrameServer:
    server = FrameServer("127.0.0.1", 0, sink.on_frame, on_reject=sink.on_reject, **kwargs)
    server.start()
    return server


def connect(port: int, *, token: str | None = None, app: str = "robot", source: str = "cam") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(hello(token, app, source))
    return s


def refusal(s: socket.socket) -> str:
    """The reason a refusing gateway gives after its hello's NO."""
    head = s.recv(4)
    assert head[:2] == b"NO", head
    (n,) = struct.unpack("<H", head[2:4])
    return s.recv(n).decode()


def closed(s: socket.socket, within: float = 5.0) -> bool:
    s.settimeout(within)
    try:
        while True:
            if s.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_hello_must_carry_the_token_the_app_and_a_linked_source() -> None:
    sink = Sink()
    server = serve(sink, token="s3cret", app="robot", sources={"cam", "det"})
    try:
        cases = {
            "wrong or missing token": dict(token="nope"),
            "it belongs to app 'other', this gateway to 'robot'": dict(token="s3cret", app="other"),
            "topic 'evil' is not linked into this gateway": dict(token="s3cret", source="evil"),
            "is not a valid name": dict(token="s3cret", source="cam\nFAKE LOG LINE"),
        }
        for why, kw in cases.items():
            with connect(server.port, **kw) as s:
                assert why in refusal(s)
        with connect(server.port, token="s3cret") as s:
            assert s.recv(2) == b"OK"
            s.sendall(b"".join(bytes(b) for b in [struct.pack("<I", 0)]))  # an empty frame: rejected, kept open
        assert wait_for(lambda: server.rejected >= 5)
        assert not any("\n" in r for r in sink.rejects), "a name from the wire can't forge a log line"
        old = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        old.sendall(struct.pack("<4sBHH", b"EFGW", 1, 0, 3) + b"cam")  # a sender of the previous protocol
        assert closed(old)
        old.close()
        assert any("protocol version 1" in r for r in sink.rejects)
    finally:
        server.stop()


def test_slow_and_idle_peers_are_closed_and_counted() -> None:
    sink = Sink()
    server = serve(sink, hello_timeout=0.5, frame_timeout=1.0, idle_timeout=1.0)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))  # never says hello
        idle = connect(server.port)
        assert idle.recv(2) == b"OK"  # says hello, then nothing
        drip = connect(server.port)
        assert drip.recv(2) == b"OK"
        drip.sendall(struct.pack("<I", 1000) + b"EF")
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 4:
                time.sleep(0.3)
                drip.sendall(b"\x00")  # a byte now and then: never idle, never done
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - t0 < 3, "the frame's deadline closed it"
        assert closed(silent) and closed(idle) and closed(drip)
        for s in (silent, idle, drip):
            s.close()
        assert wait_for(lambda: server.rejected >= 3)
        reasons = " | ".join(sink.rejects)
        assert "no complete hello within 0.5 s" in reasons and "idle for 1 s" in reasons, reasons
        assert "a frame of 1000 bytes did not arrive in time" in reasons, reasons
        sender = FrameSender("127.0.0.1", server.port, "after")
        sender.send(Frame(1, 0.0, {}, b"still serving"))
        assert wait_for(lambda: len(sink.frames) == 1)
        sender.close()
    finally:
        server.stop()


def test_connections_are_capped_overall_and_per_source() -> None:
    sink = Sink()
    server = serve(sink, max_connections=8, max_per_source=3)
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            held.append(connect(server.port, source="cam"))
            assert held[-1].recv(2) == b"OK"
        with connect(server.port, source="cam") as fourth:
            assert "more than 3 connections of 'cam'" in refusal(fourth)
        for i in range(5):
            held.append(connect(server.port, source=f"s{i}"))
            assert held[-1].recv(2) == b"OK"
        with socket.create_connection(("127.0.0.1", server.port)) as ninth:
            assert closed(ninth)
        assert wait_for(lambda: any("too many connections (at most 8)" in r for r in sink.rejects))
    finally:
        for s in held:
            s.close()
        server.stop()


def test_many_new_source_names_leave_the_topics_bounded() -> None:
    sink = Sink()
    server = serve(sink, max_sources=16)
    try:
        for i in range(40):
            with connect(server.port, source=f"t{i}") as s:
                answer = s.recv(2)
                if answer == b"OK":
                    s.sendall(b"".join(bytes(b) for b in [struct.pack("<I", 0)]))
        assert len(server._seen_sources) == 16
        assert sum("more than 16 different sources" in r for r in sink.rejects) == 24
    finally:
        server.stop()


GATEWAY_APP = """
import os
from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import GatewayNode, ProducerNode

app = EdgeApp("robot", broker=RedisBroker())

@app.node(name="cam", type="producer", fps=20)
class Cam(ProducerNode):
    def produce(self):
        return b"x" * 1000

@app.node(name="gateway", type="gateway")
class Gateway(GatewayNode):
    pass

if __name__ == "__main__":
    app.link("cam").to("gateway")
    app.run()
"""


def _gateway(tmp_path: Path, redis_url: str, port: int, **env: str) -> Proc:
    app = tmp_path / "main.py"
    app.write_text(textwrap.dedent(GATEWAY_APP))
    return Proc([str(app), "--node", "gateway"], user_env(REDIS_URL=redis_url, GATEWAY_TCP_PORT=str(port), **env),
                tmp_path / "gateway.log")  # fmt: skip


def test_declared_huge_frames_dripping_in_leave_the_gateways_memory_bounded(tmp_path: Path, redis_url: str) -> None:
    """The red-team case: 8 connections each say hello, announce 256 MiB and drip a byte a second. Memory used to
    grow by 2 GiB; now each holds what arrived (at most its first 1 MiB buffer)."""
    port = free_port()
    proc = _gateway(tmp_path, redis_url, port)
    try:
        assert wait_for(lambda: "receives frames on tcp" in proc.output(), timeout=20), proc.output()
        rss0 = psutil.Process(proc.p.pid).memory_info().rss
        drippers = []
        for _ in range(8):
            s = connect(port, app="robot", source="cam")
            assert s.recv(2) == b"OK"
            s.sendall(struct.pack("<I", 256 << 20) + b"EF")
            drippers.append(s)
        for _ in range(4):
            time.sleep(0.5)
            for s in drippers:
                s.sendall(b"\x00")
        grown = psutil.Process(proc.p.pid).memory_info().rss - rss0
        assert grown < 48 << 20, f"the gateway grew by {grown >> 20} MiB"
        for s in drippers:
            s.close()
        code, _ = proc.stop()
        assert code == 0
    finally:
        proc.kill()


def test_the_intake_outlives_a_full_file_table(tmp_path: Path, redis_url: str) -> None:
    """With `ulimit -n 256`, 300 idle connections once killed the accept loop for good, silently. The intake
    now holds 64 connections at most, so the limit here is set below what 64 connections need."""
    port = free_port()
    app = tmp_path / "main.py"
    app.write_text(textwrap.dedent(GATEWAY_APP))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (60, 60))

    log = (tmp_path / "gateway.log").open("wb")
    env = user_env(REDIS_URL=redis_url, GATEWAY_TCP_PORT=str(port))
    proc = subprocess.Popen([sys.executable, str(app), "--node", "gateway"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, preexec_fn=limit)  # fmt: skip
    crowd: list[socket.socket] = []
    output = tmp_path / "gateway.log"
    try:
        assert wait_for(lambda: "receives frames on tcp" in output.read_text(), timeout=20), output.read_text()
        for _ in range(100):
            try:
                crowd.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        assert wait_for(lambda: "can't accept connections" in output.read_text(), timeout=10), output.read_text()
        for s in crowd:
            s.close()
        crowd.clear()
        sink_seen = wait_for(lambda: "accepts connections again" in output.read_text(), timeout=90)
        assert sink_seen, output.read_text()[-3000:]
        with connect(port, app="robot", source="cam") as s:
            assert s.recv(2) == b"OK", "new senders are served again"
        frame = b"".join(bytes(b) for b in pack(Frame(1, 0.0, {}, b"ok")))
        with connect(port, app="robot", source="cam") as s:
            assert s.recv(2) == b"OK"
            s.sendall(struct.pack("<I", len(frame)) + frame)
    finally:
        for s in crowd:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert proc.returncode == 0


@pytest.mark.parametrize("held", ["tcp", "http"])
def test_a_taken_port_fails_the_gateway_process_naming_the_setting(tmp_path: Path, redis_url: str, held: str) -> None:
    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    free = free_port()
    ports = {"GATEWAY_TCP_PORT": str(taken if held == "tcp" else free)}
    if held == "http":
        app = tmp_path / "main.py"
        app.write_text(textwrap.dedent(GATEWAY_APP.replace(
            "class Gateway(GatewayNode):\n    pass",
            "class Gateway(GatewayNode):\n    def configure(self):\n        self.add_interface('web')",
        )))  # fmt: skip
        env = user_env(REDIS_URL=redis_url, GATEWAY_HTTP_PORT=str(taken), **ports)
        proc = Proc([str(app), "--node", "gateway"], env, tmp_path / "gw.log")
    else:
        proc = _gateway(tmp_path, redis_url, taken)
    try:
        code = proc.p.wait(timeout=30)
    finally:
        proc.kill()
        blocker.close()
    out = proc.output()
    assert code != 0, out
    assert ("GATEWAY_TCP_PORT" if held == "tcp" else "GATEWAY_HTTP_PORT") in out and str(taken) in out, out
