"""Plain result types shared by every stage of the recognition core.

Conventions used throughout the core:

* Images are ``numpy.ndarray`` of dtype uint8, shape (height, width, 3), **BGR** colour
  order (OpenCV's and cv_bridge's ``bgr8``). Stages that need RGB (dlib) convert themselves.
* Boxes are ``(left, top, right, bottom)`` in integer pixels of the full-resolution input
  image, right/bottom exclusive, clipped to the image (``Detection.unclipped`` keeps the
  detector's own box for the landmark model).
* Landmarks are float32 arrays of shape (N, 2) holding (x, y) pixel coordinates.
* Descriptors are float32 arrays of shape (128,); distances are Euclidean.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

Box = Tuple[int, int, int, int]


@dataclass
class Detection:
    """One detector hit: a box (left, top, right, bottom) clipped to the image, and the
    detector's score. ``unclipped`` is the detector's box before clipping (it reaches past
    the image edge for a face cut by it; None = same as ``box``): landmarks are found in it,
    as dlib does, because clipping first moves the descriptor (by 0.05-0.15)."""

    box: Box
    score: float
    unclipped: Optional[Box] = None

    @property
    def landmark_box(self) -> Box:
        """The box to give the landmark model: the unclipped one when known."""
        return self.unclipped if self.unclipped is not None else self.box


@dataclass
class Match:
    """Outcome of matching one descriptor against the gallery.

    ``name`` is empty when the face is unknown. ``distance`` is the Euclidean distance to
    the nearest gallery sample (``inf`` when the gallery is empty). ``confidence`` is
    ``clip(1 - distance / (2 * threshold), 0, 1)`` for a known face (0.5 exactly at the
    threshold, 1.0 at distance 0) and 0.0 for an unknown face.
    """

    name: str
    distance: float
    confidence: float


@dataclass
class FaceResult:
    """Everything the face pipeline knows about one face in one frame."""

    box: Box
    detection_score: float
    landmarks: np.ndarray  # (5, 2) float32, x/y pixels in the input image
    descriptor: Optional[np.ndarray] = None  # (128,) float32
    name: str = ""
    distance: float = float("inf")
    confidence: float = 0.0
    track_id: int = 0  # 0 = not tracked (see core.tracking)
    track_state: int = 0  # core.tracking.TRACK_NONE / TRACK_TENTATIVE / TRACK_CONFIRMED
    anonymous_id: str = ""  # anonymous identity of an unknown face (core.anonymous)
    anonymous_confidence: float = 0.0  # match.confidence of the face to anonymous_id


@dataclass
class ObjectResult:
    """One object label. ``box`` is all zero for whole-image classification."""

    label: str
    score: float
    box: Box = (0, 0, 0, 0)
    model: str = ""


@dataclass
class FrameResult:
    """Results of one processed frame."""

    faces: list = field(default_factory=list)  # list[FaceResult]
    processing_time: float = 0.0  # seconds spent in the pipeline
    full_detection: bool = True  # the full-frame detector ran (tracking may skip it)
    described: Optional[int] = None  # faces whose descriptor was computed (None: all)
