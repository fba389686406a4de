"""dlib's MMOD CNN face detector (``cnn_face_detection_model_v1``) on OpenCV DNN.

Reproduces, in numpy, everything dlib does around the network
(``tools/python/src/cnn_face_detector.cpp``, ``dlib/dnn/input.h``, ``dlib/dnn/loss.h``,
``dlib/image_transforms/image_pyramid.h``):

1. ``upsample`` times ``pyramid_up(img, pyramid_down<2>)`` (bilinear, see :mod:`.resize`);
2. the input layer ``input_rgb_image_pyramid<pyramid_down<6>>``: every pyramid level
   (5/6 scale steps while at least 5 rows remain) tiled into one image, first level at
   (outer_padding, outer_padding), then down the left column and back up the right, with
   ``padding`` between tiles, all in the normalised ((pixel - mean) / 256) float domain
   with a zero background; each level is resized from the previous one;
3. the network (OpenCV DNN) -> one score map;
4. ``loss_mmod_::to_label``: every position scoring above the threshold (0) becomes a
   detector window centred at the position mapped back through the layers, mapped to image
   space via the nearest pyramid tile (``tiled_pyramid_to_image``), sorted by score, then
   greedy NMS with ``test_box_overlap`` on the rounded rectangles;
5. rectangles mapped back through the upsampling with ``pyramid_down<2>::rect_down``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .net import DlibNet
from .reader import DlibFormatError, NetDescription, load_net
from .resize import pyramid_up, resize_float

IRect = Tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)


def _round(v: float) -> int:
    """dlib's ``drectangle`` -> ``rectangle`` rounding: ``std::round`` (half away from zero).

    (Checked on dlib 20: ``rectangle(drectangle(-4.5, -3.5, ...))`` is (-5, -4).)
    """
    r = math.floor(v)
    diff = v - r  # exact for the magnitudes used here
    if diff > 0.5 or (diff == 0.5 and v > 0):
        return int(r) + 1
    return int(r)


def pyramid_down_size(nr: int, nc: int, n: int) -> Tuple[int, int]:
    """``find_pyramid_down_output_image_size`` for ``pyramid_down<n>`` (n >= 4)."""
    rate = (n - 1.0) / n
    return int(math.floor(rate * nr)), int(math.floor(rate * nc))


def tiled_pyramid_layout(nr: int, nc: int, padding: int, outer_padding: int,
                         n: int = 6) -> Tuple[List[IRect], int, int]:
    """``impl::compute_tiled_image_pyramid_details``: tile rectangles and the image size."""
    if nr * nc == 0:
        return [], 0, 0
    sizes = [(nr, nc)]  # (height, width)
    while True:
        nr, nc = pyramid_down_size(nr, nc, n)
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nr, nc))
    total_height = sum(h + padding for h, _ in sizes) - padding * 2
    height = 0
    prev_width = 0
    for h, w in sizes:
        if w <= sizes[0][1] - prev_width - padding and \
                (height - sizes[0][0]) * 2 >= (total_height - sizes[0][0]):
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = sizes[0][1]
    out_nr = height + outer_padding * 2
    out_nc = width + outer_padding * 2
    rects: List[IRect] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        h, w = sizes[i]
        x1, y1 = outer_padding + width - 1, y - 1
        rect = (x1 - (w - 1), y1 - (h - 1), x1, y1)
        if not (rect[2] < first[0] or rect[0] > first[2] or rect[3] < first[1]
                or rect[1] > first[3]):
            break  # would intersect the original image
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, out_nr, out_nc


def build_pyramid_tensor(rgb: np.ndarray, mean: Sequence[float], padding: int,
                         outer_padding: int, n: int = 6) -> Tuple[np.ndarray, List[IRect]]:
    """The (3, NR, NC) float32 tensor ``input_rgb_image_pyramid::to_tensor`` builds."""
    nr, nc = rgb.shape[:2]
    rects, out_nr, out_nc = tiled_pyramid_layout(nr, nc, padding, outer_padding, n)
    data = np.zeros((3, out_nr, out_nc), dtype=np.float32)
    if not rects:
        return data, rects
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    l0, t0, r0, b0 = rects[0]
    planes = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)
    data[:, t0:b0 + 1, l0:r0 + 1] = (planes - mean32) / np.float32(256.0)
    for i in range(1, len(rects)):
        pl, pt, pr, pb = rects[i - 1]
        left, top, right, bottom = rects[i]
        data[:, top:bottom + 1, left:right + 1] = resize_float(
            data[:, pt:pb + 1, pl:pr + 1], bottom - top + 1, right - left + 1)
    return data, rects


def _overlaps(a: IRect, b: IRect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib ``test_box_overlap::operator()`` on integer rectangles."""
    il, it = max(a[0], b[0]), max(a[1], b[1])
    ir, ib = min(a[2], b[2]), min(a[3], b[3])
    if ir < il or ib < it:
        return False
    inner = float((ir - il + 1) * (ib - it + 1))
    if inner == 0:
        return False
    ul, ut = min(a[0], b[0]), min(a[1], b[1])
    ur, ub = max(a[2], b[2]), max(a[3], b[3])
    outer = float((ur - ul + 1) * (ub - ut + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return (inner / outer > iou_thresh or inner / area_a > covered_thresh
            or inner / area_b > covered_thresh)


class MmodNet:
    """The MMOD detector engine: ``detect(rgb, upsample) -> [((l, t, r, b), confidence)]``.

    Rectangles are dlib rectangles (inclusive corners, may extend past the image), exactly
    what ``dlib.cnn_face_detection_model_v1(path)(rgb, upsample)`` returns.
    """

    def __init__(self, model_path, backend: str = "opencv", cache_dir=None,
                 threads: Optional[int] = None,
                 description: Optional[NetDescription] = None, pyramid_n: int = 6):
        """``pyramid_n``: N of the input layer's ``pyramid_down<N>`` (a template argument,
        not stored in the file; 6 for dlib's face detector)."""
        if pyramid_n < 4:
            raise ValueError("pyramid_down<N> with N < 4 uses another algorithm; unsupported")
        self.pyramid_n = int(pyramid_n)
        desc = description if description is not None else load_net(model_path, cache_dir)
        if desc.input.type != "input_rgb_image_pyramid":
            raise DlibFormatError(f"not an MMOD pyramid network (input {desc.input.type})")
        if desc.loss.type != "loss_mmod":
            raise DlibFormatError(f"not an MMOD network (loss {desc.loss.type})")
        opts = desc.loss.attrs
        if opts.get("use_bounding_box_regression"):
            raise DlibFormatError("MMOD bounding box regression is not supported")
        self.description = desc
        self.windows = opts["detector_windows"]
        self.nms = opts["overlaps_nms"]
        a = desc.input.attrs
        self.mean = (a["avg_red"], a["avg_green"], a["avg_blue"])
        self.padding = int(a["pyramid_padding"])
        self.outer_padding = int(a["pyramid_outer_padding"])
        self.net = DlibNet(backend=backend, normalize_input=False, threads=threads,
                           description=desc)
        for layer in desc.layers:
            if layer.type in ("con", "max_pool", "avg_pool") and \
                    layer.attrs["stride_x"] != layer.attrs["stride_y"]:
                raise DlibFormatError("anisotropic strides are not supported")

    def _to_input(self, c: np.ndarray, r: np.ndarray):
        # composition of p -> p*s - pad + k//2, applied from the last layer to the first
        xs = c.astype(np.float64)
        ys = r.astype(np.float64)
        for layer in reversed(self.description.layers):
            if layer.type in ("con", "max_pool", "avg_pool"):
                at = layer.attrs
                xs = xs * at["stride_x"] - at["padding_x"] + at["nc"] // 2
                ys = ys * at["stride_y"] - at["padding_y"] + at["nr"] // 2
        return xs, ys

    def scores(self, rgb: np.ndarray, upsample: int = 0):
        """(score map (k, H, W), tile rects, image fed to the pyramid)."""
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        for _ in range(int(upsample)):
            img = pyramid_up(img)
        data, rects = build_pyramid_tensor(img, self.mean, self.padding, self.outer_padding,
                                           self.pyramid_n)
        if not rects:
            return None, rects, img
        out = self.net.forward(data[None])
        return out[0], rects, img

    def detect(self, rgb: np.ndarray, upsample: int = 0,
               adjust_threshold: float = 0.0) -> List[Tuple[IRect, float]]:
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image, got {rgb.shape} {rgb.dtype}")
        out, rects, _ = self.scores(rgb, upsample)
        if out is None:
            return []
        k_windows = len(self.windows)
        if out.shape[0] != k_windows:
            raise DlibFormatError(f"network has {out.shape[0]} outputs for {k_windows} windows")
        tiles = np.array(rects, dtype=np.int64)
        dets = []
        for k, window in enumerate(self.windows):
            rr, cc = np.nonzero(out[k].astype(np.float64) > adjust_threshold)
            if len(rr) == 0:
                continue
            px, py = self._to_input(cc, rr)
            hw = (window["width"] - 1) / 2.0
            hh = (window["height"] - 1) / 2.0
            left, right = px - hw, px + hw
            top, bottom = py - hh, py + hh
            # nearest tile to the centre converted to a point (dlib vector conversion:
            # floor(x + 0.5)); the first tile on ties, like dlib's nearest_rect
            cx = np.floor((left + right) / 2 + 0.5)
            cy = np.floor((top + bottom) / 2 + 0.5)
            nx = np.clip(cx[:, None], tiles[None, :, 0], tiles[None, :, 2])
            ny = np.clip(cy[:, None], tiles[None, :, 1], tiles[None, :, 3])
            dist = np.sqrt((nx - cx[:, None]) ** 2 + (ny - cy[:, None]) ** 2)
            idx = np.argmin(dist, axis=1)
            ox = tiles[idx, 0].astype(np.float64)
            oy = tiles[idx, 1].astype(np.float64)
            left, right, top, bottom = left - ox, right - ox, top - oy, bottom - oy
            ratio = self.pyramid_n / (self.pyramid_n - 1.0)  # pyramid_down<N>::point_up
            for level in range(1, int(idx.max()) + 1 if len(idx) else 1):
                m = idx >= level
                left[m] = left[m] * ratio + 0.3
                right[m] = right[m] * ratio + 0.3
                top[m] = top[m] * ratio + 0.3
                bottom[m] = bottom[m] * ratio + 0.3
            score = out[k][rr, cc].astype(np.float64)
            order = (k * out.shape[1] + rr) * out.shape[2] + cc
            for i in range(len(rr)):
                dets.append((float(score[i]), int(order[i]),
                             (left[i], top[i], right[i], bottom[i])))
        # std::sort(rbegin, rend) on confidence: descending; ties keep no particular order
        dets.sort(key=lambda d: (-d[0], -d[1]))
        kept: List[Tuple[IRect, float]] = []
        iou = float(self.nms["iou_thresh"])
        cover = float(self.nms["percent_covered_thresh"])
        for score, _, (left, top, right, bottom) in dets:
            rect = (_round(left), _round(top), _round(right), _round(bottom))
            if any(_overlaps(r, rect, iou, cover) for r, _ in kept):
                continue
            kept.append((rect, score))
        if upsample:
            result = []
            for (left, top, right, bottom), score in kept:
                lx, ty, rx, by = float(left), float(top), float(right), float(bottom)
                for _ in range(int(upsample)):
                    lx, ty = lx / 2.0 - 1.25, ty / 2.0 - 0.75
                    rx, by = rx / 2.0 - 1.25, by / 2.0 - 0.75
                result.append(((_round(lx), _round(ty), _round(rx), _round(by)), score))
            kept = result
        return kept


# --------------------------------------------------------------------------------------
# the pipeline-facing detector


class _Rect:
    """Minimal stand-in for ``dlib.rectangle`` (what core.detect's mapping reads)."""

    __slots__ = ("_l", "_t", "_r", "_b")

    def __init__(self, rect: IRect):
        self._l, self._t, self._r, self._b = (int(v) for v in rect)

    def left(self) -> int:
        return self._l

    def top(self) -> int:
        return self._t

    def right(self) -> int:
        return self._r

    def bottom(self) -> int:
        return self._b


def _detector_base():
    from ..core.detect import _DlibDetector
    return _DlibDetector


class OpenCVMmodDetector(_detector_base()):
    """Drop-in for ``core.detect.CnnDetector`` running the MMOD network on OpenCV DNN.

    Same arguments and conventions (``upsample`` 0..4, ``scale`` in (0, 1], boxes
    (left, top, right, bottom) exclusive and clipped, score = dlib's confidence), same
    detections and confidences as dlib's ``cnn_face_detection_model_v1``.
    """

    def __init__(self, model_path=None, upsample: int = 0, scale: float = 1.0,
                 backend: str = "opencv", cache_dir=None):
        super().__init__(upsample, scale)
        self.model_path = model_path
        self.backend = backend
        self.cache_dir = cache_dir

    def with_settings(self, upsample: int, scale: float) -> "OpenCVMmodDetector":
        """A detector with new settings sharing this one's loaded network."""
        other = OpenCVMmodDetector(self.model_path, upsample, scale, self.backend,
                                   self.cache_dir)
        other._raw = self._raw
        other._load_lock = self._load_lock
        return other

    def _create_raw(self):
        from ..core.models import ModelError, ModelPaths
        path = ModelPaths(cnn_detector=self.model_path).resolve("cnn_detector")
        try:
            return MmodNet(path, backend=self.backend, cache_dir=self.cache_dir)
        except (OSError, DlibFormatError) as error:
            raise ModelError(f"could not load the cnn_detector model from {path}: "
                             f"{error}") from error

    def _raw_detect(self, image_rgb: np.ndarray):
        hits = self._raw_model().detect(image_rgb, self.upsample)
        return [(_Rect(rect), score) for rect, score in hits]
