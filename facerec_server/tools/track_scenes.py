"""Videos of real faces that move, cross, hide and come back (for the tracking bench and tests).

The faces come from package registries (see :mod:`facerec_server.tools.registry_faces`):
scikit-image's astronaut (the person the bench and tests enrol, "eileen") and Debian
opencv-doc's messi5 (someone never enrolled). Each *actor* is a head-and-shoulders patch of
one photo, blended into a plain room through a feathered ellipse, moved along key frames
``(t, cx, cy, face width)``: linear in between, out of view before the first and after the
last key. *Occluders* are grey boards drawn in front of everything for a time span.

A :class:`Scene` renders frame ``i`` as a BGR uint8 image and gives the ground truth of that
frame (each visible actor's face box and how much of it is hidden), so a bench or a test can
check track ids against who really is where. Nothing here needs dlib; the face boxes of the
patches are the HOG boxes of the photos, measured once (see ``PATCHES``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from facerec_server.tools.registry_faces import astronaut_path, messi_path

Box = Tuple[int, int, int, int]
Key = Tuple[float, float, float, float]  # (t seconds, face centre x, face centre y, face width)

#: photo loader, crop (rows, cols) of the head and shoulders, face box in the crop (HOG's
#: box on the photo at upsample 1, left/top/right/bottom).
PATCHES: Dict[str, Tuple[Callable, Tuple[slice, slice], Box]] = {
    "astronaut": (astronaut_path, (slice(20, 290), slice(90, 360)), (89, 63, 177, 152)),
    "messi": (messi_path, (slice(50, 170), slice(188, 298)), (37, 44, 74, 81)),
}


@functools.lru_cache(maxsize=None)
def _photo(kind: str) -> np.ndarray:
    loader = PATCHES[kind][0]
    image = cv2.imread(str(loader()), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"could not read {loader()}")
    return image


def patch_of(kind: str) -> Tuple[np.ndarray, Box]:
    """(head-and-shoulders BGR patch, face box in it) of a registry photo."""
    _, (rows, cols), face = PATCHES[kind]
    return np.ascontiguousarray(_photo(kind)[rows, cols]), face


def _ellipse_alpha(height: int, width: int) -> np.ndarray:
    """Feathered ellipse mask (float32 0..1) covering a head-and-shoulders patch."""
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (int(width * 0.46), int(height * 0.48)), 0,
                0, 360, 1.0, -1)
    blur = max(3, (min(height, width) // 12) | 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0)


@dataclass
class Actor:
    """One person: ``label`` (the ground-truth identity), a patch and its face box, keys."""

    label: str
    patch: np.ndarray
    face: Box
    keys: Sequence[Key]
    mirror: bool = False

    @classmethod
    def of(cls, kind: str, label: str, keys: Sequence[Key], mirror: bool = False) -> "Actor":
        patch, face = patch_of(kind)
        return cls(label, patch, face, sorted(keys), mirror)

    def pose(self, t: float) -> Optional[Tuple[float, float, float]]:
        """(cx, cy, face width) at time ``t``, or None when out of view."""
        keys = self.keys
        if not keys or t < keys[0][0] or t > keys[-1][0]:
            return None
        for (t0, *a), (t1, *b) in zip(keys, keys[1:]):
            if t0 <= t <= t1:
                f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return tuple(float(x + f * (y - x)) for x, y in zip(a, b))
        return tuple(float(v) for v in keys[-1][1:])


@dataclass
class Occluder:
    """A board (``box`` in frame pixels) in front of everything from ``start`` to ``end`` s."""

    box: Box
    start: float
    end: float
    colour: Tuple[int, int, int] = (95, 105, 110)

    def active(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass
class TruthFace:
    """Where an actor's face is in one frame: its box (clipped), how much of it is hidden
    by actors in front or boards (0..1), and whether it is wholly inside the image."""

    label: str
    box: Box
    hidden: float
    inside: bool
    actor: int = 0  # index in Scene.actors (one appearance of a person)


@dataclass
class Scene:
    """A video of ``actors`` (drawn in list order: later ones in front) and ``occluders``."""

    width: int
    height: int
    fps: float
    duration: float
    actors: List[Actor]
    occluders: List[Occluder] = field(default_factory=list)
    seed: int = 0

    @property
    def frames(self) -> int:
        return int(round(self.duration * self.fps))

    def time(self, index: int) -> float:
        return index / self.fps

    @functools.cached_property
    def background(self) -> np.ndarray:
        """A plain room: a graded wall, a floor line, a door and a picture (static)."""
        h, w = self.height, self.width
        ramp = np.linspace(150, 95, h, dtype=np.float32)[:, None]
        image = np.empty((h, w, 3), np.float32)
        image[..., 0], image[..., 1], image[..., 2] = ramp + 15, ramp + 5, ramp - 5
        image = np.clip(image, 0, 255).astype(np.uint8)
        floor = int(h * 0.86)
        image[floor:] = (70, 80, 92)
        cv2.rectangle(image, (int(w * 0.08), int(h * 0.18)), (int(w * 0.22), floor),
                      (60, 85, 120), -1)  # a door
        cv2.rectangle(image, (int(w * 0.70), int(h * 0.12)), (int(w * 0.86), int(h * 0.30)),
                      (40, 60, 50), -1)  # a picture
        noise = np.random.default_rng(self.seed).normal(0, 2.0, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8)

    def _placed(self, actor: Actor, t: float):
        """(scaled patch, alpha, x0, y0, face box in frame pixels) or None."""
        pose = actor.pose(t)
        if pose is None:
            return None
        cx, cy, face_width = pose
        fl, ft, fr, fb = actor.face
        scale = face_width / float(fr - fl)
        patch = actor.patch[:, ::-1] if actor.mirror else actor.patch
        face = (patch.shape[1] - fr, ft, patch.shape[1] - fl, fb) if actor.mirror else actor.face
        size = (max(1, int(round(patch.shape[1] * scale))),
                max(1, int(round(patch.shape[0] * scale))))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        scaled = cv2.resize(np.ascontiguousarray(patch), size, interpolation=interpolation)
        alpha = _ellipse_alpha(scaled.shape[0], scaled.shape[1])
        fcx, fcy = (face[0] + face[2]) / 2.0 * scale, (face[1] + face[3]) / 2.0 * scale
        x0, y0 = int(round(cx - fcx)), int(round(cy - fcy))
        box = (int(round(x0 + face[0] * scale)), int(round(y0 + face[1] * scale)),
               int(round(x0 + face[2] * scale)), int(round(y0 + face[3] * scale)))
        return scaled, alpha, x0, y0, box

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as a BGR uint8 (height, width, 3) image."""
        t = self.time(index)
        canvas = self.background.astype(np.float32)
        for actor in self.actors:
            placed = self._placed(actor, t)
            if placed is not None:
                _blend(canvas, *placed[:4])
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        for board in self.occluders:
            if board.active(t):
                cv2.rectangle(frame, board.box[:2], (board.box[2] - 1, board.box[3] - 1),
                              board.colour, -1)
        return frame

    def truth(self, index: int) -> List[TruthFace]:
        """The faces of frame ``index`` in view (at least partly inside the image)."""
        t = self.time(index)
        placed = [(actor, self._placed(actor, t)) for actor in self.actors]
        placed = [(actor, p) for actor, p in placed if p is not None]
        result = []
        for k, (actor, (_, _, _, _, box)) in enumerate(placed):
            index_of_actor = next(n for n, a in enumerate(self.actors) if a is actor)
            clipped = _clip(box, self.width, self.height)
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                continue
            cover = np.zeros((self.height, self.width), bool)
            for _, (scaled, alpha, x0, y0, _) in placed[k + 1:]:
                _mark(cover, alpha > 0.5, x0, y0)
            for board in self.occluders:
                if board.active(t):
                    b = _clip(board.box, self.width, self.height)
                    cover[b[1]:b[3], b[0]:b[2]] = True
            area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
            seen = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
            region = cover[clipped[1]:clipped[3], clipped[0]:clipped[2]]
            hidden = 1.0 - (seen - int(region.sum())) / float(area)
            inside = clipped == tuple(box)
            result.append(TruthFace(actor.label, clipped, float(hidden), inside,
                                    index_of_actor))
        return result


def _clip(box: Box, width: int, height: int) -> Box:
    return (min(max(box[0], 0), width), min(max(box[1], 0), height),
            min(max(box[2], 0), width), min(max(box[3], 0), height))


def _blend(canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    h, w = patch.shape[:2]
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return
    p = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].astype(np.float32)
    a = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0, None]
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1.0 - a
    region += a * p


def _mark(cover: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    h, w = mask.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, cover.shape[1]), min(y0 + h, cover.shape[0])
    if cx1 > cx0 and cy1 > cy0:
        cover[cy0:cy1, cx0:cx1] |= mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


# --- the bench's scene ----------------------------------------------------------------------

def bench_scene(width: int = 640, height: int = 480, fps: float = 15.0) -> Scene:
    """24 s with entries, exits, a crossing, an occlusion and returns (faces 88-120 px, so
    HOG finds them at upsample 0 as well as 1):

    * 0.3-9.3 s eileen walks in from the left, towards the camera, out on the right; she
      passes in front of the other man around 4.4 s (his face is hidden for about 0.5 s);
    * 1.0-10.3 s messi walks in from the right and out on the left, behind her;
    * 12.5-23.5 s eileen comes back from the right and stays; a board hides her face for
      0.2 s at 16 s (3 frames at 15 fps);
    * 13.5-24 s messi comes back from the left and stays, swaying.
    """
    sx, sy = width / 640.0, height / 480.0

    def key(t, x, y, size):
        return (t, x * sx, y * sy, size * sx)

    eileen = Actor.of("astronaut", "eileen", [
        key(0.3, -50, 200, 96), key(2.3, 130, 210, 100), key(3.8, 200, 215, 104),
        key(5.0, 480, 225, 110), key(7.5, 560, 228, 114), key(9.3, 700, 230, 116)],
        mirror=True)
    messi = Actor.of("messi", "messi", [
        key(1.0, 700, 215, 90), key(3.0, 500, 220, 92), key(3.8, 460, 218, 92),
        key(5.0, 170, 208, 95), key(7.5, 140, 205, 96), key(10.3, -60, 200, 96)])
    eileen_back = Actor.of("astronaut", "eileen", [
        key(12.5, 700, 205, 104), key(14.5, 470, 210, 110), key(18.0, 430, 220, 120),
        key(21.0, 455, 215, 114), key(23.5, 440, 212, 116)])
    messi_back = Actor.of("messi", "messi", [
        key(13.5, -60, 230, 92), key(15.5, 170, 225, 96)] + [
        key(15.5 + 0.5 * k, 170 + 14 * math.sin(k), 225 + 6 * math.cos(k), 96)
        for k in range(1, 18)])
    board = Occluder(_scaled_box((360, 60, 520, 330), sx, sy), 16.0, 16.19)
    return Scene(width, height, fps, 24.0, [messi, eileen, messi_back, eileen_back], [board])


def _scaled_box(box: Box, sx: float, sy: float) -> Box:
    return (int(box[0] * sx), int(box[1] * sy), int(box[2] * sx), int(box[3] * sy))
