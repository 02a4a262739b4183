"""The test images: frame `index` of a fixed random picture, the same on both sides of a test."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _base(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pattern(index: int, height: int, width: int) -> np.ndarray:
    """Frame `index` as EdgeFlow holds it: H x W x 3 uint8 in BGR order."""
    return _base(height, width) + np.uint8(index % 256)


def expected_bytes(index: int, height: int, width: int, encoding: str) -> bytes:
    """Frame `index` as a ROS 2 Image in `encoding` carries it (rows packed)."""
    img = pattern(index, height, width)
    if encoding == "rgb8":
        img = img[..., ::-1]
    elif encoding == "mono8":
        img = img[..., 0]
    return np.ascontiguousarray(img).tobytes()


def as_received(index: int, height: int, width: int, encoding: str) -> np.ndarray:
    """Frame `index` as a Ros2Source should hand it on: BGR for colour, H x W for mono8."""
    img = pattern(index, height, width)
    return img[..., 0] if encoding == "mono8" else img
