"""The ceilings: the same payload between two processes with no framework (redis-py, raw TCP, a shared-memory ring)."""

from __future__ import annotations

import mmap
import os
import socket
import struct
import time
from typing import Any

import numpy as np

from .._harness import FRAME_BYTES, MSG_BYTES, Recorder, ServerCpu, Settings, announce, report, row, run_pair
from .._pace import TS, SendLoop, payload, stamp

# (payload bytes, rate or None): the workloads a ceiling is measured at; EdgeFlow rows are compared to these.
WORKLOADS = [(FRAME_BYTES, None), (FRAME_BYTES, 30), (MSG_BYTES, None), (MSG_BYTES, 1000)]
_HDR = struct.Struct("<Qd")  # raw TCP: length, send time
_RING_SLOTS = 8
_CTRL = 64  # write count, read count, done flag; then the slots


def workload_name(size: int, rate: float | None) -> str:
    """The case name shared by every system measured at this payload size and rate."""
    return f"{size}B {'unthrottled' if rate is None else f'{rate:g}/s'}"


# Redis, no framework ----------------------------------------------------------------------------------
def _redis_shape(size: int) -> tuple[int, int]:
    # Frames: newest wins (MAXLEN 1, like a realtime link). Small messages: a deep stream read in batches.
    return (1, 1) if size > 10_000 else (10_000, 256)


def redis_sub(url: str, key: str, size: int, deadline: float) -> None:
    """Read `key` with XREAD from the last id seen until the END entry or the deadline."""
    import redis

    r = redis.Redis.from_url(url)
    _, count = _redis_shape(size)
    rec = Recorder()
    last = b"0-0"
    announce("READY", {})
    end = time.time() + deadline
    while time.time() < end:
        reply = r.xread({key: last}, count=count, block=200)
        done = False
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                data = fields.get(b"d")
                if data is None:
                    done = True
                    continue
                rec.hit(TS.unpack_from(data, 0)[0])
        if done:
            break
    announce("RESULT", rec.summary())


def redis_pub(url: str, key: str, size: int, rate: float | None, duration: float, max_frames: int) -> None:
    """XADD the payload at `rate` for `duration` seconds, then an END entry."""
    import redis

    r = redis.Redis.from_url(url)
    maxlen, _ = _redis_shape(size)
    buf = payload(size)
    view = memoryview(buf)
    loop = SendLoop(rate, duration, max_frames)
    for _ in loop:
        stamp(buf)
        r.xadd(key, {"d": view}, maxlen=maxlen, approximate=size <= 10_000)
    r.xadd(key, {"end": 1}, maxlen=maxlen, approximate=size <= 10_000)
    announce("RESULT", loop.result())


# Raw loopback TCP, length-prefixed ---------------------------------------------------------------------
def tcp_sub(size: int, deadline: float) -> None:
    """Accept one sender on loopback and read length-prefixed messages until it closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(deadline)
    announce("READY", {"port": srv.getsockname()[1]})
    conn, _ = srv.accept()
    conn.settimeout(deadline)
    reader = conn.makefile("rb", buffering=1 << 20)
    hdr = bytearray(_HDR.size)
    body = bytearray(size)
    rec = Recorder()
    end = time.time() + deadline
    while time.time() < end:
        if reader.readinto(hdr) != len(hdr):
            break
        length, ts = _HDR.unpack(hdr)
        if reader.readinto(memoryview(body)[:length]) != length:
            break
        rec.hit(ts)
    conn.close()
    srv.close()
    announce("RESULT", rec.summary())


def tcp_pub(port: int, size: int, rate: float | None, duration: float, max_frames: int) -> None:
    """Send header + payload with one gathered sendmsg per message."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = memoryview(payload(size))
    loop = SendLoop(rate, duration, max_frames)
    for _ in loop:
        hdr = _HDR.pack(size, time.time())
        sent = sock.sendmsg([hdr, buf])
        if sent < len(hdr) + size:  # a partial send: finish it before the next message
            sock.sendall((hdr + bytes(buf))[sent:])
    sock.close()
    announce("RESULT", loop.result())


# A plain shared-memory ring: the sender copies once, the reader views in place -------------------------
def _ring(path: str, size: int, create: bool) -> tuple[mmap.mmap, np.ndarray, list[np.ndarray]]:
    slot = 8 + size
    total = _CTRL + _RING_SLOTS * slot
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        if create:
            os.ftruncate(fd, total)
        mm = mmap.mmap(fd, total)
    finally:
        os.close(fd)
    ctrl = np.ndarray((3,), np.int64, mm, 0)
    slots = [np.ndarray((slot,), np.uint8, mm, _CTRL + i * slot) for i in range(_RING_SLOTS)]
    return mm, ctrl, slots


def shm_sub(size: int, deadline: float) -> None:
    """Create the ring, then spin on the write counter and view each slot in place."""
    path = f"/dev/shm/efbench-ring-{os.getpid()}"
    mm, ctrl, slots = _ring(path, size, create=True)
    announce("READY", {"path": path})
    rec = Recorder()
    read = 0
    end = time.time() + deadline
    spins = 0
    try:
        while True:
            if ctrl[0] > read:
                s = slots[read % _RING_SLOTS]
                rec.hit(TS.unpack_from(s, 0)[0])
                read += 1
                ctrl[1] = read
            elif ctrl[2]:
                break
            else:
                spins += 1
                if spins & 0x3FF == 0 and time.time() > end:
                    break
    finally:
        del ctrl, slots
        mm.close()
        os.unlink(path)
    announce("RESULT", rec.summary())


def shm_pub(path: str, size: int, rate: float | None, duration: float, max_frames: int) -> None:
    """Copy the payload into the next free slot (waiting while the ring is full) and bump the write counter."""
    mm, ctrl, slots = _ring(path, size, create=False)
    src = payload(size)
    loop = SendLoop(rate, duration, max_frames)
    give_up = time.perf_counter() + duration + 5
    for n in loop:
        while n - ctrl[1] >= _RING_SLOTS and time.perf_counter() < give_up:
            pass  # the ring is full: wait for the reader (bounded in time)
        s = slots[n % _RING_SLOTS]
        s[8:] = src
        TS.pack_into(s, 0, time.time())
        ctrl[0] = n + 1
    ctrl[2] = 1
    del ctrl, slots
    mm.close()
    announce("RESULT", loop.result())


# The case -------------------------------------------------------------------------------------------------
SYSTEMS = {"redis-py": ("redis_sub", "redis_pub"), "tcp": ("tcp_sub", "tcp_pub"), "shm-ring": ("shm_sub", "shm_pub")}


def measure(system: str, size: int, rate: float | None, cfg: Settings, server: Any) -> list[dict[str, Any]]:
    """One run of the ceiling `system` (a key of SYSTEMS) at this workload; `server` is the redis-server."""
    sub_fn, pub_fn = SYSTEMS[system]
    duration = cfg.duration_for(rate)
    case = workload_name(size, rate)
    sub_kw: dict[str, Any] = {"size": size, "deadline": duration + 10}
    pub_kw: dict[str, Any] = {"size": size, "rate": rate, "duration": duration, "max_frames": cfg.max_frames}
    if system == "redis-py":
        key = f"efbench:{system}:{size}:{rate}:{time.monotonic_ns()}"
        sub_kw.update(url=server.url, key=key)
        pub_kw.update(url=server.url, key=key)
    redis_cpu = ServerCpu(server.proc.pid if server.proc else None)
    try:
        sres, pres = run_pair((f"{__name__}:{sub_fn}", sub_kw), (f"{__name__}:{pub_fn}", pub_kw),
                              timeout=duration + 30)  # fmt: skip
    except (RuntimeError, TimeoutError) as exc:
        return [row(case, f"ceiling {system}", "error", float("nan"), "", str(exc)[-300:])]
    cpu = {"pub": pres["cpu_pct"], "sub": sres["cpu_pct"]}
    if system == "redis-py":
        cpu["redis"] = redis_cpu.stop()
        import redis

        r = redis.Redis.from_url(server.url)
        r.delete(sub_kw["key"])
        r.close()
    return report(case, f"ceiling {system}", sres, size, cpu, f"sent {pres['sent']}")


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every ceiling at every workload."""
    from edgeflow.embedded import EmbeddedRedis

    cfg = Settings.make(quick)
    server = EmbeddedRedis().start()
    rows: list[dict[str, Any]] = []
    try:
        for size, rate in WORKLOADS:
            for system in SYSTEMS:
                rows += measure(system, size, rate, cfg, server)
    finally:
        server.stop()
    return rows
