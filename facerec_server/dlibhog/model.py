"""Reader of dlib's serialized fhog object detectors (``.svm``) and their filter banks.

The file is ``serialize(object_detector<scan_fhog_pyramid<pyramid_down<6>>>)``
(``dlib/image_processing/object_detector.h``), in the byte primitives of
``dlib/serialize.h`` (see :mod:`facerec_server.dlibnet.reader`):

* object_detector: version 2, the scanner, the ``test_box_overlap`` (match and overlap
  thresholds, two doubles), the number of weight vectors and each vector (a dlib column
  matrix of doubles: -rows, -cols, values). Version 1 (one vector, written before the box
  tester) is read too.
* scan_fhog_pyramid (``scan_fhog_pyramid.h``): version 1, the default feature extractor (no
  bytes), the cached feature pyramid (an empty ``dlib::array``: max size 0, size 0), cell
  size, padding, detection window width and height, max pyramid levels, min pyramid layer
  width and height, nuclear norm strength (double) and the number of dimensions.
* ``dlib.train_simple_object_detector(...).save()`` appends version 1 and the trained
  upsampling amount (``tools/python/src/serialize_object_detector.h``);
  ``dlib.get_frontal_face_detector().save()`` and ``fhog_object_detector.save()`` do not.

Each weight vector holds 31 planes of ``fhog_window_height x fhog_window_width`` filter
coefficients (plane-major, rows, then columns) followed by the detection threshold ``b``.
:func:`filter_bank` reproduces ``scan_fhog_pyramid::build_fhog_filterbank``: dlib scores
with the float32 filters, or, when that is cheaper, with a separable approximation from an
SVD (singular values below ``max(1e-4, 0.001 * largest)`` dropped).
"""
from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..dlibnet.reader import DlibFormatError, _Stream

NUM_PLANES = 31  # fhog: 18 signed + 9 unsigned orientations + 4 texture (gradient energy)

__all__ = ["HogFormatError", "FhogModel", "FhogDetectorWeights", "FilterBank", "parse_bytes",
           "read_svm", "frontal_face_model", "filter_bank", "fhog_window_size", "NUM_PLANES"]


class HogFormatError(ValueError):
    """A file that is not a dlib fhog object detector; the message names the file."""


@dataclass(frozen=True)
class FhogDetectorWeights:
    """One weight vector: ``filters`` (31, rows, cols) float64 and the threshold ``b``."""

    filters: np.ndarray
    b: float


@dataclass(frozen=True)
class FhogModel:
    """A parsed ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``.

    ``window``: detection window (width, height) in pixels; ``cell_size``, ``padding`` in
    fhog cells; ``min_level_size``: (width, height) below which the pyramid stops;
    ``max_levels``; ``overlap``: the NMS ``test_box_overlap`` (match, overlap) thresholds;
    ``upsampling``: the amount the detector was trained with (None: not in the file).
    """

    cell_size: int
    padding: int
    window: Tuple[int, int]
    max_levels: int
    min_level_size: Tuple[int, int]
    nuclear_norm: float
    overlap: Tuple[float, float]
    detectors: Tuple[FhogDetectorWeights, ...]
    upsampling: Optional[int] = None
    source: str = ""

    @property
    def filter_size(self) -> Tuple[int, int]:
        """(rows, cols) of each fhog filter plane."""
        return self.detectors[0].filters.shape[1:]


def _div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def fhog_window_size(window_w: int, window_h: int, cell_size: int,
                     padding: int) -> Tuple[int, int]:
    """``compute_fhog_window_size``: (cols, rows) of a filter for this detection window."""
    left, top = -_div(window_w, 2), -_div(window_h, 2)
    right, bottom = left + window_w - 1, top + window_h - 1

    def to_fhog(v: int) -> int:  # image_to_fhog with filter padding 1
        return _div(v - 1, cell_size) - 1

    cols = to_fhog(right) - to_fhog(left) + 1 + 2 * padding
    rows = to_fhog(bottom) - to_fhog(top) + 1 + 2 * padding
    return cols, rows


def _column(s: _Stream, what: str) -> np.ndarray:
    at = s.pos
    nr, nc = s.int(), s.int()
    if nr < 0 or nc < 0:  # newer dlib writes negated sizes
        nr, nc = -nr, -nc
    if nc != 1 or nr < 1 or nr > 10_000_000:
        raise DlibFormatError(f"{what} is a {nr}x{nc} matrix at byte {at}, expected a column")
    return np.array([s.float() for _ in range(nr)], dtype=np.float64)


def _parse(data: bytes) -> FhogModel:
    if not data:
        raise DlibFormatError("the file is empty")
    s = _Stream(data)
    version = s.int()
    if version not in (1, 2):
        raise DlibFormatError(f"object_detector version {version}, expected 1 or 2")
    at = s.pos
    scanner_version = s.int()
    if scanner_version != 1:
        raise DlibFormatError(f"scan_fhog_pyramid version {scanner_version} at byte {at}, "
                              "expected 1")
    max_size, size = s.int(), s.int()
    if max_size != 0 or size != 0:
        raise DlibFormatError("the file holds a cached feature pyramid (dlib's save() never "
                              "writes one)")
    cell_size, padding = s.int(), s.int()
    window_w, window_h = s.int(), s.int()
    max_levels = s.int()
    min_w, min_h = s.int(), s.int()
    nuclear_norm = s.float()
    dims = s.int()
    if not (0 < cell_size <= 256 and 0 <= padding <= 256 and 0 < window_w <= 100000
            and 0 < window_h <= 100000 and max_levels > 0 and min_w > 0 and min_h > 0):
        raise DlibFormatError(
            f"implausible scanner settings (cell size {cell_size}, padding {padding}, window "
            f"{window_w}x{window_h}, levels {max_levels}, min layer {min_w}x{min_h})")
    cols, rows = fhog_window_size(window_w, window_h, cell_size, padding)
    if dims != rows * cols * NUM_PLANES:
        raise DlibFormatError(f"the scanner has {dims} dimensions, expected "
                              f"{rows}x{cols}x{NUM_PLANES}")
    vectors: List[np.ndarray] = []
    if version == 1:
        vectors.append(_column(s, "the weight vector"))
        overlap = (s.float(), s.float())
    else:
        overlap = (s.float(), s.float())
        at = s.pos
        count = s.int()
        if not 0 < count <= 1000:
            raise DlibFormatError(f"{count} weight vectors at byte {at}")
        for i in range(count):
            vectors.append(_column(s, f"weight vector {i}"))
    if not all(0.0 <= v <= 1.0 for v in overlap):
        raise DlibFormatError(f"box overlap thresholds {overlap} are not within [0, 1]")
    detectors = []
    for i, w in enumerate(vectors):
        if w.size != dims + 1:
            raise DlibFormatError(f"weight vector {i} has {w.size} values, expected {dims + 1}")
        if not np.all(np.isfinite(w)):
            raise DlibFormatError(f"weight vector {i} holds a non-finite value")
        detectors.append(FhogDetectorWeights(w[:-1].reshape(NUM_PLANES, rows, cols),
                                             float(w[-1])))
    upsampling = None
    if s.pos < len(s.data):  # simple_object_detector_py: version 1, upsampling amount
        at = s.pos
        if s.int() != 1:
            raise DlibFormatError(f"unexpected data after the detector at byte {at}")
        upsampling = s.int()
        if not 0 <= upsampling <= 64:
            raise DlibFormatError(f"implausible upsampling amount {upsampling}")
    if s.pos != len(s.data):
        raise DlibFormatError(f"{len(s.data) - s.pos} trailing bytes after the detector")
    return FhogModel(cell_size, padding, (window_w, window_h), max_levels, (min_w, min_h),
                     nuclear_norm, overlap, tuple(detectors), upsampling)


def parse_bytes(data: bytes, source: str = "<bytes>") -> FhogModel:
    """Parse a serialized detector; raises :class:`HogFormatError` naming ``source``."""
    try:
        model = _parse(bytes(data))
    except DlibFormatError as error:
        raise HogFormatError(f"{source} is not a dlib fhog object detector (.svm from "
                             f"dlib.train_simple_object_detector or "
                             f"fhog_object_detector.save): {error}") from None
    return FhogModel(**{**model.__dict__, "source": str(source)})


def read_svm(path) -> FhogModel:
    """Read a ``.svm`` file; raises :class:`HogFormatError` (naming the file) or OSError."""
    path = pathlib.Path(os.path.expanduser(str(path)))
    return parse_bytes(path.read_bytes(), str(path))


def frontal_face_model() -> FhogModel:
    """dlib's ``get_frontal_face_detector()`` (5 weight vectors, 80x80 window), taken from
    the installed dlib so that it is always the detector dlib itself runs."""
    import tempfile

    import dlib
    detector = dlib.get_frontal_face_detector()
    with tempfile.TemporaryDirectory(prefix="facerec-hog-") as folder:
        path = pathlib.Path(folder) / "frontal_face_detector.svm"
        detector.save(str(path))
        model = parse_bytes(path.read_bytes(), "dlib.get_frontal_face_detector()")
    return model


@dataclass(frozen=True)
class FilterBank:
    """How dlib filters the fhog planes for one weight vector (``fhog_filterbank``).

    ``separable``: use the components (``planes[j]``, ``rows[j]``, ``cols[j]``: plane,
    float32 row filter (cols,) and column filter (rows,)), else the float32 ``filters``
    (31, rows, cols). ``effective``: the float64 2-D filters either way (for checks).
    """

    separable: bool
    planes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    filters: np.ndarray

    @property
    def effective(self) -> np.ndarray:
        if not self.separable:
            return self.filters.astype(np.float64)
        out = np.zeros(self.filters.shape, np.float64)
        for plane, row, col in zip(self.planes, self.rows, self.cols):
            out[plane] += np.outer(col.astype(np.float64), row.astype(np.float64))
        return out


def filter_bank(model: FhogModel) -> List[FilterBank]:
    """``build_fhog_filterbank`` + the choice in ``apply_filters_to_fhog``, per weight vector.

    Per plane an SVD (sorted by singular value); components with singular values of at
    least ``max(1e-4, 0.001 * largest)`` are kept as float32 ``u*sqrt(s)`` (column filter)
    and ``v*sqrt(s)`` (row filter). dlib filters with the float32 planes themselves when
    all planes together have more components than ``31 * min(rows, cols) / 3``, otherwise
    with the components, plane by plane, in order.
    """
    banks = []
    for det in model.detectors:
        planes, rows, cols = [], [], []
        for i, plane in enumerate(det.filters):
            u, sv, vt = np.linalg.svd(plane)
            order = np.argsort(-sv, kind="stable")
            thresh = max(1e-4, float(sv.max()) * 0.001)
            for j in order:
                if sv[j] >= thresh:
                    root = math.sqrt(float(sv[j]))
                    planes.append(i)
                    cols.append((u[:, j] * root).astype(np.float32))
                    rows.append((vt[j] * root).astype(np.float32))
        fr, fc = det.filters.shape[1:]
        banks.append(FilterBank(
            len(planes) <= NUM_PLANES * min(fr, fc) / 3.0,
            np.array(planes, np.int64),
            np.array(rows, np.float32).reshape(-1, fc),
            np.array(cols, np.float32).reshape(-1, fr),
            np.ascontiguousarray(det.filters.astype(np.float32))))
    return banks
