"""Per-link codecs: `app.link("cam").to("remote", codec="jpeg", quality=80)` for links over slow networks.

A codec turns an image array into compact bytes once per frame for all the links that asked for it, and back
into an array on the reading side. Links without a codec carry frames raw; nothing is encoded that nobody asked
for. Plugins add codecs through the `register_codecs` hook.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .errors import ConfigurationError, FrameError
from .hookspecs import hookimpl

__all__ = ["Codec", "JpegCodec", "get_codec"]


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
    """JPEG for 8-bit images (H x W, or H x W x 1, 3 or 4 channels), with simplejpeg."""

    name = "jpeg"

    @staticmethod
    def _lib() -> Any:
        try:
            import simplejpeg
        except ImportError as exc:
            raise ConfigurationError(
                'codec="jpeg" needs simplejpeg: pip install "edgeflow-core[jpeg]" (or simplejpeg)'
            ) from exc
        return simplejpeg

    def check(self, params: dict[str, Any]) -> None:
        """Check the quality (1-100, default 80) and that an encoder is installed."""
        quality = params.get("quality", 80)
        if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
            raise ConfigurationError(f"codec='jpeg': quality must be an int from 1 to 100, got {quality!r}")
        self._lib()

    def encode(self, data: np.ndarray, params: dict[str, Any]) -> bytes | None:
        """Encode an 8-bit image; anything else travels raw."""
        if data.dtype != np.uint8 or data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (1, 3, 4)):
            return None
        if data.shape[0] == 0 or data.shape[1] == 0:
            return None
        img = data if data.ndim == 3 else data[:, :, None]
        colorspace = {1: "GRAY", 3: "RGB", 4: "RGBA"}[img.shape[2]]
        encoded: bytes = self._lib().encode_jpeg(
            np.ascontiguousarray(img), quality=int(params.get("quality", 80)), colorspace=colorspace
        )
        return encoded

    def decode(self, data: bytes, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """Decode to the original shape."""
        channels = 1 if len(shape) == 2 else shape[2]
        colorspace = {1: "GRAY", 3: "RGB", 4: "RGBA"}.get(channels)
        if colorspace is None or dtype != np.uint8:
            raise FrameError(f"a JPEG frame can't decode to dtype {dtype} and shape {shape}")
        lib = self._lib()
        try:
            # The header's size is checked before decoding, so a hostile JPEG can't ask for gigabytes.
            height, width = lib.decode_jpeg_header(data)[:2]
            if (height, width) != tuple(shape[:2]):
                raise FrameError(f"JPEG payload is {height}x{width}, its frame header says {shape}")
            img = lib.decode_jpeg(data, colorspace=colorspace)
        except ValueError as exc:
            raise FrameError(f"corrupted JPEG payload: {exc}") from exc
        out: np.ndarray = img.reshape(shape) if img.size == int(np.prod(shape)) else img
        if out.shape != shape:
            raise FrameError(f"JPEG payload decodes to shape {out.shape}, its header says {shape}")
        return out


def get_codec(name: str) -> Codec:
    """Return the codec registered as `name`; raises ConfigurationError listing the known ones."""
    from .plugins import registry

    codecs = registry("register_codecs")
    if name not in codecs:
        raise ConfigurationError(f"unknown codec {name!r}; installed codecs: {sorted(codecs)}")
    codec: Codec = codecs[name]
    return codec


@hookimpl
def register_codecs(register: Any) -> None:
    """Register the built-in JPEG codec."""
    register("jpeg", JpegCodec())
