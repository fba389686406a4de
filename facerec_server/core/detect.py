"""Face detectors: replaceable stages with one interface, ``detect(image_bgr) -> [Detection]``.

* :class:`HogDetector`: dlib's frontal HOG detector; score is the SVM margin (> 0 detected).
  ``backend="dlibhog"`` (default) runs it with :mod:`facerec_server.dlibhog` (same boxes
  and scores, several threads), ``"dlib"`` with dlib's own code.
* :class:`CnnDetector`: dlib's MMOD CNN detector; score is its confidence.

Both take ``upsample`` (dlib's ``upsample_num_times``: each step doubles the image so faces
down to ~40 px (1) or ~20 px (2) are found, at ~4x the cost per step) and ``scale`` in (0, 1]:
detection runs on a copy resized by ``scale`` and boxes are mapped back to full resolution.
Boxes are (left, top, right, bottom) int pixels of the input, right/bottom exclusive, clipped;
``Detection.unclipped`` keeps the detector's own box (it may reach past the image edge), which
is what the landmark model is given, as dlib does.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import List, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from .models import LazyModel, ModelPaths, load_model
from .types import Box, Detection


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs from a face detector."""

    def detect(self, image_bgr: np.ndarray) -> List[Detection]:
        """Faces in a BGR uint8 image, boxes in full-resolution pixels."""

    def detect_rgb(self, image_rgb: np.ndarray) -> List[Detection]:
        """Same as :meth:`detect` for an RGB image (saves a colour conversion)."""

    def load(self) -> None:
        """Load the model now (raises ModelError) instead of on first use."""


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """RGB copy of a BGR uint8 (h, w, 3) image; raises ValueError for anything else."""
    check_bgr(image_bgr)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def check_bgr(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a non-empty uint8 (h, w, 3) array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a BGR uint8 image of shape (h, w, 3), got {shape} {dtype}; "
                         "decode messages with images.decode_image/image_from_fields")


def _validate(upsample: int, scale: float) -> None:
    if int(upsample) != upsample or not 0 <= upsample <= 4:
        raise ValueError(f"upsample must be an integer within 0..4, got {upsample}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"detect scale must be within (0, 1], got {scale}")


def map_box(rect, scale_x: float, scale_y: float, width: int, height: int) -> Box:
    """dlib rectangle (inclusive corners) found on an image resized by (scale_x, scale_y) ->
    full-res box (left, top, right, bottom), right/bottom exclusive, clipped to the image."""
    return clip_box(unclipped_box(rect, scale_x, scale_y), width, height)


def unclipped_box(rect, scale_x: float, scale_y: float) -> Box:
    """As :func:`map_box` without the clipping: a face cut by the image edge keeps the box
    the detector found, which may reach outside the image (what the landmark model wants)."""
    return (int(round(rect.left() / scale_x)), int(round(rect.top() / scale_y)),
            int(round((rect.right() + 1) / scale_x)), int(round((rect.bottom() + 1) / scale_y)))


def clip_box(box: Sequence[int], width: int, height: int) -> Box:
    """Clip (left, top, right, bottom) to an image of ``width`` x ``height`` pixels."""
    left, top, right, bottom = (int(v) for v in box)
    return (min(max(left, 0), width), min(max(top, 0), height),
            min(max(right, 0), width), min(max(bottom, 0), height))


class _DlibDetector:
    """Shared resize/run/map-back logic; subclasses implement ``_raw_detect``."""

    def __init__(self, upsample: int = 0, scale: float = 1.0) -> None:
        _validate(upsample, scale)
        self.upsample = int(upsample)
        self.scale = float(scale)
        self._model = LazyModel(self._create_raw)
        self._load_lock = threading.Lock()  # unused here; kept for subclasses that copy it

    def detect(self, image_bgr: np.ndarray) -> List[Detection]:
        """Faces in a BGR uint8 image. See the module docstring for box conventions."""
        check_bgr(image_bgr)
        small = self._resize(image_bgr)
        hits = self._raw_detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        return self._to_detections(hits, image_bgr.shape)

    def detect_rgb(self, image_rgb: np.ndarray) -> List[Detection]:
        """Faces in an RGB uint8 image (same conventions as :meth:`detect`)."""
        check_bgr(image_rgb)  # same shape/dtype rules; colour order is the caller's promise
        hits = self._raw_detect(np.ascontiguousarray(self._resize(image_rgb)))
        return self._to_detections(hits, image_rgb.shape)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        if self.scale >= 1.0:
            return image
        height, width = image.shape[:2]
        return cv2.resize(image, self._small_size(width, height), interpolation=cv2.INTER_AREA)

    def _small_size(self, width: int, height: int):
        """(width, height) of the image the detector actually runs on."""
        if self.scale >= 1.0:
            return width, height
        return max(1, int(round(width * self.scale))), max(1, int(round(height * self.scale)))

    def _to_detections(self, hits, shape) -> List[Detection]:
        height, width = shape[:2]
        small_w, small_h = self._small_size(width, height)
        result = []
        for rect, score in hits:
            unclipped = unclipped_box(rect, small_w / width, small_h / height)
            box = clip_box(unclipped, width, height)
            if box[2] > box[0] and box[3] > box[1]:
                result.append(Detection(box=box, score=float(score), unclipped=unclipped))
        return result

    def load(self) -> None:
        """Load the dlib model now (idempotent, thread-safe)."""
        self._raw_model()

    @property
    def _raw(self):
        """The loaded dlib object(s) or None; shared with ``with_settings`` copies."""
        return self._model.value

    @_raw.setter
    def _raw(self, value) -> None:
        """Hold an already loaded object (None: load lazily). For subclasses written
        against the older ``other._raw = self._raw`` sharing idiom (dlibnet's MMOD)."""
        self._model = LazyModel(self._create_raw, value)

    def _raw_model(self):
        return self._model.get()

    def _create_raw(self):
        raise NotImplementedError

    def _raw_detect(self, image_rgb: np.ndarray):
        raise NotImplementedError


class _Pool:
    """Free dlib objects for concurrent callers: borrow one, or build one if all are busy."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._free = [factory()]
        self._lock = threading.Lock()
        self.created = 1

    @contextmanager
    def borrow(self):
        with self._lock:
            item = self._free.pop() if self._free else None
        if item is None:
            item = self._factory()
            with self._lock:
                self.created += 1
        try:
            yield item
        finally:
            with self._lock:
                self._free.append(item)


def _frontal_face_detector():
    import dlib
    return dlib.get_frontal_face_detector()


HOG_BACKENDS = ("dlibhog", "dlib")


class HogDetector(_DlibDetector):
    """dlib's frontal-face HOG detector (no model file). Scores are SVM margins (> 0).

    ``backend``: "dlibhog" runs dlib's detector file with :mod:`facerec_server.dlibhog`
    (boxes equal to dlib's, scores within 1e-5, up to ``threads`` threads per call; the
    compiled kernels are built, or loaded from their cache, on :meth:`load`); "dlib" runs
    dlib's own code. One dlib ``object_detector`` used by two threads at once segfaults
    (reproduced with dlib 20.0.1, even with equal settings), so concurrent callers of the
    "dlib" backend borrow detectors from a pool that grows to the peak number of
    simultaneous callers (shared by ``with_settings`` copies, i.e. across reconfigure).
    """

    def __init__(self, upsample: int = 0, scale: float = 1.0, adjust_threshold: float = 0.0,
                 backend: str = "dlibhog", threads: int = 2):
        super().__init__(upsample, scale)
        if backend not in HOG_BACKENDS:
            raise ValueError(f"HOG backend must be one of {', '.join(HOG_BACKENDS)}, "
                             f"got {backend!r}")
        self.adjust_threshold = float(adjust_threshold)
        self.backend = backend
        self.threads = int(threads)

    def with_settings(self, upsample: int, scale: float) -> "HogDetector":
        """A detector with new settings sharing this one's loaded model."""
        other = HogDetector(upsample, scale, self.adjust_threshold, self.backend, self.threads)
        other._model = self._model
        return other

    def _create_raw(self):
        if self.backend == "dlib":
            return _Pool(_frontal_face_detector)
        from facerec_server.dlibhog import FhogDetector, frontal_face_model
        engine = FhogDetector(frontal_face_model(), self.threads)
        engine.detect(np.zeros((96, 96, 3), np.uint8), 1)  # compile (or load) the kernels
        return engine

    def _raw_detect(self, image_rgb: np.ndarray):
        if self.backend == "dlib":
            with self._raw_model().borrow() as detector:
                rects, scores, _ = detector.run(image_rgb, self.upsample,
                                                self.adjust_threshold)
            return list(zip(rects, scores))
        from facerec_server.dlibnet.mmod import _Rect
        hits = self._raw_model().detect(image_rgb, self.upsample, self.adjust_threshold)
        return [(_Rect(rect), score) for rect, score, _ in hits]


class CnnDetector(_DlibDetector):
    """dlib MMOD CNN face detector (``mmod_human_face_detector.dat``); score is confidence.

    Calls are serialised with a lock: a dlib network object is not re-entrant.
    """

    def __init__(self, model_path=None, upsample: int = 0, scale: float = 1.0):
        """``model_path`` None means the face_recognition_models default (resolved at load)."""
        super().__init__(upsample, scale)
        self.model_path = model_path
        self._run_lock = threading.Lock()

    def with_settings(self, upsample: int, scale: float) -> "CnnDetector":
        """A detector with new settings sharing this one's loaded network."""
        other = CnnDetector(self.model_path, upsample, scale)
        other._model = self._model
        other._run_lock = self._run_lock
        return other

    def _create_raw(self):
        path = ModelPaths(cnn_detector=self.model_path).resolve("cnn_detector")
        return load_model("cnn_detector", path)

    def _raw_detect(self, image_rgb: np.ndarray):
        net = self._raw_model()
        with self._run_lock:
            hits = net(image_rgb, self.upsample)
        return [(hit.rect, hit.confidence) for hit in hits]
