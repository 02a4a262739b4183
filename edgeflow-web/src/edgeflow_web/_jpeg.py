"""Which frames are images, and their JPEG encoding."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import simplejpeg

__all__ = ["describe_data", "encode_jpeg", "is_image"]

# The pipeline speaks OpenCV's convention (the seed draws with cv2), so 3 and 4 channels are BGR and BGRA.
_COLORSPACES = {1: "GRAY", 3: "BGR", 4: "BGRA"}
_MAX_JSON_CHARS = 16_384


def is_image(data: Any) -> bool:
    """Return True when `data` is an 8-bit array shaped like an image: HxW, HxWx1, HxWx3 or HxWx4."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        return False
    if data.ndim == 2:
        return data.shape[0] > 0 and data.shape[1] > 0
    return data.ndim == 3 and data.shape[0] > 0 and data.shape[1] > 0 and data.shape[2] in _COLORSPACES


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """Encode an image accepted by `is_image` as JPEG (4:2:0, fast DCT: what a live view needs)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if not image.flags.c_contiguous:
        image = np.ascontiguousarray(image)
    channels = image.shape[2]
    subsampling = "Gray" if channels == 1 else "420"
    return bytes(
        simplejpeg.encode_jpeg(
            image, quality=quality, colorspace=_COLORSPACES[channels], colorsubsampling=subsampling, fastdct=True
        )
    )


def describe_data(data: Any) -> dict[str, Any]:
    """Return a small JSON-ready description of a frame's data for `/api/status`."""
    if isinstance(data, np.ndarray):
        kind = "image" if is_image(data) else "array"
        return {"kind": kind, "shape": list(data.shape), "dtype": str(data.dtype)}
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data[:32])
        return {"kind": "bytes", "size": len(data), "head": raw.hex()}
    text = json.dumps(data, default=str)
    if len(text) > _MAX_JSON_CHARS:
        # A large payload would make every status poll heavy; show its start only.
        return {"kind": "json", "size": len(text), "truncated": True, "preview": text[:1024]}
    return {"kind": "json", "value": data}
