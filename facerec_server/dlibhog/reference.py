"""dlib's fhog features in dlib's own order of float32 operations, bit for bit: the
reference the fast kernel (:func:`.kernels.fhog_rows`) is checked against.

Not used for detection. ``fhog_level`` repeats ``extract_fhog_features`` (``fhog.h``, cell
size > 1) pixel by pixel on an interleaved RGB uint8 image: each vote
``vy * (vx * v)`` (dlib's 8-column SIMD blocks) or ``(vy * vx) * v`` (the columns dlib
does one by one) added to its cell in dlib's pixel order, so the features are dlib's bit
for bit (the first version of this detector ran it and matched dlib's scores on all of
LFW). The tests and ``bench/bench_hog.py`` measure how far the fast kernel's features are
from these.
"""
from __future__ import annotations

import numpy as np

from .kernels import column_weights, njit

F32 = np.float32


@njit(nogil=True, cache=True)
def fhog_level(img, cell, bins, out, fy, fx):  # pragma: no cover - compiled
    """dlib's fhog features of RGB uint8 ``img``; feature (o, y, x) of the cells that have
    features goes to ``out[o, fy + y, fx + x]``. ``bins``: orientation of each gradient,
    indexed by ``(gx + 255) * 511 + (gy + 255)``."""
    nr = img.shape[0]
    nc = img.shape[1]
    cells_nr = int(F32(nr) / F32(cell) + 0.5)
    cells_nc = int(F32(nc) / F32(cell) + 0.5)
    if cells_nr == 0 or cells_nc == 0:
        return
    hog_nr = max(cells_nr - 2, 0)
    hog_nc = max(cells_nc - 2, 0)
    if hog_nr == 0 or hog_nc == 0:
        return
    hist = np.zeros((cells_nr + 2, cells_nc + 2, 18), np.float32)
    norm = np.zeros((cells_nr, cells_nc), np.float32)
    visible_nr = min(cells_nr * cell, nr) - 1
    visible_nc = min(cells_nc * cell, nc) - 1
    fcell = F32(cell)
    width = visible_nc - 1  # pixels x = 1 .. visible_nc - 1
    # per column: anchor cell column and horizontal weights, as each of dlib's paths has them
    simd_end, col, wx0, wx1 = column_weights(visible_nc, cell)
    grad = np.empty((6, width), np.int32)
    length = np.empty((3, width), np.int32)
    best = np.empty(width, np.int64)
    v = np.empty(width, np.float32)
    for y in range(1, visible_nr):
        yp = F32((F32(y) + 0.5) / float(fcell) - 0.5)
        iyp = int(np.floor(yp))
        vy0 = F32(yp - F32(iyp))
        vy1 = F32(F32(1.0) - vy0)
        up = img[y - 1]
        row = img[y]
        down = img[y + 1]
        for k in range(3):
            gxk = grad[2 * k]
            gyk = grad[2 * k + 1]
            lk = length[k]
            for i in range(width):
                gx = np.int32(row[i + 2, k]) - np.int32(row[i, k])
                gy = np.int32(down[i + 1, k]) - np.int32(up[i + 1, k])
                gxk[i] = gx
                gyk[i] = gy
                lk[i] = gx * gx + gy * gy
        split = min(simd_end - 1, width)
        for i in range(width):
            lr, lg, lb = length[0, i], length[1, i], length[2, i]
            if i < split:  # SIMD: select(a > b, a, b) keeps the later channel on ties
                k = 0 if lr > lg else 1
                lt = lr if lr > lg else lg
                k = k if lt > lb else 2
            else:  # one by one: a later channel must be strictly longer
                k = 1 if lg > lr else 0
                lt = lg if lg > lr else lr
                k = 2 if lb > lt else k
            best[i] = (grad[2 * k, i] + 255) * 511 + (grad[2 * k + 1, i] + 255)
            v[i] = np.sqrt(F32(length[k, i]))
        for i in range(width):
            o = bins[best[i]]
            c = col[i]
            if i < split:  # vy * (vx * v)
                a = wx1[i] * v[i]
                b = wx0[i] * v[i]
                hist[iyp + 1, c, o] += vy1 * a
                hist[iyp + 2, c, o] += vy0 * a
                hist[iyp + 1, c + 1, o] += vy1 * b
                hist[iyp + 2, c + 1, o] += vy0 * b
            else:  # (vy * vx) * v
                hist[iyp + 1, c, o] += vy1 * wx1[i] * v[i]
                hist[iyp + 2, c, o] += vy0 * wx1[i] * v[i]
                hist[iyp + 1, c + 1, o] += vy1 * wx0[i] * v[i]
                hist[iyp + 2, c + 1, o] += vy0 * wx0[i] * v[i]
    for r in range(cells_nr):
        for c in range(cells_nc):
            s = F32(0.0)
            for o in range(9):
                h = hist[r + 1, c + 1, o] + hist[r + 1, c + 1, o + 9]
                s += h * h
            norm[r, c] = s
    eps = F32(0.0001)
    n4 = np.empty(4, np.float32)
    nn4 = np.empty(4, np.float32)
    t4 = np.empty(4, np.float32)
    for y in range(hog_nr):
        for x in range(hog_nc):
            # the 4 blocks around the cell: lanes z1 + z2 + z3 + z4 + eps
            for lane in range(4):
                a = y + 1 - (lane & 1)
                b = x + 1 - (lane >> 1)
                z = ((norm[a, b] + norm[a, b + 1]) + norm[a + 1, b]) + norm[a + 1, b + 1]
                nn = F32(0.2) * np.sqrt(z + eps)
                nn4[lane] = nn
                n4[lane] = F32(0.1) / nn
                t4[lane] = F32(0.0)
            hc = hist[y + 2, x + 2]
            for o in range(0, 18, 3):
                for lane in range(4):
                    h0 = min(hc[o], nn4[lane]) * n4[lane]
                    h1 = min(hc[o + 1], nn4[lane]) * n4[lane]
                    h2 = min(hc[o + 2], nn4[lane]) * n4[lane]
                    t4[lane] += (h0 + h1) + h2
                for j in range(3):
                    s0 = min(hc[o + j], nn4[0]) * n4[0]
                    s1 = min(hc[o + j], nn4[1]) * n4[1]
                    s2 = min(hc[o + j], nn4[2]) * n4[2]
                    s3 = min(hc[o + j], nn4[3]) * n4[3]
                    out[o + j, fy + y, fx + x] = (s0 + s1) + (s2 + s3)
            for o in range(9):
                h = hc[o] + hc[o + 9]
                s0 = min(h, nn4[0]) * n4[0]
                s1 = min(h, nn4[1]) * n4[1]
                s2 = min(h, nn4[2]) * n4[2]
                s3 = min(h, nn4[3]) * n4[3]
                out[18 + o, fy + y, fx + x] = (s0 + s1) + (s2 + s3)
            for lane in range(4):
                out[27 + lane, fy + y, fx + x] = t4[lane] * F32(2 * 0.2357)
