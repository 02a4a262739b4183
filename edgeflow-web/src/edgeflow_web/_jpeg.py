"""Which frames are images (JPEG-encoded by the core's one helper, in BGR order), and how data is described."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgeflow.jpeg import encode_jpeg, is_image

__all__ = ["describe_data", "encode_jpeg", "is_image"]

_MAX_JSON_CHARS = 16_384


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
