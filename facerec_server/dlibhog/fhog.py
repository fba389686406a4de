"""dlib's fhog features (``dlib/image_transforms/fhog.h``, cell size > 1): geometry and
tables (the per-pixel loops are :func:`.kernels.fhog_rows`, and, in dlib's exact order,
:func:`.reference.fhog_level`).

``extract_fhog_features(img, hog, cell_size, filter_rows_padding, filter_cols_padding)`` on
an RGB uint8 image, reproduced step by step:

1. Gradients ``[-1, 0, 1]`` per colour channel at every interior pixel of the visible area
   (``min(cells * cell_size, size) - 1``); the channel with the largest squared length
   wins. dlib processes 8 columns at a time with SIMD (ties go to the later channel, blue)
   and the columns left over one by one (ties go to the earlier channel, red), so the tie
   rule depends on the column and is reproduced per column.
2. The orientation: the first of the 18 directions (9 unit vectors and their negatives, in
   dlib's float32 arithmetic) with the largest positive dot product, 0 for no gradient. It
   depends only on the integer gradient: :data:`BIN_TABLE` over all (gx, gy).
3. Bilinear votes of the gradient length into the 4 cells around the pixel, summed per cell
   and orientation.
4. Block energies and the 31 features per cell (18 signed and 9 unsigned orientations
   clipped at 0.2 after normalisation by each of the 4 surrounding 2x2 blocks, and 4
   gradient energies), in dlib's float32 order of operations.

Every discrete decision (channel, orientation, cell, weights) is dlib's. The reference
kernel also adds the votes in dlib's order (bit-exact features); the fast kernel sums them
in another order (features within a few float32 roundings of dlib's, see
:mod:`.kernels`).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

F32 = np.float32
NUM_ORIENTATIONS = 18
NUM_FEATURES = 31

# fhog.h: unit vectors used to compute gradient orientation (float literals)
_DIRECTIONS = np.array([[1.0000, 0.0000], [0.9397, 0.3420], [0.7660, 0.6428],
                        [0.500, 0.8660], [0.1736, 0.9848], [-0.1736, 0.9848],
                        [-0.5000, 0.8660], [-0.7660, 0.6428], [-0.9397, 0.3420]],
                       dtype=F32)

GRAD_RANGE = 255  # |gx|, |gy| <= 255 for uint8 images
_SIDE = 2 * GRAD_RANGE + 1


def _orientation_table() -> np.ndarray:
    """The orientation (0..17) of every gradient, indexed by ``(gx + 255) * 511 + gy + 255``
    (uint8: 261 KB, stays in the processor's cache)."""
    g = np.arange(-GRAD_RANGE, GRAD_RANGE + 1, dtype=F32)
    gx = np.repeat(g, _SIDE)
    gy = np.tile(g, _SIDE)
    best_dot = np.zeros(gx.shape, F32)
    best_o = np.zeros(gx.shape, np.int32)
    for o in range(9):
        dot = gx * _DIRECTIONS[o, 0] + gy * _DIRECTIONS[o, 1]  # float32, no FMA
        better = dot > best_dot
        best_dot = np.where(better, dot, best_dot)
        best_o[better] = o
        neg = -dot
        better = neg > best_dot
        best_dot = np.where(better, neg, best_dot)
        best_o[better] = o + 9
    return best_o.astype(np.uint8)


BIN_TABLE = _orientation_table()


def cells_of(size: int, cell_size: int) -> int:
    """``(int)((float)size / (float)cell_size + 0.5)``."""
    return int(np.floor(np.float32(size) / np.float32(cell_size) + 0.5))


def hog_size(rows: int, cols: int, cell: int) -> Tuple[int, int]:
    """(rows, cols) of the fhog cells that have features (0 when the image is too small)."""
    return max(cells_of(rows, cell) - 2, 0), max(cells_of(cols, cell) - 2, 0)
