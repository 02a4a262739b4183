"""Image encodings (sensor_msgs/image_encodings) between ROS 2 messages and EdgeFlow's BGR numpy arrays.

EdgeFlow images are OpenCV's: H x W x C in BGR(A) order, H x W for one channel. A received image becomes a
view of the message's pixel block wherever its layout allows (row padding is a stride, big-endian pixels a
big-endian dtype); only a channel reorder that no stride can express (rgba -> bgra) copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MessageError, Ros2ConfigurationError

__all__ = ["ENCODINGS", "Layout", "choose_encoding", "to_array", "write_pixels"]


@dataclass(frozen=True, slots=True)
class Layout:
    """How an encoding lays pixels out: element type, channels, and whether its colour order is RGB."""

    dtype: np.dtype[Any]
    channels: int
    rgb: bool = False


def _named() -> dict[str, Layout]:
    u8, u16 = np.dtype(np.uint8), np.dtype(np.uint16)
    return {
        "bgr8": Layout(u8, 3), "rgb8": Layout(u8, 3, True), "bgra8": Layout(u8, 4), "rgba8": Layout(u8, 4, True),
        "bgr16": Layout(u16, 3), "rgb16": Layout(u16, 3, True), "bgra16": Layout(u16, 4),
        "rgba16": Layout(u16, 4, True), "mono8": Layout(u8, 1), "mono16": Layout(u16, 1),
    }  # fmt: skip


def _opencv_types() -> dict[str, Layout]:
    # OpenCV's type names, which sensor_msgs/image_encodings also accepts: 8UC3, 16UC1, 32FC1, ...
    kinds = {"8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16, "32S": np.int32,
             "32F": np.float32, "64F": np.float64}  # fmt: skip
    return {f"{k}C{n}": Layout(np.dtype(t), n) for k, t in kinds.items() for n in (1, 2, 3, 4)}


#: Every raw encoding this plugin reads and writes.
ENCODINGS: dict[str, Layout] = {**_named(), **_opencv_types()}
_JPEG = "jpeg"
_OPENCV_NAME = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")


def check_encoding(encoding: object, what: str) -> str:
    """Return `encoding` when the interface can publish it ("jpeg" for CompressedImage, or a raw one)."""
    if encoding != _JPEG and encoding not in ENCODINGS:
        raise Ros2ConfigurationError(
            f"{what}: unknown encoding {encoding!r}; use 'jpeg' (CompressedImage) or one of "
            f"bgr8, rgb8, bgra8, rgba8, mono8, mono16, bgr16, rgb16, or an OpenCV type such as 16UC1 or 32FC1"
        )
    assert isinstance(encoding, str)
    return encoding


def _fits(image: np.ndarray, layout: Layout) -> bool:
    if image.ndim not in (2, 3):
        return False
    channels = 1 if image.ndim == 2 else image.shape[2]
    return (
        channels == layout.channels
        and image.dtype.newbyteorder("=") == layout.dtype
        and image.shape[0] > 0
        and image.shape[1] > 0
    )


def _obvious(image: np.ndarray) -> str | None:
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        return None
    channels = 1 if image.ndim == 2 else image.shape[2]
    dtype = image.dtype.newbyteorder("=")
    if dtype == np.uint8 and channels in (1, 3, 4):
        return {1: "mono8", 3: "bgr8", 4: "bgra8"}[channels]
    for name, layout in ENCODINGS.items():
        if _OPENCV_NAME.match(name) and layout.dtype == dtype and layout.channels == channels:
            return name
    return None


def choose_encoding(image: np.ndarray, configured: str | None, from_meta: object) -> str:
    """Pick the encoding to publish `image` with: the configured one (which must fit), the frame's own, the obvious.

    `from_meta` is the `encoding` a ROS 2 source put in the frame's meta; it is used only when it fits the
    array, since a node in between may have changed the image and kept the meta.
    """
    if configured is not None and configured != _JPEG:
        if not _fits(image, ENCODINGS[configured]):
            raise MessageError(
                f"an array of shape {image.shape} and dtype {image.dtype} can't be published as {configured}"
            )
        return configured
    if isinstance(from_meta, str) and from_meta in ENCODINGS and _fits(image, ENCODINGS[from_meta]):
        return from_meta
    name = _obvious(image)
    if name is None or image.shape[0] == 0 or image.shape[1] == 0:
        raise MessageError(
            f"an array of shape {image.shape} and dtype {image.dtype} is not an image: send H x W x C (C 1-4) or "
            "H x W arrays of a numeric dtype"
        )
    return name


def write_pixels(image: np.ndarray, encoding: str, out: memoryview) -> None:
    """Copy `image` (BGR order) into `out` as `encoding`'s packed rows, reordering channels on the way."""
    layout = ENCODINGS[encoding]
    dst = np.frombuffer(out, dtype=layout.dtype.newbyteorder("<"), count=image.size).reshape(image.shape)
    src = image[..., [2, 1, 0, 3]] if layout.rgb and layout.channels == 4 else image
    if layout.rgb and layout.channels == 3:
        src = image[..., ::-1]
    np.copyto(dst, src, casting="equiv")  # "equiv": a big-endian array is swapped on the way, nothing else converts


def to_array(
    buf: memoryview, height: int, width: int, encoding: str, is_bigendian: bool, step: int, max_bytes: int
) -> np.ndarray:
    """Return the received pixels as an H x W (x C) array in BGR order, a view of `buf` wherever possible.

    Raises MessageError when the encoding is unknown or the sizes don't add up; nothing is allocated from
    the sizes a message declares before they are checked against the bytes it holds.
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise MessageError(f"encoding {encoding[:64]!r} is not supported (Bayer and YUV images need converting)")
    if height == 0 or width == 0:
        raise MessageError(f"empty image ({width} x {height})")
    itemsize = layout.dtype.itemsize
    row = width * layout.channels * itemsize
    if step < row:
        raise MessageError(f"step {step} is shorter than a row of {width} {encoding} pixels ({row} bytes)")
    if step * height != len(buf):
        raise MessageError(f"{height} rows of step {step} need {step * height} bytes, the message has {len(buf)}")
    if row * height > max_bytes:
        raise MessageError(f"a {width} x {height} {encoding} image is larger than the {max_bytes} bytes accepted")
    if step % itemsize:
        raise MessageError(f"step {step} is not a whole number of {itemsize}-byte elements")
    dtype = layout.dtype.newbyteorder(">" if is_bigendian else "<") if itemsize > 1 else layout.dtype
    if layout.channels == 1:
        shape: tuple[int, ...] = (height, width)
        strides: tuple[int, ...] = (step, itemsize)
    else:
        shape = (height, width, layout.channels)
        strides = (step, layout.channels * itemsize, itemsize)
    image: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if not image.flags.aligned:
        image = image.copy()  # the block starts at an odd address for this dtype: numpy needs it aligned
    if layout.rgb:
        image = image[..., ::-1] if layout.channels == 3 else image[..., [2, 1, 0, 3]]
    return image
