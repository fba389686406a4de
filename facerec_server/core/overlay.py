"""Debug overlay: face boxes with names/distances and object labels drawn on a BGR copy."""
from __future__ import annotations

import math
from typing import Iterable, Sequence, Tuple

import cv2
import numpy as np

from .types import FaceResult, ObjectResult

KNOWN_COLOUR = (0, 200, 0)  # BGR green
UNKNOWN_COLOUR = (0, 0, 230)  # BGR red
OBJECT_COLOUR = (230, 160, 0)  # BGR blue-ish
TEXT_COLOUR = (255, 255, 255)
LANDMARK_COLOUR = (0, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_label(face: FaceResult) -> str:
    """'name 0.42' / 'unknown 0.71' / 'unknown' (no descriptor: distance is inf)."""
    name = face.name or "unknown"
    if face.distance is None or not math.isfinite(face.distance):
        return name
    return f"{name} {face.distance:.2f}"


def object_label(obj: ObjectResult) -> str:
    """'label 0.87' (score with two decimals)."""
    return f"{obj.label} {obj.score:.2f}"


def _style(image: np.ndarray) -> Tuple[float, int]:
    """Font scale and line thickness proportional to the image size."""
    side = min(image.shape[:2])
    scale = max(0.35, side / 900.0)
    return scale, max(1, int(round(side / 400.0)))


def _put_label(image, text: str, x: int, y: int, colour, scale: float, thickness: int) -> int:
    """Text on a filled background with its top-left corner at (x, y); returns its height."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    box_h = height + baseline + 2 * thickness
    x = int(min(max(x, 0), max(image.shape[1] - width, 0)))
    y = int(min(max(y, 0), max(image.shape[0] - box_h, 0)))
    cv2.rectangle(image, (x, y), (x + width + 2 * thickness, y + box_h), colour, cv2.FILLED)
    cv2.putText(image, text, (x + thickness, y + height + thickness), FONT, scale,
                TEXT_COLOUR, thickness, cv2.LINE_AA)
    return box_h


def _draw_box(image, box: Sequence[int], colour, label: str, scale, thickness) -> None:
    left, top, right, bottom = (int(v) for v in box)
    cv2.rectangle(image, (left, top), (right - 1, bottom - 1), colour, thickness)
    (_, text_h), baseline = cv2.getTextSize(label, FONT, scale, thickness)
    label_h = text_h + baseline + 2 * thickness
    label_y = top - label_h if top - label_h >= 0 else bottom
    _put_label(image, label, left, label_y, colour, scale, thickness)


def draw_overlay(image_bgr: np.ndarray, faces: Iterable[FaceResult] = (),
                 objects: Iterable[ObjectResult] = ()) -> np.ndarray:
    """A new BGR image with faces and objects drawn; ``image_bgr`` is not modified.

    Faces: box (green known, red unknown), label 'name distance' or 'unknown distance',
    landmarks as dots. Objects with a non-zero box: blue box with 'label score'. Objects with
    an all-zero box (whole-image classification) are listed as text in the top-left corner.
    """
    canvas = np.array(image_bgr, dtype=np.uint8, copy=True)
    scale, thickness = _style(canvas)
    for face in faces:
        colour = KNOWN_COLOUR if face.name else UNKNOWN_COLOUR
        _draw_box(canvas, face.box, colour, face_label(face), scale, thickness)
        if face.landmarks is not None:
            for x, y in np.asarray(face.landmarks).reshape(-1, 2):
                cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1,
                           LANDMARK_COLOUR, cv2.FILLED)
    corner_y = 0
    for obj in objects:
        if any(obj.box):
            _draw_box(canvas, obj.box, OBJECT_COLOUR, object_label(obj), scale, thickness)
        else:
            corner_y += _put_label(canvas, object_label(obj), 0, corner_y, OBJECT_COLOUR,
                                   scale, thickness)
    return canvas
