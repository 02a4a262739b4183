"""The wire format: round trips, zero-copy decoding, and rejection of every malformed buffer."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeflow.errors import FrameError
from edgeflow.frame import Frame, decode, encode, pack, unpack

DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "float16", "float32", "float64",
          "complex64", "bool", ">i4", ">f8"]  # fmt: skip


def _wire(frame: Frame) -> bytes:
    return b"".join(bytes(b) for b in pack(frame))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5), (2, 3, 4), (480, 640, 3), (1, 1, 1, 1, 2)])
def test_array_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) * 100).astype(dtype)
    frame = Frame(42, 1700000000.25, {"cam": "front", "n": 3}, arr)
    for got in (unpack(_wire(frame)), decode(*(bytes(b) for b in encode(frame)))):
        assert got.frame_id == 42
        assert got.timestamp == 1700000000.25
        assert got.meta == {"cam": "front", "n": 3}
        assert got.data.dtype == np.dtype(dtype)
        assert got.data.shape == shape
        np.testing.assert_array_equal(got.data, arr)


def test_4k_frame_decodes_as_a_view_without_copy() -> None:
    arr = np.random.default_rng(1).integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    wire = _wire(Frame(1, 1.0, {}, arr))
    got = unpack(wire)
    np.testing.assert_array_equal(got.data, arr)
    assert not got.data.flags.writeable, "decoded arrays are read-only views of the received buffer"
    assert np.shares_memory(got.data, np.frombuffer(wire, np.uint8)), "decoding must not copy the pixels"


def test_encode_does_not_copy_contiguous_arrays() -> None:
    arr = np.ones((100, 100), np.float32)
    _, payload = encode(Frame(0, 0.0, {}, arr))
    assert np.shares_memory(np.frombuffer(payload, np.float32), arr)


def test_non_contiguous_array_is_sent_in_its_logical_order() -> None:
    arr = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    got = unpack(_wire(Frame(0, 0.0, {}, arr)))
    np.testing.assert_array_equal(got.data, arr)


@pytest.mark.parametrize("data", [b"", b"\x00\x01raw", bytearray(b"abc"), memoryview(b"xyz")])
def test_bytes_round_trip(data: bytes | bytearray | memoryview) -> None:
    got = unpack(_wire(Frame(5, 2.0, {}, data)))
    assert got.data == bytes(data)
    assert isinstance(got.data, bytes)


@pytest.mark.parametrize("data", [{"boxes": [[1, 2, 3, 4]], "label": "cat"}, [1, 2.5, None], "text", 7, 3.5, True])
def test_json_round_trip(data: object) -> None:
    assert unpack(_wire(Frame(5, 2.0, {}, data))).data == data


def test_numpy_scalars_in_json_data_become_numbers() -> None:
    got = unpack(_wire(Frame(0, 0.0, {"score": np.float32(0.5)}, {"n": np.int64(3)})))
    assert got.meta == {"score": 0.5}
    assert got.data == {"n": 3}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (Frame(0, 0.0, {}, object()), "data of type object can't be sent"),
        (Frame(0, 0.0, {}, np.array([object()])), "dtype object"),
        (Frame(0, 0.0, {"x": {1, 2}}, b""), "meta can't be sent"),
        (Frame(-1, 0.0, {}, b""), "frame_id"),
        (Frame(0, float("nan"), {}, b""), "timestamp"),
        (Frame(0, 0.0, [1], b""), "meta must be a dict"),  # type: ignore[arg-type]
    ],
)
def test_unsendable_frames_raise_frame_error(frame: Frame, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        encode(frame)


GOOD = _wire(Frame(9, 3.0, {"k": "v"}, np.arange(12, dtype=np.uint16).reshape(3, 4)))


@pytest.mark.parametrize("cut", [0, 1, 5, 27, 28, 40, len(GOOD) - 1])
def test_truncated_buffers_raise_frame_error(cut: int) -> None:
    with pytest.raises(FrameError):
        unpack(GOOD[:cut])


def test_trailing_garbage_is_rejected() -> None:
    with pytest.raises(FrameError, match="length mismatch"):
        unpack(GOOD + b"\x00")


def test_wrong_magic_and_version_are_named() -> None:
    with pytest.raises(FrameError, match="magic"):
        unpack(b"XX" + GOOD[2:])
    with pytest.raises(FrameError, match="unsupported wire version 9"):
        unpack(GOOD[:2] + b"\x09" + GOOD[3:])


def test_shape_that_disagrees_with_the_data_is_rejected() -> None:
    header, payload = encode(Frame(0, 0.0, {}, np.zeros((2, 2), np.uint8)))
    evil = header.replace(struct.pack("<2Q", 2, 2), struct.pack("<2Q", 2, 3))
    with pytest.raises(FrameError, match="needs 6 bytes, got 4"):
        decode(evil, payload)
    with pytest.raises(FrameError, match="announces 4 data bytes, got 5"):
        decode(header, bytes(payload) + b"\x00")


def test_object_dtype_smuggled_into_a_header_is_rejected() -> None:
    header, payload = encode(Frame(0, 0.0, {}, np.zeros(1, np.int64)))
    evil = header.replace(b"<i8", b"|O8")
    with pytest.raises(FrameError, match="not allowed"):
        decode(evil, payload)


def test_corrupted_meta_is_rejected() -> None:
    header, payload = encode(Frame(0, 0.0, {"a": 1}, b"x"))
    with pytest.raises(FrameError, match="meta"):
        decode(header[:-1] + b"\xff", payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_random_bytes_never_crash(data: bytes) -> None:
    try:
        unpack(data)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=0, max_value=255))
def test_fuzz_single_byte_corruption_decodes_or_raises_frame_error(pos: int, value: int) -> None:
    data = bytearray(GOOD)
    data[pos] = value
    try:
        frame = unpack(bytes(data))
    except FrameError:
        return
    assert isinstance(frame, Frame)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)))
def test_fuzz_any_numeric_array_round_trips(arr: np.ndarray) -> None:
    if arr.dtype.kind not in "biufc":
        with pytest.raises(FrameError):
            encode(Frame(0, 0.0, {}, arr))
        return
    got = unpack(_wire(Frame(0, 0.0, {}, arr)))
    np.testing.assert_array_equal(got.data, arr)
    assert got.data.dtype == arr.dtype


def test_huge_claimed_dimensions_do_not_allocate() -> None:
    header, _ = encode(Frame(0, 0.0, {}, np.zeros((1, 1), np.uint8)))
    # Claim a 2**40 x 1 array with a one-byte payload: must be rejected by arithmetic, not by allocating.
    evil = header.replace(struct.pack("<2Q", 1, 1), struct.pack("<2Q", 2**40, 1))
    with pytest.raises(FrameError):
        decode(evil, b"\x00")


def test_redis_packer_sends_frame_sized_buffers_without_copying() -> None:
    """The broker's command packer hands a frame's memoryview to the socket as is (redis-py's would copy it)."""
    from edgeflow.brokers.redis import RedisBroker
    from edgeflow.brokers.redis.packer import ZeroCopyPacker

    frame = memoryview(np.zeros(921_600, np.uint8)).cast("B")
    chunks = ZeroCopyPacker().pack("XADD", "k", "*", "d", frame)
    assert any(c is frame for c in chunks), "the payload goes out as the very same buffer"
    assert b"".join(bytes(c) for c in chunks).startswith(b"*5\r\n$4\r\nXADD\r\n")
    small = ZeroCopyPacker().pack("SET", "k", b"v")
    assert b"".join(bytes(c) for c in small) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    broker = RedisBroker("redis://127.0.0.1:1/0")
    assert isinstance(broker.client.connection_pool.connection_kwargs["command_packer"], ZeroCopyPacker)


def test_link_codec_encodes_images_and_decodes_them_back() -> None:
    from edgeflow.frame import KIND_ENCODED
    from edgeflow.plugins import get_codec

    jpeg = get_codec("jpeg")
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:300, 200:400] = (0, 200, 255)
    header, payload = encode(Frame(4, 5.0, {"cam": "front"}, img), jpeg, {"quality": 90})
    assert header[3] == KIND_ENCODED
    assert len(payload) < img.nbytes // 20, "a JPEG of a simple scene is a small fraction of the raw frame"
    got = decode(header, bytes(payload))
    assert (got.frame_id, got.timestamp, got.meta) == (4, 5.0, {"cam": "front"})
    assert got.data.shape == img.shape and got.data.dtype == np.uint8
    assert np.abs(got.data.astype(int) - img).mean() < 2.0
    gray = np.full((30, 40), 77, np.uint8)
    assert decode(*encode(Frame(0, 0.0, {}, gray), jpeg, {})).data.shape == (30, 40)
    # What the codec can't take travels raw, exactly.
    floats = np.arange(6, dtype=np.float32)
    header, payload = encode(Frame(0, 0.0, {}, floats), jpeg, {})
    np.testing.assert_array_equal(decode(header, payload).data, floats)


def test_hostile_encoded_frames_are_rejected() -> None:
    from edgeflow.plugins import get_codec

    img = np.zeros((48, 64, 3), np.uint8)
    header, payload = encode(Frame(0, 0.0, {}, img), get_codec("jpeg"), {})
    # The header claims a bigger image than the JPEG holds: refused before any decoding.
    evil = header.replace(struct.pack("<3Q", 48, 64, 3), struct.pack("<3Q", 4800, 6400, 3))
    with pytest.raises(FrameError, match="48x64"):
        decode(evil, bytes(payload))
    with pytest.raises(FrameError, match="corrupted JPEG"):
        decode(header, b"\xff\xd8 not a jpeg".ljust(len(payload), b"\x00"))
    with pytest.raises(FrameError, match="codec 'webp', which is not installed"):
        decode(header.replace(b"\x04jpeg", b"\x04webp"), bytes(payload))
