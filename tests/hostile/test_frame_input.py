"""Hostile bytes into the wire format: decoding raises FrameError and nothing else, before allocating."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeflow.errors import FrameError
from edgeflow.frame import _FIXED, MAGIC, Frame, decode, encode, pack, unpack


def header(kind: int, meta: bytes, data_len: int, desc: bytes = b"") -> bytes:
    return _FIXED.pack(MAGIC, 1, kind, 1, 0.0, len(meta), data_len) + desc + meta


def array_header(dtype: str, shape: tuple[int, ...], data_len: int, meta: bytes = b"{}") -> bytes:
    d = dtype.encode()
    desc = struct.pack(f"<B{len(d)}sB{len(shape)}Q", len(d), d, len(shape), *shape)
    return header(1, meta, data_len, desc)


def nested(depth: int) -> Any:
    root: list[Any] = []
    cur = root
    for _ in range(depth):
        cur.append([])
        cur = cur[0]
    return root


@pytest.mark.parametrize(
    ("hdr", "payload", "why"),
    [
        (header(0, b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}", 1), b"x", "nested deeper than"),
        (header(0, b'{"a":' + b"[" * 100 + b"]" * 100 + b"}", 1), b"x", "nested deeper than"),
        (header(2, b"{}", 6001), b"[" * 3000 + b"1" + b"]" * 3000, "nested deeper than"),
        (array_header("|u1", (0, 2**63), 0), b"", "dimension"),
        (array_header("|u1", (2**40, 0), 0), b"", "dimension"),
        (array_header("{'names':['a'],'formats':['u1']}", (1,), 1), b"x", "dtype"),
        (array_header("[('a','u1')]", (1,), 1), b"x", "dtype"),
        (array_header("<f8", (2**32, 2**32), 0), b"", "needs 147573952589676412928 bytes"),
        (array_header("<U4", (1,), 4), b"xxxx", "dtype"),
        (array_header("V8", (1,), 8), b"x" * 8, "dtype"),
        (array_header("O", (1,), 8), b"x" * 8, "dtype"),
        (array_header("<M8[s]", (1,), 8), b"x" * 8, "dtype"),
        (header(0, b'{"v":NaN}', 1), b"x", "not a finite number"),
        (header(2, b"{}", 8), b"Infinity", "not a finite number"),
        (header(0, b'{"a":1}', 1)[:-2], b"x", "truncated"),
        (header(0, b"\xff\xfe", 1), b"x", "meta"),
        (header(2, b"{}", 3), b"\xff\xfe\xfd", "JSON"),
    ],
    ids=[
        "meta-3000-deep",
        "meta-100-deep",
        "data-3000-deep",
        "shape-0x2**63",
        "shape-2**40x0",
        "structured-dtype",
        "list-dtype",
        "shape-overflow",
        "text-dtype",
        "void-dtype",
        "object-dtype",
        "datetime-dtype",
        "nan-meta",
        "infinity-data",
        "truncated",
        "meta-not-utf8",
        "data-not-utf8",
    ],
)
def test_a_bad_frame_is_a_frame_error_naming_what_is_wrong(hdr: bytes, payload: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode(hdr, payload)
    with pytest.raises(FrameError):
        unpack(hdr + payload)


def test_sending_data_nested_too_deep_is_a_frame_error_not_a_crash() -> None:
    with pytest.raises(FrameError, match="nested deeper than 64"):
        encode(Frame(1, 0.0, {}, nested(1500)))
    with pytest.raises(FrameError, match="nested deeper than 64"):
        encode(Frame(1, 0.0, {"boxes": nested(100)}, b"x"))
    with pytest.raises(FrameError, match="finite"):
        encode(Frame(1, 0.0, {}, {"v": float("nan")}))
    ok = decode(*encode(Frame(1, 0.0, {"ok": nested(60)}, nested(60))))
    assert ok.meta["ok"] == nested(60), "legitimate nesting still travels"


def test_an_array_header_is_checked_before_anything_is_allocated() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(FrameError):
            decode(array_header("<f8", (2**20, 2**20), 64), b"x" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated for a hostile header"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), st.binary(max_size=256))
def test_random_bytes_decode_to_a_frame_or_a_frame_error(hdr: bytes, payload: bytes) -> None:
    try:
        decode(hdr, payload)
    except FrameError:
        pass
    try:
        unpack(hdr + payload)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_frames_decode_to_a_frame_or_a_frame_error(data: st.DataObject) -> None:
    frame = Frame(3, 1.5, {"k": [1, 2]}, np.arange(12, dtype=np.int16).reshape(3, 4))
    buf = bytearray(b"".join(bytes(b) for b in pack(frame)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    try:
        unpack(bytes(buf))
    except FrameError:
        pass
