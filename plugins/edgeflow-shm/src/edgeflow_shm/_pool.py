"""Shared-memory segments in /dev/shm: slots written once by their producer, mapped read-only by readers.

Who may touch a slot is decided by Linux open-file-description (OFD) record locks on the slot's first byte:

* the writer takes an exclusive lock, without waiting, before it overwrites a slot; a slot that any reader
  holds can't be taken, so the writer moves on to the next one;
* a reader takes a shared lock before it trusts a slot and keeps it until its next read, then checks the
  slot's generation against the one in the stream entry (a mismatch: the writer got there first, the
  frame is skipped, never read torn).

OFD locks belong to an open file, not to a process: a reader thread in the writer's own process still
conflicts with the writer, and the kernel drops the locks of a process that dies, so a crashed reader
never pins a slot. A segment's name carries its owner's pid and start time: any process of the same app
removes the segments of owners that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import re
import secrets
import struct
import threading
from pathlib import Path

__all__ = [
    "SHM_DIR", "ReaderFiles", "Segment", "align64", "fresh", "host_id", "map_readonly", "size_class", "slot_info",
    "stride", "sweep", "text",
]  # fmt: skip

log = logging.getLogger("edgeflow.shm")

SHM_DIR = Path(os.environ.get("EDGEFLOW_SHM_DIR", "/dev/shm"))
SLOT_HEADER = 64  # generation u64, length u64, frame-header length u64, sequence u64; data 64-byte aligned
_SLOT = struct.Struct("<QQQQ")
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding.
_FLOCK = struct.Struct("hhqqi4x")
_NAME = re.compile(r"^edgeflow-(?P<app>.+)-(?P<pid>\d+)-(?P<start>\d+)-(?P<tok>[0-9a-f]+)$")


def fresh(stamp: bytes | str | float | None, wall: float, ttl: float) -> bool:
    """True when a registration `stamp` from Redis is a time within `ttl` seconds of `wall`; anything else (absent,
    old, or not a number: Redis is reachable by others) counts as no registration."""
    if stamp is None:
        return False
    try:
        return wall - float(stamp) <= ttl
    except ValueError:
        return False


def text(raw: bytes) -> str:
    """A field from Redis as text (never an error: bytes that aren't UTF-8 become U+FFFD and match nothing)."""
    return raw.decode(errors="replace")


def size_class(n: int) -> int:
    """The slot capacity for an n-byte payload: a power of two from 4 KiB."""
    return 1 << max(12, (n - 1).bit_length())


def align64(n: int) -> int:
    """`n` rounded up to a multiple of 64."""
    return -(-n // 64) * 64


def stride(capacity: int) -> int:
    """Bytes from one slot to the next: header plus capacity, 64-byte aligned."""
    return -(-(SLOT_HEADER + capacity) // 64) * 64


def _lock(fd: int, kind: int, start: int) -> bool:
    """Set (or clear, with F_UNLCK) an OFD lock on one byte without waiting; False when another holder has it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, 0, start, 1, 0))
        return True
    except (BlockingIOError, PermissionError):
        return False


def unlock(fd: int, start: int) -> None:
    """Release this open file's lock on the slot at `start`."""
    _lock(fd, fcntl.F_UNLCK, start)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a pid apart from a later reuse of it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def host_id() -> str:
    """Who shares this /dev/shm: the boot plus the tmpfs behind it (two pods on one machine differ)."""
    forced = os.environ.get("EDGEFLOW_SHM_HOST_ID")
    if forced:
        return forced
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = os.uname().nodename
    try:
        st = os.stat(SHM_DIR)
        where = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        where = "no-shm"
    return hashlib.sha1(f"{boot}|{where}".encode()).hexdigest()[:16]


def sweep(app: str | None = None) -> int:
    """Remove the segments of `app` (of every app when None) whose owner process is gone; return how many."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        m = _NAME.match(name)
        if m is None or (app is not None and m["app"] != app):
            continue
        if _start_time(int(m["pid"])) == int(m["start"]):
            continue  # its owner still runs
        with contextlib.suppress(OSError):
            os.unlink(SHM_DIR / name)
            removed += 1
    if removed:
        log.info("removed %d shared-memory segments left by processes that are gone (app %s)", removed, app or "any")
    return removed


def create_file(app: str, size: int) -> tuple[str, int, mmap.mmap]:
    """Create `/dev/shm/edgeflow-{app}-{pid}-{start}-{token}` of `size` bytes (name, open fd, writable map)."""
    pid = os.getpid()
    name = f"edgeflow-{app}-{pid}-{_start_time(pid) or 0}-{secrets.token_hex(4)}"
    fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return name, fd, mmap.mmap(fd, size)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(SHM_DIR / name)
        raise


class Segment:
    """One producer's file of `nslots` equal slots; only its owner writes."""

    def __init__(self, app: str, capacity: int, nslots: int) -> None:
        self.capacity = capacity
        self.nslots = nslots
        self.stride = stride(capacity)
        size = self.stride * nslots
        vfs = os.statvfs(SHM_DIR)
        if vfs.f_bavail * vfs.f_frsize < 2 * size:
            # Pages are taken as slots are first written: leave room so a write never meets a full /dev/shm.
            raise OSError(f"{SHM_DIR} has {vfs.f_bavail * vfs.f_frsize} bytes free, a segment needs {size}")
        self.name, fd, self.mm = create_file(app, size)
        self.path = SHM_DIR / self.name
        self.fd = fd  # kept open: the writer's locks live on this open file
        self.gens = [0] * nslots
        self.next = 0
        self.held: set[int] = set()  # slots whose durable entries are not yet acknowledged by every group
        self.lock = threading.Lock()

    def write(self, payload: memoryview, header: bytes = b"", seq: int = 0) -> tuple[int, int] | None:
        """Copy `payload` (and the frame `header` after it) into a free slot; (slot, generation) or None when
        every slot is held."""
        n = len(payload)
        at = align64(n)
        if at + len(header) > self.capacity:
            raise ValueError(f"{n} + {len(header)} bytes don't fit a slot of {self.capacity}")
        with self.lock:
            for k in range(self.nslots):
                i = (self.next + k) % self.nslots
                if i in self.held:
                    continue
                off = i * self.stride
                if not _lock(self.fd, fcntl.F_WRLCK, off):
                    continue  # a reader holds it
                try:
                    gen = self.gens[i] + 1
                    self.gens[i] = gen
                    self.mm[off + SLOT_HEADER : off + SLOT_HEADER + n] = payload
                    if header:
                        self.mm[off + SLOT_HEADER + at : off + SLOT_HEADER + at + len(header)] = header
                    _SLOT.pack_into(self.mm, off, gen, n, len(header), seq)
                finally:
                    unlock(self.fd, off)
                self.next = (i + 1) % self.nslots
                return i, gen
        return None

    def hold(self, slot: int) -> None:
        """Keep `slot` until `release` (a durable entry refers to it)."""
        with self.lock:
            self.held.add(slot)

    def release(self, slot: int) -> None:
        """Let `slot` be written again."""
        with self.lock:
            self.held.discard(slot)

    def unlink(self) -> None:
        """Remove the file; readers that mapped it keep their mapping until they drop it."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def close(self) -> None:
        """Unlink and unmap (the unmapping waits for the garbage collector while views of it live)."""
        self.unlink()
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_shm(name: str, flags: int) -> int:
    """Open `name` in SHM_DIR: only an EdgeFlow file right there (names come from Redis: no paths, no links)."""
    if not _NAME.match(name) or "/" in name or "\0" in name:
        raise OSError(f"not an EdgeFlow shared-memory file name: {name!r}")
    return os.open(SHM_DIR / name, flags | os.O_NOFOLLOW)


def map_readonly(name: str) -> memoryview:
    """Map the segment `name` read-only; raises OSError when it is gone."""
    fd = open_shm(name, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return memoryview(mm)


class ReaderFiles:
    """One reader's open files, one per segment: its shared locks live on them, apart from every other reader."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.held: list[tuple[int, int]] = []

    def acquire(self, name: str, off: int) -> bool:
        """Take a shared lock on the slot at `off` of `name`; False while its writer has it."""
        fd = self.fds.get(name)
        if fd is None:
            if len(self.fds) >= 256:
                self._close_idle()
            fd = open_shm(name, os.O_RDONLY)
            self.fds[name] = fd
        if not _lock(fd, fcntl.F_RDLCK, off):
            return False
        self.held.append((fd, off))
        return True

    def _close_idle(self) -> None:
        # Bounded: segments of producers long gone are forgotten; files holding a lock stay open.
        busy = {fd for fd, _ in self.held}
        for name, fd in list(self.fds.items()):
            if fd not in busy:
                os.close(fd)
                del self.fds[name]

    def release_last(self) -> None:
        """Drop the lock taken last (its slot turned out to be stale)."""
        fd, off = self.held.pop()
        unlock(fd, off)

    def release(self) -> None:
        """Drop every lock held since the previous read."""
        for fd, off in self.held:
            unlock(fd, off)
        self.held.clear()

    def close_files(self) -> None:
        """Release the locks and close the files."""
        self.release()
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def slot_info(view: memoryview, off: int) -> tuple[int, int, int, int]:
    """Return (generation, length, frame-header length, sequence number) of the slot at `off`."""
    gen, n, hlen, seq = _SLOT.unpack_from(view, off)
    return int(gen), int(n), int(hlen), int(seq)
