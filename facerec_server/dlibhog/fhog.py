"""dlib's fhog features (``dlib/image_transforms/fhog.h``, cell size > 1) in numpy.

``extract_fhog_features(img, hog, cell_size, filter_rows_padding, filter_cols_padding)`` for
an RGB uint8 image, reproduced step by step:

1. Gradients ``[-1, 0, 1]`` per colour channel at every interior pixel of the visible area
   (``min(cells * cell_size, size) - 1``); the channel with the largest squared length
   wins. dlib processes 8 columns at a time with SIMD (ties go to the later channel, blue)
   and the columns left over one by one (ties go to the earlier channel, red): the tie rule
   therefore depends on the column, and is reproduced per column.
2. The orientation: the first of the 18 directions (9 unit vectors and their negatives, in
   dlib's float32 arithmetic) with the largest positive dot product, 0 for no gradient. It
   depends only on the integer gradient, so it is a lookup table over all (gx, gy).
3. Bilinear votes of the gradient length into the 4 cells around the pixel (float32 weights
   rounded as dlib's SIMD and scalar paths round them), summed per cell and orientation.
4. Block energies and the 31 features per cell (18 signed and 9 unsigned orientations
   clipped at 0.2 after normalisation by each of the 4 surrounding 2x2 blocks, and 4
   gradient energies), in dlib's float32 order of operations.

The sums in step 3 run in float64 and round once instead of adding in dlib's pixel order,
so features can differ from dlib's in the last bits of float32 (relative 1e-7); the discrete
decisions (channel, orientation, cell) are dlib's exactly.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

F32 = np.float32
NUM_ORIENTATIONS = 18

# fhog.h: unit vectors used to compute gradient orientation (float literals)
_DIRECTIONS = np.array([[1.0000, 0.0000], [0.9397, 0.3420], [0.7660, 0.6428],
                        [0.500, 0.8660], [0.1736, 0.9848], [-0.1736, 0.9848],
                        [-0.5000, 0.8660], [-0.7660, 0.6428], [-0.9397, 0.3420]],
                       dtype=F32)

GRAD_RANGE = 255  # |gx|, |gy| <= 255 for uint8 images
_SIDE = 2 * GRAD_RANGE + 1


def _orientation_tables() -> Tuple[np.ndarray, np.ndarray]:
    """(bin uint8, length float32) for every gradient, indexed by
    ``(gx + 255) * 511 + (gy + 255)``."""
    g = np.arange(-GRAD_RANGE, GRAD_RANGE + 1, dtype=F32)
    gx = np.repeat(g, _SIDE)
    gy = np.tile(g, _SIDE)
    best_dot = np.zeros(gx.shape, F32)
    best_o = np.zeros(gx.shape, np.uint8)
    for o in range(9):
        dot = gx * _DIRECTIONS[o, 0] + gy * _DIRECTIONS[o, 1]  # float32, no FMA
        better = dot > best_dot
        best_dot = np.where(better, dot, best_dot)
        best_o[better] = o
        neg = -dot
        better = neg > best_dot
        best_dot = np.where(better, neg, best_dot)
        best_o[better] = o + 9
    length = np.sqrt((gx * gx + gy * gy).astype(F32))
    return best_o, length


_BIN_TABLE, _LENGTH_TABLE = _orientation_tables()


def cells_of(size: int, cell_size: int) -> int:
    """``(int)((float)size / (float)cell_size + 0.5)``."""
    return int(np.floor(np.float32(size) / np.float32(cell_size) + 0.5))


def hog_size(height: int, width: int, cell_size: int) -> Tuple[int, int]:
    """(rows, cols) of fhog cells with features (0 when the image is too small)."""
    return max(cells_of(height, cell_size) - 2, 0), max(cells_of(width, cell_size) - 2, 0)


def _gradients(img: np.ndarray, visible_nr: int, visible_nc: int, simd_end: int):
    """Chosen (gx, gy) int16 at pixels [1, visible_nr) x [1, visible_nc)."""
    src = img.astype(np.int16)
    rows = slice(1, visible_nr)
    gx = src[rows, 2:visible_nc + 1] - src[rows, 0:visible_nc - 1]
    gy = src[2:visible_nr + 1, 1:visible_nc] - src[0:visible_nr - 1, 1:visible_nc]
    lengths = gx.astype(np.int32) ** 2 + gy.astype(np.int32) ** 2  # (h, w, 3)
    r, g, b = lengths[..., 0], lengths[..., 1], lengths[..., 2]
    split = max(0, simd_end - 1)  # columns before this index use the SIMD tie rule
    choice = np.empty(r.shape, np.int8)
    # SIMD: select(rlen > glen, red, green), then select(tlen > blen, t, blue)
    t_simd = np.where(r[:, :split] > g[:, :split], 0, 1).astype(np.int8)
    tlen = np.where(t_simd == 0, r[:, :split], g[:, :split])
    choice[:, :split] = np.where(tlen > b[:, :split], t_simd, 2)
    # scalar: red, then green if strictly longer, then blue if strictly longer
    t_sc = np.where(g[:, split:] > r[:, split:], 1, 0).astype(np.int8)
    tlen = np.where(t_sc == 0, r[:, split:], g[:, split:])
    choice[:, split:] = np.where(b[:, split:] > tlen, 2, t_sc)
    pick = choice[..., None].astype(np.intp)
    cx = np.take_along_axis(gx, pick, axis=2)[..., 0]
    cy = np.take_along_axis(gy, pick, axis=2)[..., 0]
    return cx, cy


def fhog_features(img: np.ndarray, cell_size: int, rows_pad: int,
                  cols_pad: int) -> np.ndarray:
    """(31, hog_rows + rows_pad - 1, hog_cols + cols_pad - 1) float32 features of an RGB
    uint8 image, zero outside the cells that have features (``init_hog``); (31, 0, 0)
    when the image is too small."""
    height, width = img.shape[:2]
    cells_nr, cells_nc = cells_of(height, cell_size), cells_of(width, cell_size)
    hog_nr, hog_nc = max(cells_nr - 2, 0), max(cells_nc - 2, 0)
    if cells_nr == 0 or cells_nc == 0 or hog_nr == 0 or hog_nc == 0:
        return np.zeros((31, 0, 0), F32)
    visible_nr = min(cells_nr * cell_size, height) - 1
    visible_nc = min(cells_nc * cell_size, width) - 1
    nblocks = max(0, -(-(visible_nc - 8) // 8)) if visible_nc > 8 else 0
    simd_end = 1 + 8 * nblocks  # first column done by the scalar loop
    hist = np.zeros(((cells_nr + 2) * (cells_nc + 2) * NUM_ORIENTATIONS,), np.float64)
    if visible_nr > 1 and visible_nc > 1:
        gx, gy = _gradients(img, visible_nr, visible_nc, simd_end)
        index = (gx.astype(np.int32) + GRAD_RANGE) * _SIDE + (gy + GRAD_RANGE)
        orient = _BIN_TABLE[index]
        v = _LENGTH_TABLE[index]
        cs = F32(cell_size)
        ys = np.arange(1, visible_nr)
        yp = ((ys.astype(F32) + F32(0.5)) / cs - F32(0.5)).astype(F32)
        iyp = np.floor(yp).astype(np.int64)
        vy0 = (yp - iyp.astype(F32)).astype(F32)
        vy1 = (F32(1.0) - vy0).astype(F32)
        xs = np.arange(1, visible_nc)
        xp = ((xs.astype(F32) + F32(0.5)) / cs - F32(0.5)).astype(F32)
        ixp = np.floor(xp).astype(np.int64)
        vx0 = (xp - ixp.astype(F32)).astype(F32)
        vx1 = (F32(1.0) - vx0).astype(F32)
        simd = xs < simd_end
        # SIMD: vy * (vx * v); scalar: (vy * vx) * v (vy * vx is exact)
        w = {}
        for name, wy, wx in (("11", vy1, vx1), ("01", vy0, vx1), ("10", vy1, vx0),
                             ("00", vy0, vx0)):
            a = wy[:, None] * (wx[None, :] * v)
            b = (wy[:, None] * wx[None, :]) * v
            w[name] = np.where(simd[None, :], a, b)
        stride_r = (cells_nc + 2) * NUM_ORIENTATIONS
        base = ((iyp[:, None] + 1) * stride_r + (ixp[None, :] + 1) * NUM_ORIENTATIONS
                + orient.astype(np.int64))
        size = hist.size
        for name, offset in (("11", 0), ("01", stride_r), ("10", NUM_ORIENTATIONS),
                             ("00", stride_r + NUM_ORIENTATIONS)):
            hist += np.bincount((base + offset).ravel(), w[name].ravel().astype(np.float64),
                                minlength=size)
    hist = hist.astype(F32).reshape(cells_nr + 2, cells_nc + 2, NUM_ORIENTATIONS)
    inner = hist[1:cells_nr + 1, 1:cells_nc + 1]
    norm = np.zeros((cells_nr, cells_nc), F32)
    for o in range(9):
        s = inner[..., o] + inner[..., o + 9]
        norm += s * s
    return _features(hist, norm, hog_nr, hog_nc, rows_pad, cols_pad)


def _features(hist, norm, hog_nr, hog_nc, rows_pad, cols_pad) -> np.ndarray:
    eps = F32(0.0001)
    # 2x2 block sums ((tl + tr) + bl) + br + eps
    blocks = ((norm[:-1, :-1] + norm[:-1, 1:]) + norm[1:, :-1]) + norm[1:, 1:] + eps
    lanes = np.stack([blocks[1:hog_nr + 1, 1:hog_nc + 1], blocks[0:hog_nr, 1:hog_nc + 1],
                      blocks[1:hog_nr + 1, 0:hog_nc], blocks[0:hog_nr, 0:hog_nc]])
    nn = F32(0.2) * np.sqrt(lanes)
    n = F32(0.1) / nn
    h = hist[2:hog_nr + 2, 2:hog_nc + 2]  # cells (y+1, x+1) of the cell grid
    out = np.zeros((31, hog_nr + rows_pad - 1, hog_nc + cols_pad - 1), F32)
    r0, c0 = (rows_pad - 1) // 2, (cols_pad - 1) // 2
    dst = out[:, r0:r0 + hog_nr, c0:c0 + hog_nc]

    def lane_sum(x):  # simd4f sum: (x0 + x1) + (x2 + x3)
        return (x[0] + x[1]) + (x[2] + x[3])

    t = np.zeros_like(nn)
    for o in range(0, 18, 3):
        h0 = np.minimum(h[None, ..., o], nn) * n
        h1 = np.minimum(h[None, ..., o + 1], nn) * n
        h2 = np.minimum(h[None, ..., o + 2], nn) * n
        dst[o], dst[o + 1], dst[o + 2] = lane_sum(h0), lane_sum(h1), lane_sum(h2)
        t += (h0 + h1) + h2
    t *= F32(2 * 0.2357)
    for o in range(9):
        s = h[..., o] + h[..., o + 9]
        dst[18 + o] = lane_sum(np.minimum(s[None], nn) * n)
    dst[27:31] = t
    return out
