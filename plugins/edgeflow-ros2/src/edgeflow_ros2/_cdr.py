"""The CDR of sensor_msgs/Image, sensor_msgs/CompressedImage and std_msgs/String, written and read here.

cyclonedds-python's IDL machinery packs and unpacks a `sequence<uint8>` element by element: 20-40 ms for
one 640x480 image, too slow for 30 Hz. These messages are small fixed prefixes in front of one pixel block,
so they are written here as a prefix plus the block copied once, and read by checking every length against
the bytes received before a numpy view is laid over the block (no copy).

ROS 2 messages are final types: no DHEADER, no member ids, so their XCDR1 and plain XCDR2 layouts are the
same for these members (nothing is wider than 4 bytes). Offsets are aligned relative to the byte after the
4-byte encapsulation header::

    Header   stamp.sec int32 | stamp.nanosec uint32 | frame_id string
    Image    Header | height uint32 | width uint32 | encoding string | is_bigendian uint8 | step uint32 | data
    Compr.   Header | format string | data
    String   data string
    string   length uint32 (with the terminating NUL) | bytes | NUL
    data     length uint32 | bytes

Cyclone DDS itself checks a sample against the type before it is handed to Python (and before it is sent),
so a truncated or inconsistent sample does not get here from the network; these checks repeat that, and
add what DDS can't know (image sizes that don't add up).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .errors import MessageError

__all__ = [
    "ENCAP_LE",
    "CompressedImageMsg",
    "Header",
    "ImageMsg",
    "compressed_prefix",
    "decode_compressed",
    "decode_image",
    "decode_string",
    "encode_string",
    "image_prefix",
    "stamp_parts",
]

ENCAP_LE = b"\x00\x01\x00\x00"  # CDR_LE, options 0: what rmw_cyclonedds_cpp writes
# Encapsulation kinds (second byte; the first is 0) whose layout is the plain one above: CDR_BE, CDR_LE,
# CDR2_BE, CDR2_LE. Parameter lists (PL_CDR*) and delimited XCDR2 are not what ROS 2 messages use.
_BIG_ENDIAN_KINDS = (0x00, 0x06)
_LITTLE_ENDIAN_KINDS = (0x01, 0x07)
#: Longest frame_id, encoding and format string accepted (ROS 2 sets no limit; real ones are short).
MAX_NAME_BYTES = 4096
_INT32 = (-(2**31), 2**31 - 1)
_U32 = struct.Struct("<I")


@dataclass(slots=True, frozen=True)
class Header:
    """std_msgs/Header: the stamp split as ROS 2 keeps it, and the frame_id."""

    sec: int
    nanosec: int
    frame_id: str

    @property
    def stamp(self) -> float:
        """The stamp in seconds since the epoch (0.0 when the publisher left it unset)."""
        return self.sec + self.nanosec * 1e-9


@dataclass(slots=True, frozen=True)
class ImageMsg:
    """sensor_msgs/Image with `data` as a view of the received buffer."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: memoryview


@dataclass(slots=True, frozen=True)
class CompressedImageMsg:
    """sensor_msgs/CompressedImage with `data` as a view of the received buffer."""

    header: Header
    format: str
    data: memoryview


class _Reader:
    """Reads CDR fields in order; every length is checked against what is left before it is used."""

    __slots__ = ("buf", "end", "order", "pos", "topic")

    def __init__(self, buf: memoryview, topic: str | None) -> None:
        self.topic = topic
        if len(buf) < 4:
            raise MessageError(f"sample of {len(buf)} bytes has no encapsulation header", topic=topic)
        if buf[0] != 0 or buf[1] not in _BIG_ENDIAN_KINDS + _LITTLE_ENDIAN_KINDS:
            raise MessageError(
                f"encapsulation {bytes(buf[:2]).hex()} is not plain CDR (XCDR1 or final XCDR2)", topic=topic
            )
        self.order = "<" if buf[1] in _LITTLE_ENDIAN_KINDS else ">"
        self.buf = buf
        self.pos = 4
        self.end = len(buf)

    def _fail(self, what: str) -> MessageError:
        return MessageError(f"malformed CDR: {what} at byte {self.pos} of {self.end}", topic=self.topic)

    def u32(self, what: str) -> int:
        self.pos += -(self.pos - 4) % 4
        if self.pos + 4 > self.end:
            raise self._fail(f"{what} runs past the end")
        (value,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        self.pos += 4
        return int(value)

    def i32(self, what: str) -> int:
        value = self.u32(what)
        return value - 2**32 if value >= 2**31 else value

    def u8(self, what: str) -> int:
        if self.pos + 1 > self.end:
            raise self._fail(f"{what} runs past the end")
        value = self.buf[self.pos]
        self.pos += 1
        return int(value)

    def blob(self, what: str) -> memoryview:
        n = self.u32(f"length of {what}")
        if n > self.end - self.pos:
            raise self._fail(f"{what} declares {n} bytes, {self.end - self.pos} are left")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def string(self, what: str, limit: int) -> str:
        n = self.u32(f"length of {what}")
        if n > limit:
            raise self._fail(f"{what} declares {n} bytes, more than the {limit} accepted")
        if n > self.end - self.pos:
            raise self._fail(f"{what} declares {n} bytes, {self.end - self.pos} are left")
        if n == 0:  # not valid CDR (the NUL is counted), but harmless: some writers send it for ""
            return ""
        raw = self.buf[self.pos : self.pos + n]
        if raw[-1] != 0:
            raise self._fail(f"{what} is not NUL-terminated")
        self.pos += n
        try:
            return bytes(raw[:-1]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._fail(f"{what} is not UTF-8 ({exc.reason})") from None

    def header(self) -> Header:
        sec = self.i32("header.stamp.sec")
        nanosec = self.u32("header.stamp.nanosec")
        if nanosec >= 1_000_000_000:
            raise self._fail(f"header.stamp.nanosec is {nanosec}, not below 10^9")
        return Header(sec, nanosec, self.string("header.frame_id", MAX_NAME_BYTES))


def _view(buf: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def decode_image(buf: bytes | bytearray | memoryview, topic: str | None = None) -> ImageMsg:
    """Read a sensor_msgs/Image sample (encapsulation header included); raise MessageError if it is malformed."""
    r = _Reader(_view(buf), topic)
    header = r.header()
    height = r.u32("height")
    width = r.u32("width")
    encoding = r.string("encoding", MAX_NAME_BYTES)
    is_bigendian = r.u8("is_bigendian")
    step = r.u32("step")
    data = r.blob("data")
    return ImageMsg(header, height, width, encoding, bool(is_bigendian), step, data)


def decode_compressed(buf: bytes | bytearray | memoryview, topic: str | None = None) -> CompressedImageMsg:
    """Read a sensor_msgs/CompressedImage sample; raise MessageError if it is malformed."""
    r = _Reader(_view(buf), topic)
    header = r.header()
    fmt = r.string("format", MAX_NAME_BYTES)
    return CompressedImageMsg(header, fmt, r.blob("data"))


def decode_string(buf: bytes | bytearray | memoryview, limit: int, topic: str | None = None) -> str:
    """Read a std_msgs/String sample of at most `limit` bytes of text; raise MessageError if it is malformed."""
    return _Reader(_view(buf), topic).string("data", limit + 1)


class _Writer:
    """Builds the fixed part of a message, aligned as CDR wants it."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray(ENCAP_LE)

    def _align(self, n: int) -> None:
        self.out += bytes(-(len(self.out) - 4) % n)

    def u32(self, value: int) -> None:
        self._align(4)
        self.out += _U32.pack(value)

    def i32(self, value: int) -> None:
        self._align(4)
        self.out += struct.pack("<i", value)

    def u8(self, value: int) -> None:
        self.out.append(value)

    def string(self, raw: bytes) -> None:
        self.u32(len(raw) + 1)
        self.out += raw
        self.out.append(0)

    def header(self, sec: int, nanosec: int, frame_id: bytes) -> None:
        self.i32(sec)
        self.u32(nanosec)
        self.string(frame_id)


def stamp_parts(timestamp: float) -> tuple[int, int]:
    """Split a timestamp in seconds into builtin_interfaces/Time's (sec, nanosec)."""
    if not math.isfinite(timestamp):
        raise MessageError(f"timestamp {timestamp!r} is not a finite number")
    sec = math.floor(timestamp)
    nanosec = round((timestamp - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    if not _INT32[0] <= sec <= _INT32[1]:
        raise MessageError(f"timestamp {timestamp!r} does not fit builtin_interfaces/Time (int32 seconds)")
    return int(sec), int(nanosec)


def _name(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if b"\x00" in raw or len(raw) >= MAX_NAME_BYTES:
        raise MessageError(f"{what} {value[:80]!r} has a NUL byte or is longer than {MAX_NAME_BYTES - 1} bytes")
    return raw


def image_prefix(
    stamp: tuple[int, int], frame_id: str, height: int, width: int, encoding: str, step: int, data_len: int
) -> bytes:
    """Return everything of a little-endian sensor_msgs/Image before its pixel block (which ends it)."""
    w = _Writer()
    w.header(stamp[0], stamp[1], _name(frame_id, "frame_id"))
    w.u32(height)
    w.u32(width)
    w.string(_name(encoding, "encoding"))
    w.u8(0)  # is_bigendian: this host writes little-endian pixels
    w.u32(step)
    w.u32(data_len)
    return bytes(w.out)


def compressed_prefix(stamp: tuple[int, int], frame_id: str, fmt: str, data_len: int) -> bytes:
    """Return everything of a little-endian sensor_msgs/CompressedImage before its data."""
    w = _Writer()
    w.header(stamp[0], stamp[1], _name(frame_id, "frame_id"))
    w.string(_name(fmt, "format"))
    w.u32(data_len)
    return bytes(w.out)


def encode_string(text: str) -> bytes:
    """Return the little-endian std_msgs/String sample of `text`."""
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise MessageError("text with a NUL character can't be a std_msgs/String (CDR strings end at NUL)")
    w = _Writer()
    w.string(raw)
    return bytes(w.out)
