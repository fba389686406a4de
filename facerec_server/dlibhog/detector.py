"""dlib's fhog object detector (``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``)
without dlib, with dlib's boxes and scores.

What ``fhog_object_detector.run(img, upsample_num_times, adjust_threshold)`` does
(``tools/python/src/simple_object_detector_py.h``, ``object_detector.h``,
``scan_fhog_pyramid.h``), and where it is done here:

1. ``upsample`` times ``pyramid_up`` (:mod:`.pyramid`, bit-exact);
2. the ``pyramid_down<6>`` levels down to the minimum layer size (:mod:`.pyramid`,
   bit-exact);
3. fhog features of every level (:func:`.kernels.fhog_rows`: dlib's gradients, channel
   choices, orientations and weights; the votes summed in another order, so the features
   are dlib's up to float32 rounding, ~2e-7);
4. per weight vector and level, the filter responses: the sum over the 31 planes of the
   2-D correlation with the weight vector's filters. dlib filters in float32 in the spatial
   domain (``apply_filters_to_fhog``: separable components or the full filters). Here
   every level's features are placed in one float32 canvas (levels half a filter apart,
   packed by a bottom-left skyline at the strip width that needs the least FFT area),
   cut into FFT blocks, transformed with OpenCV's float32 DFT, multiplied with the
   filters' spectra and summed over the planes per frequency
   (:func:`.kernels.ccs_product`), transformed back: the same sums as dlib's, rounded
   differently (responses within ~1e-6 of dlib's; the bench measures it on LFW);
5. every position whose response is ``>= b + adjust_threshold`` is a detection scoring
   ``response - b``; its rectangle is the window mapped to image space
   (``fhog_to_image``, ``pyramid_down<6>::rect_up``, rounded);
6. detections of each weight vector sorted by score, then all of them (when there are
   several weight vectors), then greedy non-max suppression with the file's
   ``test_box_overlap``;
7. rectangles mapped back through the upsampling (``pyramid_down<2>::rect_down``).

Steps 1-4 run as a small task graph on ``threads`` threads (the calling thread and a pool;
the kernels and OpenCV release the GIL): the resize chain, the fhog of each level (a level
that is a large share of a thread's work in bands of cell rows, each band recomputing the
two histogram rows it shares with its neighbours; the smallest levels together), and per
FFT block the forward transforms (split by planes), the products (split by spectrum rows)
and the inverse transforms (split by weight vectors; each also takes its largest
response). Buffers, and the task graph over them, are made once per image size and reused
(bounded caches).

Memory traffic is most of the cost on a shared machine: data that was in the caches is gone
after a few tens of milliseconds of other work, so a call reads its buffers and the filter
spectra (~7 MB at 640x480) from memory. Hence the tight canvas (less FFT area, smaller
spectra), the products reading each filter spectrum row once for all FFT blocks, and the
buffers and spectra in memory the kernel is asked to back with 2 MB pages
(:func:`_arrays_in_large_pages`).
"""
from __future__ import annotations

import heapq
import math
import mmap
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..dlibnet.mmod import _overlaps
from ..dlibnet.resize import pyramid_up_size
from .fhog import BIN_TABLE, NUM_FEATURES, hog_size
from .kernels import ccs_product, fhog_rows
from .model import FhogModel, filter_bank
from .pyramid import _round, level_count, level_sizes, planar, resize_plan

IRect = Tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)
Hit = Tuple[IRect, float, int]  # rectangle, score, weight vector index

MAX_FFT = 192  # largest FFT block side (cells); bigger canvases are filtered in blocks
_CACHED_SIZES = 4  # image sizes (layouts, buffers) and FFT block sizes (spectra) kept
_SPARE_WORKSPACES = 2  # buffer sets kept per image size for concurrent calls


_LARGE_PAGE = 1 << 21


def _arrays_in_large_pages(specs: Sequence[Tuple[tuple, type]]) -> List[np.ndarray]:
    """Zeroed arrays of the given (shape, dtype), 64-byte aligned, in one anonymous mapping
    that Linux is asked to back with 2 MB pages (``madvise(MADV_HUGEPAGE)``; transparent
    huge pages in "madvise" or "always" mode): a call touches ~10-20 MB of buffers, ~4,000
    4 KB pages, more than the processor's TLB holds once other work has run. Elsewhere, or
    with huge pages off, ordinary pages."""
    places, size = [], 0  # (offset, bytes) per array
    for shape, dtype in specs:
        size = -(-size // 64) * 64
        places.append((size, int(np.prod(shape)) * np.dtype(dtype).itemsize))
        size += places[-1][1]
    length = -(-max(size, 1) // _LARGE_PAGE) * _LARGE_PAGE + _LARGE_PAGE  # room to align
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    region = mmap.mmap(-1, length, flags=private) if private else mmap.mmap(-1, length)
    if hasattr(region, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # refused: ordinary pages
            pass
    raw = np.frombuffer(region, np.uint8)  # keeps the mapping alive
    start = (-raw.ctypes.data) % _LARGE_PAGE
    return [raw[start + at:start + at + nbytes].view(dtype).reshape(shape)
            for (shape, dtype), (at, nbytes) in zip(specs, places)]


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
    """An even DFT size >= n of small factors: the one of least size x cost per element,
    where sizes with more than two factors 3 or more than one factor 5 (150, 162) count
    20 % more (measured with OpenCV's DFT here: 1.15-1.25x the time per element)."""
    def cost(size: int) -> float:
        threes = fives = 0
        while size % 3 == 0:
            size, threes = size // 3, threes + 1
        while size % 5 == 0:
            size, fives = size // 5, fives + 1
        return 1.2 if threes > 2 or fives > 1 else 1.0

    best, size = None, max(n, 2)
    while best is None or size < best[0]:
        size = cv2.getOptimalDFTSize(size)  # the next size of factors 2, 3 and 5
        if size % 2 == 0 and (best is None or size * cost(size) < best[0]):
            best = (size * cost(size), size)
        size += 1
    return best[1]


def _split(n: int, parts: int) -> List[Tuple[int, int]]:
    parts = max(1, min(parts, n))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _skyline(boxes: Sequence[Tuple[int, int]], width: int):
    """Bottom-left skyline packing of (rows, cols) boxes, in order, into a strip ``width``
    wide: [(top, left)] and the height used (None when a box is wider than the strip)."""
    sky = [(0, width, 0)]  # (left, width, top of the free space) across the strip
    origins = []
    for rows, cols in boxes:
        if cols > width:
            return None, None
        best = None
        for i, (x, _, _) in enumerate(sky):
            if x + cols > width:
                break
            y, j, end = 0, i, x
            while end < x + cols:
                y = max(y, sky[j][2])
                end = sky[j][0] + sky[j][1]
                j += 1
            if best is None or (y, x) < best:
                best = (y, x)
        y, x = best
        origins.append((y, x))
        pieces = []
        for sx, sw, sy in sky:
            if sx + sw <= x or sx >= x + cols:
                pieces.append((sx, sw, sy))
                continue
            if sx < x:
                pieces.append((sx, x - sx, sy))
            if sx + sw > x + cols:
                pieces.append((x + cols, sx + sw - x - cols, sy))
        pieces.append((x, cols, y + rows))
        pieces.sort()
        sky = []
        for piece in pieces:
            if sky and sky[-1][2] == piece[2] and sky[-1][0] + sky[-1][1] == piece[0]:
                sky[-1] = (sky[-1][0], sky[-1][1] + piece[1], piece[2])
            else:
                sky.append(piece)
    return origins, max(top for _, _, top in sky)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> bool:
    """Whether the ranges [a0, a1) and [b0, b1) share an element."""
    return a0 < b1 and b0 < a1


def _blocks_along(n: int, f: int) -> Tuple[int, List[int]]:
    """FFT block size and block origins along one canvas axis of n cells (filter f)."""
    size = _even_dft_size(n)
    if size <= MAX_FFT:
        return size, [0]
    count = -(-(n - f + 1) // (MAX_FFT - f + 1))
    size = _even_dft_size(-(-(n - f + 1) // count) + f - 1)
    return size, list(range(0, n - f + 1, size - f + 1))


def _pack(sizes: Sequence[Tuple[int, int]], gap: int, filter_rows: int, filter_cols: int):
    """Origins of the levels' cells (rows, cols) in the canvas and the canvas's (rows, cols):
    each level with ``gap`` empty cells below and to its right, half a filter of margin at
    the top and left; the strip width whose packing needs the least FFT area (blocks x
    block size) wins."""
    top, left = (filter_rows - 1) // 2, (filter_cols - 1) // 2
    boxes = [(rows + gap, cols + gap) for rows, cols in sizes if rows and cols]
    if not boxes:
        return [(top, left)] * len(sizes), (top + gap, left + gap)
    narrow, wide = max(c for _, c in boxes), sum(c for _, c in boxes)
    widths = set(range(narrow, wide + 1, max(1, (wide - narrow) // 200)))
    widths.add(wide)
    best = None
    for width in sorted(widths):
        origins, height = _skyline(boxes, width)
        if origins is None:
            continue
        shape = (top + height, left + width)
        (br, rows0), (bc, cols0) = (_blocks_along(shape[0], filter_rows),
                                    _blocks_along(shape[1], filter_cols))
        # FFT area (the transforms and products) + one block (the filter spectra read)
        cost = ((len(rows0) * len(cols0) + 1) * br * bc, shape[0] * shape[1])
        if best is None or cost < best[0]:
            best = (cost, origins, shape)
    _, placed, shape = best
    placed = iter(placed)  # one origin per level with cells, in order
    origins = []
    for rows, cols in sizes:
        y, x = next(placed) if rows and cols else (0, 0)
        origins.append((top + y, left + x))
    return origins, shape


class _Tasks:
    """A graph of callables with dependencies, built once (per workspace) and run any
    number of times by the calling thread and pool threads; a ready task with a lower index
    goes first (add them in priority order)."""

    def __init__(self):
        self._fns: List[Callable[[], None]] = []
        self._stages: List[str] = []
        self._deps: List[Sequence[int]] = []
        self._dependents: Optional[List[Tuple[int, ...]]] = None

    def add(self, stage: str, fn: Callable[[], None], deps: Sequence[int] = ()) -> int:
        self._fns.append(fn)
        self._stages.append(stage)
        self._deps.append(tuple(deps))
        self._dependents = None
        return len(self._fns) - 1

    def run(self, pool: Optional[ThreadPoolExecutor], helpers: int,
            cpu_ms: Optional[dict] = None) -> None:
        """Run every task once. With ``cpu_ms`` (a dict), each task's CPU time (ms, of the
        thread that ran it) is added to its stage."""
        n = len(self._fns)
        if self._dependents is None:
            dependents: List[List[int]] = [[] for _ in range(n)]
            for i, deps in enumerate(self._deps):
                for j in deps:
                    dependents[j].append(i)
            self._dependents = [tuple(d) for d in dependents]
        dependents_of = self._dependents
        fns, stages = self._fns, self._stages
        waiting = [len(d) for d in self._deps]
        ready = [i for i in range(n) if not waiting[i]]
        heapq.heapify(ready)
        cond = threading.Condition()
        state = {"done": 0, "running": 0, "error": None}

        def work() -> None:
            while True:
                with cond:
                    while not ready and state["done"] < n and state["error"] is None:
                        cond.wait()
                    if state["done"] == n or state["error"] is not None:
                        return
                    i = heapq.heappop(ready)
                    state["running"] += 1
                try:
                    if cpu_ms is None:
                        fns[i]()
                    else:
                        start = time.thread_time()
                        fns[i]()
                        spent = (time.thread_time() - start) * 1000
                except BaseException as error:  # handed to the caller
                    with cond:
                        state["running"] -= 1
                        state["error"] = error
                        cond.notify_all()
                    return
                with cond:
                    if cpu_ms is not None:
                        cpu_ms[stages[i]] = cpu_ms.get(stages[i], 0.0) + spent
                    state["running"] -= 1
                    state["done"] += 1
                    woken = 0
                    for j in dependents_of[i]:
                        waiting[j] -= 1
                        if not waiting[j]:
                            heapq.heappush(ready, j)
                            woken += 1
                    if woken or state["done"] == n:
                        cond.notify_all()

        if pool is not None:
            for _ in range(min(helpers, n - 1)):
                pool.submit(work)
        work()
        with cond:  # helpers that start late find nothing left and return at once
            while state["running"] or (state["done"] < n and state["error"] is None):
                cond.wait()
        if state["error"] is not None:
            raise state["error"]


class _Layout:
    """The pyramid of one image size: level sizes, where each level's fhog cells go in the
    canvas (at least half a filter of empty cells between levels and around them, so that
    every window dlib evaluates sees one level only), the FFT blocks covering the canvas,
    the fhog bands, and the map from response positions to (level, dlib's r, c)."""

    def __init__(self, sizes: Sequence[Tuple[int, int]], cell: int, filter_rows: int,
                 filter_cols: int, threads: int):
        self.sizes = tuple(sizes)
        self.hogs = tuple(hog_size(rows, cols, cell) for rows, cols in sizes)
        gap = max(filter_rows // 2, filter_cols // 2, 1)
        self.origins, shape = _pack(self.hogs, gap, filter_rows, filter_cols)

        (br, rows0), (bc, cols0) = (_blocks_along(shape[0], filter_rows),
                                    _blocks_along(shape[1], filter_cols))
        self.block = (br, bc)
        self.blocks = [(r, c) for r in rows0 for c in cols0]
        # room for the last block's window
        self.shape = (max(shape[0], rows0[-1] + br), max(shape[1], cols0[-1] + bc))
        self.bands = self._bands(cell, threads)
        # per FFT block: the fhog units (indices into bands) that write cells inside it
        self.block_units = [
            [u for u, unit in enumerate(self.bands)
             if any(_overlap(self.origins[level][0] + y0, self.origins[level][0] + y1,
                             r0, r0 + br)
                    and _overlap(self.origins[level][1],
                                 self.origins[level][1] + self.hogs[level][1], c0, c0 + bc)
                    for level, y0, y1 in unit)]
            for r0, c0 in self.blocks]
        # response position (window top-left in the canvas) -> level; dlib's position in
        # the level's response map is (r - top, c - left) + (filter_rows // 2, cols // 2)
        self.level_map = np.full(self.shape, -1, np.int16)
        self.corners = []
        for level, ((hr, hc), (fy, fx)) in enumerate(zip(self.hogs, self.origins)):
            top, left = fy - (filter_rows - 1) // 2, fx - (filter_cols - 1) // 2
            self.corners.append((top, left))
            if hr and hc:
                self.level_map[top:top + hr, left:left + hc] = level
        self.corners = np.array(self.corners, np.int64).reshape(-1, 2)

    def _bands(self, cell: int, threads: int) -> List[List[Tuple[int, int, int]]]:
        """fhog work units: lists of (level, first cell row, end cell row). A level is one
        unit (bands recompute the two histogram rows they share with their neighbours), cut
        into bands only when it is a large share of a thread's work; the smallest levels
        (together at most 1/16 of the whole) share one unit."""
        cost = [(hr + 2) * (hc + 2) if hr and hc else 0 for hr, hc in self.hogs]
        total = max(sum(cost), 1)
        levels = [level for level, c in enumerate(cost) if c]
        tail: List[int] = []
        tail_cost = 0
        while threads > 1 and len(levels) > 1 and (tail_cost + cost[levels[-1]]) * 16 <= total:
            tail_cost += cost[levels[-1]]
            tail.insert(0, levels.pop())
        units: List[List[Tuple[int, int, int]]] = []
        for level in levels:
            hr = self.hogs[level][0]
            parts = (max(1, min(math.ceil(cost[level] * threads / (0.75 * total)), hr // 8))
                     if threads > 1 else 1)
            units.extend([[(level, a, b)] for a, b in _split(hr, parts)])
        if tail:
            units.append([(level, 0, self.hogs[level][0]) for level in tail])
        return units


class _Workspace:
    """The buffers of one call for one image size: planar pyramid levels, the feature
    canvas (zero between levels; every call rewrites the levels' cells), per FFT block
    the feature spectra and products, and the responses."""

    def __init__(self, image_size: Tuple[int, int], up_sizes: Sequence[Tuple[int, int]],
                 layout: _Layout, n_det: int):
        br, bc = layout.block
        n_blocks = len(layout.blocks)
        # planar input, then the pyramid_up steps (the last one is level 0)
        up_inputs = [tuple(image_size)] + list(up_sizes[:-1]) if up_sizes else []
        n_levels, n_ups = len(layout.sizes), len(up_inputs)
        arrays = _arrays_in_large_pages(
            [((3,) + tuple(size), np.uint8) for size in list(layout.sizes) + up_inputs]
            + [((NUM_FEATURES,) + layout.shape, np.float32),
               ((n_blocks, NUM_FEATURES, br, bc), np.float32),
               ((n_blocks, n_det, br, bc), np.float32),
               ((n_det,) + layout.shape, np.float32)])
        self.levels = arrays[:n_levels]
        ups = arrays[n_levels:n_levels + n_ups]
        self.source = ups[0] if n_ups else self.levels[0]
        self.ups = ups[1:] + ([self.levels[0]] if n_ups else [])
        self.canvas, self.spectra, self.products, self.responses = arrays[-4:]
        self.maxima = np.zeros((n_blocks, n_det), np.float32)  # per FFT block
        self.image: Optional[np.ndarray] = None  # the RGB input of the running call
        self.tasks: Optional[_Tasks] = None  # the task graph over these buffers


class FhogDetector:
    """A dlib fhog object detector run by numba kernels and OpenCV's DFT.

    ``detect(rgb, upsample, adjust_threshold) -> [((left, top, right, bottom), score,
    weight_index)]``: the rectangles (dlib's inclusive corners, may extend past the image),
    scores (within ~1e-5 of dlib's) and order of ``dlib.fhog_object_detector(...).run``.
    Thread-safe; each call uses up to ``threads`` threads (1: everything on the calling
    thread).
    """

    def __init__(self, model: FhogModel, threads: int = 2):
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads}")
        self.model = model
        self.threads = int(threads)
        self.banks = filter_bank(model)
        self.filters = np.stack([bank.effective for bank in self.banks])  # (D, 31, fr, fc)
        self.thresholds = np.array([d.b for d in model.detectors], np.float64)
        self.filter_size = model.filter_size  # (rows, cols)
        self._layouts = _LRU(_CACHED_SIZES)
        self._spectra = _LRU(_CACHED_SIZES)
        self._spare = _LRU(_CACHED_SIZES)  # (rows, cols, upsample) -> [_Workspace]
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _helpers(self) -> Optional[ThreadPoolExecutor]:
        if self.threads == 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="fhog")
            return self._pool

    # --- plans and buffers ------------------------------------------------------------

    def layout(self, rows: int, cols: int) -> _Layout:
        """Pyramid, canvas, FFT blocks and fhog bands for an image of rows x cols pixels."""
        m = self.model

        def make():
            levels = level_count(rows, cols, m.min_level_size[0], m.min_level_size[1],
                                 m.max_levels)
            return _Layout(level_sizes(rows, cols, levels), m.cell_size, *self.filter_size,
                           self.threads)
        return self._layouts.get((rows, cols), make)

    def block_spectra(self, rows: int, cols: int):
        """The filters' DFTs (placed at the origin of a rows x cols block), conjugated, as
        :func:`.kernels.ccs_product` takes them: (real, imaginary) parts of the complex
        columns, (rows, D, 31, cols/2 - 1 padded with zeros to a multiple of 8) float32
        each, and the packed real columns (2, rows, D, 31) float32."""
        def make():
            fr, fc = self.filter_size
            n_det, n_planes = self.filters.shape[:2]
            half = cols // 2 - 1
            stride = -(-half // 8) * 8  # whole vector iterations in the products kernel
            re, im, ends = _arrays_in_large_pages(
                [((rows, n_det, n_planes, stride), np.float32)] * 2
                + [((2, rows, n_det, n_planes), np.float32)])
            padded = np.zeros((rows, cols), np.float64)
            for d in range(n_det):
                for p in range(n_planes):
                    padded[:fr, :fc] = self.filters[d, p]
                    ccs = cv2.dft(padded)
                    re[:, d, p, :half] = ccs[:, 1:cols - 1:2]
                    im[:, d, p, :half] = -ccs[:, 2:cols - 1:2]
                    for side, c in enumerate((0, cols - 1)):
                        column = ccs[:, c].copy()
                        column[2:rows - 1:2] *= -1  # imaginary parts of the row pairs
                        ends[side, :, d, p] = column
            return re, im, ends
        return self._spectra.get((rows, cols), make)

    def _workspace(self, key, layout: _Layout, up_sizes) -> _Workspace:
        spare = self._spare.get(key, list)
        try:
            return spare.pop()
        except IndexError:
            return _Workspace(key[:2], up_sizes, layout, len(self.banks))

    def _release(self, key, workspace: _Workspace) -> None:
        spare = self._spare.get(key, list)
        if len(spare) < _SPARE_WORKSPACES:
            spare.append(workspace)

    # --- stages -----------------------------------------------------------------------

    def _plan(self, tasks: _Tasks, ws: _Workspace, layout: _Layout,
              after: Sequence[int]) -> None:
        """Add the tasks that fill ``ws.responses`` from the planar image ``ws.source``
        (ready when the tasks ``after`` are done)."""
        parts = self.threads
        source = ws.source
        for step, out in enumerate(ws.ups):  # pyramid_up, rows split between the threads
            plan = resize_plan(source.shape[1], source.shape[2], *out.shape[1:])
            after = tuple(tasks.add("pyramid_up", lambda p=plan, s=source, o=out, rows=rows:
                                    p.run(s, o, rows), after)
                          for rows in _split(out.shape[1], parts))
            source = out
        level_ready = [after]
        levels = ws.levels

        def resize(i: int) -> None:
            prev, out = levels[i - 1], levels[i]
            resize_plan(prev.shape[1], prev.shape[2], *out.shape[1:]).run(prev, out)

        # the chain of pyramid_down<6> levels; the small levels in one task
        small = min((u[0][0] for u in layout.bands if len(u) > 1), default=len(levels))
        previous = after
        for i in range(1, len(levels)):
            if i < small:
                previous = (tasks.add("pyramid_down", lambda i=i: resize(i), previous),)
                level_ready.append(previous)
            else:
                def tail(lo=i):
                    for j in range(lo, len(levels)):
                        resize(j)
                previous = (tasks.add("pyramid_down", tail, previous),)
                level_ready.extend([previous] * (len(levels) - i))
                break
        cell = self.model.cell_size
        canvas = ws.canvas

        def fhog(unit):
            for level, y0, y1 in unit:
                fy, fx = layout.origins[level]
                fhog_rows(levels[level], cell, BIN_TABLE, y0, y1, canvas, fy, fx)

        features = [tasks.add("fhog", lambda u=unit: fhog(u),
                              level_ready[max(u[0] for u in unit)])
                    for unit in layout.bands]
        # each FFT block waits only for the fhog units that write cells inside it
        self._plan_responses(tasks, ws, layout,
                             [[features[u] for u in units] for units in layout.block_units])

    def _plan_responses(self, tasks: _Tasks, ws: _Workspace, layout: _Layout,
                        writers: Sequence[Sequence[int]]) -> None:
        """The FFT tasks; ``writers[b]``: the tasks that fill FFT block b's cells."""
        fr, fc = self.filter_size
        br, bc = layout.block
        re, im, ends = self.block_spectra(br, bc)
        n_det = len(self.banks)
        rows, cols = br - fr + 1, bc - fc + 1
        parts = self.threads
        forward_done = []
        for b, (r0, c0) in enumerate(layout.blocks):
            block, spectra = ws.canvas[:, r0:r0 + br, c0:c0 + bc], ws.spectra[b]

            def forward(lo, hi, block=block, spectra=spectra):
                for p in range(lo, hi):
                    cv2.dft(block[p], dst=spectra[p])

            forward_done += [tasks.add("dft_forward", lambda a=a, z=z, f=forward: f(a, z),
                                       writers[b]) for a, z in _split(NUM_FEATURES, parts)]
        # all blocks at once: each filter spectrum row is read once for all of them
        mul = [tasks.add("spectra_products", lambda a=a, z=z: ccs_product(
            ws.spectra, re, im, ends, ws.products, a, z), forward_done)
            for a, z in _split(br, 4 * parts)]
        for b, (r0, c0) in enumerate(layout.blocks):
            def back(lo, hi, products=ws.products[b], r0=r0, c0=c0, b=b):
                for d in range(lo, hi):
                    spatial = cv2.dft(products[d], flags=cv2.DFT_INVERSE
                                      | cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
                    kept = spatial[:rows, :cols]
                    ws.responses[d, r0:r0 + rows, c0:c0 + cols] = kept
                    ws.maxima[b, d] = kept.max()  # while it is in this thread's cache

            for a, z in _split(n_det, parts):
                tasks.add("dft_inverse", lambda a=a, z=z, f=back: f(a, z), mul)

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

    def responses(self, rgb: np.ndarray, upsample: int = 0):
        """(layout, responses): the filter responses (D, canvas rows, cols) float32 of the
        RGB image after ``upsample`` pyramid_up steps (a copy; for checks and profiles)."""
        layout, ws, key = self._run(np.ascontiguousarray(rgb), int(upsample))
        try:
            return layout, ws.responses.copy()
        finally:
            self._release(key, ws)

    def _run(self, image: np.ndarray, upsample: int, cpu_ms: Optional[dict] = None):
        rows, cols = image.shape[:2]
        up_sizes = []
        for _ in range(upsample):
            rows, cols = pyramid_up_size(rows, cols)
            up_sizes.append((rows, cols))
        layout = self.layout(rows, cols)
        key = (image.shape[0], image.shape[1], upsample)
        ws = self._workspace(key, layout, up_sizes)  # not given back if this fails
        if ws.tasks is None:  # the graph of this workspace's buffers, made once
            tasks = _Tasks()
            tasks.add("planar", lambda: planar(ws.image, ws.source))
            self._plan(tasks, ws, layout, (0,))
            ws.tasks = tasks
        ws.image = image
        try:
            ws.tasks.run(self._helpers(), self.threads - 1, cpu_ms)
        finally:
            ws.image = None
        return layout, ws, key

    def scan(self, layout: _Layout, responses: np.ndarray, adjust_threshold: float = 0.0,
             maxima: Optional[np.ndarray] = None) -> List[list]:
        """Per weight vector: [(response, level, r, c)] of the positions at or above its
        threshold (r, c: position in dlib's response map of the level), sorted by response
        (descending; ties in scan order). ``maxima``: each weight vector's largest response
        (computed here when not given)."""
        fr, fc = self.filter_size
        found: List[list] = []
        lm = layout.level_map
        for d, b in enumerate(self.thresholds):
            limit = np.float64(b + adjust_threshold)
            top = responses[d].max() if maxima is None else maxima[d]
            if float(top) < limit:  # most frames: nothing reaches it
                found.append([])
                continue
            rr, cc = np.nonzero((responses[d] >= limit) & (lm >= 0))
            level = lm[rr, cc].astype(np.int64)
            r = rr - layout.corners[level, 0] + fr // 2
            c = cc - layout.corners[level, 1] + fc // 2
            value = responses[d, rr, cc].astype(np.float64)
            order = np.lexsort((c, r, level, -value))
            found.append(list(zip(value[order].tolist(), level[order].tolist(),
                                  r[order].tolist(), c[order].tolist())))
        return found

    def detect(self, rgb: np.ndarray, upsample: int = 0,
               adjust_threshold: float = 0.0) -> List[Hit]:
        """dlib's ``run(rgb, upsample, adjust_threshold)``: [(rect, score, weight index)]."""
        return self._detect(rgb, upsample, adjust_threshold, None)

    def profile(self, rgb: np.ndarray, upsample: int = 0,
                adjust_threshold: float = 0.0) -> Tuple[List[Hit], dict]:
        """``detect`` and the CPU time (ms) it spent per stage: planar, pyramid_up,
        pyramid_down, fhog, dft_forward, spectra_products, dft_inverse, thresholds,
        rectangles_nms (summed over the threads)."""
        cpu_ms: dict = {}
        hits = self._detect(rgb, upsample, adjust_threshold, cpu_ms)
        return hits, cpu_ms

    def _detect(self, rgb: np.ndarray, upsample: int, adjust_threshold: float,
                cpu_ms: Optional[dict]) -> List[Hit]:
        image = np.asarray(rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (h, w, 3), got {image.shape} "
                             f"{image.dtype}")
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {upsample}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            return []
        layout, ws, key = self._run(np.ascontiguousarray(image), int(upsample), cpu_ms)
        start = time.thread_time()
        try:
            found = self.scan(layout, ws.responses, float(adjust_threshold),
                              ws.maxima.max(axis=0))
        finally:
            self._release(key, ws)
        middle = time.thread_time()
        hits = []
        for d, items in enumerate(found):
            b = float(self.thresholds[d])
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
        if cpu_ms is not None:
            cpu_ms["thresholds"] = (middle - start) * 1000
            cpu_ms["rectangles_nms"] = (time.thread_time() - middle) * 1000
        return kept


def _rect_down(rect: IRect, levels: int) -> IRect:
    """``pyramid_down<2>::rect_down(rect, levels)``, rounded."""
    left, top, right, bottom = (float(v) for v in rect)
    for _ in range(levels):
        left, top = left / 2.0 - 1.25, top / 2.0 - 0.75
        right, bottom = right / 2.0 - 1.25, bottom / 2.0 - 0.75
    return (_round(left), _round(top), _round(right), _round(bottom))
