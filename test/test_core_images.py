"""Image decoding/encoding and cv_bridge-compatible sensor_msgs field helpers."""
import array
import struct
import zlib

import time

import cv2
import numpy as np
import pytest

from jpeg_bombs import TRICKS, bomb
from facerec_server.core.images import (
    ImageDecodeError, decode_image, encode_jpeg, encode_png, encoded_size, format_from_string,
    image_fields, image_from_fields)


@pytest.fixture(scope="module")
def small(astronaut):
    """A 64x48 crop of the astronaut: fast to encode, real image content."""
    return np.ascontiguousarray(astronaut[100:148, 180:244])


def test_jpeg_round_trip_is_close(astronaut):
    data = encode_jpeg(astronaut, quality=90)
    assert data[:3] == b"\xff\xd8\xff"
    image = decode_image(data, "jpeg")
    assert image.shape == astronaut.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - astronaut).mean() < 4.0


def test_jpeg_quality_changes_size(small):
    assert len(encode_jpeg(small, quality=30)) < len(encode_jpeg(small, quality=95))


def test_png_round_trip_is_exact(small):
    data = encode_png(small)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_image(data, "png"), small)


@pytest.mark.parametrize("fmt", ["jpeg", "JPEG", "jpg", "bgr8; jpeg compressed bgr8",
                                 "rgb8; jpeg compressed bgr8", "", "unknown"])
def test_jpeg_format_strings_are_accepted(small, fmt):
    image = decode_image(encode_jpeg(small, 95), fmt)
    assert image.shape == small.shape


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "", "jpeg"])
def test_png_decodes_whatever_the_format_string_says(small, fmt):
    assert np.array_equal(decode_image(encode_png(small), fmt), small)


def test_format_from_string():
    assert format_from_string("bgr8; jpeg compressed bgr8") == "jpeg"
    assert format_from_string("mono8; png compressed mono8") == "png"
    assert format_from_string("16UC1; compressedDepth png") == ""
    assert format_from_string("") == ""


def test_grey_png_decodes_to_bgr(small):
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    image = decode_image(encode_png(grey))
    assert image.shape == small.shape
    assert np.array_equal(image[:, :, 0], grey) and np.array_equal(image[:, :, 2], grey)


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: array.array("B", b),
                                  lambda b: np.frombuffer(b, np.uint8), list])
def test_decode_accepts_ros_data_containers(small, wrap):
    data = encode_png(small)
    assert np.array_equal(decode_image(wrap(data)), small)


@pytest.mark.parametrize("data", [b"", bytearray(), None])
def test_empty_data_raises(data):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(data, "jpeg")


def test_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


def test_garbage_is_not_jpeg_or_png():
    with pytest.raises(ImageDecodeError, match="not a JPEG or PNG"):
        decode_image(b"hello world, not an image", "jpeg")


def test_zero_bytes_are_not_an_image():
    with pytest.raises(ImageDecodeError, match="not a JPEG or PNG"):
        decode_image(bytes(1000))


def test_corrupted_jpeg_raises(small):
    data = encode_jpeg(small, 90)
    corrupted = data[:200] + bytes(range(256)) * 4
    with pytest.raises(ImageDecodeError, match="could not decode"):
        decode_image(corrupted, "jpeg")


def test_truncated_jpeg_raises(astronaut):
    data = encode_jpeg(astronaut, 90)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[:len(data) // 2], "jpeg")


def test_encoded_size_reads_headers(small):
    assert encoded_size(encode_jpeg(small)) == (64, 48)
    assert encoded_size(encode_png(small)) == (64, 48)
    assert encoded_size(b"nope") is None


def _png_header_claiming(width, height):
    """A PNG signature + IHDR chunk declaring a huge image (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_absurd_size_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="exceeds max_pixels"):
        decode_image(_png_header_claiming(100_000, 100_000), "png")


def test_max_pixels_applies_to_real_images(small):
    data = encode_jpeg(small)
    with pytest.raises(ImageDecodeError, match="64x48"):
        decode_image(data, max_pixels=64 * 48 - 1)
    assert decode_image(data, max_pixels=64 * 48).shape == (48, 64, 3)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_header_size_is_the_size_libjpeg_decodes(trick):
    """Issue 21, item 1: whatever libjpeg reads past before the SOF (a stray byte, fill
    bytes, a stuffed zero, a parameterless marker, a segment with a length below 2), the
    size the guard checks is the size libjpeg really decodes, so the limit holds."""
    data = bomb(trick, 1200, 900)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (900, 1200)  # libjpeg's size
    assert encoded_size(data) == (1200, 900)
    with pytest.raises(ImageDecodeError, match="1200x900 = 1080000 pixels exceeds max_pixels"):
        decode_image(data, "jpeg", max_pixels=1_000_000)
    assert decode_image(data, "jpeg", max_pixels=1_080_000).shape == (900, 1200, 3)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_a_30000x30000_bomb_is_refused_before_decoding(trick):
    """The adversarial run's 630-byte JPEG declaring 30000x30000: refused from its header
    at once (it took ~12 s and 5.2 GB in decode_image)."""
    data = bomb(trick)
    assert len(data) < 1000
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="30000x30000 = 900000000 pixels exceeds"):
        decode_image(data, "jpeg")
    assert time.perf_counter() - start < 1.0  # a header read, not a 900 MP decode


def test_jpeg_without_a_frame_header_before_its_data_is_refused(small):
    """A JPEG whose size cannot be read the way libjpeg reads it is refused, not decoded
    on trust (fail closed)."""
    data = encode_jpeg(small)
    sof = data.find(b"\xff\xc0")
    sos = data.find(b"\xff\xda")
    swapped = data[:sof] + data[sos:]  # no SOF before the scan
    with pytest.raises(ImageDecodeError, match="no frame header"):
        decode_image(swapped, "jpeg")
    unknown = data[:sof] + b"\xff\xf3\x00\x04ab" + data[sof:]  # a marker libjpeg refuses
    with pytest.raises(ImageDecodeError):
        decode_image(unknown, "jpeg")


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros((4, 4, 2), np.uint8)])
def test_encode_rejects_non_images(bad):
    with pytest.raises(ValueError):
        encode_jpeg(bad)


def test_encode_rejects_bad_quality(small):
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(small, quality=101)


# --- cv_bridge conventions -------------------------------------------------------------------

def test_image_fields_follow_cv_bridge(small):
    fields = image_fields(small)
    assert fields["height"] == 48 and fields["width"] == 64
    assert fields["encoding"] == "bgr8"
    assert fields["is_bigendian"] == 0
    assert fields["step"] == 64 * 3  # cv_bridge: len(data) // height
    assert fields["step"] == len(fields["data"]) // fields["height"]
    assert isinstance(fields["data"], bytes) and fields["data"] == small.tobytes()


def test_image_fields_of_a_non_contiguous_view(astronaut):
    view = astronaut[::2, ::2]
    fields = image_fields(view)
    assert fields["step"] == view.shape[1] * 3
    assert fields["data"] == np.ascontiguousarray(view).tobytes()


def test_image_fields_rejects_grey(small):
    with pytest.raises(ValueError, match="BGR uint8"):
        image_fields(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))


def test_bgr8_round_trip(small):
    assert np.array_equal(image_from_fields(**_without(image_fields(small), "is_bigendian")),
                          small)


def _without(fields, key):
    return {k: v for k, v in fields.items() if k != key}


@pytest.mark.parametrize("encoding, to_encoding", [
    ("rgb8", cv2.COLOR_BGR2RGB), ("bgra8", cv2.COLOR_BGR2BGRA), ("rgba8", cv2.COLOR_BGR2RGBA)])
def test_colour_encodings_convert_to_bgr(small, encoding, to_encoding):
    raw = cv2.cvtColor(small, to_encoding)
    channels = raw.shape[2]
    image = image_from_fields(48, 64, encoding, 64 * channels, raw.tobytes())
    assert np.array_equal(image, small)


def test_mono8_converts_to_three_equal_channels(small):
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    image = image_from_fields(48, 64, "mono8", 64, grey.tobytes())
    assert image.shape == (48, 64, 3)
    assert all(np.array_equal(image[:, :, c], grey) for c in range(3))


def test_padded_rows_are_dropped(small):
    step = 64 * 3 + 5  # not a multiple of 3: padding must not shift pixels
    padded = np.zeros((48, step), np.uint8)
    padded[:, :64 * 3] = small.reshape(48, -1)
    padded[:, 64 * 3:] = 77
    assert np.array_equal(image_from_fields(48, 64, "bgr8", step, padded.tobytes()), small)


def test_unknown_encoding_is_rejected(small):
    with pytest.raises(ValueError, match="unsupported image encoding '16UC1'"):
        image_from_fields(48, 64, "16UC1", 128, bytes(48 * 128))


def test_too_small_step_is_rejected(small):
    with pytest.raises(ValueError, match="step 100 is smaller"):
        image_from_fields(48, 64, "bgr8", 100, bytes(48 * 100))


def test_wrong_data_size_is_rejected(small):
    with pytest.raises(ValueError, match="data has"):
        image_from_fields(48, 64, "bgr8", 192, small.tobytes()[:-1])
    with pytest.raises(ValueError, match="data has"):
        image_from_fields(48, 64, "bgr8", 192, small.tobytes() + b"\0")


def test_image_from_fields_accepts_array_data(small):
    data = array.array("B", small.tobytes())  # what rclpy gives for uint8[]
    assert np.array_equal(image_from_fields(48, 64, "bgr8", 192, data), small)
