"""Face images to publish: a face cut out of its frame, and the same face aligned upright.

What ROS4HRI (REP-155) publishes per face on ``/humans/faces/<id>/cropped`` and ``/aligned``:
both are ``size`` x ``size`` (128 by default) BGR uint8 images.

* :func:`cropped_face`: the face box of the frame, scaled to fit ``size`` x ``size`` keeping
  its aspect ratio, centred, the rest black (0-padded); no rotation.
* :func:`aligned_face`: ``dlib.get_face_chip`` on the face's 5 landmarks, the recogniser's own
  alignment (the eyes on a horizontal line, the face centred and scaled), at ``size`` with
  ``padding`` (fraction of the face width added on each side; 0.25 as the descriptor chips).
* :func:`chip_jpeg`: the aligned face as the gallery stores a sample's chip (150 x 150 JPEG,
  as enrollment stores them), for samples the server takes itself (anonymous identities).

Boxes are ``(left, top, right, bottom)`` pixels, right/bottom exclusive (see core.types);
images are BGR. Nothing here reads files or models.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from .align import shape_from_landmarks


def cropped_face(image_bgr: np.ndarray, box: Sequence[int], size: int = 128) -> np.ndarray:
    """The face in ``box`` scaled to fit a black ``size`` x ``size`` image, centred."""
    height, width = image_bgr.shape[:2]
    left, top, right, bottom = (int(v) for v in box)
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, width), min(bottom, height)
    out = np.zeros((size, size, 3), np.uint8)
    if right <= left or bottom <= top:
        return out
    face = image_bgr[top:bottom, left:right]
    scale = size / max(right - left, bottom - top)
    new_w = max(1, min(size, int(round((right - left) * scale))))
    new_h = max(1, min(size, int(round((bottom - top) * scale))))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(face, (new_w, new_h), interpolation=interpolation)
    x0, y0 = (size - new_w) // 2, (size - new_h) // 2
    out[y0:y0 + new_h, x0:x0 + new_w] = scaled
    return out


def aligned_face(image_bgr: np.ndarray, box: Sequence[int], landmarks: np.ndarray,
                 size: int = 128, padding: float = 0.25) -> np.ndarray:
    """The face rotated upright (eyes level) and scaled to ``size`` x ``size`` from its
    landmarks ((N, 2) x/y pixels: dlib's 5- or 68-point order) and ``box``."""
    import dlib
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    chip = dlib.get_face_chip(rgb, shape_from_landmarks(box, landmarks), size=int(size),
                              padding=float(padding))
    return np.ascontiguousarray(chip[:, :, ::-1])


def chip_jpeg(image_bgr: Optional[np.ndarray], box: Sequence[int],
              landmarks: Optional[np.ndarray], size: int = 150,
              quality: int = 90) -> Optional[bytes]:
    """The aligned face as JPEG bytes (the gallery's chip of a sample), or None when there
    is no image or no landmarks to align with."""
    if image_bgr is None or landmarks is None or len(landmarks) == 0:
        return None
    chip = aligned_face(image_bgr, box, np.asarray(landmarks), size)
    ok, buf = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes() if ok else None
