"""Frame sources for the camera side (no ROS: usable on a Pi Zero and by non-ROS clients).

Every source follows the same small interface (:class:`FrameSource`)::

    source = open_source("0", width=640, height=480, fps=15)   # not opened yet
    source.open()                    # SourceError with a clear message when it cannot
    frame = source.read()            # Frame, or None at the end of a finite, non-looping source
    source.close()

A :class:`Frame` carries either a decoded BGR image, or JPEG bytes straight from the device
(MJPEG pass-through), or both, plus ``capture_time`` (``time.time()`` taken right after the
frame was grabbed). ``read()`` raises :class:`SourceError` when a device stops delivering
frames (for example a USB camera that was unplugged); ``live`` sources may then be re-opened.

Every image a source decodes is first checked against ``max_pixels`` (default
:data:`~facerec_server.core.images.DEFAULT_MAX_PIXELS`) from its header, read the way the
decoder reads it, and image files are read only when they are regular files of a sane size
(:mod:`facerec_server.core.files`): a FIFO, ``/dev/zero`` or a small file declaring a
30000x30000 picture is skipped with a warning on ``source.log`` instead of hanging the
camera or taking gigabytes. Video frames are decoded by FFmpeg (its own limit, about 268
megapixels, applies first); a video whose frames exceed ``max_pixels`` is refused.

Spec strings understood by :func:`open_source`:

* ``"0"``, ``"1"`` ... or ``"/dev/videoN"``: a V4L2 / USB camera through OpenCV
  (:class:`OpenCVCameraSource`), MJPEG requested;
* ``"picamera"``: the Raspberry Pi camera through picamera2 (:class:`PiCameraSource`);
* ``"pattern"`` / ``"test"``: a moving synthetic pattern (:class:`TestPatternSource`);
* a directory: its jpg/png/bmp images in name order (:class:`ImageFolderSource`);
* an image file: that image, repeated (:class:`ImageFolderSource` of one file);
* any other existing file: a video file (:class:`VideoFileSource`).
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np

from facerec_server.core import files
from facerec_server.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: What the image files of a folder source may hold (core.images.decode_image formats).
IMAGE_FORMATS = ("jpeg", "png", "bmp")
MJPG_FOURCC = cv2.VideoWriter_fourcc(*"MJPG")

__all__ = [
    "Frame", "FrameSource", "SourceError", "OpenCVCameraSource", "PiCameraSource",
    "VideoFileSource", "ImageFolderSource", "TestPatternSource", "open_source",
    "is_jpeg", "ensure_huffman_tables",
]


class SourceError(RuntimeError):
    """A source cannot be opened or stopped delivering frames. The message is user-facing."""


@dataclass
class Frame:
    """One captured frame: a BGR image, JPEG bytes, or both (see module docstring)."""

    image_bgr: Optional[np.ndarray]
    jpeg: Optional[bytes]
    capture_time: float

    def __post_init__(self):
        if self.image_bgr is None and self.jpeg is None:
            raise ValueError("a Frame needs an image or JPEG bytes")


class FrameSource:
    """Interface of all sources. Subclasses implement ``_open``, ``_read`` and ``_close``."""

    #: True for devices that can vanish and come back (cameras): callers may re-open them.
    live = False
    #: Human-readable description for log messages.
    description = "source"
    #: Where a source reports what it skips (``warning(text)``); the camera node puts its
    #: ROS logger here.
    log = logging.getLogger("facerec_camera")
    #: Images larger than this (width x height) are refused from their header.
    max_pixels = DEFAULT_MAX_PIXELS

    def __init__(self):
        self._opened = False

    @property
    def is_open(self) -> bool:
        return self._opened

    def open(self) -> "FrameSource":
        if not self._opened:
            self._open()
            self._opened = True
        return self

    def read(self) -> Optional[Frame]:
        if not self._opened:
            raise SourceError(f"{self.description} is not open")
        return self._read()

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def __enter__(self) -> "FrameSource":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # --- to implement -------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> Optional[Frame]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


# --- JPEG helpers ---------------------------------------------------------------------------

def is_jpeg(data) -> bool:
    """True when ``data`` (bytes or a uint8 array) starts with a JPEG SOI marker."""
    return len(data) > 3 and bytes(data[:3]) == b"\xff\xd8\xff"


_STANDARD_DHT: Optional[bytes] = None


def _standard_huffman_segments() -> bytes:
    """The DHT segments of the standard (JPEG Annex K) tables, taken from libjpeg's output.

    libjpeg writes exactly those tables when Huffman optimisation is off.
    """
    global _STANDARD_DHT
    if _STANDARD_DHT is None:
        ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8),
                               [cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        data = buf.tobytes()
        segments = [data[start:end] for marker, start, end in _segments(data) if marker == 0xC4]
        _STANDARD_DHT = b"".join(segments)
    return _STANDARD_DHT


def _segments(data: bytes):
    """(marker, start, end) of each header segment up to and including SOS."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        yield marker, pos, pos + 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return
        pos += 2 + length


def ensure_huffman_tables(jpeg: bytes) -> bytes:
    """Insert the standard Huffman tables into an MJPEG frame that lacks them.

    Many UVC cameras send "AVI1" MJPEG frames without DHT segments; libjpeg-turbo decodes
    them, but other decoders (browsers, PIL) may not. Frames that have tables are returned
    unchanged.
    """
    sos = None
    for marker, start, _end in _segments(jpeg):
        if marker == 0xC4:
            return jpeg
        if marker == 0xDA:
            sos = start
    if sos is None:
        return jpeg
    return jpeg[:sos] + _standard_huffman_segments() + jpeg[sos:]


# --- USB / V4L2 cameras through OpenCV ------------------------------------------------------

class OpenCVCameraSource(FrameSource):
    """A camera through OpenCV's VideoCapture (V4L2 on Linux), by index or ``/dev/videoN``.

    MJPEG is requested together with width, height and fps. When the camera then really
    delivers MJPEG at the requested size and ``passthrough`` is true, conversion is turned off
    (``CAP_PROP_CONVERT_RGB`` = 0) so that ``read()`` returns the camera's JPEG bytes
    (``Frame.jpeg``, no decode and no re-encode). With OpenCV's V4L2 backend the retrieved
    "image" is then a 1xN uint8 buffer holding the MJPEG frame; anything that does not look
    like a JPEG makes the source fall back to decoded BGR frames.

    Not verified on this build machine (no camera): the pass-through buffer layout on a real
    V4L2 device, the camera honouring the requested fps, and behaviour with non-V4L2 backends.
    """

    live = True
    #: ``cv2.VideoCapture``; replaceable so that tests can stand in for camera hardware.
    capture_factory = staticmethod(cv2.VideoCapture)

    def __init__(self, device: Union[int, str] = 0, width: int = 640, height: int = 480,
                 fps: float = 15.0, passthrough: bool = True):
        super().__init__()
        self.device = device
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.passthrough = bool(passthrough)
        self.description = f"camera {device}"
        self._cap = None
        self._raw = False  # True while delivering the camera's JPEG bytes
        self.actual_size = None
        self.actual_fourcc = ""

    @property
    def raw_mjpeg(self) -> bool:
        return self._raw

    def _open(self) -> None:
        if isinstance(self.device, str) and not os.path.exists(self.device):
            raise SourceError(f"{self.description}: no such device {self.device}")
        backend = cv2.CAP_V4L2 if os.name == "posix" and hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        cap = self.capture_factory(self.device, backend)
        if not cap.isOpened() and backend != cv2.CAP_ANY:
            cap.release()
            cap = self.capture_factory(self.device, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"could not open {self.description} (is a camera connected and "
                              "readable by this user? try source 'pattern' for a test pattern)")
        cap.set(cv2.CAP_PROP_FOURCC, MJPG_FOURCC)
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # freshest frame, not a queue of stale ones
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
        self.actual_fourcc = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4))
        self.actual_size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._raw = False
        if (self.passthrough and fourcc == MJPG_FOURCC
                and self.actual_size == (self.width, self.height)):
            # CONVERT_RGB=0 is what V4L2 honours; FORMAT=-1 is the spelling of other backends.
            self._raw = bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
            if not self._raw:
                self._raw = bool(cap.set(cv2.CAP_PROP_FORMAT, -1))
        self._cap = cap

    def _read(self) -> Frame:
        ok, data = self._cap.read()
        now = time.time()
        if not ok or data is None or data.size == 0:
            raise SourceError(f"{self.description} stopped delivering frames")
        if self._raw:
            flat = data.reshape(-1)
            if data.ndim <= 2 and min(data.shape) == 1 and is_jpeg(flat):
                return Frame(None, ensure_huffman_tables(flat.tobytes()), now)
            # Not a JPEG buffer after all: switch to decoded frames for good.
            self._raw = False
            self._cap.set(cv2.CAP_PROP_CONVERT_RGB, 1)
            try:
                decoded = decode_image(flat.tobytes(), "jpeg", self.max_pixels)
            except ImageDecodeError:
                decoded = None
            if decoded is not None:
                return Frame(decoded, None, now)
            ok, data = self._cap.read()
            now = time.time()
            if not ok or data is None or data.ndim != 3:
                raise SourceError(f"{self.description} delivers frames OpenCV cannot convert")
        return Frame(data, None, now)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --- Raspberry Pi camera --------------------------------------------------------------------

PICAMERA2_HINT = ("picamera2 is not installed: on Raspberry Pi OS run "
                  "`sudo apt install python3-picamera2` (or `pip install picamera2`)")


class PiCameraSource(FrameSource):
    """The Raspberry Pi camera through picamera2 (libcamera), BGR frames.

    picamera2's "RGB888" format is laid out B, G, R in memory, i.e. what OpenCV expects.
    Not verified here (no Pi camera on the build machine); the import error path is tested.
    """

    live = True
    description = "Raspberry Pi camera"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0):
        super().__init__()
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._camera = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2  # noqa: WPS433 - optional dependency
        except ImportError as exc:
            raise SourceError(PICAMERA2_HINT) from exc
        try:
            camera = Picamera2()
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": self.fps}, buffer_count=2)
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera raises various types (RuntimeError, IndexError)
            raise SourceError(f"could not open the Raspberry Pi camera: {exc}") from exc
        self._camera = camera

    def _read(self) -> Frame:
        try:
            image = self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"Raspberry Pi camera stopped delivering frames: {exc}") from exc
        now = time.time()
        if image.ndim == 3 and image.shape[2] == 4:  # XRGB8888 layouts carry a padding byte
            image = image[:, :, :3]
        return Frame(np.ascontiguousarray(image), None, now)

    def _close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None


# --- Files ----------------------------------------------------------------------------------

class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV (FFmpeg). ``loop`` restarts it at the end."""

    def __init__(self, path: Union[str, os.PathLike], loop: bool = False):
        super().__init__()
        self.path = pathlib.Path(path)
        self.loop = bool(loop)
        self.description = f"video file {self.path}"
        self._cap = None
        self._pending: Optional[np.ndarray] = None

    def _open_capture(self):
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"could not open {self.description} (not a video OpenCV can read)")
        return cap

    def _open(self) -> None:
        try:
            files.check_regular(self.path, "video file")
        except files.UnusableFile as exc:
            raise SourceError(str(exc)) from None
        cap = self._open_capture()
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if size[0] * size[1] > self.max_pixels:
            cap.release()
            raise SourceError(f"{self.description} has frames of {size[0]}x{size[1]} = "
                              f"{size[0] * size[1]} pixels, more than max_pixels="
                              f"{self.max_pixels}: scale the video down or raise the limit")
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(f"{self.description} has no readable frames")
        self._cap, self._pending = cap, image
        self._check_frame(image)

    def _check_frame(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if width * height > self.max_pixels:
            raise SourceError(f"{self.description} has a frame of {width}x{height} = "
                              f"{width * height} pixels, more than max_pixels="
                              f"{self.max_pixels}")

    def _read(self) -> Optional[Frame]:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return Frame(image, None, time.time())
        ok, image = self._cap.read()
        if not ok or image is None:
            if not self.loop:
                return None
            # Re-opening is more robust than seeking to frame 0 across containers.
            self._cap.release()
            self._cap = self._open_capture()
            ok, image = self._cap.read()
            if not ok or image is None:
                raise SourceError(f"{self.description} could not be restarted")
        self._check_frame(image)
        return Frame(image, None, time.time())

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


class ImageFolderSource(FrameSource):
    """Images (jpg/png/bmp, sorted by name) from a directory, or one image file, in turn.

    Files that cannot be used (not a regular file, over :data:`files.MAX_IMAGE_FILE` bytes,
    not decodable, more than ``max_pixels``) are skipped with one warning each on
    ``log``; ``open()`` reads the first usable image, so a folder where none can be read
    fails at once with ``SourceError``.
    """

    def __init__(self, path: Union[str, os.PathLike], loop: bool = False):
        super().__init__()
        self.path = pathlib.Path(path)
        self.loop = bool(loop)
        self.description = (f"image folder {self.path}" if self.path.is_dir()
                            else f"image {self.path}")
        self.files: List[pathlib.Path] = []
        self._index = 0
        self.skipped: List[pathlib.Path] = []
        self.delivered = 0
        self._pending: Optional[np.ndarray] = None

    @staticmethod
    def list_images(folder: pathlib.Path) -> List[pathlib.Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    def _open(self) -> None:
        if self.path.is_dir():
            images = self.list_images(self.path)
            if not images:
                raise SourceError(f"{self.description} holds no {'/'.join(IMAGE_EXTENSIONS)} "
                                  "images")
        elif os.path.lexists(self.path):
            images = [self.path]  # checked to be a regular file when it is read
        else:
            raise SourceError(f"{self.description}: no such file or directory")
        self.files, self._index, self.skipped, self.delivered = images, 0, [], 0
        self._pending = None
        self._pending = self._next_image()  # SourceError now when none can be read

    def _load(self, path: pathlib.Path) -> Optional[np.ndarray]:
        try:
            data = files.read_regular(path, "image", files.MAX_IMAGE_FILE)
            return decode_image(data, max_pixels=self.max_pixels, formats=IMAGE_FORMATS)
        except (files.UnusableFile, ImageDecodeError) as exc:
            if path not in self.skipped:
                self.skipped.append(path)
                self.log.warning(f"{self.description}: skipping {path.name}: {exc}")
            return None

    def _next_image(self) -> Optional[np.ndarray]:
        attempts = 0
        while attempts < len(self.files):
            if self._index >= len(self.files):
                if not self.loop:
                    break
                self._index = 0
            path = self.files[self._index]
            self._index += 1
            image = self._load(path)
            if image is not None:
                return image
            attempts += 1
        if self.delivered and not self.loop:
            return None  # the end
        raise SourceError(f"{self.description}: none of the images can be read "
                          f"({len(self.skipped)} skipped, see the warnings above)")

    def _read(self) -> Optional[Frame]:
        image, self._pending = self._pending, None
        if image is None:
            image = self._next_image()
            if image is None:
                return None
        self.delivered += 1
        return Frame(image, None, time.time())


# --- Synthetic ------------------------------------------------------------------------------

class TestPatternSource(FrameSource):
    """A moving synthetic pattern: colour bars, a ball that moves each frame, a frame counter.

    Cheap to generate (one copy plus a few drawing calls per frame); never ends.
    """

    __test__ = False  # not a pytest test class despite the name
    description = "test pattern"

    def __init__(self, width: int = 640, height: int = 480):
        super().__init__()
        if int(width) < 16 or int(height) < 16:
            raise SourceError(f"test pattern size must be at least 16x16, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.count = 0
        self._background: Optional[np.ndarray] = None

    def _open(self) -> None:
        w, h = self.width, self.height
        colours = np.array([[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0],
                            [255, 0, 255], [0, 0, 255], [255, 0, 0], [0, 0, 0]], np.uint8)
        bars = colours[(np.arange(w) * len(colours)) // w]
        background = np.repeat(bars[np.newaxis], h, axis=0)
        ramp = np.linspace(0, 255, w, dtype=np.uint8)
        background[(3 * h) // 4:] = ramp[np.newaxis, :, np.newaxis]
        self._background = np.ascontiguousarray(background)
        self.count = 0

    def _read(self) -> Frame:
        image = self._background.copy()
        w, h = self.width, self.height
        radius = max(4, min(w, h) // 10)
        travel = max(1, w - 2 * radius)
        step = self.count * max(2, w // 80)
        x = radius + abs((step % (2 * travel)) - travel)
        y = h // 2
        cv2.circle(image, (int(x), y), radius, (40, 40, 40), -1)
        scale = max(0.4, h / 480.0)
        cv2.putText(image, f"{self.count:06d}", (8, int(30 * scale) + 4),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, int(2 * scale)))
        self.count += 1
        return Frame(image, None, time.time())


# --- Spec parsing ---------------------------------------------------------------------------

PATTERN_NAMES = ("pattern", "test", "testpattern", "test_pattern")
PICAMERA_NAMES = ("picamera", "picamera2", "pi", "raspicam")


def describe_specs() -> str:
    return ("a camera index ('0'), a device ('/dev/video0'), 'picamera', 'pattern', "
            "a directory of images, an image file or a video file")


def open_source(spec: Union[str, int], width: int = 640, height: int = 480, fps: float = 15.0,
                loop: bool = False, passthrough: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> FrameSource:
    """Build (but do not open) the source described by ``spec``; SourceError if unusable.

    ``width``/``height``/``fps`` are requested from cameras and size the test pattern; file
    sources keep their own size. ``loop`` applies to video files and image folders.
    ``max_pixels``: images and video frames larger than this are refused (see the module
    docstring).
    """
    source = _source_for(spec, width, height, fps, loop, passthrough)
    source.max_pixels = int(max_pixels)
    return source


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def _source_for(spec, width, height, fps, loop, passthrough) -> FrameSource:
    if isinstance(spec, bool):
        raise SourceError(f"invalid source {spec!r}: expected {describe_specs()}")
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        raise SourceError(f"invalid source {spec!r}: expected {describe_specs()}")
    text = spec.strip()
    if not text:
        raise SourceError(f"empty source: expected {describe_specs()}")
    lowered = text.lower()
    if lowered in PATTERN_NAMES:
        return TestPatternSource(width, height)
    if lowered in PICAMERA_NAMES:
        return PiCameraSource(width, height, fps)
    if text.isdigit():
        return OpenCVCameraSource(int(text), width, height, fps, passthrough)
    if _URL.match(text):
        raise SourceError(f"source {text!r} is a URL: network streams are not a source "
                          f"facerec_camera reads; expected {describe_specs()}")
    try:
        path = pathlib.Path(files.expand_user(text, "source"))
    except files.UnusableFile as exc:
        raise SourceError(str(exc)) from None
    if text.startswith("/dev/"):
        if not path.exists():
            raise SourceError(f"no such camera device: {text}")
        return OpenCVCameraSource(text, width, height, fps, passthrough)
    if path.is_dir():
        return ImageFolderSource(path, loop)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageFolderSource(path, loop)
        return VideoFileSource(path, loop)
    if path.exists():
        kind = files.file_kind(path.stat().st_mode)
        raise SourceError(f"source {text!r} is a {kind}, not a file, folder or camera: "
                          f"expected {describe_specs()}")
    if os.sep in text or path.suffix:
        raise SourceError(f"no such file or directory: {text}")
    raise SourceError(f"unknown source {text!r}: expected {describe_specs()}")


def frames(source: FrameSource, count: int) -> Sequence[Frame]:
    """Read up to ``count`` frames from an open source (stops early at the end)."""
    out = []
    for _ in range(count):
        frame = source.read()
        if frame is None:
            break
        out.append(frame)
    return out
