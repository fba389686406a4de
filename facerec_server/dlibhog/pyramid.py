"""dlib's image pyramid for the fhog scanner, bit-exact and vectorised.

* ``pyramid_down<6>`` (``dlib/image_transforms/image_pyramid.h``): each level is
  ``floor(5 * size / 6)`` and made from the previous one by dlib's bilinear
  ``resize_image`` on RGB pixels;
* ``pyramid_up`` with ``pyramid_down<2>`` (dlib's upsampling): the same resize to
  ``(2 * rows + 2, 2 * cols + 2)``;
* the number of levels ``scan_fhog_pyramid`` uses: ``rect_down`` of the image rectangle
  (``(p - 0.3) * 5/6``, rounded) while it is at least the minimum layer size.

The resize arithmetic is :mod:`facerec_server.dlibnet.resize` (float32 weights, columns in
SIMD blocks of 4, a double-precision scalar tail, truncation to uint8), planned once per
(input, output) size and run by the compiled :func:`.kernels.resize_rows` on planar images
(``(3, rows, cols)``: R, G, B planes; :func:`planar` converts).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import List, Tuple

import cv2
import numpy as np

from ..dlibnet.resize import _cols, _rows, pyramid_up_size
from .kernels import gather_plan, resize_rows

F32 = np.float32


def _round(v: float) -> int:
    """``std::round`` (half away from zero), dlib's drectangle -> rectangle conversion."""
    r = int(np.floor(v))
    diff = v - r
    return r + 1 if diff > 0.5 or (diff == 0.5 and v > 0) else r


def level_count(rows: int, cols: int, min_width: int, min_height: int,
                max_levels: int) -> int:
    """Levels ``create_fhog_pyramid`` builds for a rows x cols image."""
    left, top, right, bottom = 0.0, 0.0, cols - 1.0, rows - 1.0
    levels = 0
    while True:
        left, top, right, bottom = (float(_round((v - 0.3) * (5.0 / 6.0)))
                                    for v in (left, top, right, bottom))
        levels += 1
        if not (right - left + 1 >= min_width and bottom - top + 1 >= min_height
                and levels < max_levels):
            return levels


def level_sizes(rows: int, cols: int, levels: int) -> List[Tuple[int, int]]:
    """(rows, cols) of each pyramid level: ``pyramid_down<6>`` keeps ``floor(5 n / 6)``."""
    sizes = [(rows, cols)]
    for _ in range(1, levels):
        rows, cols = (5 * rows) // 6, (5 * cols) // 6
        sizes.append((rows, cols))
    return sizes


class ResizePlan:
    """Indices and float32 weights of dlib's bilinear resize between two sizes."""

    def __init__(self, in_nr: int, in_nc: int, out_nr: int, out_nc: int):
        self.in_shape = (in_nr, in_nc)
        self.out_shape = (out_nr, out_nc)
        self.trivial = out_nr <= 1 or out_nc <= 1 or in_nr == 0 or in_nc == 0
        if self.trivial:
            return
        top, bottom, tb = _rows(in_nr, out_nr)
        c_simd, (left, _, lr, ilr), (tleft, tright, tlr) = _cols(in_nc, out_nc)
        self.rows = (top.astype(np.int64), bottom.astype(np.int64), tb.astype(F32),
                     (1 - tb).astype(F32))
        self.cols = (left.astype(np.int64), lr.astype(F32), ilr.astype(F32), int(c_simd))
        self.gather = gather_plan(left, int(c_simd), in_nc)
        self.tail = (tleft.astype(np.int64), tright.astype(np.int64),
                     tlr.astype(np.float64), tb.astype(np.float64))

    def run(self, src: np.ndarray, out: np.ndarray, rows: Tuple[int, int] = None) -> None:
        """Resize planar uint8 ``src`` (3, rows, cols) into ``out`` (3, out rows, out cols),
        output rows [lo, hi) of ``rows`` only."""
        lo, hi = rows if rows is not None else (0, self.out_shape[0])
        if self.trivial:
            out[:, lo:hi] = 0
            return
        if src.strides[-1] != 1:  # the kernel loads 16 consecutive bytes of a row
            raise ValueError("resize needs rows of consecutive pixels")
        top, bottom, tb32, itb32 = self.rows
        left, lr, ilr, c_simd = self.cols
        starts, masks, fast = self.gather
        tleft, tright, tlr, tb = self.tail
        resize_rows(src, out, lo, hi, top, bottom, tb32, itb32, left, lr, ilr, c_simd,
                    starts, masks, fast, tleft, tright, tlr, tb)


_PLANS: "OrderedDict[tuple, ResizePlan]" = OrderedDict()
_PLANS_LOCK = threading.Lock()
MAX_PLANS = 64  # bounded: a few frame sizes x ~12 levels x upsampling


def resize_plan(in_nr: int, in_nc: int, out_nr: int, out_nc: int) -> ResizePlan:
    """The (cached, least recently used out first) plan for one resize."""
    key = (in_nr, in_nc, out_nr, out_nc)
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
        if plan is not None:
            _PLANS.move_to_end(key)
            return plan
    plan = ResizePlan(*key)
    with _PLANS_LOCK:
        _PLANS[key] = plan
        while len(_PLANS) > MAX_PLANS:
            _PLANS.popitem(last=False)
    return plan


def planar(rgb: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """(3, rows, cols) uint8 planes of an interleaved (rows, cols, 3) image (into ``out``)."""
    if out is None:
        out = np.empty((3,) + rgb.shape[:2], np.uint8)
    if rgb.shape[0] and rgb.shape[1]:
        cv2.split(rgb, [out[0], out[1], out[2]])
    return out


def interleaved(planes: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) uint8 image of (3, rows, cols) planes."""
    return np.ascontiguousarray(np.moveaxis(planes, 0, 2))


def resize_planar(src: np.ndarray, out_nr: int, out_nc: int) -> np.ndarray:
    """dlib ``resize_image`` (bilinear) of planar uint8 ``src`` (3, rows, cols)."""
    out = np.empty((src.shape[0], out_nr, out_nc), np.uint8)
    resize_plan(src.shape[1], src.shape[2], out_nr, out_nc).run(src, out)
    return out


def resize_rgb(src: np.ndarray, out_nr: int, out_nc: int) -> np.ndarray:
    """dlib ``resize_image`` (bilinear) of an RGB uint8 image (rows, cols, 3)."""
    return interleaved(resize_planar(planar(src), out_nr, out_nc))


def pyramid_up_planar(src: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_up(img, pyramid_down<2>)`` of planar uint8 ``src`` (3, rows, cols)."""
    return resize_planar(src, *pyramid_up_size(src.shape[1], src.shape[2]))


def pyramid_up(src: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_up(img, pyramid_down<2>)`` of an RGB uint8 image (rows, cols, 3)."""
    return interleaved(pyramid_up_planar(planar(src)))
