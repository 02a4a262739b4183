"""`Frame` and its versioned binary wire format.

Layout (little-endian), version 1::

    fixed   magic "EF" | version u8 | kind u8 | frame_id u64 | timestamp f64 | meta_len u32 | data_len u64
    array   (kind ndarray and encoded) dtype_len u8 | dtype str | ndim u8 | shape u64 * ndim
    codec   (kind encoded only) name_len u8 | codec name
    meta    JSON, utf-8, meta_len bytes
    data    data_len bytes: raw array memory, the bytes as given, or JSON

The header and the data are separate buffers so that a broker can keep the payload apart from its
stream entry (a data plane stores only a reference) and a socket can send both without joining them.
Arrays decode as read-only views of the received buffer: no copy.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigurationError, FrameError
from .plugins import get_codec

__all__ = [
    "KIND_BYTES",
    "KIND_ENCODED",
    "KIND_JSON",
    "KIND_NDARRAY",
    "WIRE_VERSION",
    "Buffer",
    "Frame",
    "decode",
    "encode",
    "frame_size",
    "pack",
    "peek",
    "unpack",
]

WIRE_VERSION = 1
MAGIC = b"EF"
KIND_BYTES = 0
KIND_NDARRAY = 1
KIND_JSON = 2
KIND_ENCODED = 3  # an array encoded by a link codec; the header keeps its dtype, shape and the codec's name
_KINDS = (KIND_BYTES, KIND_NDARRAY, KIND_JSON, KIND_ENCODED)
_FIXED = struct.Struct("<2sBBQdIQ")
_MAX_NDIM = 32
# Kinds of numpy dtype that are plain memory: bool, ints, floats, complex. Objects never travel.
_DTYPE_KINDS = frozenset("biufc")


@dataclass(slots=True)
class Frame:
    """One message between nodes: an id, a creation timestamp (seconds since the epoch), JSON meta and the data."""

    frame_id: int
    timestamp: float
    meta: dict[str, Any] = field(default_factory=dict)
    data: Any = None

    @classmethod
    def now(cls, frame_id: int, data: Any, meta: dict[str, Any] | None = None) -> Frame:
        """Return a frame stamped with the current time."""
        return cls(frame_id, time.time(), dict(meta or {}), data)


Buffer = bytes | bytearray | memoryview


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise FrameError(
            f"{what} can't be sent: {exc}. Send an ndarray, bytes, or JSON-compatible data (dict, list, str, number)"
        ) from exc


def encode(frame: Frame, codec: Any = None, params: dict[str, Any] | None = None) -> tuple[bytes, Buffer]:
    """Encode `frame` into `(header, payload)`; an array's payload is a view of its memory, not a copy.

    With a link `codec` (see `edgeflow.codecs`), an array the codec accepts travels encoded by it.
    """
    data = frame.data
    fid = frame.frame_id
    if not isinstance(fid, int) or not 0 <= fid < 2**64:
        raise FrameError(f"frame_id must be an int in [0, 2**64), got {fid!r}")
    ts = float(frame.timestamp)
    if not math.isfinite(ts):
        raise FrameError(f"timestamp must be a finite number, got {frame.timestamp!r}")
    m = frame.meta
    meta = b"{}" if m is None or (type(m) is dict and not m) else _dumps(m, "meta")
    if not meta.startswith(b"{"):
        raise FrameError(f"meta must be a dict, got {type(frame.meta).__name__}")
    array_desc = b""
    payload: Buffer
    if isinstance(data, np.ndarray):
        kind = KIND_NDARRAY
        if data.dtype.kind not in _DTYPE_KINDS or data.dtype.hasobject:
            raise FrameError(f"arrays of dtype {data.dtype} can't be sent; use a numeric or bool dtype")
        if data.ndim > _MAX_NDIM:
            raise FrameError(f"arrays with {data.ndim} dimensions can't be sent (at most {_MAX_NDIM})")
        dtype = data.dtype.str.encode()
        array_desc = struct.pack(f"<B{len(dtype)}sB{data.ndim}Q", len(dtype), dtype, data.ndim, *data.shape)
        packed = codec.encode(data, params or {}) if codec is not None else None
        if packed is not None:
            kind = KIND_ENCODED
            name = codec.name.encode()
            array_desc += struct.pack(f"<B{len(name)}s", len(name), name)
            payload = packed
        else:
            if not data.flags.c_contiguous:
                data = np.ascontiguousarray(data)  # the only copy: a strided view has no flat memory to send
            payload = memoryview(data).cast("B") if data.size else b""
    elif isinstance(data, (bytes, bytearray, memoryview)):
        kind = KIND_BYTES
        payload = data if not isinstance(data, memoryview) else data.cast("B")
    else:
        kind = KIND_JSON
        payload = _dumps(data, f"data of type {type(data).__name__}")
    fixed = _FIXED.pack(MAGIC, WIRE_VERSION, kind, fid, ts, len(meta), len(payload))
    return fixed + array_desc + meta, payload


_Desc = tuple[str, tuple[int, ...], str]


def _parse_header(buf: memoryview) -> tuple[int, int, float, dict[str, Any], _Desc | None, int, int]:
    """Parse a header; return kind, frame_id, timestamp, meta, array descriptor, header length and data length."""
    if len(buf) < _FIXED.size:
        raise FrameError(f"truncated frame: {len(buf)} bytes is shorter than the {_FIXED.size}-byte header")
    magic, version, kind, fid, ts, meta_len, data_len = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError(f"not an EdgeFlow frame: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != WIRE_VERSION:
        raise FrameError(f"unsupported wire version {version}; this EdgeFlow reads version {WIRE_VERSION}")
    if kind not in _KINDS:
        raise FrameError(f"unknown payload kind {kind}")
    pos = _FIXED.size
    desc = None
    if kind in (KIND_NDARRAY, KIND_ENCODED):
        try:
            (dlen,) = struct.unpack_from("<B", buf, pos)
            dtype_str = bytes(buf[pos + 1 : pos + 1 + dlen]).decode("ascii")
            pos += 1 + dlen
            (ndim,) = struct.unpack_from("<B", buf, pos)
            if ndim > _MAX_NDIM:
                raise FrameError(f"array header claims {ndim} dimensions (at most {_MAX_NDIM})")
            shape = struct.unpack_from(f"<{ndim}Q", buf, pos + 1)
            pos += 1 + 8 * ndim
            codec_name = ""
            if kind == KIND_ENCODED:
                (clen,) = struct.unpack_from("<B", buf, pos)
                codec_name = bytes(buf[pos + 1 : pos + 1 + clen]).decode("ascii")
                pos += 1 + clen
        except (struct.error, UnicodeDecodeError) as exc:
            raise FrameError(f"truncated or corrupted array header: {exc}") from exc
        desc = (dtype_str, tuple(int(s) for s in shape), codec_name)
    if len(buf) < pos + meta_len:
        raise FrameError(f"truncated frame: meta needs {meta_len} bytes, {len(buf) - pos} left")
    try:
        meta = json.loads(bytes(buf[pos : pos + meta_len])) if meta_len else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"corrupted frame meta: {exc}") from exc
    if not isinstance(meta, dict):
        raise FrameError(f"corrupted frame meta: expected an object, got {type(meta).__name__}")
    return kind, fid, ts, meta, desc, pos + meta_len, data_len


def peek(header: Buffer) -> tuple[int, float]:
    """Return the frame_id and timestamp of an encoded header without decoding meta or payload."""
    mv = memoryview(header)
    if len(mv) < _FIXED.size:
        raise FrameError(f"truncated frame: {len(mv)} bytes is shorter than the {_FIXED.size}-byte header")
    magic, version, _, fid, ts, _, _ = _FIXED.unpack_from(mv, 0)
    if magic != MAGIC or version != WIRE_VERSION:
        raise FrameError(f"not an EdgeFlow frame of wire version {WIRE_VERSION}")
    return int(fid), float(ts)


def _make_data(kind: int, desc: _Desc | None, payload: Buffer) -> Any:
    if kind == KIND_BYTES:
        return payload if isinstance(payload, bytes) else bytes(payload)
    if kind == KIND_JSON:
        try:
            return json.loads(bytes(payload) if not isinstance(payload, bytes) else payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"corrupted JSON payload: {exc}") from exc
    assert desc is not None
    dtype_str, shape, codec_name = desc
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as exc:
        raise FrameError(f"corrupted array header: bad dtype {dtype_str!r}") from exc
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject:
        raise FrameError(f"array dtype {dtype_str!r} is not allowed on the wire")
    if kind == KIND_ENCODED:
        try:
            codec = get_codec(codec_name)
        except ConfigurationError as exc:
            raise FrameError(f"frame encoded with codec {codec_name!r}, which is not installed here: {exc}") from exc
        return codec.decode(bytes(payload), dtype, shape)
    count = math.prod(shape)
    if count * dtype.itemsize != len(payload):
        raise FrameError(
            f"array of shape {shape} and dtype {dtype_str} needs {count * dtype.itemsize} bytes, got {len(payload)}"
        )
    return np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)


def decode(header: Buffer, payload: Buffer) -> Frame:
    """Decode a frame from the `(header, payload)` pair made by `encode`; arrays are read-only views of `payload`."""
    hv = memoryview(header)
    kind, fid, ts, meta, desc, hlen, data_len = _parse_header(hv)
    if hlen != len(hv):
        raise FrameError(f"corrupted frame: header is {len(hv)} bytes, its fields describe {hlen}")
    if data_len != len(payload):
        raise FrameError(f"frame length mismatch: header announces {data_len} data bytes, got {len(payload)}")
    return Frame(fid, ts, meta, _make_data(kind, desc, payload))


def pack(frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> list[Buffer]:
    """Encode `frame` (or reuse `encoded`) as the buffers of one contiguous message, for `socket.sendmsg`."""
    header, payload = encoded or encode(frame)
    return [header, payload] if len(payload) else [header]


def frame_size(buffers: list[Buffer]) -> int:
    """Return the total length of the buffers made by `pack`."""
    return sum(len(b) for b in buffers)


def unpack(buf: Buffer) -> Frame:
    """Decode one contiguous message made by `pack`; arrays are read-only views of `buf`."""
    mv = memoryview(buf)
    kind, fid, ts, meta, desc, hlen, data_len = _parse_header(mv)
    if hlen + data_len != len(mv):
        raise FrameError(f"frame length mismatch: header and data describe {hlen + data_len} bytes, got {len(mv)}")
    payload = mv[hlen:]
    if kind != KIND_NDARRAY:
        return Frame(fid, ts, meta, _make_data(kind, desc, payload))
    return Frame(fid, ts, meta, _make_data(kind, desc, payload.toreadonly()))
