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
_BMP_MAGIC = b"BM"


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
    """'jpeg', 'png', 'bmp' or '' from the first bytes of ``data`` (the signatures OpenCV's
    decoders check)."""
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_BMP_MAGIC):
        return "bmp"
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
    """(width, height) of the IHDR chunk, which libpng requires to come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _bmp_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) as OpenCV's BMP reader takes them (``grfmt_bmp.cpp``): int32 fields
    after a header of at least 36 bytes, uint16 ones after a 12-byte OS/2 header; a negative
    height means top-down rows."""
    if len(data) < 26:
        return None
    header, = struct.unpack("<I", data[14:18])
    if header >= 36:
        width, height = struct.unpack("<ii", data[18:26])
    elif header == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        return None
    return width, abs(height)


# JPEG markers as libjpeg's read_markers() (jdmarker.c) treats them before the first scan.
#: Frame headers libjpeg(-turbo) decodes: baseline, extended, progressive, lossless,
#: arithmetic extended and progressive. Other SOFn stop it with an error.
_SOF_DECODED = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA))
#: Markers without a length: TEM and RST0..RST7.
_PARAMETERLESS = frozenset([0x01] + list(range(0xD0, 0xD8)))
#: Segments libjpeg reads or skips by their length: DHT, DAC, DQT, DNL, DRI, APP0..15, COM.
_BY_LENGTH = frozenset([0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE] + list(range(0xE0, 0xF0)))


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) of the frame libjpeg will decode, read the way libjpeg reads markers.

    After SOI, libjpeg's ``next_marker`` skips every byte that is not 0xFF (warning
    "extraneous bytes before marker"), swallows 0xFF fill bytes and discards stuffed
    0xFF 0x00 pairs; ``read_markers`` then skips parameterless markers, reads or skips
    tables and APPn/COM segments by their length field (a length below 2 skips just the
    field), and takes the first SOFn as the frame: a second one is an error. None when
    libjpeg would stop before a frame header: no SOI, a second SOI, EOI or SOS before any
    SOF, an unsupported SOFn, an unknown marker, or data that ends first. The decoder must
    refuse such data rather than decode it on trust.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    while True:
        while True:  # next_marker()
            while pos < end and data[pos] != 0xFF:
                pos += 1
            while pos < end and data[pos] == 0xFF:
                pos += 1
            if pos >= end:
                return None
            marker = data[pos]
            pos += 1
            if marker != 0x00:  # 0xFF 0x00 is a stuffed zero: discarded, search on
                break
        if marker in _SOF_DECODED:
            if pos + 7 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            return width, height
        if marker in _PARAMETERLESS:
            continue
        if marker not in _BY_LENGTH or pos + 2 > end:
            return None  # SOI, EOI, SOS before SOF, unsupported SOFn, unknown: an error
        length, = struct.unpack(">H", data[pos:pos + 2])
        pos += max(2, length)


def encoded_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) read from a JPEG/PNG/BMP header without decoding, or None if unknown.

    For JPEG it is the size libjpeg will decode (see :func:`_jpeg_size`)."""
    kind = sniff_format(data)
    if kind == "png":
        return _png_size(data)
    if kind == "jpeg":
        return _jpeg_size(data)
    if kind == "bmp":
        return _bmp_size(data)
    return None


def check_encoded_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[int, int]:
    """(width, height) of encoded JPEG/PNG/BMP ``data`` if it is at most ``max_pixels``;
    ImageDecodeError otherwise, or when the header does not say (then a decoder must not be
    trusted with it). Every decode in facerec goes through this first."""
    size = encoded_size(data)
    if size is None:
        kind = sniff_format(data)
        where = {"jpeg": "no frame header (SOF) where libjpeg would find one before its data",
                 "png": "no IHDR chunk first", "bmp": "no BMP header size it can read"}
        raise ImageDecodeError(
            f"{kind.upper() or 'image'} data of {len(data)} bytes has "
            f"{where.get(kind, 'no header')}: corrupt or truncated")
    _check_size(size[0], size[1], max_pixels)
    return size


def decode_image(data, fmt: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
                 formats: Tuple[str, ...] = ("jpeg", "png")) -> np.ndarray:
    """Decode JPEG or PNG bytes (e.g. ``CompressedImage.data``) into a BGR uint8 image.

    ``fmt`` is the CompressedImage ``format`` string; it is only a hint (see module docstring).
    Grey or alpha images come back as 3-channel BGR. Images with more than ``max_pixels``
    pixels are refused from their header, before any memory is allocated (the header is
    read as libjpeg reads it, so no marker trick gets a larger frame past the check).
    ``formats``: the containers accepted, of jpeg, png and bmp (files of a camera folder).

    Raises:
        ImageDecodeError: empty data, not JPEG/PNG, corrupt data or too large an image.
    """
    raw = _as_bytes(data)
    if not raw:
        raise ImageDecodeError("empty image data (0 bytes): nothing to decode")
    kind = sniff_format(raw)
    if kind not in formats:
        if formats != ("jpeg", "png"):
            raise ImageDecodeError(f"not a {' or '.join(f.upper() for f in formats)} image "
                                   f"(first bytes {raw[:8].hex()})")
        hint = format_from_string(fmt) or "unknown"
        raise ImageDecodeError(
            f"not a JPEG or PNG image (format string {fmt!r} -> {hint}; first bytes "
            f"{raw[:8].hex()}); publish sensor_msgs/CompressedImage with format 'jpeg' or 'png'")
    check_encoded_size(raw, max_pixels)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"could not decode {len(raw)} bytes of {kind.upper()} data (corrupt or truncated)")
    _check_size(image.shape[1], image.shape[0], max_pixels)
    return image


def check_max_pixels(value) -> int:
    """``value`` as a pixel limit (a positive integer); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {value!r}")
    return value


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image header declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image of {width}x{height} = {width * height} pixels exceeds max_pixels="
            f"{max_pixels}; send a smaller image or raise the limit (max_image_pixels)")


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
