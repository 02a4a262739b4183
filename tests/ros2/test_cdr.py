"""The plugin's hand-written CDR against cyclonedds-python's own serializer, and against hostile bytes (no network)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow_ros2._cdr import (
    compressed_prefix,
    decode_compressed,
    decode_image,
    decode_string,
    encode_string,
    image_prefix,
    stamp_parts,
)
from edgeflow_ros2._images import choose_encoding, to_array, write_pixels
from edgeflow_ros2.errors import MessageError

from .ros_msgs import CompressedImage, Header, Image, String, Time

LIMIT = 1 << 24


def reference_image(img: np.ndarray, encoding: str, step: int | None = None, sec: int = 7, nsec: int = 9) -> bytes:
    """An Image serialized by cyclonedds-python itself, rows padded to `step`."""
    h, w = img.shape[:2]
    row = img.reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = step or row.shape[1]
    padded = np.zeros((h, step), np.uint8)
    padded[:, : row.shape[1]] = row
    msg = Image(Header(Time(sec, nsec), "cam_optical"), h, w, encoding, 0, step, padded.ravel().tolist())
    return msg.serialize()


def plugin_image(img: np.ndarray, encoding: str, ts: float = 7.000000009) -> bytes:
    h, w = img.shape[:2]
    step = img.nbytes // h
    prefix = image_prefix(stamp_parts(ts), "cam_optical", h, w, encoding, step, step * h)
    out = bytearray(len(prefix) + step * h)
    out[: len(prefix)] = prefix
    write_pixels(img, encoding, memoryview(out)[len(prefix) :])
    return bytes(out)


@pytest.mark.parametrize(
    ("shape", "dtype", "encoding"),
    [((4, 5, 3), np.uint8, "bgr8"), ((3, 7), np.uint8, "mono8"), ((2, 3), np.uint16, "16UC1"),
     ((2, 2, 4), np.uint8, "bgra8"), ((3, 2), np.float32, "32FC1")],
)  # fmt: skip
def test_image_bytes_equal_cyclonedds_own_serialization(shape: tuple[int, ...], dtype: type, encoding: str) -> None:
    img = (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)
    assert plugin_image(img, encoding) == reference_image(img, encoding)


def test_rgb8_is_written_in_rgb_order_and_read_back_as_bgr() -> None:
    bgr = np.random.default_rng(1).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    wire = plugin_image(bgr, "rgb8")
    assert wire == reference_image(np.ascontiguousarray(bgr[..., ::-1]), "rgb8"), "RGB on the wire"
    msg = decode_image(wire)
    back = to_array(msg.data, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, LIMIT)
    assert np.array_equal(back, bgr)


def test_cyclonedds_serialized_image_decodes_as_a_view_with_padded_rows() -> None:
    img = np.random.default_rng(2).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    wire = reference_image(img, "bgr8", step=20)  # 18 bytes of pixels + 2 of padding per row
    msg = decode_image(wire)
    assert (msg.header.sec, msg.header.nanosec, msg.header.frame_id) == (7, 9, "cam_optical")
    assert (msg.height, msg.width, msg.encoding, msg.step) == (5, 6, "bgr8", 20)
    arr = to_array(msg.data, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, LIMIT)
    assert np.array_equal(arr, img)
    assert np.shares_memory(arr, np.frombuffer(wire, np.uint8)), "a view of the received buffer, not a copy"
    assert not arr.flags.writeable


def test_big_endian_pixels_are_a_big_endian_view() -> None:
    img = np.array([[1, 256], [2, 65535]], dtype=">u2")
    msg = Image(Header(Time(1, 0), ""), 2, 2, "mono16", 1, 4, list(img.tobytes()))
    m = decode_image(msg.serialize())
    arr = to_array(m.data, m.height, m.width, m.encoding, m.is_bigendian, m.step, LIMIT)
    assert arr.dtype == np.dtype(">u2") and arr.tolist() == [[1, 256], [2, 65535]]


def test_compressed_image_and_string_match_cyclonedds() -> None:
    blob = b"\xff\xd8\xff" + bytes(range(40))
    ref = CompressedImage(Header(Time(3, 500), "f"), "jpeg", list(blob)).serialize()
    ours = compressed_prefix(stamp_parts(3.0000005), "f", "jpeg", len(blob)) + blob
    assert ours == ref
    msg = decode_compressed(ref)
    assert (msg.format, bytes(msg.data), msg.header.stamp) == ("jpeg", blob, pytest.approx(3.0000005))
    text = '{"boxes": [[1, 2, 3, 4]], "label": "ünïcode"}'
    assert encode_string(text) == String(text).serialize()
    assert decode_string(String(text).serialize(), LIMIT) == text


def test_stamp_parts_round_and_carry() -> None:
    assert stamp_parts(1.5) == (1, 500_000_000)
    assert stamp_parts(1.9999999999) == (2, 0)
    with pytest.raises(MessageError):
        stamp_parts(float("nan"))
    with pytest.raises(MessageError):
        stamp_parts(2.0**31)


def test_every_truncation_is_a_message_error() -> None:
    wire = reference_image(np.zeros((2, 2, 3), np.uint8), "bgr8")
    for n in range(len(wire)):
        with pytest.raises(MessageError):
            msg = decode_image(wire[:n])
            to_array(msg.data, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, LIMIT)


def test_hostile_lengths_are_checked_against_the_bytes_received() -> None:
    wire = bytearray(reference_image(np.zeros((2, 2), np.uint8), "mono8"))
    # The frame_id's length sits right after the stamp: claim 4 GiB.
    struct.pack_into("<I", wire, 4 + 8, 0xFFFFFFFF)
    with pytest.raises(MessageError, match="declares 4294967295 bytes"):
        decode_image(wire)
    # Sizes that multiply to terabytes with 4 bytes of data: refused before any view or allocation.
    with pytest.raises(MessageError, match="need"):
        to_array(memoryview(b"\0" * 4), 2**20, 2**20, "bgr8", False, 3 * 2**20, LIMIT)
    with pytest.raises(MessageError, match="shorter than a row"):
        to_array(memoryview(b"\0" * 12), 2, 2, "bgr8", False, 5, LIMIT)
    with pytest.raises(MessageError, match="larger than"):
        to_array(memoryview(b"\0" * 48), 4, 4, "bgr8", False, 12, 47)
    with pytest.raises(MessageError, match="not supported"):
        to_array(memoryview(b"\0" * 8), 2, 2, "yuv422", False, 4, LIMIT)
    with pytest.raises(MessageError, match="not plain CDR"):
        decode_image(b"\x00\x03\x00\x00" + bytes(wire[4:]))


def test_strings_must_be_terminated_utf8() -> None:
    bad = bytearray(String("abc").serialize())
    bad[-1] = ord("x")
    with pytest.raises(MessageError, match="NUL-terminated"):
        decode_string(bad, LIMIT)
    bad[-4:] = b"\xff\xfe\xfd\x00"
    with pytest.raises(MessageError, match="UTF-8"):
        decode_string(bad, LIMIT)
    with pytest.raises(MessageError, match="more than"):
        decode_string(String("x" * 100).serialize(), 10)
    with pytest.raises(MessageError, match="NUL"):
        encode_string("a\x00b")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_message_errors(data: bytes) -> None:
    for decode in (decode_image, decode_compressed, lambda b: decode_string(b, 64)):
        try:
            msg = decode(b"\x00\x01\x00\x00" + data)
        except MessageError:
            continue
        if hasattr(msg, "step"):
            try:
                to_array(msg.data, msg.height, msg.width, msg.encoding[:8], msg.is_bigendian, msg.step, LIMIT)
            except MessageError:
                pass


def test_choose_encoding_prefers_configured_then_meta_then_obvious() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    assert choose_encoding(bgr, None, None) == "bgr8"
    assert choose_encoding(bgr, "rgb8", "bgr8") == "rgb8"
    assert choose_encoding(bgr, None, "rgb8") == "rgb8", "a ROS 2 source's encoding survives a round trip"
    assert choose_encoding(np.zeros((2, 2), np.uint8), None, "rgb8") == "mono8", "meta that no longer fits is ignored"
    assert choose_encoding(np.zeros((2, 2), np.uint16), None, None) == "16UC1"
    with pytest.raises(MessageError):
        choose_encoding(bgr, "mono8", None)
    with pytest.raises(MessageError, match="not an image"):
        choose_encoding(np.zeros((2, 2, 2, 2), np.uint8), None, None)
