"""A minimal MJPEG viewer for the benchmarks: counts parts and their glass-to-glass latency from X-Timestamp."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Viewer"]

_TS = b"X-Timestamp: "
_MAX_SAMPLES = 100_000


@dataclass
class Viewer:
    """Reads `GET /video/{topic}` on a loopback port in a thread until `stop()`; no decode, like a thin client."""

    port: int
    topic: str
    parts: int = 0
    lat_ms: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Viewer:
        """Connect and start reading."""
        self._thread = threading.Thread(target=self._run, name=f"viewer-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                # HTTP/1.0: the body comes without chunked framing, so parts can be scanned directly.
                s.sendall(f"GET /video/{self.topic} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                s.settimeout(0.5)
                tail = b""
                while not self._stop.is_set():
                    try:
                        chunk = s.recv(1 << 20)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    now = time.time()
                    buf = tail + chunk
                    pos = buf.find(_TS)
                    while pos >= 0:
                        end = buf.find(b"\r\n", pos)
                        if end < 0:
                            break
                        self._part(now, float(buf[pos + len(_TS) : end]))
                        pos = buf.find(_TS, end)
                    # Keep only what may hold the start of a header cut by this read.
                    tail = buf[-64:] if pos < 0 else buf[pos:]
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _part(self, now: float, ts: float) -> None:
        self.parts += 1
        if len(self.lat_ms) < _MAX_SAMPLES:
            self.lat_ms.append((now - ts) * 1000.0)
            self.times.append(now)

    def stop(self) -> None:
        """Disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def rate(self, since: float) -> float:
        """Parts per second received after `since` (time.time())."""
        t = [x for x in self.times if x >= since]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")
