"""The one JPEG helper: 8-bit images in OpenCV's channel order (BGR, BGRA), encoded and decoded by simplejpeg.

simplejpeg is an optional dependency (`pip install "edgeflow-core[jpeg]"`); it is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigurationError, FrameError

__all__ = ["COLORSPACES", "decode_jpeg", "encode_jpeg", "is_image", "jpeg_size", "require"]

#: Channels -> simplejpeg colourspace. The pipeline speaks OpenCV's convention (the seed draws with cv2).
COLORSPACES = {1: "GRAY", 3: "BGR", 4: "BGRA"}


def _lib() -> Any:
    try:
        import simplejpeg
    except ImportError as exc:
        raise ConfigurationError(
            'JPEG needs simplejpeg: pip install "edgeflow-core[jpeg]" (or pip install simplejpeg)'
        ) from exc
    return simplejpeg


def require() -> None:
    """Raise ConfigurationError, with the install command, when no JPEG library is installed."""
    _lib()


def is_image(data: Any) -> bool:
    """Return True when `data` is an 8-bit array shaped like an image: HxW, HxWx1, HxWx3 or HxWx4."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        return False
    shape: tuple[int, ...] = data.shape
    if len(shape) == 2:
        return shape[0] > 0 and shape[1] > 0
    return len(shape) == 3 and shape[0] > 0 and shape[1] > 0 and shape[2] in COLORSPACES


def encode_jpeg(image: np.ndarray, quality: int = 80, *, fast: bool = True) -> bytes:
    """Encode an image accepted by `is_image` (BGR order for 3 channels) as JPEG, 4:2:0.

    `fast` uses the fast DCT: what a live view needs; links that keep frames may want it off.
    """
    img = image if image.ndim == 3 else image[:, :, None]
    if not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)  # simplejpeg needs flat memory
    channels = img.shape[2]
    encoded = _lib().encode_jpeg(
        img,
        quality=int(quality),
        colorspace=COLORSPACES[channels],
        colorsubsampling="Gray" if channels == 1 else "420",
        fastdct=fast,
    )
    return bytes(encoded)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Return (height, width) from a JPEG's header without decoding it; FrameError when it is not a JPEG."""
    try:
        height, width = _lib().decode_jpeg_header(data)[:2]
    except ValueError as exc:
        raise FrameError(f"corrupted JPEG: {exc}") from exc
    return int(height), int(width)


def decode_jpeg(data: bytes, channels: int = 3) -> np.ndarray:
    """Decode a JPEG into an HxWx`channels` uint8 array in BGR order (HxWx1 for 1 channel)."""
    colorspace = COLORSPACES.get(channels)
    if colorspace is None:
        raise FrameError(f"a JPEG decodes to 1, 3 or 4 channels, not {channels}")
    try:
        out: np.ndarray = _lib().decode_jpeg(data, colorspace=colorspace)
    except ValueError as exc:
        raise FrameError(f"corrupted JPEG: {exc}") from exc
    return out
