"""`Frame` and its versioned binary wire format.

Layout (little-endian), version 2 (version 1 is the same without the trace block, and still decodes)::

    fixed   magic "EF" | version u8 | kind u8 | frame_id u64 | timestamp f64 | meta_len u32 | data_len u64
    trace   (version 2) count u8 | (node u8 | stamp kind u8 | offset i32) * count
    array   (kind ndarray and encoded) dtype_len u8 | dtype str | ndim u8 | shape u64 * ndim
    codec   (kind encoded only) name_len u8 | codec name
    meta    JSON, utf-8, meta_len bytes
    data    data_len bytes: raw array memory, the bytes as given, or JSON

The header and the data are separate buffers so that a broker can keep the payload apart from its
stream entry (a data plane stores only a reference) and a socket can send both without joining them.
Arrays decode as read-only views of the received buffer: no copy.

The trace block holds the frame's hop times (`edgeflow.tracing`) as microsecond offsets from its timestamp:
6 bytes a stamp, 43 bytes for a producer -> consumer -> gateway path, where f64 times would take 71; an i32 of
microseconds spans +-35 minutes (a stamp further off is clamped when it is made). A frame without stamps travels
as version 1.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigurationError, FrameError
from .plugins import get_codec
from .tracing import MAX_STAMPS as _MAX_STAMPS
from .tracing import STAMP as _STAMP
from .tracing import offset_us

__all__ = [
    "KIND_BYTES",
    "KIND_ENCODED",
    "KIND_JSON",
    "KIND_NDARRAY",
    "WIRE_VERSION",
    "WIRE_VERSIONS",
    "Buffer",
    "Frame",
    "decode",
    "encode",
    "frame_size",
    "pack",
    "peek",
    "restamp",
    "unpack",
]

WIRE_VERSION = 2
#: The wire versions this EdgeFlow decodes.
WIRE_VERSIONS = (1, 2)
MAGIC = b"EF"
KIND_BYTES = 0
KIND_NDARRAY = 1
KIND_JSON = 2
KIND_ENCODED = 3  # an array encoded by a link codec; the header keeps its dtype, shape and the codec's name
_KINDS = (KIND_BYTES, KIND_NDARRAY, KIND_JSON, KIND_ENCODED)
_FIXED = struct.Struct("<2sBBQdIQ")
_MAX_NDIM = 32
#: The largest length of one array dimension accepted from the wire.
MAX_DIM = 1 << 32
#: The deepest nesting of JSON (meta and data) that travels; deeper is refused when sent and when received.
MAX_JSON_DEPTH = 64
# The dtype strings accepted from the wire: plain numbers with an optional byte order, nothing numpy would parse
# into a structured, object or text type.
_WIRE_DTYPE = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248]|c(8|16))$")


@dataclass(slots=True)
class Frame:
    """One message between nodes: an id, a creation timestamp (seconds since the epoch), JSON meta and the data."""

    frame_id: int
    timestamp: float
    meta: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    #: The hop times as they travel, 6 bytes a stamp (`edgeflow.tracing.stamps(frame.trace)` reads them); None
    #: when not traced. Kept packed: a hop adds its stamp without the others being unpacked and packed again.
    trace: bytes | None = None

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


def _too_deep(obj: Any) -> bool:
    """True when `obj` nests lists and dicts deeper than MAX_JSON_DEPTH (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))
    return False


def _dumps(obj: Any, what: str) -> bytes:
    if isinstance(obj, (dict, list, tuple)) and _too_deep(obj):
        raise FrameError(f"{what} can't be sent: it is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise FrameError(f"{what} can't be sent: {exc} (JSON carries finite numbers only)") from exc
    except (TypeError, RecursionError) as exc:
        raise FrameError(
            f"{what} can't be sent: {exc}. Send an ndarray, bytes, or JSON-compatible data (dict, list, str, number)"
        ) from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


# One decoder for every frame: json.loads with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(raw: bytes, what: str) -> Any:
    """Parse JSON from the wire: finite numbers only, nested MAX_JSON_DEPTH levels at most."""
    try:
        obj = _DECODER.decode(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw)
    except RecursionError as exc:
        raise FrameError(f"corrupted {what}: nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"corrupted {what}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    # A text shorter than twice the limit can't nest deeper than it: most meta and messages skip the walk.
    if len(raw) > 2 * MAX_JSON_DEPTH and isinstance(obj, (dict, list)) and _too_deep(obj):
        raise FrameError(f"corrupted {what}: nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


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
        if not _WIRE_DTYPE.match(data.dtype.str):
            raise FrameError(
                f"arrays of dtype {data.dtype} can't be sent; use bool, an int, a float of up to 64 bits or complex"
            )
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
    trace = frame.trace
    if not trace:
        return _FIXED.pack(MAGIC, 1, kind, fid, ts, len(meta), len(payload)) + array_desc + meta, payload
    fixed = _FIXED.pack(MAGIC, WIRE_VERSION, kind, fid, ts, len(meta), len(payload))
    n, rest = divmod(len(trace), _STAMP.size)
    if rest or not isinstance(trace, bytes):
        raise FrameError(f"frame trace must be packed stamps of {_STAMP.size} bytes (edgeflow.tracing.pack_stamps)")
    if n > _MAX_STAMPS:
        trace, n = trace[: _MAX_STAMPS * _STAMP.size], _MAX_STAMPS
    return fixed + bytes((n,)) + trace + array_desc + meta, payload


_Desc = tuple[str, tuple[int, ...], str]
_Trace = bytes | None


def _parse_trace(buf: memoryview, pos: int) -> tuple[_Trace, int]:
    """Parse the trace block at `pos`; return the stamps and the position after them."""
    if len(buf) < pos + 1:
        raise FrameError("truncated frame: the trace block is missing")
    count = buf[pos]
    if count > _MAX_STAMPS:
        raise FrameError(f"trace claims {count} stamps (at most {_MAX_STAMPS})")
    end = pos + 1 + count * _STAMP.size
    if len(buf) < end:
        raise FrameError(f"truncated frame: {count} trace stamps need {count * _STAMP.size} bytes")
    return bytes(buf[pos + 1 : end]), end


def _parse_header(buf: memoryview) -> tuple[int, int, float, dict[str, Any], _Desc | None, int, int, _Trace]:
    """Parse a header; return kind, frame_id, timestamp, meta, array descriptor, header length, data length and
    trace."""
    if len(buf) < _FIXED.size:
        raise FrameError(f"truncated frame: {len(buf)} bytes is shorter than the {_FIXED.size}-byte header")
    magic, version, kind, fid, ts, meta_len, data_len = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError(f"not an EdgeFlow frame: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version not in WIRE_VERSIONS:
        raise FrameError(f"unsupported wire version {version}; this EdgeFlow reads versions {WIRE_VERSIONS}")
    if kind not in _KINDS:
        raise FrameError(f"unknown payload kind {kind}")
    pos = _FIXED.size
    trace: _Trace = None
    if version == 2:
        trace, pos = _parse_trace(buf, pos)
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
        if any(d > MAX_DIM for d in shape):
            raise FrameError(f"array header claims shape {shape}: a dimension over {MAX_DIM} is refused")
        desc = (dtype_str, tuple(int(s) for s in shape), codec_name)
    if len(buf) < pos + meta_len:
        raise FrameError(f"truncated frame: meta needs {meta_len} bytes, {len(buf) - pos} left")
    if not math.isfinite(ts):
        raise FrameError(f"corrupted frame: timestamp {ts} is not a finite number")
    meta = _loads(bytes(buf[pos : pos + meta_len]), "frame meta") if meta_len else {}
    if not isinstance(meta, dict):
        raise FrameError(f"corrupted frame meta: expected an object, got {type(meta).__name__}")
    return kind, fid, ts, meta, desc, pos + meta_len, data_len, trace


def peek(header: Buffer) -> tuple[int, float]:
    """Return the frame_id and timestamp of an encoded header without decoding meta or payload."""
    mv = memoryview(header)
    if len(mv) < _FIXED.size:
        raise FrameError(f"truncated frame: {len(mv)} bytes is shorter than the {_FIXED.size}-byte header")
    magic, version, _, fid, ts, _, _ = _FIXED.unpack_from(mv, 0)
    if magic != MAGIC or version not in WIRE_VERSIONS:
        raise FrameError(f"not an EdgeFlow frame of wire versions {WIRE_VERSIONS}")
    return int(fid), float(ts)


def restamp(header: Buffer, kind: int, t: float) -> Buffer:
    """Return `header` with its last trace stamp made a `kind` stamp at time `t` (the same header if untraced).

    The TCP sender uses it to stamp the time a frame really went on the wire, after waiting in its outbox.
    """
    mv = memoryview(header)
    if len(mv) < _FIXED.size + 1 or mv[2] != 2 or mv[_FIXED.size] == 0:
        return header
    count = mv[_FIXED.size]
    at = _FIXED.size + 1 + (count - 1) * _STAMP.size
    if len(mv) < at + _STAMP.size:
        return header
    node, _, _ = _STAMP.unpack_from(mv, at)
    (ts,) = struct.unpack_from("<d", mv, 12)
    out = bytearray(mv)
    _STAMP.pack_into(out, at, node, kind, offset_us(t, ts))
    return out


def _make_data(kind: int, desc: _Desc | None, payload: Buffer) -> Any:
    if kind == KIND_BYTES:
        return payload if isinstance(payload, bytes) else bytes(payload)
    if kind == KIND_JSON:
        return _loads(bytes(payload) if not isinstance(payload, bytes) else payload, "JSON payload")
    assert desc is not None
    dtype_str, shape, codec_name = desc
    if not _WIRE_DTYPE.match(dtype_str):
        raise FrameError(f"array dtype {dtype_str[:40]!r} is not allowed on the wire (plain numbers and bool only)")
    dtype = np.dtype(dtype_str)
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
    """Decode a frame from the `(header, payload)` pair made by `encode`; arrays are read-only views of `payload`.

    Raises FrameError, and nothing else, for any input that is not a valid frame.
    """
    try:
        return _decode(header, payload)
    except FrameError:
        raise
    except Exception as exc:  # a path the checks above missed still may not kill a reader
        raise FrameError(f"corrupted frame: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _decode(header: Buffer, payload: Buffer) -> Frame:
    hv = memoryview(header)
    kind, fid, ts, meta, desc, hlen, data_len, trace = _parse_header(hv)
    if hlen != len(hv):
        raise FrameError(f"corrupted frame: header is {len(hv)} bytes, its fields describe {hlen}")
    if data_len != len(payload):
        raise FrameError(f"frame length mismatch: header announces {data_len} data bytes, got {len(payload)}")
    return Frame(fid, ts, meta, _make_data(kind, desc, payload), trace)


def pack(frame: Frame, encoded: tuple[bytes, Buffer] | None = None) -> list[Buffer]:
    """Encode `frame` (or reuse `encoded`) as the buffers of one contiguous message, for `socket.sendmsg`."""
    header, payload = encoded or encode(frame)
    return [header, payload] if len(payload) else [header]


def frame_size(buffers: list[Buffer]) -> int:
    """Return the total length of the buffers made by `pack`."""
    return sum(len(b) for b in buffers)


def unpack(buf: Buffer) -> Frame:
    """Decode one contiguous message made by `pack`; arrays are read-only views of `buf`. Raises only FrameError."""
    try:
        return _unpack(buf)
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(f"corrupted frame: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _unpack(buf: Buffer) -> Frame:
    mv = memoryview(buf)
    kind, fid, ts, meta, desc, hlen, data_len, trace = _parse_header(mv)
    if hlen + data_len != len(mv):
        raise FrameError(f"frame length mismatch: header and data describe {hlen + data_len} bytes, got {len(mv)}")
    payload = mv[hlen:]
    if kind != KIND_NDARRAY:
        return Frame(fid, ts, meta, _make_data(kind, desc, payload), trace)
    return Frame(fid, ts, meta, _make_data(kind, desc, payload.toreadonly()), trace)
