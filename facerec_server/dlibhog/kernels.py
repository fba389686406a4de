"""The per-pixel and per-frequency loops of the fhog scanner as compiled (numba) kernels.

Images are planar here: ``(3, rows, cols)`` uint8 (R, G, B planes), so that every inner
loop runs over contiguous memory and vectorises.

* :func:`resize_rows`: dlib's bilinear ``resize_image`` (``interpolation.h``), bit-exact:
  the columns dlib computes in SIMD blocks of 4 with float32 weights
  ``((tl*TL + tr*TR) + bl*BL) + br*BR`` truncated, the remaining columns in double
  precision (the plan comes from :mod:`facerec_server.dlibnet.resize`). The two source
  pixels of each output column are gathered once per source row, 8 columns per 16-byte
  shuffle (:func:`gather_plan`; pshufb on x86-64), then the weighted sums of a whole
  output row run as one vector loop, in dlib's order of operations.
* :func:`fhog_rows`: dlib's ``extract_fhog_features`` (``fhog.h``, cell size > 1) of a band
  of cell rows of one level, written as float32 into the feature canvas. Every discrete
  decision is dlib's: the gradients, the colour channel with the longest gradient (ties:
  the later channel in dlib's 8-column SIMD blocks, the earlier one in the columns it does
  one by one), the orientation (:data:`.fhog.BIN_TABLE`, dlib's float32 dot products), the
  cells and the float32 bilinear weights of each vote. The block normalisation, the
  clipping at 0.2 and the 4 texture features follow dlib's float32 order of operations.
  What is rounded differently: the order in which the votes are added. dlib adds
  ``vy * (vx * v)`` pixel by pixel into each cell; here the votes of one pixel row are
  first summed per cell column (``vx * v``, in 2 interleaved partial sums), then added
  once per row with the row's vertical weight. The histogram sums are the same sums in
  another order, so the features differ from dlib's in the last bits only (about 2e-7
  here; ``test_fast_features_within_rounding_of_dlibs_order`` bounds it).
* :func:`ccs_product`: the filter responses in the frequency domain: per frequency, the sum
  over the 31 feature planes of the plane's spectrum times the conjugated spectrum of a
  filter, on OpenCV's packed (CCS) layout of real 2-D DFTs, float32.

Compiled with the GIL released (several Python threads run kernels at once) and without
fast-math (no reassociation; :func:`ccs_product` alone may fuse multiply-adds). The
machine code is cached (compiling takes ~10 s, loading it ~1 s) in ``$NUMBA_CACHE_DIR``,
by default ``~/.cache/facerec/numba`` (or ``$FACEREC_CACHE_DIR/numba``).
"""
from __future__ import annotations

import os
import platform

import numpy as np

if "NUMBA_CACHE_DIR" not in os.environ:  # read once, when numba is first imported
    from ..dlibnet.reader import default_cache_dir
    os.environ["NUMBA_CACHE_DIR"] = str(default_cache_dir() / "numba")

from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

F32 = np.float32


# --- dlib's bilinear resize ---------------------------------------------------------------

_V16 = ir.VectorType(ir.IntType(8), 16)
# x86-64 has a 16-byte shuffle by a vector of indices (SSSE3 pshufb, in every x86-64 CPU
# since 2006); elsewhere the same shuffle is written with per-byte element moves
_PSHUFB = platform.machine().lower() in ("x86_64", "amd64")


def _byte_shuffle(native: bool):
    """A compiled ``shuffle(src, src_at, masks, mask_at, dst, dst_at)``:
    ``dst[dst_at + k] = src[src_at + masks[mask_at + k]]`` for k < 16 (uint8 arrays with
    unit stride; mask values < 16): one unaligned 16-byte load, one shuffle (pshufb when
    ``native``, else per-byte element moves any LLVM target has), one 16-byte store."""
    @intrinsic
    def shuffle(typingctx, src, src_at, masks, mask_at, dst, dst_at):
        sig = types.void(src, types.intp, masks, types.intp, dst, types.intp)

        def codegen(context, builder, signature, args):
            def vector_at(ty, array, at):
                data = context.make_array(ty)(context, builder, array).data
                return builder.bitcast(builder.gep(data, [at]), _V16.as_pointer())

            data = builder.load(vector_at(signature.args[0], args[0], args[1]), align=1)
            mask = builder.load(vector_at(signature.args[2], args[2], args[3]), align=1)
            if native:
                fn = builder.module.declare_intrinsic(
                    "llvm.x86.ssse3.pshuf.b.128", fnty=ir.FunctionType(_V16, [_V16, _V16]))
                shuffled = builder.call(fn, [data, mask])
            else:
                shuffled = ir.Constant(_V16, None)
                for k in range(16):
                    at = ir.Constant(ir.IntType(32), k)
                    value = builder.extract_element(data, builder.extract_element(mask, at))
                    shuffled = builder.insert_element(shuffled, value, at)
            builder.store(shuffled, vector_at(signature.args[4], args[4], args[5]), align=1)
            return context.get_dummy_value()
        return sig, codegen
    return shuffle


_shuffle16 = _byte_shuffle(_PSHUFB)
shuffle16_portable = _byte_shuffle(False)  # what other processors run (tested here too)


def gather_plan(left: np.ndarray, n: int, row_len: int):
    """How :func:`resize_rows` gathers the source pixels ``left[j]`` and ``left[j] + 1`` of
    output columns j < n from a row of ``row_len`` pixels, 8 columns at a time: each
    group's first source column and two 16-byte shuffle masks (its 8 left pixels, its 8
    right ones; the other 8 bytes are overwritten by the next group). From the first group
    whose pixels span more than 16 bytes (shrinking by more than ~1.9x) or whose 16-byte
    load would pass the end of the row (for the pyramid: the last one or two) on, a scalar
    loop gathers them: returns (starts, masks, groups shuffled)."""
    groups = n // 8
    starts = np.zeros(groups, np.int64)
    masks = np.zeros((groups, 2, 16), np.uint8)
    fast = 0
    for g in range(groups):
        cols = left[8 * g:8 * g + 8].astype(np.int64)
        offsets = cols - cols[0]
        if offsets[-1] + 1 >= 16 or cols[0] + 16 > row_len:
            break
        starts[g] = cols[0]
        masks[g, 0, :8] = offsets
        masks[g, 1, :8] = offsets + 1
        fast = g + 1
    return starts[:fast], masks[:fast].reshape(-1), fast


@njit(nogil=True, cache=True)
def _gather(row, left, n, starts, masks, fast, out_left, out_right):  # pragma: no cover
    """``out_left[j] = row[left[j]]``, ``out_right[j] = row[left[j] + 1]`` for j < n: 8
    columns per shuffle, then one by one (both outputs have 8 bytes to spare)."""
    for g in range(fast):
        _shuffle16(row, starts[g], masks, 32 * g, out_left, 8 * g)
        _shuffle16(row, starts[g], masks, 32 * g + 16, out_right, 8 * g)
    for j in range(8 * fast, n):
        i = left[j]
        out_left[j] = row[i]
        out_right[j] = row[i + 1]


@njit(nogil=True, cache=True)
def resize_rows(src, out, r0, r1, top, bottom, tb32, itb32, left, lr, ilr, c_simd,
                starts, masks, fast, tleft, tright, tlr, tb):  # pragma: no cover - compiled
    """Output rows [r0, r1) of dlib's bilinear resize of planar ``src`` (3, rows, cols)
    uint8, rows contiguous, into ``out`` (3, out rows, out cols): float32 in dlib's order
    for the first ``c_simd`` columns, double precision for the rest. (starts, masks,
    fast): the :func:`gather_plan` of ``left``."""
    planes = src.shape[0]
    # two source rows' gathered (left, right) pixels per plane, and which rows they are
    held = np.empty((2, planes, 2, c_simd + 8), np.uint8)
    slot_row = np.full(2, -1, np.int64)
    # one output row's four float32 weights per column (dlib's products), for all planes
    w_tl = np.empty(c_simd, np.float32)
    w_tr = np.empty(c_simd, np.float32)
    w_bl = np.empty(c_simd, np.float32)
    w_br = np.empty(c_simd, np.float32)
    for r in range(r0, r1):
        t = top[r]
        b = bottom[r]
        st = 0 if slot_row[0] == t else (1 if slot_row[1] == t else -1)
        if st < 0:
            st = 1 if slot_row[0] == b else 0
            for k in range(planes):
                _gather(src[k, t], left, c_simd, starts, masks, fast, held[st, k, 0],
                        held[st, k, 1])
            slot_row[st] = t
        sb = 0 if slot_row[0] == b else (1 if slot_row[1] == b else -1)
        if sb < 0:
            sb = 1 - st
            for k in range(planes):
                _gather(src[k, b], left, c_simd, starts, masks, fast, held[sb, k, 0],
                        held[sb, k, 1])
            slot_row[sb] = b
        it = itb32[r]
        bt = tb32[r]
        tbd = tb[r]
        for c in range(c_simd):
            w_tl[c] = it * ilr[c]
            w_tr[c] = it * lr[c]
            w_bl[c] = bt * ilr[c]
            w_br[c] = bt * lr[c]
        for k in range(planes):
            tl_ = held[st, k, 0]
            tr_ = held[st, k, 1]
            bl_ = held[sb, k, 0]
            br_ = held[sb, k, 1]
            o = out[k, r]
            for c in range(c_simd):
                v = (((w_tl[c] * F32(tl_[c]) + w_tr[c] * F32(tr_[c]))
                      + w_bl[c] * F32(bl_[c])) + w_br[c] * F32(br_[c]))
                o[c] = np.uint8(np.int32(v))
            srow_t = src[k, t]
            srow_b = src[k, b]
            for j in range(tleft.shape[0]):
                w = tlr[j]
                lc = tleft[j]
                rc = tright[j]
                up = (1.0 - w) * float(srow_t[lc]) + w * float(srow_t[rc])
                down = (1.0 - w) * float(srow_b[lc]) + w * float(srow_b[rc])
                o[c_simd + j] = np.uint8(np.int32((1.0 - tbd) * up + tbd * down))


# --- dlib's fhog features -----------------------------------------------------------------

@njit(nogil=True, cache=True)
def _gradient_row(img, y, i0, i1, later, bidx, mag):  # pragma: no cover - compiled
    """Pixels x = i + 1 (i in [i0, i1)) of row y: the orientation table index of the
    longest colour gradient and its length. float32 holds every value exactly (|g| <= 255,
    squared lengths <= 130050); ``later``: ties go to the later channel (dlib's SIMD
    blocks) instead of the earlier one."""
    ru = img[0, y - 1]
    rr = img[0, y]
    rd = img[0, y + 1]
    gu = img[1, y - 1]
    gr = img[1, y]
    gd = img[1, y + 1]
    bu = img[2, y - 1]
    br = img[2, y]
    bd = img[2, y + 1]
    for i in range(i0, i1):
        gxr = F32(rr[i + 2]) - F32(rr[i])
        gyr = F32(rd[i + 1]) - F32(ru[i + 1])
        gxg = F32(gr[i + 2]) - F32(gr[i])
        gyg = F32(gd[i + 1]) - F32(gu[i + 1])
        gxb = F32(br[i + 2]) - F32(br[i])
        gyb = F32(bd[i + 1]) - F32(bu[i + 1])
        lr = gxr * gxr + gyr * gyr
        lg = gxg * gxg + gyg * gyg
        lb = gxb * gxb + gyb * gyb
        if later:  # select(a > b, a, b)
            first = lr > lg
            gx = gxr if first else gxg
            gy = gyr if first else gyg
            length = lr if first else lg
            keep = length > lb
            gx = gx if keep else gxb
            gy = gy if keep else gyb
            length = length if keep else lb
        else:  # a later channel must be strictly longer
            second = lg > lr
            gx = gxg if second else gxr
            gy = gyg if second else gyr
            length = lg if second else lr
            third = lb > length
            gx = gxb if third else gx
            gy = gyb if third else gy
            length = lb if third else length
        bidx[i] = np.int32((gx + F32(255)) * F32(511) + (gy + F32(255)))
        mag[i] = np.sqrt(length)


@njit(nogil=True, cache=True)
def column_weights(visible_nc, cell):  # pragma: no cover - compiled
    """Per pixel column x = 1 .. visible_nc - 1 (index x - 1): the cell column it votes into
    first and its two horizontal weights, as each of dlib's two paths computes them (its
    8-column SIMD blocks up to ``simd_end``, then one column at a time); and ``simd_end``.
    Shared by the fast kernel and the bit-exact reference (reference.py)."""
    simd_end = 1
    while simd_end < visible_nc - 7:
        simd_end += 8
    fcell = F32(cell)
    width = visible_nc - 1
    col = np.empty(width, np.int64)
    wx0 = np.empty(width, np.float32)
    wx1 = np.empty(width, np.float32)
    for i in range(width):
        x = i + 1
        if x < simd_end:
            xp = (F32(x) + F32(0.5)) / fcell + F32(0.5)
            col[i] = int(xp)
            wx0[i] = xp - F32(int(xp))
        else:
            xp = F32((float(x) + 0.5) / float(cell) - 0.5)
            col[i] = int(np.floor(xp)) + 1
            wx0[i] = F32(xp - F32(int(np.floor(xp))))
        wx1[i] = F32(1.0) - wx0[i]
    return simd_end, col, wx0, wx1


@njit(nogil=True, cache=True, inline="always")
def _blocks(h, m0, m1, m2, m3, k0, k1, k2, k3):  # pragma: no cover - compiled
    """One orientation's histogram value normalised by the 4 blocks around its cell:
    clipped at 0.2 of each block's norm (``m``), times 0.1 / that (``k``), dlib's order."""
    return min(h, m0) * k0, min(h, m1) * k1, min(h, m2) * k2, min(h, m3) * k3


@njit(nogil=True, cache=True)
def fhog_rows(img, cell, bins, y0, y1, out, fy, fx):  # pragma: no cover - compiled
    """dlib's fhog features of the cell rows [y0, y1) of planar RGB uint8 ``img``: feature
    (o, y, x) goes to ``out[o, fy + y, fx + x]`` (float32). ``bins``: orientation of each
    gradient, indexed by ``(gx + 255) * 511 + (gy + 255)``. Bands of one level give the
    same values as the whole level at once."""
    nr = img.shape[1]
    nc = img.shape[2]
    cells_nr = int(F32(nr) / F32(cell) + 0.5)
    cells_nc = int(F32(nc) / F32(cell) + 0.5)
    hog_nr = max(cells_nr - 2, 0)
    hog_nc = max(cells_nc - 2, 0)
    y1 = min(y1, hog_nr)
    if hog_nc == 0 or y1 <= y0:
        return
    visible_nr = min(cells_nr * cell, nr) - 1
    visible_nc = min(cells_nc * cell, nc) - 1
    fcell = F32(cell)
    width = visible_nc - 1  # pixels x = 1 .. visible_nc - 1
    simd_end, col, wx0, _ = column_weights(visible_nc, cell)
    split = min(simd_end - 1, width)
    hist_nc = cells_nc + 2
    # histogram rows [y0 + 1, y1 + 3) (dlib's hist row h at hist[h - y0 - 1]): those the
    # features of cell rows [y0, y1) read; (orientation, column) per row
    n_hist = y1 - y0 + 2
    hist = np.zeros((n_hist, 18, hist_nc), np.float32)
    n_acc = 18 * hist_nc
    flat = hist.reshape((n_hist, n_acc))
    acc = np.zeros((2, n_acc), np.float32)  # (orientation, column) of one pixel row, 2 lanes
    lane0 = acc[0]
    lane1 = acc[1]
    votes = acc.reshape(2 * n_acc)
    u_hist = np.uint64(hist_nc)
    u_acc = np.uint64(n_acc)
    bidx = np.empty(width, np.int32)
    mag = np.empty(width, np.float32)
    for y in range(max(1, cell * (y0 - 1)), min(visible_nr, cell * (y1 + 3))):
        yp = F32((F32(y) + 0.5) / float(fcell) - 0.5)
        iyp = int(np.floor(yp))
        h_top = iyp + 1 - (y0 + 1)  # this row votes into hist rows iyp + 1 and iyp + 2
        if h_top + 1 < 0 or h_top >= n_hist:
            continue
        vy0 = F32(yp - F32(iyp))
        vy1 = F32(F32(1.0) - vy0)
        _gradient_row(img, y, 0, split, True, bidx, mag)
        _gradient_row(img, y, split, width, False, bidx, mag)
        # 2 partial sums (no chain of adds to one cell), in one flat array indexed with
        # unsigned integers (numba adds no test for negative indices)
        for i in range(width):
            k = (np.uint64(bins[np.uint64(bidx[i])]) * u_hist + np.uint64(col[i])
                 + np.uint64(i & 1) * u_acc)
            v = mag[i]
            w0 = wx0[i]
            votes[k] += (F32(1.0) - w0) * v  # wx1[i], without loading it
            votes[k + np.uint64(1)] += w0 * v
        # the row's votes into its two histogram rows, the lanes cleared in the same pass
        top = flat[min(max(h_top, 0), n_hist - 1)]
        bottom = flat[min(max(h_top + 1, 0), n_hist - 1)]
        if h_top < 0:  # only the lower row is in this band
            vy1 = F32(0.0)
        if h_top + 1 >= n_hist:  # only the upper one
            vy0 = F32(0.0)
        for k in range(n_acc):
            s = lane0[k] + lane1[k]
            top[k] += vy1 * s
            bottom[k] += vy0 * s
            lane0[k] = 0
            lane1[k] = 0
    # gradient energy of each cell: norm[r] belongs to dlib's cell row y0 + r
    norm = np.zeros((n_hist, cells_nc), np.float32)
    for r in range(n_hist):
        hr = hist[r]
        nrm = norm[r]
        for o in range(9):
            for c in range(cells_nc):
                h = hr[o, c + 1] + hr[o + 9, c + 1]
                nrm[c] += h * h
    eps = F32(0.0001)
    clip = np.empty((4, hog_nc), np.float32)  # 0.2 * block norm per lane (dlib's nn)
    scale = np.empty((4, hog_nc), np.float32)  # 0.1 / that (dlib's n)
    texture = np.empty((4, hog_nc), np.float32)
    for y in range(y0, y1):
        ly = y - y0
        for lane in range(4):  # the 4 blocks around each cell
            na = norm[ly + 1 - (lane & 1)]
            nb = norm[ly + 2 - (lane & 1)]
            db = 1 - (lane >> 1)
            m = clip[lane]
            k = scale[lane]
            t = texture[lane]
            for x in range(hog_nc):
                b = x + db
                z = ((na[b] + na[b + 1]) + nb[b]) + nb[b + 1]
                nn = F32(0.2) * np.sqrt(z + eps)
                m[x] = nn
                k[x] = F32(0.1) / nn
                t[x] = F32(0.0)
        m0, m1, m2, m3 = clip[0], clip[1], clip[2], clip[3]
        k0, k1, k2, k3 = scale[0], scale[1], scale[2], scale[3]
        hc = hist[ly + 1]
        oy = fy + y
        t0, t1, t2, t3 = texture[0], texture[1], texture[2], texture[3]
        for o3 in range(0, 18, 3):  # signed orientations, texture sums in dlib's order
            ha = hc[o3, 2:2 + hog_nc]
            hb = hc[o3 + 1, 2:2 + hog_nc]
            hh = hc[o3 + 2, 2:2 + hog_nc]
            da = out[o3, oy, fx:fx + hog_nc]
            db_ = out[o3 + 1, oy, fx:fx + hog_nc]
            dc = out[o3 + 2, oy, fx:fx + hog_nc]
            for x in range(hog_nc):
                n0, n1, n2, n3 = m0[x], m1[x], m2[x], m3[x]
                s0, s1, s2, s3 = k0[x], k1[x], k2[x], k3[x]
                a0, a1, a2, a3 = _blocks(ha[x], n0, n1, n2, n3, s0, s1, s2, s3)
                b0, b1, b2, b3 = _blocks(hb[x], n0, n1, n2, n3, s0, s1, s2, s3)
                c0, c1, c2, c3 = _blocks(hh[x], n0, n1, n2, n3, s0, s1, s2, s3)
                da[x] = (a0 + a1) + (a2 + a3)
                db_[x] = (b0 + b1) + (b2 + b3)
                dc[x] = (c0 + c1) + (c2 + c3)
                t0[x] += (a0 + b0) + c0
                t1[x] += (a1 + b1) + c1
                t2[x] += (a2 + b2) + c2
                t3[x] += (a3 + b3) + c3
        for o in range(9):  # unsigned orientations
            ha = hc[o, 2:2 + hog_nc]
            hb = hc[o + 9, 2:2 + hog_nc]
            dst = out[18 + o, oy, fx:fx + hog_nc]
            for x in range(hog_nc):
                u0, u1, u2, u3 = _blocks(ha[x] + hb[x], m0[x], m1[x], m2[x], m3[x],
                                         k0[x], k1[x], k2[x], k3[x])
                dst[x] = (u0 + u1) + (u2 + u3)
        for lane in range(4):
            t = texture[lane]
            dst = out[27 + lane, oy, fx:fx + hog_nc]
            for x in range(hog_nc):
                dst[x] = t[x] * F32(2 * 0.2357)


# --- filter responses in the frequency domain ---------------------------------------------

@njit(nogil=True, cache=True, fastmath={"contract"})
def ccs_product(spectra, filt_re, filt_im, filt_ends, out, u0, u1):  # pragma: no cover
    """``out[b, d] = sum_p spectra[b, p] * filter[d, p]`` (complex products) for the
    spectrum rows [u0, u1) of every block b, all arrays in OpenCV's CCS layout of an M x N
    real DFT (M, N even). The blocks are the inner loop: each filter spectrum row is read
    from memory once for all of them.

    ``spectra`` (B, P, M, N) float32: the feature planes' DFTs. ``filt_re``/``filt_im``
    (M, D, P, >= N/2 - 1): real and imaginary parts of the (conjugated) filter spectra at
    the complex columns 1 .. N-2 (pairs), zero after N/2 - 1 (padded to whole vectors);
    ``filt_ends`` (2, M, D, P): the packed real columns
    0 and N-1 (real rows 0 and M-1, pairs of rows (2j-1, 2j) in between). ``out``
    (B, D, M, N).
    """
    n_blocks = spectra.shape[0]
    n_planes = spectra.shape[1]
    m_rows = spectra.shape[2]
    n_cols = spectra.shape[3]
    n_det = filt_re.shape[1]
    half = n_cols // 2 - 1
    padded = filt_re.shape[3]  # >= half, zeros after half: whole vector iterations
    xr = np.zeros((n_planes, padded), np.float32)
    xi = np.zeros((n_planes, padded), np.float32)
    acc_r = np.empty(padded, np.float32)
    acc_i = np.empty(padded, np.float32)
    for u in range(u0, u1):
        for blk in range(n_blocks):
            sb = spectra[blk]
            ob = out[blk]
            for p in range(n_planes):
                x = sb[p, u]
                a = xr[p]
                b = xi[p]
                for k in range(half):
                    a[k] = x[2 * k + 1]
                    b[k] = x[2 * k + 2]
            for d in range(n_det):
                acc_r[:] = 0
                acc_i[:] = 0
                for p in range(n_planes):
                    fr = filt_re[u, d, p]
                    fi = filt_im[u, d, p]
                    a = xr[p]
                    b = xi[p]
                    for k in range(padded):
                        acc_r[k] += a[k] * fr[k] - b[k] * fi[k]
                        acc_i[k] += a[k] * fi[k] + b[k] * fr[k]
                o = ob[d, u]
                for k in range(half):
                    o[2 * k + 1] = acc_r[k]
                    o[2 * k + 2] = acc_i[k]
            # the packed real columns: row u alone (rows 0, M-1) or the pair (u, u + 1)
            for side in range(2):
                c = 0 if side == 0 else n_cols - 1
                if u == 0 or u == m_rows - 1:
                    for d in range(n_det):
                        t = F32(0.0)
                        for p in range(n_planes):
                            t += sb[p, u, c] * filt_ends[side, u, d, p]
                        ob[d, u, c] = t
                elif u % 2 == 1:
                    for d in range(n_det):
                        tr = F32(0.0)
                        ti = F32(0.0)
                        for p in range(n_planes):
                            a_ = sb[p, u, c]
                            b_ = sb[p, u + 1, c]
                            fr_ = filt_ends[side, u, d, p]
                            fi_ = filt_ends[side, u + 1, d, p]
                            tr += a_ * fr_ - b_ * fi_
                            ti += a_ * fi_ + b_ * fr_
                        ob[d, u, c] = tr
                        ob[d, u + 1, c] = ti
