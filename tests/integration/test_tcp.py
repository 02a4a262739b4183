"""The direct TCP link into a gateway: framing, tokens, hostile input, and a gateway that comes and goes."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from edgeflow.embedded import free_port
from edgeflow.frame import Frame, pack
from edgeflow.tcp import FrameSender, FrameServer
from edgeflow.tcp import hello as make_hello
from edgeflow.testing import wait_for


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Frame]] = []
        self.rejects: list[str] = []
        self.lock = threading.Lock()

    def on_frame(self, source: str, frame: Frame) -> None:
        with self.lock:
            self.frames.append((source, frame))

    def on_reject(self, source: str, why: str) -> None:
        self.rejects.append(why)


def closed_by_peer(s: socket.socket) -> bool:
    """True when the server closed the connection (a FIN, or a reset because our bytes went unread)."""
    s.settimeout(5)
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def serve(sink: Sink, **kwargs: object) -> FrameServer:
    server = FrameServer("127.0.0.1", 0, sink.on_frame, on_reject=sink.on_reject, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


def hello(token: bytes = b"", source: bytes = b"raw") -> bytes:
    return make_hello(token.decode(), "", source.decode())


def test_frames_arrive_in_order_with_their_source() -> None:
    sink = Sink()
    server = serve(sink)
    sender = FrameSender("127.0.0.1", server.port, "camera", outbox=64)
    try:
        img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        for i in range(50):
            sender.send(Frame(i, time.time(), {"i": i}, img))
            time.sleep(0.002)
        assert wait_for(lambda: len(sink.frames) == 50)
        assert [f.frame_id for _, f in sink.frames] == list(range(50))
        assert {s for s, _ in sink.frames} == {"camera"}
        np.testing.assert_array_equal(sink.frames[-1][1].data, img)
    finally:
        sender.close()
        server.stop()


def test_token_is_required_when_set() -> None:
    sink = Sink()
    server = serve(sink, token="s3cret")
    good = FrameSender("127.0.0.1", server.port, "good", token="s3cret")
    bad = FrameSender("127.0.0.1", server.port, "bad", token="hunter2-bad")
    try:
        good.send(Frame(1, 0.0, {}, b"ok"))
        bad.send(Frame(2, 0.0, {}, b"evil"))
        assert wait_for(lambda: len(sink.frames) == 1 and server.rejected >= 1, timeout=5)
        time.sleep(0.2)
        assert [s for s, _ in sink.frames] == ["good"]
        assert any("token" in r for r in sink.rejects)
        assert "hunter2" not in " ".join(sink.rejects), "the offered token is never logged"
    finally:
        good.close(timeout=0.2)
        bad.close(timeout=0.2)
        server.stop()


def test_hostile_input_is_rejected_and_the_server_keeps_serving() -> None:
    sink = Sink()
    server = serve(sink, max_frame_bytes=1 << 20)
    try:
        # Garbage instead of a hello.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert closed_by_peer(s)
        # A corrupted frame after a good hello: rejected, and the connection goes on.
        wire = b"".join(bytes(b) for b in pack(Frame(3, 0.0, {}, b"fine")))
        corrupt = b"XX" + wire[2:]
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(hello())
            assert s.recv(2) == b"OK"
            s.sendall(struct.pack("<I", len(corrupt)) + corrupt + struct.pack("<I", len(wire)) + wire)
            assert wait_for(lambda: len(sink.frames) == 1)
        # An oversized length: rejected without allocating it; the connection is closed.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(hello() + struct.pack("<I", 0xFFFFFFF0))
            assert s.recv(2) == b"OK"
            assert closed_by_peer(s)
        # A truncated frame and a vanished peer.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(hello())
            s.recv(2)
            s.sendall(struct.pack("<I", 1000) + b"EF")
        assert wait_for(lambda: server.rejected >= 3)
        assert any("over the limit" in r for r in sink.rejects)
        assert any("magic" in r for r in sink.rejects)
        # Still serving.
        sender = FrameSender("127.0.0.1", server.port, "after")
        sender.send(Frame(9, 0.0, {}, b"still here"))
        assert wait_for(lambda: any(s == "after" for s, _ in sink.frames))
        sender.close()
    finally:
        server.stop()


def test_sender_never_blocks_while_the_gateway_is_away_and_reconnects() -> None:
    port = free_port()
    sender = FrameSender("127.0.0.1", port, "camera", outbox=4)
    try:
        t0 = time.perf_counter()
        for i in range(100):
            sender.send(Frame(i, 0.0, {}, np.zeros((480, 640, 3), np.uint8)))
        assert time.perf_counter() - t0 < 1.0, "send() only queues"
        assert sender.dropped >= 95, "a bounded outbox drops its oldest frames, counted"
        sink = Sink()
        server = FrameServer("127.0.0.1", port, sink.on_frame)
        server.start()
        try:
            assert wait_for(lambda: len(sink.frames) >= 1, timeout=5)
            sender.send(Frame(1000, 0.0, {}, b"live"))
            assert wait_for(lambda: sink.frames[-1][1].frame_id == 1000, timeout=5)
            assert sender.dropped + len(sink.frames) == 101, "every frame was either delivered or counted"
        finally:
            server.stop()
    finally:
        sender.close(timeout=0.2)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1920 * 1080])
def test_sizes(size: int) -> None:
    sink = Sink()
    server = serve(sink)
    sender = FrameSender("127.0.0.1", server.port, "s")
    try:
        sender.send(Frame(1, 0.0, {}, bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)))
        assert wait_for(lambda: len(sink.frames) == 1)
        assert len(sink.frames[0][1].data) == size
    finally:
        sender.close()
        server.stop()


def test_a_producer_that_never_blocks_lets_its_sender_run() -> None:
    """A producer loop that holds the GIL (as an unthrottled `produce()` does) still gets frames to the gateway while
    it runs. Made visible by a long switch interval: before the fix the sender thread waited for it (measured on
    the benchmarks: 181 frames/s of 921,600 B at the gateway; 7,036 after)."""
    import sys

    sink = Sink()
    server = serve(sink)
    sender = FrameSender("127.0.0.1", server.port, "camera", outbox=4)
    before = sys.getswitchinterval()
    try:
        sender.send(Frame(0, time.time(), {}, b"hello"))
        assert wait_for(lambda: len(sink.frames) == 1, timeout=5), "connected"
        sys.setswitchinterval(2.0)
        arrived_during = 0
        end = time.monotonic() + 0.5
        i = 1
        while time.monotonic() < end:  # never blocks, never sleeps
            sender.send(Frame(i, time.time(), {}, b"x" * 1000))
            i += 1
        with sink.lock:
            arrived_during = len(sink.frames) - 1
        assert arrived_during > 0, "the sender thread ran while the producer did"
    finally:
        sys.setswitchinterval(before)
        sender.close()
        server.stop()
