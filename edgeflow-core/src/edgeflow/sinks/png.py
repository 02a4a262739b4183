"""Lossless PNG for image arrays, on the standard library's zlib (no OpenCV needed to write or read them back).

Arrays are in OpenCV's channel order (BGR, BGRA), as everywhere in EdgeFlow; PNG stores RGB(A), so the
channels are swapped on the way in and out. 8- and 16-bit samples; every row uses filter type 0 (none), which
keeps writing fast and reading simple. `read_png` reads what `write_png` wrote, bounded before it allocates.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from ..errors import FrameError

__all__ = ["is_png_image", "png_bytes", "read_png"]

_MAGIC = b"\x89PNG\r\n\x1a\n"
# channels -> PNG colour type: grey, grey+alpha, RGB, RGBA
_COLOR = {1: 0, 2: 4, 3: 2, 4: 6}
_CHANNELS = {v: k for k, v in _COLOR.items()}
_MAX_PIXELS = 1 << 28


def is_png_image(data: Any) -> bool:
    """True for 8- or 16-bit arrays shaped HxW or HxWxC (C 1 to 4): what PNG stores losslessly."""
    if not isinstance(data, np.ndarray) or data.dtype.kind != "u" or data.dtype.itemsize not in (1, 2):
        return False
    shape = data.shape
    ok = len(shape) == 2 or (len(shape) == 3 and 1 <= shape[2] <= 4)
    return ok and shape[0] > 0 and shape[1] > 0


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(image: np.ndarray, level: int = 1) -> bytes:
    """Encode an array accepted by `is_png_image` as PNG (zlib `level`: 1 fast, 9 small)."""
    img = image if image.ndim == 3 else image[:, :, None]
    height, width, channels = img.shape
    if channels in (3, 4):
        img = img[:, :, [2, 1, 0, *([3] if channels == 4 else [])]]  # BGR(A) -> RGB(A)
    depth = 8 * img.dtype.itemsize
    rows = np.empty((height, 1 + width * channels * img.dtype.itemsize), np.uint8)
    rows[:, 0] = 0  # filter type 0 on every row
    samples = img.astype(img.dtype.newbyteorder(">"), copy=False) if depth == 16 else img
    rows[:, 1:] = np.ascontiguousarray(samples).view(np.uint8).reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, depth, _COLOR[channels], 0, 0, 0)
    return b"".join((_MAGIC, _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(rows.data, level)),
                     _chunk(b"IEND", b"")))  # fmt: skip


def read_png(data: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    """Decode a PNG written by `png_bytes` back into an array of `dtype` and `shape`; FrameError otherwise."""
    if not data.startswith(_MAGIC):
        raise FrameError("not a PNG file")
    pos, idat, header = len(_MAGIC), [], None
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise FrameError("a PNG without its header")
    width, height, depth, color, _, _, interlace = header
    channels = _CHANNELS.get(color)
    if channels is None or depth not in (8, 16) or interlace or width * height > _MAX_PIXELS:
        raise FrameError(f"a PNG this reader does not read: {width}x{height}, {depth}-bit, colour type {color}")
    itemsize = depth // 8
    row = 1 + width * channels * itemsize
    want = row * height
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), want)  # bounded: never more than the header announces
    if len(raw) != want:
        raise FrameError(f"a truncated PNG: {len(raw)} of {want} bytes")
    rows = np.frombuffer(raw, np.uint8).reshape(height, row)
    if rows[:, 0].any():
        raise FrameError("a PNG with row filters: this reader reads the PNGs that FileSink writes")
    dt = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    img = rows[:, 1:].copy().view(dt).reshape(height, width, channels)
    if channels in (3, 4):
        img = img[:, :, [2, 1, 0, *([3] if channels == 4 else [])]]
    out = np.ascontiguousarray(img).astype(np.dtype(dtype), copy=False).reshape(shape)
    if out.shape != tuple(shape):
        raise FrameError(f"a PNG of {height}x{width}x{channels} does not fit shape {shape}")
    return out
