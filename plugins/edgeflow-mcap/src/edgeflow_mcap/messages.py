"""How frames become MCAP messages, and back.

* Image arrays (8- and 16-bit with 1, 3 or 4 channels, 32-bit float with 1) are `sensor_msgs/msg/Image`:
  schema encoding `ros2msg`, message encoding `cdr` (XCDR1, little-endian). Foxglove's Image panel and the
  ROS 2 tools (`ros2 bag` with its MCAP storage) read that natively, where `foxglove.RawImage` as JSON would
  carry the pixels as base64, a third bigger and slow to write. The pixels go in losslessly, in OpenCV's
  channel order (`bgr8`), a 16-bit big-endian array with `is_bigendian` set: bit for bit.
* JSON data is a JSON channel with no schema (Foxglove opens schemaless JSON); a value that is not an object
  is wrapped as {"value": ...}, as JSON channels hold objects.
* Other arrays keep their exact dtype and shape: a JSON channel (schema `edgeflow.Array`) with the raw memory
  in base64. Bytes go as they are, on a channel of message encoding `edgeflow.bytes`.
* Each frame's EdgeFlow identity (frame id, timestamp, meta) is one small JSON message on `/<source>/edgeflow`
  right before its data, so that a replay gives back the frame exactly.

CDR is written here with `struct` (the message is one fixed layout; no ROS install is needed); the tests
decode it with the mcap-ros2-support reader, as ROS 2 tools would.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, NamedTuple

import numpy as np

from edgeflow.errors import FrameError, UnstorableFrameError

__all__ = [
    "ARRAY_SCHEMA",
    "IMAGE_SCHEMA",
    "INFO_SCHEMA",
    "Kind",
    "decode_data",
    "encode_data",
    "image_encoding",
    "to_ns",
]

IMAGE_SCHEMA_NAME = "sensor_msgs/msg/Image"
IMAGE_SCHEMA = b"""std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data

================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id

================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""
ARRAY_SCHEMA = json.dumps(
    {
        "title": "edgeflow.Array",
        "type": "object",
        "properties": {
            "dtype": {"type": "string", "description": "numpy dtype string, with byte order, e.g. <f4"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "string", "contentEncoding": "base64"},
        },
    }
).encode()
INFO_SCHEMA = json.dumps(
    {
        "title": "edgeflow.FrameInfo",
        "type": "object",
        "properties": {
            "frame_id": {"type": "integer"},
            "timestamp": {"type": "number", "description": "seconds since the epoch, as the frame carried it"},
            "meta": {"type": "object"},
        },
    }
).encode()

# (dtype kind+size, channels) -> ROS image encoding
_ENCODINGS = {
    ("u1", 1): "mono8", ("u1", 3): "bgr8", ("u1", 4): "bgra8",
    ("u2", 1): "mono16", ("u2", 3): "bgr16", ("u2", 4): "bgra16",
    ("f4", 1): "32FC1",
}  # fmt: skip
_CHANNELS = {enc: ch for (_, ch), enc in _ENCODINGS.items()}
_ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little-endian
_MAX_SEC = 2**31 - 1


class Kind(NamedTuple):
    """What a channel carries: "image", "json", "json-value", "bytes" or "array", and the image's dtype/ndim."""

    name: str
    dtype: str = ""
    ndim: int = 0

    def metadata(self, source: str) -> dict[str, str]:
        """The channel metadata that lets a replay rebuild the frame's data exactly."""
        meta = {"edgeflow.source": source, "edgeflow.kind": self.name}
        if self.name == "image":
            meta.update({"edgeflow.dtype": self.dtype, "edgeflow.ndim": str(self.ndim)})
        return meta


def to_ns(ts: float) -> int:
    """Nanoseconds of a timestamp, rounded exactly (the float's own value, not a product of floats)."""
    num, den = float(ts).as_integer_ratio()
    return min(max((num * 1_000_000_000 + den // 2) // den, 0), 2**64 - 1)


def image_encoding(data: Any) -> str | None:
    """The ROS encoding of an image array, or None when `data` is not one."""
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 3) or 0 in data.shape[:2]:
        return None
    channels = 1 if data.ndim == 2 else data.shape[2]
    key = (f"{data.dtype.kind}{data.dtype.itemsize}", channels)
    if data.dtype.byteorder == ">" and key[0] == "f4":
        return None  # ROS images of floats are little-endian only here: kept as an exact array instead
    return _ENCODINGS.get(key)


class _Cdr:
    """Appends XCDR1 primitives, aligned relative to the start of the body (after the encapsulation)."""

    def __init__(self) -> None:
        self.parts: list[Any] = [_ENCAPSULATION]
        self.pos = 0

    def _align(self, n: int) -> None:
        pad = -self.pos % n
        if pad:
            self.parts.append(b"\x00" * pad)
            self.pos += pad

    def u32(self, value: int) -> None:
        self._align(4)
        self.parts.append(struct.pack("<I", value))
        self.pos += 4

    def i32(self, value: int) -> None:
        self._align(4)
        self.parts.append(struct.pack("<i", value))
        self.pos += 4

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))
        self.pos += 1

    def string(self, value: str) -> None:
        raw = value.encode() + b"\x00"
        self.u32(len(raw))
        self.parts.append(raw)
        self.pos += len(raw)

    def blob(self, data: Any, n: int) -> None:
        self.u32(n)
        self.parts.append(data)
        self.pos += n


def _image_cdr(arr: np.ndarray, encoding: str, ts: float, frame: str) -> bytes:
    ns = to_ns(ts)
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    c = _Cdr()
    c.i32(min(ns // 1_000_000_000, _MAX_SEC))
    c.u32(ns % 1_000_000_000)
    c.string(frame)
    c.u32(height)
    c.u32(width)
    c.string(encoding)
    c.u8(1 if arr.dtype.byteorder == ">" else 0)
    c.u32(width * channels * arr.dtype.itemsize)
    flat = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    c.blob(memoryview(flat).cast("B"), flat.nbytes)  # type: ignore[arg-type]
    return b"".join(c.parts)  # the one copy of the pixels, into the message


def encode_data(source: str, data: Any, ts: float) -> tuple[Kind, bytes]:
    """Return the channel kind and the message bytes for a frame's data."""
    encoding = image_encoding(data)
    if encoding is not None:
        return Kind("image", data.dtype.str, data.ndim), _image_cdr(data, encoding, ts, source)
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        body = {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": base64.b64encode(arr.data).decode()}
        return Kind("array"), json.dumps(body, separators=(",", ":")).encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Kind("bytes"), bytes(data)
    if isinstance(data, dict):
        return Kind("json"), _json(data)
    return Kind("json-value"), _json({"value": data})


def _json(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UnstorableFrameError(f"data is not JSON: {exc}") from exc


def _read_u32(buf: memoryview, pos: int) -> tuple[int, int]:
    pos += -pos % 4
    if pos + 4 > len(buf):
        raise FrameError("truncated CDR image message")
    return struct.unpack_from("<I", buf, pos)[0], pos + 4


def _read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    n, pos = _read_u32(buf, pos)
    if pos + n > len(buf):
        raise FrameError("truncated CDR string")
    return bytes(buf[pos : pos + n]).rstrip(b"\x00").decode(errors="replace"), pos + n


def _image(data: bytes, meta: dict[str, str]) -> np.ndarray:
    if data[:4] != _ENCAPSULATION:
        raise FrameError("not a little-endian CDR message")
    body = memoryview(data)[4:]
    _, pos = _read_u32(body, 0)  # stamp.sec (a uint32 read of an int32: only skipped)
    _, pos = _read_u32(body, pos)
    _, pos = _read_string(body, pos)
    height, pos = _read_u32(body, pos)
    width, pos = _read_u32(body, pos)
    encoding, pos = _read_string(body, pos)
    pos += 1  # is_bigendian: the dtype in the channel metadata carries the byte order
    _, pos = _read_u32(body, pos)
    n, pos = _read_u32(body, pos)
    channels = _CHANNELS.get(encoding)
    dtype = np.dtype(meta.get("edgeflow.dtype", "|u1"))
    if channels is None or n != height * width * channels * dtype.itemsize or pos + n > len(body):
        raise FrameError(f"a {encoding} image of {height}x{width} does not fit its {n} bytes")
    shape: tuple[int, ...] = (height, width) if meta.get("edgeflow.ndim") == "2" else (height, width, channels)
    return np.frombuffer(body[pos : pos + n], dtype=dtype).reshape(shape)


def decode_data(kind: str, data: bytes, meta: dict[str, str]) -> Any:
    """The frame data that `encode_data` turned into `data` on a channel of `kind`."""
    if kind == "image":
        return _image(data, meta)
    if kind == "bytes":
        return bytes(data)
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise FrameError(f"a corrupted JSON message: {exc}") from exc
    if kind == "json":
        return value
    if kind == "json-value":
        return value["value"]
    if kind == "array":
        raw = base64.b64decode(value["data"])
        dtype = np.dtype(value["dtype"])
        shape = [int(n) for n in value["shape"]]
        if dtype.kind not in "biufc" or int(np.prod(shape)) * dtype.itemsize != len(raw):
            raise FrameError(f"an array message of dtype {dtype} and shape {shape} does not fit its data")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    raise FrameError(f"a channel of unknown kind {kind!r}")
