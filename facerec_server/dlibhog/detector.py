"""dlib's fhog object detector (``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``)
without dlib, with dlib's boxes and scores.

What ``fhog_object_detector.run(img, upsample_num_times, adjust_threshold)`` does
(``tools/python/src/simple_object_detector_py.h``, ``object_detector.h``,
``scan_fhog_pyramid.h``), and where it is done here:

1. ``upsample`` times ``pyramid_up`` (:mod:`.pyramid`);
2. the ``pyramid_down<6>`` levels down to the minimum layer size (:mod:`.pyramid`);
3. fhog features of every level (:func:`.kernels.fhog_level`);
4. per weight vector and level, the filter responses: the sum over the 31 planes of the
   2-D correlation with the filter dlib applies (``apply_filters_to_fhog``: separable
   components or the float32 filters, :func:`.model.filter_bank`), here by FFT: every
   level's features are placed in one canvas (levels half a filter apart), transformed
   with OpenCV's DFT (blocks of at most ``MAX_FFT`` cells), multiplied with the filters'
   spectra and summed per frequency (one batched complex matrix product), transformed
   back: the same sums as dlib's spatial filters, rounded differently (scores differ by
   about 1e-6);
5. every position whose response is ``>= b + adjust_threshold`` is a detection scoring
   ``response - b``; its rectangle is the window mapped to image space
   (``fhog_to_image``, ``pyramid_down<6>::rect_up``, rounded);
6. detections of each weight vector sorted by score, then all of them (when there are
   several weight vectors), then greedy non-max suppression with the file's
   ``test_box_overlap``;
7. rectangles mapped back through the upsampling (``pyramid_down<2>::rect_down``).

Steps 1-3 repeat dlib's arithmetic in dlib's order (bit-exact images and features). The
pyramid levels' features, the forward transforms and the weight vectors' products run on
``threads`` threads (the kernels and OpenCV release the GIL).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..dlibnet.mmod import _overlaps
from .fhog import BIN_TABLE, NUM_FEATURES, hog_size
from .kernels import fhog_level
from .model import FhogModel, filter_bank
from .pyramid import _round, level_count, level_sizes, pyramid_up, resize_plan

IRect = Tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)
Hit = Tuple[IRect, float, int]  # rectangle, score, weight vector index

MAX_FFT = 192  # largest FFT block side (cells); bigger canvases are filtered in blocks
_CACHED_SIZES = 4  # image sizes (layouts) and FFT block sizes (spectra) kept per detector


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int):
        self._items: "OrderedDict" = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def _even_dft_size(n: int) -> int:
    size = cv2.getOptimalDFTSize(max(n, 2))
    while size % 2:
        size = cv2.getOptimalDFTSize(size + 1)
    return size


def _split(n: int, parts: int) -> List[Tuple[int, int]]:
    parts = max(1, min(parts, n))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _shelf_pack(sizes: Sequence[Tuple[int, int]], gap: int, margins: Tuple[int, int, int, int]):
    """Origins of boxes (rows, cols) packed on shelves in order (the first shelf holds the
    first two boxes side by side); ``margins`` (top, left, bottom, right). Returns
    (origins, (rows, cols) of the whole)."""
    top, left, bottom, right = margins
    limit = sizes[0][1] + (gap + sizes[1][1] if len(sizes) > 1 else 0)
    origins = []
    shelf_top, shelf_height, x, width = top, 0, left, 0
    for rows, cols in sizes:
        if x > left and x + cols > left + limit:
            shelf_top += shelf_height + gap
            shelf_height, x = 0, left
        origins.append((shelf_top, x))
        shelf_height = max(shelf_height, rows)
        x += cols + gap
        width = max(width, x - gap)
    return origins, (shelf_top + shelf_height + bottom, width + right)


class _Layout:
    """The pyramid of one image size and where each level's fhog cells go in the canvas:
    at least half a filter of empty cells between levels and around them, so that every
    window dlib evaluates sees one level only; FFT blocks covering the canvas."""

    def __init__(self, sizes: Sequence[Tuple[int, int]], cell: int, filter_rows: int,
                 filter_cols: int):
        self.sizes = tuple(sizes)
        self.hogs = tuple(hog_size(rows, cols, cell) for rows, cols in sizes)
        gap = max(filter_rows // 2, filter_cols // 2, 1)
        margins = ((filter_rows - 1) // 2, (filter_cols - 1) // 2, filter_rows // 2,
                   filter_cols // 2)
        self.origins, shape = _shelf_pack(self.hogs, gap, margins)

        def axis(n, f):  # block size and block origins along one axis
            size = _even_dft_size(n)
            if size <= MAX_FFT:
                return size, [0]
            count = -(-(n - f + 1) // (MAX_FFT - f + 1))
            size = _even_dft_size(-(-(n - f + 1) // count) + f - 1)
            return size, list(range(0, n - f + 1, size - f + 1))

        (br, rows0), (bc, cols0) = axis(shape[0], filter_rows), axis(shape[1], filter_cols)
        self.block = (br, bc)
        self.blocks = [(r, c) for r in rows0 for c in cols0]
        # room for the last block's window
        self.shape = (max(shape[0], rows0[-1] + br), max(shape[1], cols0[-1] + bc))


class FhogDetector:
    """A dlib fhog object detector run by numba kernels and OpenCV's DFT.

    ``detect(rgb, upsample, adjust_threshold) -> [((left, top, right, bottom), score,
    weight_index)]``: the rectangles (dlib's inclusive corners, may extend past the image),
    scores and order of ``dlib.fhog_object_detector(...).run``. Thread-safe; each call uses
    up to ``threads`` threads (1: everything on the calling thread).
    """

    def __init__(self, model: FhogModel, threads: int = 2):
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads}")
        self.model = model
        self.threads = int(threads)
        self.banks = filter_bank(model)
        self.filters = np.stack([bank.effective for bank in self.banks])  # (D, 31, fr, fc)
        self.thresholds = [d.b for d in model.detectors]
        self.filter_size = model.filter_size  # (rows, cols)
        self._layouts = _LRU(_CACHED_SIZES)
        self._spectra = _LRU(_CACHED_SIZES)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    def _map(self, fn, items: Sequence) -> list:
        """``[fn(item) for item in items]``, on the worker threads when there are any."""
        items = list(items)
        if self.threads == 1 or len(items) < 2:
            return [fn(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fhog")
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # --- stages -----------------------------------------------------------------------

    def layout(self, rows: int, cols: int) -> _Layout:
        """Pyramid, canvas and FFT blocks for an image of rows x cols pixels."""
        m = self.model

        def make():
            levels = level_count(rows, cols, m.min_level_size[0], m.min_level_size[1],
                                 m.max_levels)
            return _Layout(level_sizes(rows, cols, levels), m.cell_size, *self.filter_size)
        return self._layouts.get((rows, cols), make)

    def features(self, layout: _Layout, image: np.ndarray) -> np.ndarray:
        """(31, canvas rows, canvas cols) float64: dlib's fhog features of every pyramid
        level of the RGB image, each level's cells at its origin (zero elsewhere)."""
        canvas = np.zeros((NUM_FEATURES,) + layout.shape, np.float64)
        cell = self.model.cell_size
        levels = [image]
        for size in layout.sizes[1:]:  # pyramid_down<6>: each level from the previous one
            prev = levels[-1]
            level = np.empty(size + (3,), np.uint8)
            resize_plan(prev.shape[0], prev.shape[1], *size).run(prev, level)
            levels.append(level)
        order = sorted(range(len(levels)), key=lambda i: -levels[i].size)
        self._map(lambda i: fhog_level(levels[i], cell, BIN_TABLE, canvas,
                                       *layout.origins[i]), order)
        return canvas

    def _block_spectra(self, rows: int, cols: int):
        """The filters' DFTs (placed at the origin of a rows x cols block), conjugated, in
        the parts of OpenCV's packed CCS layout: (frequency, D, 31) complex64 for the
        complex columns 1 .. cols-2, and for the two packed real columns (D, 31, 2) real
        end rows and (D, 31, rows/2 - 1) complex rows."""
        def make():
            fr, fc = self.filter_size
            n_det, n_planes = self.filters.shape[:2]
            middle = np.empty((rows, (cols - 2) // 2, n_det, n_planes), np.complex64)
            ends = np.empty((2, n_det, n_planes, 2), np.float64)
            packed = np.empty((2, n_det, n_planes, rows // 2 - 1), np.complex128)
            padded = np.zeros((rows, cols), np.float64)
            for d in range(n_det):
                for p in range(n_planes):
                    padded[:fr, :fc] = self.filters[d, p]
                    ccs = cv2.dft(padded)
                    middle[:, :, d, p] = np.conj(ccs[:, 1:cols - 1].view(np.complex128))
                    for side, c in enumerate((0, cols - 1)):
                        ends[side, d, p] = ccs[0, c], ccs[rows - 1, c]
                        packed[side, d, p] = np.conj(np.ascontiguousarray(
                            ccs[1:rows - 1, c]).view(np.complex128))
            return middle.reshape(-1, n_det, n_planes), ends, packed
        return self._spectra.get((rows, cols), make)

    def responses(self, layout: _Layout, canvas: np.ndarray) -> np.ndarray:
        """(D, canvas rows, canvas cols) float64: ``out[d, r, c] = sum_p sum_ab
        canvas[p, r + a, c + b] * filter[d, p, a, b]`` (window top-left at (r, c))."""
        fr, fc = self.filter_size
        br, bc = layout.block
        middle, ends, packed = self._block_spectra(br, bc)
        n_det = len(self.banks)
        out = np.zeros((n_det,) + layout.shape, np.float64)
        for r0, c0 in layout.blocks:
            block = canvas[:, r0:r0 + br, c0:c0 + bc]
            freq = np.empty((NUM_FEATURES, br, bc), np.float64)

            def forward(lo_hi):
                for p in range(*lo_hi):
                    cv2.dft(block[p], dst=freq[p])

            self._map(forward, _split(NUM_FEATURES, self.threads))
            # complex columns: per frequency, (D, 31) @ (31,) (one batched product)
            x = np.ascontiguousarray(
                freq[:, :, 1:bc - 1].view(np.complex128).reshape(NUM_FEATURES, -1).T,
                dtype=np.complex64)
            product = np.empty((n_det, br, bc), np.float64)
            mid = product[:, :, 1:bc - 1].view(np.complex128)  # (D, rows, cols/2 - 1)
            per_row = mid.shape[2]

            def multiply(lo_hi):  # spectrum rows [lo, hi)
                lo, hi = lo_hi
                f0, f1 = lo * per_row, hi * per_row
                part = np.matmul(middle[f0:f1], x[f0:f1, :, None])[:, :, 0]
                mid[:, lo:hi] = part.T.reshape(n_det, hi - lo, per_row)

            self._map(multiply, _split(br, self.threads))
            for side, c in enumerate((0, bc - 1)):  # the packed real columns
                column = freq[:, :, c]
                product[:, 0, c] = ends[side, :, :, 0] @ column[:, 0]
                product[:, br - 1, c] = ends[side, :, :, 1] @ column[:, br - 1]
                z = np.ascontiguousarray(column[:, 1:br - 1]).view(np.complex128)
                product[:, 1:br - 1, c] = np.einsum("dpk,pk->dk", packed[side], z).view(
                    np.float64)
            rows, cols = br - fr + 1, bc - fc + 1

            def back(d):
                spatial = cv2.dft(product[d], flags=cv2.DFT_INVERSE | cv2.DFT_REAL_OUTPUT
                                  | cv2.DFT_SCALE)
                out[d, r0:r0 + rows, c0:c0 + cols] = spatial[:rows, :cols]

            self._map(back, range(n_det))
        return out

    def _rect(self, level: int, r: int, c: int) -> IRect:
        """``rect_up(feats_to_image(centered_rect(point(c, r), w, h)), level)``."""
        m = self.model
        fr, fc = self.filter_size
        width, height = fc - 2 * m.padding, fr - 2 * m.padding
        cell = m.cell_size

        def to_image(p: int, pad: int) -> float:
            v = (p + 1 - (pad - 1) // 2) * cell + 1
            return float(v + (cell // 2 if v >= 0 else -(cell // 2)))

        left, top = c - width // 2, r - height // 2
        corners = [to_image(left, fc), to_image(top, fr),
                   to_image(left + width - 1, fc), to_image(top + height - 1, fr)]
        for _ in range(level):
            corners = [v * (6 / 5.0) + 0.3 for v in corners]
        return tuple(_round(v) for v in corners)

    # --- the detector -----------------------------------------------------------------

    def scan(self, image: np.ndarray, adjust_threshold: float = 0.0) -> List[list]:
        """Per weight vector: [(response, level, r, c)] of the positions at or above its
        threshold (r, c: position in dlib's response map of the level), in scan order."""
        layout = self.layout(image.shape[0], image.shape[1])
        responses = self.responses(layout, self.features(layout, image))
        fr, fc = self.filter_size
        # dlib's positions r in [fr // 2, hog rows + fr // 2 - 1] have their window's top
        # row at hog row r - (fr - 1)
        r_lo, c_lo = fr // 2, fc // 2
        found: List[list] = [[] for _ in self.banks]
        for level, ((hr, hc), (fy, fx)) in enumerate(zip(layout.hogs, layout.origins)):
            if hr == 0 or hc == 0:
                continue
            top, left = fy + r_lo - (fr - 1), fx + c_lo - (fc - 1)
            for d, b in enumerate(self.thresholds):
                region = responses[d, top:top + hr, left:left + hc]
                rr, cc = np.nonzero(region >= b + adjust_threshold)
                if len(rr):
                    found[d].extend(zip(region[rr, cc].tolist(), [level] * len(rr),
                                        (rr + r_lo).tolist(), (cc + c_lo).tolist()))
        return found

    def detect(self, rgb: np.ndarray, upsample: int = 0,
               adjust_threshold: float = 0.0) -> List[Hit]:
        """dlib's ``run(rgb, upsample, adjust_threshold)``: [(rect, score, weight index)]."""
        image = np.asarray(rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (h, w, 3), got {image.shape} "
                             f"{image.dtype}")
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {upsample}")
        image = np.ascontiguousarray(image)
        for _ in range(int(upsample)):
            image = pyramid_up(image)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return []
        hits = []
        for d, items in enumerate(self.scan(image, float(adjust_threshold))):
            # std::sort(rbegin, rend) on the response: descending (scan order among ties)
            items.sort(key=lambda item: -item[0])
            b = self.thresholds[d]
            hits.extend((value - b, d, self._rect(level, r, c))
                        for value, level, r, c in items)
        if len(self.thresholds) > 1:
            hits.sort(key=lambda hit: -hit[0])
        iou, covered = self.model.overlap
        kept: List[Hit] = []
        for score, d, rect in hits:
            if any(_overlaps(other, rect, iou, covered) for other, _, _ in kept):
                continue
            kept.append((rect, float(score), d))
        if upsample:
            kept = [(_rect_down(rect, int(upsample)), score, d) for rect, score, d in kept]
        return kept


def _rect_down(rect: IRect, levels: int) -> IRect:
    """``pyramid_down<2>::rect_down(rect, levels)``, rounded."""
    left, top, right, bottom = (float(v) for v in rect)
    for _ in range(levels):
        left, top = left / 2.0 - 1.25, top / 2.0 - 0.75
        right, bottom = right / 2.0 - 1.25, bottom / 2.0 - 0.75
    return (_round(left), _round(top), _round(right), _round(bottom))
