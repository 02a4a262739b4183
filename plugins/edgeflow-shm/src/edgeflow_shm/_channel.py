"""The same-host fast path of realtime links: a channel file beside the slots, and a futex to wait on.

While every reader of a realtime source runs on the producer's host, the stream entry in Redis buys nothing
but a round trip per frame on each side. The producer then writes each frame's slot reference into its
channel (a 64-entry ring and the newest reference) and wakes the readers with a futex; readers take frames
from it without asking Redis. Redis still decides who may use it (the registrations), and the producer
goes back to Redis entries as soon as a reader on another host, a second producer replica or a reader that
can't use the channel registers.

Replicas of one target share the work as in a consumer group: each group has a cursor in the channel's
second page, and a replica takes a frame by moving the cursor under an OFD lock on it. Frames the cursor
jumps over (the link keeps `depth` frames, newest wins) are counted as skipped by the replica that jumped.

Layout (72 KiB, native little-endian u64/u32):

* page 0: `latest` u64 (`seq << 16 | segment index << 8 | slot`, 0 before the first frame), `tick` u32 (the
  futex word, bumped on every frame and every mode change), `mode` u32 (1 while the channel is in use),
  `base` u64 (the first sequence number of the current period of use), `depth` u32 (the frames a group may
  fall behind, the links' largest `depth`), the ring of 64 references at 64, and at 1024 the
  slot stride and name of up to 16 segments (128 bytes each);
* page 1: 31 group entries of 128 bytes (cursor u64, then the SHA-1 of the group's name); byte 4095 locks
  the table while a group takes an entry;
* from 8192: 64 inline entries of 1 KiB, one per ring position (`seq` u64, header length u32, payload length
  u32, header, payload). A small frame (header and payload up to 1,008 bytes) goes there instead of into a slot:
  its reference names segment 255. The writer zeroes `seq` first and writes it last; a reader copies the entry
  and checks `seq` before and after (a seqlock), so it never takes an entry the writer was rewriting. That
  needs stores and loads seen in program order (x86's TSO): other machines put small frames into slots too,
  where the slot locks order them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import mmap
import os
import platform
import struct

from ._pool import _FLOCK, SHM_DIR, _start_time, create_file, open_shm

__all__ = ["CHANNEL_SIZE", "INLINE_MAX", "INLINE_SEGMENT", "RING", "ChannelReader", "ChannelWriter", "futex_available"]

RING = 64
_INLINE_AT, _INLINE_LEN = 8192, 1024
INLINE_MAX = _INLINE_LEN - 16
INLINE_SEGMENT = 0xFF  # the segment index of a reference to an inline entry
CHANNEL_SIZE = _INLINE_AT + RING * _INLINE_LEN
MAX_SEGMENTS = 16
_LATEST, _TICK, _MODE, _BASE, _DEPTH, _WRITER, _RING_AT, _NAMES_AT = 0, 8, 12, 16, 24, 32, 64, 1024
_NAME_LEN = 128
_TABLE_LOCK = 4095
_GROUPS_AT, _GROUP_LEN, _GROUPS = 4096, 128, 31
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_INLINE_HEAD = struct.Struct("<QII")
# Machines whose stores and loads are seen in program order (total store order): the inline entries' seqlock
# holds there without fences, which Python can't issue.
_TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

# futex(2) by system call number: Python has no binding. Other machines fall back to Redis entries.
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "armv7l": 240,
              "armv8l": 240, "ppc64le": 221, "s390x": 238}  # fmt: skip
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Futex:
    """FUTEX_WAIT/FUTEX_WAKE on a word of a shared mapping (not the private variant: other processes wait too)."""

    def __init__(self) -> None:
        nr = _SYS_FUTEX.get(platform.machine().lower())
        if nr is None or not hasattr(os, "sched_getaffinity"):
            raise OSError(f"no futex system call number known for {platform.machine()}")
        self.nr = nr
        self._call = ctypes.CDLL(None, use_errno=True).syscall
        self._call.restype = ctypes.c_long

    def wait(self, addr: int, expected: int, timeout: float) -> None:
        """Sleep while the word at `addr` holds `expected`, at most `timeout` seconds (ctypes drops the GIL)."""
        ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
        self._call(ctypes.c_long(self.nr), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAIT),
                   ctypes.c_uint32(expected), ctypes.byref(ts), None, ctypes.c_int(0))  # fmt: skip

    def wake(self, addr: int) -> None:
        """Wake every process waiting on the word at `addr`."""
        self._call(ctypes.c_long(self.nr), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAKE),
                   ctypes.c_int(0x7FFFFFFF), None, None, ctypes.c_int(0))  # fmt: skip


_futex: _Futex | None = None


def futex_available() -> bool:
    """True when this machine can use the fast path (Linux with a known futex system call)."""
    global _futex
    if _futex is None:
        try:
            _futex = _Futex()
        except (OSError, AttributeError):
            return False
    return True


def _lockw(fd: int, start: int) -> None:
    # Blocking exclusive OFD lock on one byte: held for a few microseconds by whoever has it.
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, 0, start, 1, 0))


def _unlock(fd: int, start: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, 0, start, 1, 0))


def _group_key(group: str) -> bytes:
    return hashlib.sha1(group.encode()).digest()


def _word_address(mm: mmap.mmap, offset: int) -> int:
    return ctypes.addressof(ctypes.c_uint32.from_buffer(mm, offset))


class ChannelWriter:
    """The producer's side: one per source publisher, named like a segment so that crashes are swept."""

    def __init__(self, app: str) -> None:
        assert futex_available() and _futex is not None
        self._futex = _futex
        self.name, fd, self.mm = create_file(app, CHANNEL_SIZE)
        self.path = SHM_DIR / self.name
        os.close(fd)
        self._tick_addr = _word_address(self.mm, _TICK)
        self._segments: dict[str, int] = {}

    def segment_index(self, name: str, stride: int) -> int | None:
        """The index of segment `name` in the channel (written on first use); None when the table is full."""
        idx = self._segments.get(name)
        if idx is None:
            if len(self._segments) >= MAX_SEGMENTS:
                return None
            idx = len(self._segments)
            at = _NAMES_AT + idx * _NAME_LEN
            _U64.pack_into(self.mm, at, stride)
            self.mm[at + 8 : at + _NAME_LEN] = name.encode()[: _NAME_LEN - 9].ljust(_NAME_LEN - 8, b"\0")
            self._segments[name] = idx
        return idx

    def _bump(self) -> None:
        tick = (_U32.unpack_from(self.mm, _TICK)[0] + 1) & 0xFFFFFFFF
        _U32.pack_into(self.mm, _TICK, tick)
        self._futex.wake(self._tick_addr)

    def begin(self, base: int, depth: int, writer: str) -> None:
        """Readers use the channel from sequence number `base` on; each group may fall `depth` frames behind.

        `writer` is the id the producer's stream entries carry: sequence numbers continue across both paths.
        """
        _U64.pack_into(self.mm, _BASE, base)
        _U32.pack_into(self.mm, _DEPTH, depth)
        self.mm[_WRITER : _WRITER + 32] = writer.encode()[:32].ljust(32, b"\0")
        _U32.pack_into(self.mm, _MODE, 1)
        self._bump()

    def end(self) -> None:
        """Readers go back to Redis entries (the frames already in the ring stay readable until they do)."""
        _U32.pack_into(self.mm, _MODE, 0)
        self._bump()

    def put(self, seq: int, segment: int, slot: int) -> None:
        """Publish frame `seq`, written in `slot` of segment number `segment`, and wake the readers."""
        ref = seq << 16 | segment << 8 | slot
        _U64.pack_into(self.mm, _RING_AT + 8 * (seq % RING), ref)
        _U64.pack_into(self.mm, _LATEST, ref)
        self._bump()

    def put_inline(self, seq: int, header: bytes, payload: memoryview | bytes) -> bool:
        """Publish small frame `seq` in its inline entry and wake the readers; False when it is too big for one
        (or this machine can't order the entry without fences): it goes into a slot then."""
        hlen, n = len(header), len(payload)
        if hlen + n > INLINE_MAX or not _TSO:
            return False
        at = _INLINE_AT + (seq % RING) * _INLINE_LEN
        mm = self.mm
        _U64.pack_into(mm, at, 0)  # being written: a reader copying the previous frame of this entry sees it changed
        start = at + _INLINE_HEAD.size
        mm[start : start + hlen] = header
        mm[start + hlen : start + hlen + n] = payload
        _INLINE_HEAD.pack_into(mm, at, seq, hlen, n)
        self.put(seq, INLINE_SEGMENT, 0)
        return True

    def _groups(self) -> dict[bytes, int]:
        out = {}
        for i in range(_GROUPS):
            at = _GROUPS_AT + i * _GROUP_LEN
            key = bytes(self.mm[at + 8 : at + 28])
            if any(key):
                out[key] = int(_U64.unpack_from(self.mm, at)[0])
        return out

    def joined(self, targets: list[str]) -> bool:
        """True once a replica of every target has joined the channel."""
        groups = self._groups()
        return all(_group_key(t) in groups for t in targets)

    def caught_up(self, targets: list[str], seq: int) -> bool:
        """True when every target's group has taken frame `seq` (or a later one)."""
        groups = self._groups()
        return all(groups.get(_group_key(t), 0) >= seq for t in targets)

    def unread(self, target: str, seq: int) -> int:
        """How many of the frames up to `seq` since the channel's `begin` the group `target` never took."""
        base = int(_U64.unpack_from(self.mm, _BASE)[0])
        cursor = self._groups().get(_group_key(target), 0)
        return max(0, seq - max(cursor, base - 1))

    def close(self) -> None:
        """Tell readers to leave, then remove the file."""
        with contextlib.suppress(ValueError):
            self.end()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()


class ChannelReader:
    """A reader's view of one producer's channel, joined as one replica of `group`."""

    def __init__(self, name: str, group: str) -> None:
        assert futex_available() and _futex is not None
        self._futex = _futex
        self.name = name
        fd = open_shm(name, os.O_RDWR)  # first: it refuses any name that is not an EdgeFlow file's
        m = name.split("-")
        self.owner = (int(m[-3]), int(m[-2]))
        try:
            if os.fstat(fd).st_size != CHANNEL_SIZE:
                raise OSError(f"{name} is not a channel file")
            self.mm = mmap.mmap(fd, CHANNEL_SIZE)
        except OSError:
            os.close(fd)
            raise
        # The OFD locks below live on this open file: kept open while the reader uses the channel.
        self.fd = fd
        self._tick_addr = _word_address(self.mm, _TICK)
        self._names: dict[int, tuple[str, int]] = {}
        self.entry = self._join(_group_key(group))

    def _join(self, key: bytes) -> int:
        _lockw(self.fd, _TABLE_LOCK)
        try:
            free = None
            for i in range(_GROUPS):
                at = _GROUPS_AT + i * _GROUP_LEN
                have = bytes(self.mm[at + 8 : at + 8 + len(key)])
                if have == key:
                    return at
                if free is None and not any(have):
                    free = at
            if free is None:
                raise OSError(f"channel {self.name} has no room for another target")
            _U64.pack_into(self.mm, free, 0)  # no frame taken yet
            self.mm[free + 8 : free + 8 + len(key)] = key
            return free
        finally:
            _unlock(self.fd, _TABLE_LOCK)

    def latest(self) -> int:
        return int(_U64.unpack_from(self.mm, _LATEST)[0])

    def tick(self) -> int:
        return int(_U32.unpack_from(self.mm, _TICK)[0])

    def in_use(self) -> bool:
        """True while the producer sends through the channel."""
        return bool(_U32.unpack_from(self.mm, _MODE)[0])

    def owner_alive(self) -> bool:
        pid, start = self.owner
        return _start_time(pid) == start

    def segment(self, idx: int) -> tuple[str, int]:
        """The name and slot stride of segment number `idx`."""
        got = self._names.get(idx)
        if got is None:
            at = _NAMES_AT + idx * _NAME_LEN
            name = bytes(self.mm[at + 8 : at + _NAME_LEN]).rstrip(b"\0").decode()
            got = self._names[idx] = (name, int(_U64.unpack_from(self.mm, at)[0]))
        return got

    def take_inline(self, seq: int) -> tuple[bytes, bytes] | None:
        """Copy small frame `seq` out of its inline entry: (header, payload), or None when the writer reused the
        entry before (or while) it was copied."""
        at = _INLINE_AT + (seq % RING) * _INLINE_LEN
        mm = self.mm
        got, hlen, n = _INLINE_HEAD.unpack_from(mm, at)
        if got != seq or hlen + n > INLINE_MAX:
            return None
        start = at + _INLINE_HEAD.size
        data = mm[start : start + hlen + n]
        if _U64.unpack_from(mm, at)[0] != seq:
            return None
        return data[:hlen], data[hlen:]

    def writer(self) -> str:
        """The producer's writer id (as in its stream entries)."""
        return bytes(self.mm[_WRITER : _WRITER + 32]).rstrip(b"\0").decode()

    def claim(self, seen: int | None) -> tuple[int, int, int, int] | None:
        """Take the group's next frame: (seq, segment index, slot, frames skipped to get there), or None.

        `seen` is the newest sequence number the group took through Redis (None: it took none yet). A group's
        first frame sets its baseline, as in Redis, unless it took frames before: then it counts from there.
        """
        _lockw(self.fd, self.entry)
        try:
            cursor = int(_U64.unpack_from(self.mm, self.entry)[0])
            base = int(_U64.unpack_from(self.mm, _BASE)[0])
            latest = self.latest()
            newest = latest >> 16
            depth = max(1, int(_U32.unpack_from(self.mm, _DEPTH)[0]))
            fresh = cursor == 0 and seen is None
            if cursor == 0 and seen is not None:
                cursor = seen
            cursor = max(cursor, base - 1)
            if newest <= cursor:
                return None
            seq = max(cursor + 1, newest - depth + 1)
            ref = int(_U64.unpack_from(self.mm, _RING_AT + 8 * (seq % RING))[0])
            if ref >> 16 != seq:
                seq, ref = newest, latest  # the ring went round meanwhile: the newest is what counts
            _U64.pack_into(self.mm, self.entry, seq)
            return seq, (ref >> 8) & 0xFF, ref & 0xFF, 0 if fresh else seq - cursor - 1
        finally:
            _unlock(self.fd, self.entry)

    def abandon(self) -> tuple[int, int]:
        """The channel went out of use: move the cursor past what is left; (frames that is, the new cursor)."""
        _lockw(self.fd, self.entry)
        try:
            cursor = int(_U64.unpack_from(self.mm, self.entry)[0])
            newest = self.latest() >> 16
            if cursor == 0 or newest <= cursor:
                return 0, max(cursor, newest)  # a group that took nothing here has no baseline to count from
            _U64.pack_into(self.mm, self.entry, newest)
            return newest - cursor, newest
        finally:
            _unlock(self.fd, self.entry)

    def wait(self, tick: int, timeout: float) -> None:
        """Sleep until the tick moves on from `tick`, at most `timeout` seconds."""
        # A spin before sleeping was measured (50 and 200 µs, 100-byte messages per node, quiet and loaded): no
        # gain beyond the machine's drift, so the reader just sleeps.
        if timeout > 0:
            self._futex.wait(self._tick_addr, tick, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(BufferError, ValueError):
            self.mm.close()
