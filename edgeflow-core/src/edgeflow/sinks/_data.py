"""A frame's data as sinks store it (kind, dtype, shape, payload bytes), and back, bit for bit."""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from ..errors import FrameError, UnstorableFrameError
from ..frame import Buffer

__all__ = ["Stored", "dumps", "rebuild", "split"]

# Plain memory only, as on the wire: bool, ints, floats, complex.
_DTYPE_KINDS = frozenset("biufc")
_MAX_NDIM = 32


class Stored(NamedTuple):
    """What a sink writes for a frame's data."""

    kind: str  # "array", "bytes" or "json"
    dtype: str | None
    shape: list[int] | None
    payload: Buffer


def dumps(value: Any, what: str) -> bytes:
    """Compact JSON, as the wire writes it (so that a replay sends the same bytes)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UnstorableFrameError(f"{what} is not JSON: {exc}") from exc


def split(data: Any) -> Stored:
    """Describe `data` for storage; an array's payload is a view of its memory, not a copy."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in _DTYPE_KINDS or data.dtype.hasobject:
            raise UnstorableFrameError(f"arrays of dtype {data.dtype} can't be stored; use a numeric or bool dtype")
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        payload: Buffer = memoryview(arr).cast("B") if arr.size else b""  # type: ignore[arg-type]
        return Stored("array", arr.dtype.str, [int(n) for n in arr.shape], payload)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Stored("bytes", None, None, data if not isinstance(data, memoryview) else data.cast("B"))
    return Stored("json", None, None, dumps(data, f"data of type {type(data).__name__}"))


def rebuild(kind: str, dtype: str | None, shape: list[int] | None, payload: Buffer) -> Any:
    """Return the data `split` described; FrameError when the stored description does not fit the payload."""
    if kind == "bytes":
        return bytes(payload)
    if kind == "json":
        try:
            return json.loads(bytes(payload))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"stored JSON data is corrupted: {exc}") from exc
    if kind != "array" or dtype is None or shape is None:
        raise FrameError(f"stored data of unknown kind {kind!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise FrameError(f"stored array has a bad dtype {dtype!r}") from exc
    if dt.kind not in _DTYPE_KINDS or dt.hasobject:
        raise FrameError(f"stored array dtype {dtype!r} is not allowed")
    if len(shape) > _MAX_NDIM or any(not isinstance(n, int) or n < 0 for n in shape):
        raise FrameError(f"stored array has a bad shape {shape!r}")
    if math.prod(shape) * dt.itemsize != len(payload):
        raise FrameError(f"stored array of shape {shape} and dtype {dtype} does not fit its {len(payload)} bytes")
    return np.frombuffer(payload, dtype=dt).reshape(shape)
