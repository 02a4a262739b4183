"""Per-link codecs: `app.link("cam").to("remote", codec="jpeg", quality=80)` for links over slow networks.

A codec turns an image array into compact bytes once per frame for all the links that asked for it, and back
into an array on the reading side. Links without a codec carry frames raw; nothing is encoded that nobody asked
for. Plugins add codecs through the `register_codecs` hook; this module is also the built-in plugin that
registers `jpeg`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .errors import ConfigurationError, FrameError
from .hookspecs import hookimpl
from .jpeg import decode_jpeg, encode_jpeg, is_image, jpeg_size, require

__all__ = ["Codec", "JpegCodec"]


class Codec(Protocol):
    """Encodes arrays for a link and decodes them for its readers."""

    name: str

    def check(self, params: dict[str, Any]) -> None:
        """Raise ConfigurationError when `params` (the link's options) don't fit, or the codec can't run here."""

    def encode(self, data: np.ndarray, params: dict[str, Any]) -> bytes | None:
        """Return the encoded array, or None when this array is not for this codec (it then travels raw)."""

    def decode(self, data: bytes, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """Return the array that `encode` was given (lossy codecs: an approximation of it)."""


class JpegCodec:
    """JPEG for 8-bit images (H x W, or H x W x 1, 3 or 4 channels in OpenCV's BGR order)."""

    name = "jpeg"

    def check(self, params: dict[str, Any]) -> None:
        """Check the quality (1-100, default 80) and that an encoder is installed."""
        quality = params.get("quality", 80)
        if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
            raise ConfigurationError(f"codec='jpeg': quality must be an int from 1 to 100, got {quality!r}")
        require()

    def encode(self, data: np.ndarray, params: dict[str, Any]) -> bytes | None:
        """Encode an 8-bit image; anything else travels raw."""
        if not is_image(data):
            return None
        return encode_jpeg(data, int(params.get("quality", 80)), fast=False)

    def decode(self, data: bytes, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """Decode to the original shape; the size in the JPEG's header is checked first (no hostile gigabytes)."""
        channels = 1 if len(shape) == 2 else shape[2]
        if dtype != np.uint8 or len(shape) not in (2, 3) or channels not in (1, 3, 4):
            raise FrameError(f"a JPEG frame can't decode to dtype {dtype} and shape {shape}")
        height, width = jpeg_size(data)
        if (height, width) != tuple(shape[:2]):
            raise FrameError(f"JPEG payload is {height}x{width}, its frame header says {shape}")
        img = decode_jpeg(data, channels)
        out: np.ndarray = img.reshape(shape)
        return out


@hookimpl
def register_codecs(register: Any) -> None:
    """Register the built-in JPEG codec."""
    register("jpeg", JpegCodec())
