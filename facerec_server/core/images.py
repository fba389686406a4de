"""Image decoding/encoding and sensor_msgs field helpers (no ROS, no cv_bridge needed).

Colour order is **BGR** everywhere (OpenCV and cv_bridge ``bgr8``); arrays are uint8
(height, width, 3).

CompressedImage ``format``
    cv_bridge's ``cv2_to_compressed_imgmsg(img, dst_format)`` copies ``dst_format`` verbatim into
    ``format``: ``dst_format='jpeg'`` gives exactly ``'jpeg'`` (:data:`JPEG_FORMAT`, what our
    camera sends); note its *default* is ``'jpg'``. image_transport's compressed plugin writes
    strings such as ``'bgr8; jpeg compressed bgr8'`` or ``'rgb8; png compressed bgr8'``.
    :func:`decode_image` accepts any string containing ``jpeg``/``jpg``/``png``; for anything else
    (including ``''``) it sniffs the magic bytes. The bytes are authoritative: a PNG labelled
    ``jpeg`` still decodes. ``compressedDepth`` payloads (a header before the PNG) are refused.

sensor_msgs/Image fields
    :func:`image_fields` sets the fields exactly as cv_bridge's ``cv2_to_imgmsg(img, 'bgr8')``:
    ``step = len(data) // height = width * 3`` bytes, ``is_bigendian = 0`` (8-bit data),
    ``data`` = C-order bytes without padding. :func:`image_from_fields` gives what
    ``imgmsg_to_cv2(msg, 'bgr8')`` gives (same ``cvtColor`` conversions) and, like the C++
    cv_bridge, honours padded rows (``step > width * channels``), which the Python
    ``imgmsg_to_cv2`` ignores.
"""
from __future__ import annotations

import struct
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

#: CompressedImage ``format`` for JPEG, as ``cv2_to_compressed_imgmsg(img, 'jpeg')`` sets it.
JPEG_FORMAT = "jpeg"
#: CompressedImage ``format`` for PNG.
PNG_FORMAT = "png"

#: Default decode guard: 50 megapixels (8K is 33 MP). Bigger images are refused before decoding.
DEFAULT_MAX_PIXELS = 50_000_000

#: sensor_msgs/image_encodings names supported by :func:`image_from_fields`:
#: encoding -> (channels, cv2 conversion code to BGR or None).
ENCODINGS: Dict[str, Tuple[int, Optional[int]]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
}

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(ValueError):
    """Raised when bytes cannot be turned into a BGR image (empty, corrupt, too large...)."""


def _as_bytes(data) -> bytes:
    """bytes from bytes/bytearray/memoryview/array.array('B')/numpy/list of ints (ROS msg.data)."""
    if isinstance(data, bytes):
        return data
    if data is None:
        return b""
    try:
        return memoryview(data).tobytes()
    except TypeError:
        return bytes(bytearray(data))


def sniff_format(data: bytes) -> str:
    """'jpeg', 'png' or '' from the first bytes of ``data``."""
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    return ""


def format_from_string(fmt: str) -> str:
    """'jpeg', 'png' or '' for a CompressedImage ``format`` string (case-insensitive)."""
    text = (fmt or "").lower()
    if "compresseddepth" in text:
        return ""
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    if "png" in text:
        return "png"
    return ""


def _png_size(data: bytes) -> Optional[Tuple[int, int]]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the first SOFn marker, or None when not found."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:  # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                      0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


def encoded_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) read from a JPEG/PNG header without decoding, or None if unknown."""
    kind = sniff_format(data)
    if kind == "png":
        return _png_size(data)
    if kind == "jpeg":
        return _jpeg_size(data)
    return None


def decode_image(data, fmt: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG or PNG bytes (e.g. ``CompressedImage.data``) into a BGR uint8 image.

    ``fmt`` is the CompressedImage ``format`` string; it is only a hint (see module docstring).
    Grey or alpha images come back as 3-channel BGR. Images with more than ``max_pixels``
    pixels are refused from their header, before any memory is allocated.

    Raises:
        ImageDecodeError: empty data, not JPEG/PNG, corrupt data or too large an image.
    """
    raw = _as_bytes(data)
    if not raw:
        raise ImageDecodeError("empty image data (0 bytes): nothing to decode")
    kind = sniff_format(raw)
    if not kind:
        hint = format_from_string(fmt) or "unknown"
        raise ImageDecodeError(
            f"not a JPEG or PNG image (format string {fmt!r} -> {hint}; first bytes "
            f"{raw[:8].hex()}); publish sensor_msgs/CompressedImage with format 'jpeg' or 'png'")
    size = encoded_size(raw)
    if size is not None:
        _check_size(size[0], size[1], max_pixels)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"could not decode {len(raw)} bytes of {kind.upper()} data (corrupt or truncated)")
    _check_size(image.shape[1], image.shape[0], max_pixels)
    return image


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image header declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image of {width}x{height} = {width * height} pixels exceeds max_pixels="
            f"{max_pixels}; send a smaller image or raise the limit")


def _check_encodable(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy image (BGR, BGRA or grey)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an image of shape (h, w[, 1|3|4]), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot encode an empty image of shape {image.shape}")


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR (or grey) uint8 image; ``quality`` is 0..100 (OpenCV's scale).

    Put :data:`JPEG_FORMAT` (``'jpeg'``) in the CompressedImage ``format``.
    """
    _check_encodable(image)
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be within 0..100, got {quality}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV failed to encode the image as JPEG")
    return buf.tobytes()


def encode_png(image: np.ndarray, compression: int = 3) -> bytes:
    """Lossless PNG bytes of a BGR/BGRA/grey uint8 image; ``compression`` is 0..9."""
    _check_encodable(image)
    if not 0 <= int(compression) <= 9:
        raise ValueError(f"PNG compression must be within 0..9, got {compression}")
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise ValueError("OpenCV failed to encode the image as PNG")
    return buf.tobytes()


def image_fields(image_bgr: np.ndarray) -> dict:
    """sensor_msgs/Image fields for a BGR uint8 image, as cv_bridge's ``cv2_to_imgmsg(img,
    'bgr8')`` sets them: ``height``, ``width``, ``encoding='bgr8'``, ``is_bigendian=0``,
    ``step=width*3`` (bytes per row) and ``data`` (row-major bytes, no padding).

    Usage: ``msg = Image(header=header, **image_fields(img))``.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 \
            or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", None)
        raise ValueError(f"image_fields expects a BGR uint8 array (h, w, 3), got {shape}")
    height, width = image_bgr.shape[:2]
    data = np.ascontiguousarray(image_bgr).tobytes()
    return {"height": int(height), "width": int(width), "encoding": "bgr8",
            "is_bigendian": 0, "step": int(width) * 3, "data": data}


def image_from_fields(height: int, width: int, encoding: str, step: int, data) -> np.ndarray:
    """BGR uint8 image from sensor_msgs/Image fields, like cv_bridge's
    ``imgmsg_to_cv2(msg, 'bgr8')``.

    Supports ``bgr8``, ``rgb8``, ``mono8``, ``bgra8`` and ``rgba8``. ``step`` is bytes per row
    and must be at least ``width * channels``; padding bytes at the end of each row are
    dropped. ``len(data)`` must equal ``height * step`` (the sensor_msgs/Image definition).

    Raises:
        ValueError: unknown encoding, negative size, too small a step or wrong data size.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: "
                         f"{', '.join(ENCODINGS)} (convert on the sender or use CompressedImage)")
    channels, code = ENCODINGS[encoding]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if step < width * channels:
        raise ValueError(f"step {step} is smaller than width * channels = {width * channels} "
                         f"bytes for {width} px of {encoding}")
    raw = _as_bytes(data)
    if len(raw) != height * step:
        raise ValueError(f"data has {len(raw)} bytes but height * step = {height} * {step} = "
                         f"{height * step}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, step)[:, :width * channels]
    image = rows.reshape(height, width, channels)
    if code is None:
        return np.ascontiguousarray(image)
    if channels == 1:
        image = image[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(image), code)
