"""Bit-exact numpy versions of dlib's bilinear ``resize_image`` (interpolation.h).

dlib's bilinear resize maps output pixel (r, c) to input (r*ys, c*xs) with
``xs = (in_nc-1)/(out_nc-1)`` ("align corners"). Its optimised same-type overloads process
columns in SIMD blocks of 4 with float32 weights (``simd4f``) until the right neighbour of
the block's last lane would leave the image, then finish the row with a scalar tail. Float
images keep the float result; RGB uint8 images truncate it (``simd4i(simd4f)`` is
``_mm_cvttps_epi32``). The functions below reproduce those float32 operations in the same
order, so their outputs equal dlib's bit for bit (checked against ``dlib.resize_image``).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

F32 = np.float32


def _rows(in_nr: int, out_nr: int):
    ys = (in_nr - 1) / max(out_nr - 1, 1)
    y = np.add.accumulate(np.concatenate([[-ys], np.full(out_nr, ys)]))[1:]  # y += ys
    top = np.floor(y).astype(np.int64)
    bottom = np.minimum(top + 1, in_nr - 1)
    tb = y - top  # double
    return top, bottom, tb


def _cols(in_nc: int, out_nc: int):
    """SIMD columns: float32 (left, right, lr, 1-lr) and the count; then the scalar tail."""
    xs = (in_nc - 1) / max(out_nc - 1, 1)
    x = -4 * xs
    start = np.array([x, x + xs, x + 2 * xs, x + 3 * xs], dtype=F32)
    nblocks = out_nc // 4 + 2
    steps = np.empty((nblocks, 4), dtype=F32)
    steps[0] = start
    steps[1:] = F32(4 * xs)
    xv = np.add.accumulate(steps, axis=0, dtype=F32)[1:]  # _x += _x_scale, float32
    left = xv.astype(np.int32)  # truncation
    right = left + 1
    ok = right[:, 3] < in_nc
    nsimd = int(np.argmin(ok)) if not ok.all() else nblocks
    c_simd = 4 * nsimd
    if c_simd > out_nc:  # dlib would read past the row here; never happens for out<=in*2+2
        nsimd = out_nc // 4
        c_simd = 4 * nsimd
    xv = xv[:nsimd].reshape(-1)
    left = left[:nsimd].reshape(-1)
    lr = (xv - left.astype(F32)).astype(F32)
    simd = (left.astype(np.int64), left.astype(np.int64) + 1, lr, (F32(1) - lr).astype(F32))
    # scalar tail: x = -xs + c*xs; x += xs ...
    tail_n = out_nc - c_simd
    xt = np.add.accumulate(np.concatenate([[-xs + c_simd * xs], np.full(tail_n, xs)]))[1:]
    tleft = np.floor(xt).astype(np.int64)
    tright = np.minimum(tleft + 1, in_nc - 1)
    tlr = xt - tleft  # double
    return c_simd, simd, (tleft, tright, tlr)


def resize_float(src: np.ndarray, out_nr: int, out_nc: int) -> np.ndarray:
    """dlib ``resize_image`` of a float32 plane (or (k, nr, nc) stack) -> float32."""
    src = np.asarray(src, dtype=F32)
    squeeze = src.ndim == 2
    if squeeze:
        src = src[None]
    k, in_nr, in_nc = src.shape
    out = np.zeros((k, out_nr, out_nc), dtype=F32)
    if out_nr <= 1 or out_nc <= 1 or in_nr == 0 or in_nc == 0:
        return out[0] if squeeze else out
    top, bottom, tb = _rows(in_nr, out_nr)
    c_simd, (left, right, lr, ilr), (tleft, tright, tlr) = _cols(in_nc, out_nc)
    tb32 = tb.astype(F32)[:, None]
    itb32 = (1 - tb).astype(F32)[:, None]
    if c_simd:
        tlf = itb32 * ilr[None]
        trf = itb32 * lr[None]
        blf = tb32 * ilr[None]
        brf = tb32 * lr[None]
        for ch in range(k):
            s = src[ch]
            st = s[top]
            sb = s[bottom]
            out[ch, :, :c_simd] = ((tlf * st[:, left] + trf * st[:, right])
                                   + blf * sb[:, left]) + brf * sb[:, right]
    if len(tleft):
        lr32 = tlr.astype(F32)[None]
        ilr32 = (F32(1) - lr32).astype(F32)
        tbd = tb[:, None]
        for ch in range(k):
            s = src[ch]
            st = s[top]
            sb = s[bottom]
            up = ilr32 * st[:, tleft] + lr32 * st[:, tright]
            lo = ilr32 * sb[:, tleft] + lr32 * sb[:, tright]
            out[ch, :, c_simd:] = ((1 - tbd) * up.astype(np.float64)
                                   + tbd * lo.astype(np.float64)).astype(F32)
    return out[0] if squeeze else out


def resize_rgb(src: np.ndarray, out_nr: int, out_nc: int) -> np.ndarray:
    """dlib ``resize_image`` of an (nr, nc, 3) uint8 RGB image -> uint8 (truncating)."""
    src = np.asarray(src, dtype=np.uint8)
    in_nr, in_nc = src.shape[:2]
    out = np.zeros((out_nr, out_nc, 3), dtype=np.uint8)
    if out_nr <= 1 or out_nc <= 1 or in_nr == 0 or in_nc == 0:
        return out
    top, bottom, tb = _rows(in_nr, out_nr)
    c_simd, (left, right, lr, ilr), (tleft, tright, tlr) = _cols(in_nc, out_nc)
    tb32 = tb.astype(F32)[:, None]
    itb32 = (1 - tb).astype(F32)[:, None]
    s = src.astype(F32)
    if c_simd:
        tlf = (itb32 * ilr[None])[..., None]
        trf = (itb32 * lr[None])[..., None]
        blf = (tb32 * ilr[None])[..., None]
        brf = (tb32 * lr[None])[..., None]
        st = s[top]
        sb = s[bottom]
        v = ((tlf * st[:, left] + trf * st[:, right]) + blf * sb[:, left]) + brf * sb[:, right]
        out[:, :c_simd] = v.astype(np.int32).astype(np.uint8)
    if len(tleft):
        d = src.astype(np.float64)
        lrd = tlr[None, :, None]
        tbd = tb[:, None, None]
        dt = d[top]
        db = d[bottom]
        v = (1 - tbd) * ((1 - lrd) * dt[:, tleft] + lrd * dt[:, tright]) \
            + tbd * ((1 - lrd) * db[:, tleft] + lrd * db[:, tright])
        out[:, c_simd:] = v.astype(np.int32).astype(np.uint8)
    return out


def pyramid_up_size(nr: int, nc: int) -> Tuple[int, int]:
    """Output (nr, nc) of dlib ``pyramid_up`` with ``pyramid_down<2>``.

    ``rect_up`` maps corners with ``(p + (1.25, 0.75)) * 2``; the drectangle is rounded to a
    rectangle (half away from zero) and the output is ``(bottom + 1, right + 1)``.
    """
    # positive values: std::round == floor(v + 0.5) here (np.round would round half to even)
    right = int(np.floor((nc - 1 + 1.25) * 2 + 0.5))
    bottom = int(np.floor((nr - 1 + 0.75) * 2 + 0.5))
    return bottom + 1, right + 1


def pyramid_up(img: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_up(img, pyramid_down<2>)`` for an RGB uint8 image."""
    nr, nc = pyramid_up_size(img.shape[0], img.shape[1])
    return resize_rgb(img, nr, nc)
