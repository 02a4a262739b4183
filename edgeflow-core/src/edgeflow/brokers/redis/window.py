"""A publisher's send window: commands go out without waiting for their replies, which are read while later
frames are made, so round trips overlap the producer's work and small messages share round trips.

At most WINDOW commands (and WINDOW_BYTES) wait for replies; durable ones are kept until their reply came, and
sent again first if the connection breaks before that (at least once: a frame may land twice, never not at all).

Small commands that come densely (less than DENSE apart, on average) are held and sent together, up to COALESCE
of them or HOLD seconds: one system call instead of one each, which on loopback also spares Redis a wake-up per
message. An isolated message goes at once (no added latency at low rates), and a flusher thread sends what is held
if the producer goes quiet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import redis

from .packer import BUFFER_CUTOFF, pack_small

__all__ = ["SendWindow"]

WINDOW = 64
WINDOW_BYTES = 8 << 20
DRAIN_AT = 16
DENSE = 100e-6
COALESCE = 16
HOLD = 0.5e-3
# A producer quiet for this long has what it holds sent by the flusher thread.
QUIET = 2e-3

_Item = tuple[list[tuple[Any, ...]], int, bool]  # commands, bytes, keep until confirmed (durable)


class SendWindow:
    """Pipelined, coalescing writes on one connection of `client`'s pool; `io` guards it against the flusher."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.io = threading.RLock()
        self._conn: Any = None
        self._pool: Any = None  # the pool _conn came from (on a cluster, that of the slot's master)
        self._outstanding: deque[_Item] = deque()
        self._resend: deque[_Item] = deque()
        self._bytes = 0
        self._held: list[bytes] = []
        self._held_since = 0.0
        self._unsent = 0  # the newest items of _outstanding that are held, not sent yet
        self._last_send = 0.0
        self._gap = 1.0
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False
        self.flush_error: BaseException | None = None

    @property
    def unconfirmed(self) -> int:
        """Durable command groups sent or to be sent again whose replies did not come yet."""
        return len(self._resend) + sum(1 for item in self._outstanding if item[2])

    def send(self, commands: list[tuple[Any, ...]], size: int, keep: bool) -> None:
        """Send `commands` (one frame's), after anything that must be sent again; raises what the socket raises."""
        while self._resend:
            self._send(*self._resend[0])
            self._resend.popleft()
        self._send(commands, size, keep)

    def _send(self, commands: list[tuple[Any, ...]], size: int, keep: bool) -> None:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        # Replies are picked up in bursts: polling the socket costs three system calls, about as much as a
        # small message's own work.
        if len(self._outstanding) >= DRAIN_AT:
            while self._outstanding and conn.can_read(timeout=0):
                self._collect_one()
        while self._outstanding and (len(self._outstanding) >= WINDOW or self._bytes + size > WINDOW_BYTES):
            self._collect_one()
        now = time.perf_counter()
        # The producer's pace, smoothed: on a busy machine a producer is preempted now and then, and one long gap
        # must not make a steady stream look idle.
        self._gap += (min(now - self._last_send, 1.0) - self._gap) / 16
        self._last_send = now
        dense = self._gap < DENSE
        self._outstanding.append((commands, size, keep))
        self._bytes += size
        small = pack_small(commands) if size <= BUFFER_CUTOFF else None
        if small is not None:
            self._held += small
            self._unsent += 1
            if self._unsent == 1:
                self._held_since = now
            if not dense or self._unsent >= COALESCE or now - self._held_since >= HOLD:
                self._flush_held()
            elif self._unsent == 1:
                self._arm_flusher()
            return
        packed = conn.pack_commands(commands)
        if self._held:  # in order: what is held goes first, in the same call
            packed = [b"".join(self._held), *packed]
        self._unsent += 1
        conn.send_packed_command(packed, check_health=False)
        self._held.clear()
        self._unsent = 0

    def _connect(self) -> Any:
        """Return the connection this window writes on, from its client's pool."""
        self._pool = self.client.connection_pool
        return self._pool.get_connection()

    def _flush_held(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._conn.send_packed_command([data], check_health=False)
            self._held.clear()
            self._unsent = 0

    def _arm_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name=f"edgeflow-flush-{self.name}", daemon=True)
            self._flusher.start()
        self._wake.set()

    def _flush_loop(self) -> None:
        # A safety net for a producer that went quiet with messages held: while it keeps publishing it sends
        # them itself (every COALESCE messages or HOLD), so this thread wakes rarely and mostly finds nothing.
        while True:
            self._wake.wait()
            if self._closing:
                return
            time.sleep(QUIET)
            if time.perf_counter() - self._last_send < QUIET / 2:
                continue  # still publishing
            with self.io:
                if self._held:
                    try:
                        self._flush_held()
                    except (redis.RedisError, OSError) as exc:
                        self.flush_error = exc  # the next send reports it and keeps what must be resent
                if not self._held:
                    self._wake.clear()

    def _collect_one(self) -> None:
        self._flush_held()  # what is held goes out before we wait on the socket (and a reply needs its command)
        commands, size, _ = self._outstanding[0]
        for _ in commands:
            self._conn.read_response()
        self._outstanding.popleft()
        self._bytes -= size

    def drain(self) -> None:
        """Send what is held and read every reply still due."""
        while self._outstanding:
            self._collect_one()

    def failed(self) -> int:
        """Drop the connection after a failure; keep the durable commands not yet confirmed, to send again first.

        Returns how many realtime frames never left (they are dropped: stale by the time Redis is back).
        """
        unsent = list(self._outstanding)[len(self._outstanding) - self._unsent :] if self._unsent else []
        dropped = sum(1 for item in unsent if not item[2])
        unconfirmed = [item for item in self._outstanding if item[2]]
        self._resend.extendleft(reversed(unconfirmed))
        self._outstanding.clear()
        self._held.clear()
        self._unsent = 0
        self._bytes = 0
        if self._conn is not None:
            self._conn.disconnect()
            self._pool.release(self._conn)
            self._conn = None
        return dropped

    def close(self) -> int:
        """Send what must still go and wait for its replies, then give the connection back.

        Returns how many durable command groups may not have reached Redis.
        """
        with self.io:
            try:
                while self._resend:
                    self._send(*self._resend[0])
                    self._resend.popleft()
                self.drain()
            except (redis.RedisError, OSError):
                self.failed()
            if self._conn is not None:
                self._pool.release(self._conn)
                self._conn = None
            self._closing = True
            self._wake.set()
            return len(self._resend)
