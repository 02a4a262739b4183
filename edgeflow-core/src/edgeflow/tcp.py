"""The direct link into a gateway: length-prefixed frames over TCP.

A sender opens one connection per source, says hello (magic, version, token, source name) and then
writes `u32 length | frame`. Sends never block the node: frames wait in a small outbox that drops its
oldest frame, counted, while the gateway is slow or away.
"""

from __future__ import annotations

import hmac
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from .backoff import Backoff
from .errors import FrameError
from .frame import Buffer, Frame, frame_size, pack, restamp, unpack
from .tracing import SENT

__all__ = ["FrameSender", "FrameServer"]

log = logging.getLogger("edgeflow.tcp")
HELLO_MAGIC = b"EFGW"
PROTOCOL_VERSION = 1
_LEN = struct.Struct("<I")
_HELLO = struct.Struct("<4sBHH")  # magic, version, token length, source length
_MAX_HELLO_FIELD = 1024


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return buf


class FrameSender:
    """Sends one source's frames to a gateway from a background thread; `send()` never blocks."""

    def __init__(self, host: str, port: int, source: str, token: str | None = None, outbox: int = 4) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.token = token
        self.dropped = 0
        self.sent = 0
        self._outbox: deque[list[memoryview | bytes | bytearray]] = deque()
        self._limit = outbox
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"edgeflow-tcp-{source}", daemon=True)
        self._thread.start()

    def send(self, frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> None:
        """Queue `frame` for the gateway; when the outbox is full its oldest frame is dropped and counted."""
        buffers = pack(frame, encoded)
        message: list[memoryview | bytes | bytearray] = [_LEN.pack(frame_size(buffers)), *buffers]
        with self._cond:
            if len(self._outbox) >= self._limit:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append(message)
            self._cond.notify()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=3.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        token = (self.token or "").encode()
        name = self.source.encode()
        sock.sendall(_HELLO.pack(HELLO_MAGIC, PROTOCOL_VERSION, len(token), len(name)) + token + name)
        answer = _recv_exact(sock, 2)
        if answer is None or bytes(answer) != b"OK":
            sock.close()
            raise ConnectionRefusedError("the gateway refused the token; set EDGEFLOW_TOKEN to the gateway's token")
        sock.settimeout(10.0)
        return sock

    def _run(self) -> None:
        sock: socket.socket | None = None
        backoff = Backoff(0.05, 1.0)
        down_since: float | None = None
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if self._closed and not self._outbox:
                    break
                # Taken out while it is sent, so that send() can't count it dropped and have it arrive too.
                message = self._outbox.popleft()
            try:
                if sock is None:
                    sock = self._connect()
                    if down_since is not None:
                        log.info("%s: connected to the gateway at %s:%d again", self.source, self.host, self.port)
                    down_since = None
                    backoff.reset()
                # Its trace's last stamp becomes the time it really goes on the wire, after the outbox.
                self._send_all(sock, [message[0], restamp(message[1], SENT, time.time()), *message[2:]])
                self.sent += 1
            except OSError as exc:
                with self._cond:
                    if len(self._outbox) < self._limit:
                        self._outbox.appendleft(message)  # sent again, whole, on the next connection
                    else:
                        self.dropped += 1
                if sock is not None:
                    sock.close()
                    sock = None
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "%s: can't send to the gateway at %s:%d (%s); retrying, frames wait in a bounded outbox",
                        self.source,
                        self.host,
                        self.port,
                        exc,
                    )
                with self._cond:
                    if self._closed:
                        break
                    self._cond.wait(backoff.failed())
        if sock is not None:
            sock.close()

    @staticmethod
    def _send_all(sock: socket.socket, message: list[memoryview | bytes | bytearray]) -> None:
        views = [memoryview(b).cast("B") for b in message]
        while views:
            sent = sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for up to `timeout` seconds), then close."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


class FrameServer:
    """Accepts frames from nodes; calls `on_frame(source, frame)` for each valid one."""

    def __init__(
        self,
        host: str,
        port: int,
        on_frame: Callable[[str, Frame], None],
        *,
        token: str | None = None,
        max_frame_bytes: int = 256 * 1024 * 1024,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.on_reject = on_reject
        self.token = token
        self.max_frame_bytes = max_frame_bytes
        self.rejected = 0
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="edgeflow-gw-accept", daemon=True)

    def start(self) -> None:
        """Start accepting connections."""
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, addr), name="edgeflow-gw-conn", daemon=True).start()

    def _reject(self, source: str, why: str) -> None:
        self.rejected += 1
        log.warning("gateway intake: rejected input from %s: %s", source, why)
        if self.on_reject is not None:
            self.on_reject(source, why)

    def _hello(self, conn: socket.socket, peer: str) -> str | None:
        conn.settimeout(5.0)
        head = _recv_exact(conn, _HELLO.size)
        if head is None:
            return None
        magic, version, tlen, slen = _HELLO.unpack(head)
        if magic != HELLO_MAGIC or version != PROTOCOL_VERSION or tlen > _MAX_HELLO_FIELD or slen > _MAX_HELLO_FIELD:
            self._reject(peer, f"bad hello (magic {bytes(magic)!r}, version {version})")
            return None
        rest = _recv_exact(conn, tlen + slen)
        if rest is None:
            return None
        token, source = bytes(rest[:tlen]), bytes(rest[tlen:]).decode("utf-8", "replace")
        if self.token is not None and not hmac.compare_digest(token, self.token.encode()):
            self._reject(f"{source}@{peer}", "wrong or missing token")
            conn.sendall(b"NO")
            return None
        conn.sendall(b"OK")
        conn.settimeout(None)
        return source

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        try:
            source = self._hello(conn, peer)
            while source is not None and not self._stop.is_set():
                head = _recv_exact(conn, 4)
                if head is None:
                    break
                (length,) = _LEN.unpack(head)
                if length > self.max_frame_bytes:
                    # The stream can't be resynchronised after a bogus length: close it.
                    self._reject(source, f"frame of {length} bytes is over the limit of {self.max_frame_bytes}")
                    break
                buf = _recv_exact(conn, length)
                if buf is None:
                    break
                try:
                    frame = unpack(buf)
                except FrameError as exc:
                    self._reject(source, str(exc))
                    continue
                self.on_frame(source, frame)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._thread.join(timeout=2)
