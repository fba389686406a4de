"""JPEG encoding of captured frames (no ROS).

``FrameEncoder(jpeg_quality=80, resize=None)``; ``resize`` is ``None`` (keep the size), a
scale factor ``0 < s <= 1`` or a ``(width, height)`` pair. A frame that already is a JPEG
(camera MJPEG pass-through) is returned as is when no resize is asked for, so its quality is
then the camera's, not ``jpeg_quality``.
"""
from __future__ import annotations

import numbers
from typing import Tuple, Union

import cv2
import numpy as np

from facerec_server.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError, check_encoded_size

from .sources import Frame

Resize = Union[None, float, Tuple[int, int]]

__all__ = ["FrameEncoder", "EncodeError"]


class EncodeError(ValueError):
    """Invalid encoder settings or a frame that cannot be encoded."""


def _validate_quality(quality) -> int:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral):
        raise EncodeError(f"jpeg_quality must be an integer 1..100, got {quality!r}")
    if not 1 <= int(quality) <= 100:
        raise EncodeError(f"jpeg_quality must be within 1..100, got {quality}")
    return int(quality)


def _validate_resize(resize) -> Resize:
    if resize is None:
        return None
    if isinstance(resize, bool):
        raise EncodeError(f"resize must be None, a scale 0<s<=1 or (width, height), got {resize!r}")
    if isinstance(resize, numbers.Real):
        scale = float(resize)
        if not 0.0 < scale <= 1.0:
            raise EncodeError(f"resize scale must be within 0 < s <= 1, got {resize}")
        return None if scale == 1.0 else scale
    if isinstance(resize, (tuple, list)) and len(resize) == 2:
        w, h = resize
        if (all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (w, h))
                and w > 0 and h > 0):
            return (int(w), int(h))
    raise EncodeError(f"resize must be None, a scale 0<s<=1 or (width, height) of positive "
                      f"integers, got {resize!r}")


class FrameEncoder:
    """Turns :class:`~facerec_camera.sources.Frame` objects (or BGR arrays) into JPEG bytes."""

    def __init__(self, jpeg_quality: int = 80, resize: Resize = None,
                 interpolation: int = cv2.INTER_AREA, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.jpeg_quality = _validate_quality(jpeg_quality)
        self.resize = _validate_resize(resize)
        self.interpolation = interpolation
        self.max_pixels = int(max_pixels)  # a camera JPEG declaring more is not decoded
        self._params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        self.passthrough_count = 0
        self.encoded_count = 0

    def __repr__(self) -> str:
        return f"FrameEncoder(jpeg_quality={self.jpeg_quality}, resize={self.resize!r})"

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """Size of the encoded image for an input of ``width`` x ``height``."""
        if self.resize is None:
            return (width, height)
        if isinstance(self.resize, tuple):
            return self.resize
        return (max(1, int(round(width * self.resize))), max(1, int(round(height * self.resize))))

    def encode(self, frame: Frame) -> bytes:
        """JPEG bytes for ``frame``: pass-through of camera JPEG when no resize is needed."""
        if frame.image_bgr is not None:
            return self.encode_image(frame.image_bgr)
        if self.resize is None:
            self.passthrough_count += 1
            return frame.jpeg
        image, full_size = self._decode(frame.jpeg)
        return self._encode(image, self.output_size(*full_size))

    def encode_image(self, image: np.ndarray) -> bytes:
        """JPEG bytes for a BGR (or grey) image, resized as configured."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            raise EncodeError("expected a non-empty BGR or grey image array")
        height, width = image.shape[:2]
        return self._encode(image, self.output_size(width, height))

    def _encode(self, image: np.ndarray, size: Tuple[int, int]) -> bytes:
        if size != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, size, interpolation=self.interpolation)
        ok, buf = cv2.imencode(".jpg", image, self._params)
        if not ok:
            raise EncodeError("OpenCV could not encode the frame as JPEG")
        self.encoded_count += 1
        return buf.tobytes()

    def _decode(self, jpeg: bytes) -> Tuple[np.ndarray, Tuple[int, int]]:
        """(image, full-size (w, h)); libjpeg scales down while decoding when that suffices.
        EncodeError for a frame over ``max_pixels`` (read from its header, as libjpeg
        reads it) or one that does not decode."""
        flag = cv2.IMREAD_COLOR
        try:
            full = check_encoded_size(jpeg, self.max_pixels)
        except ImageDecodeError as exc:
            raise EncodeError(f"a JPEG frame from the source is refused: {exc}") from None
        if isinstance(self.resize, float):
            for reduced, factor in ((cv2.IMREAD_REDUCED_COLOR_4, 0.25),
                                    (cv2.IMREAD_REDUCED_COLOR_2, 0.5)):
                if self.resize <= factor:
                    flag = reduced
                    break
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
        if image is None:
            raise EncodeError("a JPEG frame from the source cannot be decoded")
        return image, full
