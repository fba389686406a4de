"""The demo's video: two real faces from package registries, moving and changing size.

* scikit-image's ``astronaut.png`` (PyPI wheel): the person the demo enrolls. In the video her
  head is mirrored, scaled (0.62x..0.92x of the photo) and shifted, so no frame equals the
  enrollment photo.
* Debian opencv-doc's ``messi5.jpg``: someone else, never enrolled. His face is small (about
  36..50 px), so the server needs ``face.upsample: 1`` to find it.

Written as an MJPG ``.avi`` (OpenCV's own encoder, no codec packages needed).
"""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from facerec_server.tools.registry_faces import astronaut_path, messi_path  # noqa: F401


#: Head-and-shoulders region of astronaut.png (rows, cols): face at about (179, 83)-(266, 170);
#: the badge lower down, which HOG with upsample 1 takes for a face, is left out.
ASTRONAUT_CROP = (slice(20, 250), slice(110, 340))
#: Region around messi5.jpg's face (about (225, 94)-(261, 130), 36 px).
MESSI_CROP = (slice(30, 200), slice(160, 330))

WIDTH, HEIGHT = 512, 384


def read_bgr(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"could not read image {path}")
    return image


@dataclass
class VideoInfo:
    path: pathlib.Path
    frames: int
    fps: float
    size: Tuple[int, int]


def _background(width: int, height: int) -> np.ndarray:
    ramp = np.linspace(70, 150, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), np.float32)
    image[..., 0] = ramp + 20  # a blue-grey wall
    image[..., 1] = ramp
    image[..., 2] = ramp - 10
    return np.clip(image, 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, patch: np.ndarray, cx: float, cy: float) -> None:
    """Copy ``patch`` centred at (cx, cy), clipped to the canvas."""
    h, w = patch.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def render_frame(index: int, frames: int, astronaut: np.ndarray, messi: np.ndarray,
                 background: np.ndarray) -> np.ndarray:
    """Frame ``index`` of ``frames``: both people move together, one grows as the other shrinks."""
    phase = 2.0 * math.pi * index / max(frames - 1, 1)
    grow = 0.5 - 0.5 * math.cos(phase)  # 0 -> 1 -> 0
    canvas = background.copy()
    head = cv2.flip(astronaut[ASTRONAUT_CROP], 1)  # mirrored
    scale = 0.62 + 0.30 * grow
    head = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _paste(canvas, head, 125 + 30 * math.sin(phase), 192 + 60 * math.sin(2 * phase))
    other = messi[MESSI_CROP]
    scale = 1.35 - 0.35 * grow
    other = cv2.resize(other, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    _paste(canvas, other, 380 + 30 * math.sin(phase), 192 - 50 * math.sin(2 * phase))
    cv2.putText(canvas, f"facerec demo {index + 1}/{frames}", (8, canvas.shape[0] - 10),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas


def make_video(path, frames: int, fps: float) -> VideoInfo:
    """Write the demo video (MJPG .avi) to ``path``; FileNotFoundError if an image is missing."""
    path = pathlib.Path(path)
    astronaut, messi = read_bgr(astronaut_path()), read_bgr(messi_path())
    background = _background(WIDTH, HEIGHT)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps),
                             (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG video to {path}")
    try:
        for index in range(frames):
            writer.write(render_frame(index, frames, astronaut, messi, background))
    finally:
        writer.release()
    return VideoInfo(path, frames, float(fps), (WIDTH, HEIGHT))
