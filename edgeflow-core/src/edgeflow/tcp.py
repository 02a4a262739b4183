"""The direct link into a gateway: length-prefixed frames over TCP.

A sender opens one connection per source, says hello (magic, version, token, app, source) and then writes
`u32 length | frame`. Sends never block the node: frames wait in a small outbox that drops its oldest frame,
counted, while the gateway is slow or away.

The intake assumes its port is reachable by someone hostile. The hello must arrive whole within a deadline and
carry the token (when one is set), the app's name and a source linked into this gateway before any frame is
read; a frame's buffer grows with the bytes that actually arrive, under a budget shared by every connection; a
frame must arrive within a deadline and a connection may not sit idle; connections are capped overall and per
source. Whatever breaks a rule is closed and counted as rejected. The accept loop outlives a full file table.
"""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection

from .backoff import Backoff
from .errors import FrameError
from .frame import Buffer, Frame, frame_size, pack, restamp, unpack
from .names import is_name, safe
from .tracing import SENT

__all__ = ["HELLO_MAGIC", "PROTOCOL_VERSION", "FrameSender", "FrameServer", "hello"]

log = logging.getLogger("edgeflow.tcp")
HELLO_MAGIC = b"EFGW"
PROTOCOL_VERSION = 2
_LEN = struct.Struct("<I")
_HELLO = struct.Struct("<4sBHHH")  # magic, version, token length, app length, source length
_MAX_HELLO_FIELD = 1024
# A frame buffer starts at this size (or the frame's, if smaller) and doubles as bytes arrive.
_FIRST_CHUNK = 1 << 20
_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def hello(token: str | None, app: str, source: str) -> bytes:
    """The hello a sender opens its connection with."""
    t, a, s = (token or "").encode(), app.encode(), source.encode()
    return _HELLO.pack(HELLO_MAGIC, PROTOCOL_VERSION, len(t), len(a), len(s)) + t + a + s


class _Refusal(Exception):  # noqa: N818 - not an error of ours: a rule a peer broke
    """A connection broke a rule of the intake; `why` is logged and counted."""

    def __init__(self, why: str, answer: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.answer = answer  # the peer said hello: tell it why, so that a misconfigured sender can log it


class FrameSender:
    """Sends one source's frames to a gateway from a background thread; `send()` never blocks."""

    def __init__(
        self, host: str, port: int, source: str, token: str | None = None, outbox: int = 4, app: str = ""
    ) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.token = token
        self.app = app
        self.dropped = 0
        self.sent = 0
        self._outbox: deque[list[memoryview | bytes | bytearray]] = deque()
        self._in_flight = False
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
        # Let the sender thread run now: a producer that never blocks would otherwise hold the GIL until the next
        # switch interval, and the gateway would get one frame per 5 ms (181/s of 921,600 B measured, 0.6% of
        # the channel's rate on the same host).
        time.sleep(0)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=3.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(hello(self.token, self.app, self.source))
        answer = _recv_exact(sock, 2, time.monotonic() + 5.0)
        if answer == b"NO":
            head = _recv_exact(sock, 2, time.monotonic() + 1.0)
            why = _recv_exact(sock, min(_LEN.unpack(head + b"\0\0")[0], 300), time.monotonic() + 1.0) if head else b""
            sock.close()
            raise ConnectionRefusedError(f"the gateway refused: {(why or b'no reason given').decode(errors='replace')}")
        if answer != b"OK":
            sock.close()
            raise ConnectionRefusedError("the gateway did not answer the hello (is it an EdgeFlow gateway?)")
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
                self._in_flight = True  # before the outbox looks empty: discard() reads it without the lock
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
                self._in_flight = False
            except OSError as exc:
                with self._cond:
                    self._in_flight = False
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

    def discard(self, wait: float = 0.05) -> None:
        """Drop the queued frames (counted) and wait up to `wait` s for the one being sent: another way takes the
        next frames, and these older ones must not arrive after them."""
        with self._cond:
            self.dropped += len(self._outbox)
            self._outbox.clear()
        deadline = time.monotonic() + wait
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.0005)

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


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """Read exactly `n` small bytes before `deadline`; None if the peer closed first. Only for short fields."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _Budget:
    """Bytes that frame buffers of every connection may hold together; a connection waits for its share."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._cond = threading.Condition()

    def take(self, n: int, deadline: float) -> bool:
        with self._cond:
            while self.held + n > self.limit:
                left = deadline - time.monotonic()
                if left <= 0 or n > self.limit:
                    return False
                self._cond.wait(left)
            self.held += n
            return True

    def give(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()


class FrameServer:
    """Accepts frames from nodes; calls `on_frame(source, frame)` for each valid one.

    Args:
        token: the shared secret a hello must carry (EDGEFLOW_TOKEN); None: open.
        app: the app whose nodes may send here; a hello from another app is refused. None: any.
        sources: the topics linked into this gateway; a hello naming another is refused. None: any valid name,
            at most `max_sources` different ones.
        max_frame_bytes: the largest frame accepted (EDGEFLOW_MAX_FRAME_BYTES).
        max_inflight_bytes: what the frame buffers of all connections may hold together.
        max_connections, max_per_source: connections open at once, overall and per source.
        hello_timeout: seconds for the whole hello; frame_timeout: seconds for one frame, plus one per MB;
        idle_timeout: seconds a connection may stay silent between frames.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_frame: Callable[[str, Frame], None],
        *,
        token: str | None = None,
        app: str | None = None,
        sources: Collection[str] | None = None,
        max_frame_bytes: int = 256 * 1024 * 1024,
        max_inflight_bytes: int | None = None,
        max_connections: int = 64,
        max_per_source: int = 16,
        max_sources: int = 256,
        hello_timeout: float = 5.0,
        frame_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.on_reject = on_reject
        self.token = token
        self.app = app
        self.sources = set(sources) if sources is not None else None
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.max_sources = max_sources
        self.hello_timeout = hello_timeout
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.budget = _Budget(max_inflight_bytes if max_inflight_bytes is not None else max(max_frame_bytes, 1 << 26))
        self.rejected = 0
        self.accept_errors = 0
        #: False while the intake can't accept connections (a full file table): liveness fails meanwhile.
        self.accepting = True
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._per_source: dict[str, int] = {}
        self._seen_sources: set[str] = set()
        self._lock = threading.Lock()
        self._logged: dict[str, tuple[float, int]] = {}
        self._thread = threading.Thread(target=self._accept_loop, name="edgeflow-gw-accept", daemon=True)

    def start(self) -> None:
        """Start accepting connections."""
        self._thread.start()

    def _accept_loop(self) -> None:
        backoff = Backoff(0.05, 1.0)
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                # Out of file descriptors (or buffers): the kernel keeps the connection in the backlog; wait and
                # try again rather than stop taking frames for good.
                self.accept_errors += 1
                if self.accepting:
                    self.accepting = False
                    log.error("gateway intake can't accept connections (%s); retrying with backoff", exc)
                if exc.errno not in _ACCEPT_ERRORS:
                    log.exception("gateway intake: unexpected accept error")
                backoff.wait(self._stop)
                continue
            if not self.accepting:
                self.accepting = True
                log.warning("gateway intake accepts connections again (%d failed accepts)", self.accept_errors)
            backoff.reset()
            with self._lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(conn)
            if full:
                self._reject(f"{addr[0]}:{addr[1]}", f"too many connections (at most {self.max_connections})")
                conn.close()
                continue
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._serve, args=(conn, addr), name="edgeflow-gw-conn", daemon=True).start()
            except (OSError, RuntimeError) as exc:  # no thread to be had: the connection goes, counted
                self._reject(f"{addr[0]}:{addr[1]}", f"no thread to serve it ({exc})")
                self._forget(conn)

    def _reject(self, who: str, why: str) -> None:
        self.rejected += 1
        # At most one line a second per reason: a flood of bad connections can't flood the log.
        now = time.monotonic()
        last, quiet = self._logged.get(why, (0.0, 0))
        if now - last >= 1.0:
            more = f" ({quiet} more like it since the last report)" if quiet else ""
            log.warning("gateway intake: rejected %s: %s%s", who, why, more)
            self._logged[why] = (now, 0)
        else:
            self._logged[why] = (last, quiet + 1)
        if self.on_reject is not None:
            self.on_reject(who, why)

    def _hello(self, conn: socket.socket) -> str:
        try:
            return self._read_hello(conn, time.monotonic() + self.hello_timeout)
        except TimeoutError:
            raise _Refusal(f"no complete hello within {self.hello_timeout:g} s") from None

    def _read_hello(self, conn: socket.socket, deadline: float) -> str:
        head = _recv_exact(conn, _HELLO.size, deadline)
        if head is None:
            raise _Refusal("closed before its hello")
        magic, version, tlen, alen, slen = _HELLO.unpack(head)
        if magic != HELLO_MAGIC:
            raise _Refusal(f"not an EdgeFlow sender (hello magic {bytes(magic)!r})")
        if version != PROTOCOL_VERSION:
            raise _Refusal(f"protocol version {version}, this gateway speaks {PROTOCOL_VERSION}: upgrade the sender")
        if max(tlen, alen, slen) > _MAX_HELLO_FIELD:
            raise _Refusal("a hello field is over 1024 bytes")
        rest = _recv_exact(conn, tlen + alen + slen, deadline)
        if rest is None:
            raise _Refusal("closed in its hello")
        token, app = rest[:tlen], rest[tlen : tlen + alen].decode("utf-8", "replace")
        source = rest[tlen + alen :].decode("utf-8", "replace")
        # The token first: nothing else about a peer without it is worth an answer.
        if self.token is not None and not hmac.compare_digest(token, self.token.encode()):
            raise _Refusal("wrong or missing token", answer=True)
        if self.app is not None and app != self.app:
            raise _Refusal(f"it belongs to app {app[:80]!r}, this gateway to {self.app!r}", answer=True)
        if not is_name(source):
            raise _Refusal(f"source {safe(source)} is not a valid name", answer=True)
        with self._lock:
            if self.sources is not None and source not in self.sources:
                raise _Refusal(f"topic {source!r} is not linked into this gateway", answer=True)
            if source not in self._seen_sources and len(self._seen_sources) >= self.max_sources:
                raise _Refusal(f"more than {self.max_sources} different sources", answer=True)
            if self._per_source.get(source, 0) >= self.max_per_source:
                raise _Refusal(f"more than {self.max_per_source} connections of {source!r}", answer=True)
            self._seen_sources.add(source)
            self._per_source[source] = self._per_source.get(source, 0) + 1
        conn.sendall(b"OK")
        return source

    def _read_frame(self, conn: socket.socket, source: str) -> bytearray | None:
        """One frame's bytes, or None when the peer closed between frames."""
        head = bytearray()
        idle_deadline = time.monotonic() + self.idle_timeout
        while len(head) < 4:
            left = idle_deadline - time.monotonic()
            if left <= 0:
                raise _Refusal(f"idle for {self.idle_timeout:g} s")
            conn.settimeout(left)
            try:
                chunk = conn.recv(4 - len(head))
            except TimeoutError:
                raise _Refusal(f"idle for {self.idle_timeout:g} s") from None
            if not chunk:
                if head:
                    raise _Refusal("closed in a frame's length")
                return None
            head += chunk
        (length,) = _LEN.unpack(head)
        if length > self.max_frame_bytes:
            # The stream can't be resynchronised after a bogus length: close it.
            raise _Refusal(f"frame of {length} bytes is over the limit of {self.max_frame_bytes}")
        deadline = time.monotonic() + self.frame_timeout + length / 1e6
        buf = bytearray()
        got = 0
        try:
            while got < length:
                if got == len(buf):  # grow with what actually arrives, under the shared budget
                    more = min(length - len(buf), max(_FIRST_CHUNK, len(buf)))
                    if not self.budget.take(more, deadline):
                        raise _Refusal(f"the intake's memory budget of {self.budget.limit} bytes is in use")
                    bigger = bytearray(len(buf) + more)
                    bigger[:got] = buf
                    self.budget.give(len(buf))
                    buf = bigger
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Refusal(f"a frame of {length} bytes did not arrive in time ({got} bytes came)")
                conn.settimeout(left)
                try:
                    k = conn.recv_into(memoryview(buf)[got:], len(buf) - got)
                except TimeoutError:
                    raise _Refusal(f"a frame of {length} bytes did not arrive in time ({got} bytes came)") from None
                if k == 0:
                    raise _Refusal(f"closed after {got} of a frame's {length} bytes")
                got += k
        except BaseException:
            self.budget.give(len(buf))
            raise
        self.budget.give(len(buf))
        return buf

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        source: str | None = None
        try:
            source = self._hello(conn)
            who = f"{source}@{peer}"
            while not self._stop.is_set():
                buf = self._read_frame(conn, source)
                if buf is None:
                    break
                try:
                    frame = unpack(buf)
                except FrameError as exc:
                    self._reject(who, str(exc))
                    continue
                self.on_frame(source, frame)
        except _Refusal as refused:
            self._reject(f"{safe(source)}@{peer}" if source else peer, refused.why)
            if refused.answer:
                reason = refused.why.encode()[:300]
                try:
                    conn.sendall(b"NO" + struct.pack("<H", len(reason)) + reason)
                except OSError:
                    pass
        except TimeoutError:
            self._reject(f"{safe(source)}@{peer}" if source else peer, "too slow: a deadline passed")
        except OSError:
            pass
        except Exception:  # a bug here must not take a connection thread down in silence
            log.exception("gateway intake: serving %s failed", peer)
        finally:
            if source is not None:
                with self._lock:
                    self._per_source[source] -= 1
            self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
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
