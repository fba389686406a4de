"""LFW face verification with the standard 10-fold protocol (``facerec-eval lfw``).

The protocol (LFW "View 2", as used for dlib's published 99.13% / 99.38%):

* ``pairs.txt`` holds ``n_folds`` folds of ``n`` matched pairs (``name i j``) followed by ``n``
  mismatched pairs (``name1 i name2 j``); the first line is ``n_folds<TAB>n``.
* Every image referenced by the pairs gets one 128-D descriptor from the same stages the server
  uses (detect -> 5-point landmarks -> 150x150 chip with padding 0.25 -> ResNet descriptor).
  LFW images are face crops, so an image is never dropped: when the detector finds nothing a
  fixed box is used (:data:`FALLBACK_BOX`, the median box dlib's HOG detector returns on LFW);
  when it finds several faces the one whose centre is closest to the image centre is used.
* A pair is predicted "same" when the Euclidean distance is below the threshold. For each fold
  the threshold that maximises accuracy on the other nine folds is applied to the held-out fold;
  the report gives the mean and standard deviation over folds, and the accuracy at the fixed
  threshold 0.6 (the one the server uses).

Descriptors are cached on disk, keyed by the SHA-1 of the image file's bytes and by every
pipeline setting that influences them, so re-runs and variants (``--flip`` reuses the plain
descriptors; only the mirrored chips are new) are fast.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

FIXED_THRESHOLD = 0.6

# Median HOG box (upsample 0) over the 7,667 of the 7,701 pairs images of deep-funneled LFW where
# HOG finds a face (the face closest to the centre), as fractions of the image size (left, top,
# right, bottom; right/bottom exclusive).
# On 250x250 images: (77, 89, 182, 190), 105x101 pixels, centred horizontally and ~14 px below
# the image centre (that is where dlib's detector puts faces in deep-funneled crops; the 5-point
# predictor was trained on such boxes, so the position matters as much as the size).
FALLBACK_BOX = (77 / 250, 89 / 250, 182 / 250, 190 / 250)

CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# pairs.txt
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pair:
    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int


def parse_pairs(path) -> List[Pair]:
    """Parse an LFW ``pairs.txt`` (header ``n_folds<TAB>n``, then per fold n same + n different).

    Raises ``ValueError`` on a malformed file (wrong counts, a mismatched line among matched
    ones, ...), so a truncated pairs file cannot silently produce a smaller benchmark.
    """
    lines = [line.split() for line in pathlib.Path(path).read_text().splitlines()]
    lines = [parts for parts in lines if parts]
    if not lines or len(lines[0]) not in (1, 2):
        raise ValueError(f"{path}: first line must be 'n_folds<TAB>pairs_per_class'")
    if len(lines[0]) == 2:
        n_folds, per_class = (int(v) for v in lines[0])
    else:  # pairsDevTrain.txt style: a single count of each class, one "fold"
        n_folds, per_class = 1, int(lines[0][0])
    body = lines[1:]
    if len(body) != n_folds * 2 * per_class:
        raise ValueError(f"{path}: expected {n_folds * 2 * per_class} pairs "
                         f"({n_folds} folds x 2 x {per_class}), found {len(body)}")
    pairs = []
    for k, parts in enumerate(body):
        fold, offset = divmod(k, 2 * per_class)
        same = offset < per_class
        if same and len(parts) == 3:
            pairs.append(Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold))
        elif not same and len(parts) == 4:
            pairs.append(Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold))
        else:
            raise ValueError(f"{path}: line {k + 2} {' '.join(parts)!r}: expected a "
                             f"{'matched' if same else 'mismatched'} pair")
    return pairs


def image_path(images_dir, name: str, index: int) -> pathlib.Path:
    """``<images_dir>/<name>/<name>_<index:04d>.jpg`` (the LFW layout)."""
    return pathlib.Path(images_dir) / name / f"{name}_{index:04d}.jpg"


def referenced_images(pairs: Iterable[Pair]) -> List[Tuple[str, int]]:
    """Unique (name, index) of every image the pairs use, sorted."""
    keys = set()
    for p in pairs:
        keys.add((p.name1, p.index1))
        keys.add((p.name2, p.index2))
    return sorted(keys)


# --------------------------------------------------------------------------------------------
# Thresholds and the 10-fold protocol (pure numpy)
# --------------------------------------------------------------------------------------------

def accuracy_at(distances, same, threshold: float) -> float:
    """Fraction of pairs classified correctly when "same" means ``distance < threshold``."""
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if distances.size == 0:
        return float("nan")
    return float(np.mean((distances < threshold) == same))


def best_threshold(distances, same) -> Tuple[float, float]:
    """Threshold maximising accuracy of ``distance < threshold`` on these pairs.

    Candidates are the midpoints between consecutive distinct sorted distances, plus one below
    the smallest and one above the largest distance. Ties between equally accurate candidates
    go to the smallest one. Returns ``(threshold, accuracy)``.
    """
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    if d.size == 0:
        raise ValueError("no pairs")
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    # k = number of pairs predicted "same" (the k smallest distances), k = 0..n
    same_below = np.concatenate(([0], np.cumsum(s)))
    diff_total = int(np.count_nonzero(~s))
    diff_below = np.arange(d.size + 1) - same_below
    correct = same_below + (diff_total - diff_below)
    # only cuts between distinct values are realisable thresholds
    valid = np.ones(d.size + 1, dtype=bool)
    valid[1:-1] = d[1:] > d[:-1]
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = float(d[0]) - 1e-6
    elif k == d.size:
        threshold = float(d[-1]) + 1e-6
    else:
        threshold = float((d[k - 1] + d[k]) / 2.0)
    return threshold, float(correct[k]) / d.size


def k_fold(distances, same, folds) -> dict:
    """The LFW protocol: per fold, threshold chosen on the other folds, accuracy on this one.

    ``std`` is the sample standard deviation over folds (ddof=1, as in the LFW README's
    ``sigma``); ``stderr`` is ``std / sqrt(n_folds)``.
    """
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    f = np.asarray(folds)
    fold_ids = sorted(set(f.tolist()))
    thresholds, accuracies, train_accuracies = [], [], []
    for fold in fold_ids:
        test = f == fold
        train = ~test if len(fold_ids) > 1 else test
        threshold, train_acc = best_threshold(d[train], s[train])
        thresholds.append(threshold)
        train_accuracies.append(train_acc)
        accuracies.append(accuracy_at(d[test], s[test], threshold))
    acc = np.array(accuracies)
    std = float(np.std(acc, ddof=1)) if acc.size > 1 else 0.0
    return {
        "folds": [{"fold": int(k), "threshold": t, "train_accuracy": ta, "accuracy": a}
                  for k, t, ta, a in zip(fold_ids, thresholds, train_accuracies, accuracies)],
        "mean": float(np.mean(acc)),
        "std": std,
        "stderr": std / math.sqrt(acc.size),
        "mean_threshold": float(np.mean(thresholds)),
    }


def roc_curve(distances, same) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) as the threshold sweeps upwards."""
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    n_same, n_diff = max(int(s.sum()), 1), max(int((~s).sum()), 1)
    last = np.append(d[1:] > d[:-1], True)  # keep the last pair of each run of equal distances
    tpr = np.concatenate(([0.0], np.cumsum(s)[last] / n_same))
    fpr = np.concatenate(([0.0], np.cumsum(~s)[last] / n_diff))
    thr = np.concatenate(([d[0] if d.size else 0.0], d[last]))
    return fpr, tpr, thr


def auc(fpr, tpr) -> float:
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def draw_roc(path, curves: Dict[str, Tuple[np.ndarray, np.ndarray]], title: str,
             points: Sequence[Tuple[float, float, str]] = ()) -> None:
    """ROC curve(s) as a PNG, drawn with OpenCV (log-scaled false positive rate, 1e-4 .. 1).

    ``points``: (fpr, tpr, label) operating points to mark (e.g. the fixed 0.6 threshold).
    """
    import cv2

    width, height = 900, 640
    left, right, top, bottom = 90, 30, 50, 70
    img = np.full((height, width, 3), 255, np.uint8)
    x_min, x_max = -4.0, 0.0  # log10 FPR
    y_min, y_max = 0.0, 1.0

    def px(fpr, tpr):
        lx = math.log10(min(max(fpr, 10 ** x_min), 1.0))
        x = left + (lx - x_min) / (x_max - x_min) * (width - left - right)
        y = height - bottom - (tpr - y_min) / (y_max - y_min) * (height - top - bottom)
        return int(round(x)), int(round(y))

    font = cv2.FONT_HERSHEY_SIMPLEX
    grey, black = (210, 210, 210), (0, 0, 0)
    for e in range(int(x_min), int(x_max) + 1):
        x, _ = px(10.0 ** e, 0)
        cv2.line(img, (x, top), (x, height - bottom), grey, 1)
        cv2.putText(img, f"1e{e}" if e else "1", (x - 18, height - bottom + 22), font, 0.5,
                    black, 1, cv2.LINE_AA)
    for k in range(11):
        _, y = px(1.0, k / 10)
        cv2.line(img, (left, y), (width - right, y), grey, 1)
        cv2.putText(img, f"{k / 10:.1f}", (left - 40, y + 5), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), black, 1)
    cv2.putText(img, "false positive rate (log scale)", (width // 2 - 130, height - 20), font,
                0.6, black, 1, cv2.LINE_AA)
    cv2.putText(img, "TPR", (15, height // 2), font, 0.6, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 32), font, 0.6, black, 1, cv2.LINE_AA)
    colours = [(200, 80, 0), (0, 0, 220), (0, 150, 0), (150, 0, 150), (0, 140, 220)]
    for k, (label, (fpr, tpr)) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        fpr = np.asarray(fpr, dtype=np.float64)
        tpr = np.asarray(tpr, dtype=np.float64)
        # step curve: horizontal to the next FPR, then vertical
        pts = []
        for i in range(len(fpr)):
            if i:
                pts.append(px(fpr[i], tpr[i - 1]))
            pts.append(px(fpr[i], tpr[i]))
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, label, (left + 15, height - bottom - 20 - 22 * k), font, 0.55, colour,
                    1, cv2.LINE_AA)
    for fpr, tpr, label in points:
        x, y = px(fpr, tpr)
        cv2.circle(img, (x, y), 6, black, 2, cv2.LINE_AA)
        cv2.putText(img, label, (x + 8, y + 20), font, 0.5, black, 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------------------------
# Descriptor extraction (the server's stages) with an on-disk cache
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting that changes a descriptor (part of the cache key)."""

    detector: str = "hog"
    upsample: int = 0
    chip_size: int = 150
    padding: float = 0.25
    jitter: int = 0
    flip: bool = False
    fallback_box: Tuple[float, float, float, float] = FALLBACK_BOX
    backend: str = "core"  # "core": the server's stages; "dlib": dlib called directly
    # "opencv": cv2.imdecode, as the server decodes frames; "dlib": dlib.load_rgb_image
    # (libjpeg as built into dlib, what dlib's own LFW figures were measured with)
    decoder: str = "opencv"
    # "opencv" (the default, as FaceConfig's and the server's face.embedder): dlib's network
    # file on OpenCV DNN, descriptors equal dlib's to ~1e-6; "dlib": dlib's own ResNet code
    embedder: str = "opencv"

    def align_key(self) -> str:
        """Key of the detection + landmarks (shared by every jitter/flip variant)."""
        fields = {"v": CACHE_VERSION, "backend": self.backend, "detector": self.detector,
                  "upsample": self.upsample, "chip": self.chip_size, "padding": self.padding,
                  "fallback": [round(v, 6) for v in self.fallback_box]}
        if self.decoder != "opencv":  # keeps the keys of earlier caches valid
            fields["decoder"] = self.decoder
        if self.effective_embedder != "dlib":
            fields["embedder"] = self.effective_embedder
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def effective_embedder(self) -> str:
        """The embedder that runs: ``--backend dlib`` always runs dlib's own code."""
        return "dlib" if self.backend == "dlib" else self.embedder

    def tag(self) -> str:
        """Short variant name for file names and tables. The OpenCV embedder is always named
        ("-opencv-embedder"), so result files written before it became the default keep
        their meaning."""
        parts = [self.detector] if self.backend == "core" else [self.backend, self.detector]
        if self.upsample:
            parts.append(f"up{self.upsample}")
        if self.jitter:
            parts.append(f"jitter{self.jitter}")
        if self.flip:
            parts.append("flip")
        if (self.chip_size, self.padding) != (150, 0.25):
            parts.append(f"chip{self.chip_size}-pad{self.padding:g}")
        if self.decoder != "opencv":
            parts.append(f"{self.decoder}-decoder")
        if self.effective_embedder != "dlib":
            parts.append(f"{self.effective_embedder}-embedder")
        if tuple(self.fallback_box) != FALLBACK_BOX:
            parts.append("fallback-" + "-".join(f"{v:.3f}" for v in self.fallback_box))
        return "-".join(parts)


def select_face(boxes: Sequence[Tuple[int, int, int, int]], width: int, height: int,
                fallback=FALLBACK_BOX) -> Tuple[int, Optional[Tuple[int, int, int, int]], bool]:
    """Pick the face to describe: ``(index, box, used_fallback)``.

    Several detections: the one whose centre is closest to the image centre. None: the
    ``fallback`` box (fractions of the image size), index -1.
    """
    if boxes:
        cx, cy = width / 2.0, height / 2.0
        dist = [((b[0] + b[2]) / 2.0 - cx) ** 2 + ((b[1] + b[3]) / 2.0 - cy) ** 2 for b in boxes]
        k = int(np.argmin(dist))
        return k, tuple(int(v) for v in boxes[k]), False
    fl, ft, fr, fb = fallback
    box = (int(round(fl * width)), int(round(ft * height)),
           int(round(fr * width)), int(round(fb * height)))
    return -1, box, True


class Stages:
    """The server's face stages (``facerec_server.core``), composed for evaluation.

    Detection -> the face closest to the centre or the fallback box -> 5-point landmarks ->
    chip -> descriptor(s). Stage objects are created lazily (once per worker process).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._detector = None
        self._aligner = None
        self._embedder = None

    # -- the stages ---------------------------------------------------------------------------
    def _load(self):
        if self._detector is not None:
            return
        factory = dlib_stages if self.settings.backend == "dlib" else core_stages
        self._detector, self._aligner, self._embedder = factory(self.settings)

    def detect(self, image_bgr) -> List[Tuple[int, int, int, int]]:
        self._load()
        return [tuple(int(v) for v in d.box) for d in self._detector.detect(image_bgr)]

    def landmarks(self, image_rgb, box) -> np.ndarray:
        self._load()
        return np.asarray(self._aligner.landmarks(image_rgb, box), dtype=np.float32)

    def chip(self, image_rgb, landmarks, box) -> np.ndarray:
        self._load()
        return self._aligner.chip(image_rgb, np.asarray(landmarks, np.float32), tuple(box))

    def embed(self, chips) -> np.ndarray:
        self._load()
        return np.asarray(self._embedder.embed_chips(chips), dtype=np.float32).reshape(-1, 128)


class _DlibHog:
    """Reference detector: dlib's HOG detector called directly (dlib's own LFW code path)."""

    def __init__(self, upsample: int):
        import dlib
        self._detector = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def detect(self, image_bgr):
        from facerec_server.core.types import Detection
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
        height, width = rgb.shape[:2]
        return [Detection((max(r.left(), 0), max(r.top(), 0), min(r.right() + 1, width),
                           min(r.bottom() + 1, height)), float(s))
                for r, s in zip(rects, scores)]


class _DlibAligner:
    """Reference alignment: dlib's 5-point predictor and ``dlib.get_face_chip``."""

    def __init__(self, predictor_path, chip_size: int, padding: float):
        import dlib
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self.chip_size, self.padding = chip_size, padding

    def landmarks(self, image_rgb, box):
        left, top, right, bottom = box
        shape = self._predictor(image_rgb, self._dlib.rectangle(left, top, right - 1, bottom - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def chip(self, image_rgb, landmarks, box=None):
        dlib = self._dlib
        xs, ys = landmarks[:, 0], landmarks[:, 1]
        rect = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        shape = dlib.full_object_detection(
            rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        return dlib.get_face_chip(image_rgb, shape, size=self.chip_size, padding=self.padding)


class _DlibEmbedder:
    """Reference embedding: ``dlib.face_recognition_model_v1.compute_face_descriptor``."""

    def __init__(self, model_path, jitter: int):
        import dlib
        self._model = dlib.face_recognition_model_v1(str(model_path))
        self.jitter = jitter

    def embed_chips(self, chips):
        return np.array([self._model.compute_face_descriptor(np.ascontiguousarray(c), self.jitter)
                         for c in chips], np.float32).reshape(-1, 128)


def dlib_stages(settings: Settings):
    """(detector, aligner, embedder) calling dlib directly, as dlib's published LFW evaluation
    does; ``--backend dlib`` uses them to tell a difference in the server's stages apart from
    a difference in the protocol."""
    import face_recognition_models as frm

    if settings.detector != "hog":
        raise ValueError("--backend dlib supports only the hog detector")
    return (_DlibHog(settings.upsample),
            _DlibAligner(frm.pose_predictor_five_point_model_location(), settings.chip_size,
                         settings.padding),
            _DlibEmbedder(frm.face_recognition_model_location(), settings.jitter))


def core_stages(settings: Settings):
    """(detector, aligner, embedder) of a ``facerec_server.core.pipeline.FacePipeline`` built
    from these settings: exactly the stage objects the server runs."""
    from facerec_server.core.pipeline import FaceConfig, FacePipeline

    config = FaceConfig(detector=settings.detector, upsample=settings.upsample,
                        chip_size=settings.chip_size, padding=settings.padding,
                        jitter=settings.jitter, embedder=settings.embedder).validate()
    pipeline = FacePipeline(config)
    pipeline.load()
    return pipeline.detector, pipeline.aligner, pipeline.embedder


def _atomic_save(path: pathlib.Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_npz(path: pathlib.Path) -> Optional[dict]:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        return None


class Describer:
    """One image -> one descriptor (plus box, fallback flag and stage timings), cached.

    Cache layout under ``cache_dir/<align_key>/<sha1[:2]>/``: ``<sha1>.align.npz`` (boxes,
    chosen box, landmarks, detection/alignment seconds) and ``<sha1>.j<jitter>.<o|m>.npz``
    (descriptor of the chip ``o`` or of its mirror image ``m``, and the embedding seconds).
    The timings stored with cached entries are those measured when they were computed, so the
    cost per face of a variant is reported even when its descriptors come from the cache.
    """

    def __init__(self, settings: Settings, cache_dir=None, stages=None):
        self.settings = settings
        self.cache_dir = pathlib.Path(cache_dir) if cache_dir else None
        self.stages = stages if stages is not None else Stages(settings)

    def _cache_path(self, sha: str, suffix: str) -> Optional[pathlib.Path]:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.settings.align_key() / sha[:2] / f"{sha}.{suffix}.npz"

    def describe_file(self, path) -> dict:
        data = pathlib.Path(path).read_bytes()
        sha = hashlib.sha1(data).hexdigest()
        image_bgr = image_rgb = None

        def decode():
            nonlocal image_bgr, image_rgb
            if image_bgr is None:
                if self.settings.decoder == "dlib":
                    import dlib
                    image_rgb = np.ascontiguousarray(dlib.load_rgb_image(str(path)))
                    image_bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
                    return
                import cv2
                image_bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if image_bgr is None:
                    raise ValueError(f"{path}: not a readable image")
                image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])

        computed = False
        align_path = self._cache_path(sha, "align")
        entry = _load_npz(align_path) if align_path else None
        if entry is None:
            decode()
            computed = True
            t0 = time.perf_counter()
            boxes = self.stages.detect(image_bgr)
            t1 = time.perf_counter()
            height, width = image_bgr.shape[:2]
            _, box, fallback = select_face(boxes, width, height, self.settings.fallback_box)
            landmarks = self.stages.landmarks(image_rgb, box)
            t2 = time.perf_counter()
            entry = {"boxes": np.array(boxes, np.int32).reshape(-1, 4),
                     "box": np.array(box, np.int32), "fallback": np.array(fallback),
                     "landmarks": landmarks, "shape": np.array(image_bgr.shape[:2], np.int32),
                     "detect_s": np.array(t1 - t0), "landmarks_s": np.array(t2 - t1)}
            if align_path:
                _atomic_save(align_path, **entry)

        descriptors, embed_s, chip_s = [], 0.0, 0.0
        chip = None
        for mirror in ((False, True) if self.settings.flip else (False,)):
            suffix = f"j{self.settings.jitter}.{'m' if mirror else 'o'}"
            desc_path = self._cache_path(sha, suffix)
            cached = _load_npz(desc_path) if desc_path else None
            if cached is None:
                computed = True
                if chip is None:
                    decode()
                    t0 = time.perf_counter()
                    chip = self.stages.chip(image_rgb, entry["landmarks"], entry["box"])
                    chip_s = time.perf_counter() - t0
                source = np.ascontiguousarray(chip[:, ::-1]) if mirror else chip
                t0 = time.perf_counter()
                vector = self.stages.embed([source])[0]
                cached = {"descriptor": vector.astype(np.float32),
                          "embed_s": np.array(time.perf_counter() - t0 + chip_s),
                          "chip": np.array(chip_s)}
                if desc_path:
                    _atomic_save(desc_path, descriptor=cached["descriptor"],
                                 embed_s=cached["embed_s"])
            descriptors.append(np.asarray(cached["descriptor"], np.float32))
            embed_s += float(cached["embed_s"])
        descriptor = np.mean(descriptors, axis=0) if len(descriptors) > 1 else descriptors[0]
        return {
            "sha1": sha,
            "descriptor": descriptor.astype(np.float32),
            "box": tuple(int(v) for v in entry["box"]),
            "boxes": [tuple(int(v) for v in b) for b in entry["boxes"]],
            "fallback": bool(entry["fallback"]),
            "shape": tuple(int(v) for v in entry["shape"]),
            "seconds": float(entry["detect_s"]) + float(entry["landmarks_s"]) + embed_s,
            "detect_s": float(entry["detect_s"]),
            "landmarks_s": float(entry["landmarks_s"]),
            "embed_s": embed_s,
            "computed": computed,
        }


# -- multiprocessing ---------------------------------------------------------------------------
_WORKER: Optional[Describer] = None


def _worker_init(settings: Settings, cache_dir, stages_factory) -> None:
    global _WORKER
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    stages = stages_factory(settings) if stages_factory else None
    _WORKER = Describer(settings, cache_dir, stages)


def _worker_describe(job):
    key, path = job
    return key, _WORKER.describe_file(path)


class Progress:
    """A dependency-free progress bar on stderr (one line per 5% when not a terminal)."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = max(total, 1), label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.done = 0
        self._last_step = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        frac = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / frac * (1 - frac) if frac > 0 else 0.0
        bar = "#" * int(frac * 30)
        text = (f"{self.label} [{bar:<30}] {self.done}/{self.total} {frac:6.1%} "
                f"{elapsed:6.0f}s elapsed, ~{eta:5.0f}s left")
        if self.tty:
            self.stream.write("\r" + text)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            step = int(frac * 20)
            if step == self._last_step and self.done < self.total:
                return
            self._last_step = step
            self.stream.write(text + "\n")
        self.stream.flush()


def describe_images(paths: Dict[Tuple[str, int], pathlib.Path], settings: Settings,
                    cache_dir=None, workers: int = 1, progress: bool = True,
                    stages_factory=None) -> Dict[Tuple[str, int], dict]:
    """Describe every image (in ``workers`` processes); returns key -> result of describe_file.

    ``stages_factory(settings)`` may replace the server's stages (tests, experiments); it must
    be picklable (a module-level function).
    """
    jobs = sorted(paths.items())
    results = {}
    bar = Progress(len(jobs), settings.tag()) if progress else None
    if workers <= 1:
        _worker_init(settings, cache_dir, stages_factory)
        for job in jobs:
            key, result = _worker_describe(job)
            results[key] = result
            if bar:
                bar.update()
        return results
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(workers, _worker_init, (settings, cache_dir, stages_factory)) as pool:
        for key, result in pool.imap_unordered(_worker_describe, jobs, chunksize=4):
            results[key] = result
            if bar:
                bar.update()
    return results


# --------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------

def evaluate(images_dir, pairs_file, settings: Settings, cache_dir=None, workers: int = 1,
             progress: bool = True, stages_factory=None) -> Tuple[dict, dict]:
    """Run the protocol. Returns ``(report, curves)``; ``report`` is JSON-serialisable."""
    started = time.time()
    pairs = parse_pairs(pairs_file)
    keys = referenced_images(pairs)
    paths = {key: image_path(images_dir, *key) for key in keys}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of the pairs are missing, "
                                f"e.g. {missing[0]}")
    t0 = time.monotonic()
    results = describe_images(paths, settings, cache_dir, workers, progress, stages_factory)
    describe_wall = time.monotonic() - t0

    d1 = np.stack([results[(p.name1, p.index1)]["descriptor"] for p in pairs])
    d2 = np.stack([results[(p.name2, p.index2)]["descriptor"] for p in pairs])
    distances = np.linalg.norm(d1.astype(np.float64) - d2.astype(np.float64), axis=1)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    protocol = k_fold(distances, same, folds)
    fpr, tpr, _ = roc_curve(distances, same)
    fixed = accuracy_at(distances, same, FIXED_THRESHOLD)
    fixed_per_fold = [accuracy_at(distances[folds == k], same[folds == k], FIXED_THRESHOLD)
                      for k in sorted(set(folds.tolist()))]
    best_all, best_all_acc = best_threshold(distances, same)

    fold_threshold = {f["fold"]: f["threshold"] for f in protocol["folds"]}
    errors = []
    for k, p in enumerate(pairs):
        threshold = fold_threshold[p.fold]
        if (distances[k] < threshold) != p.same:
            used_fallback = [f"{n}_{i:04d}" for n, i in ((p.name1, p.index1), (p.name2, p.index2))
                             if results[(n, i)]["fallback"]]
            errors.append({"pair": f"{p.name1} {p.index1} {p.name2} {p.index2}",
                           "same": p.same, "fold": p.fold, "distance": float(distances[k]),
                           "threshold": threshold, "fallback_images": used_fallback})

    values = list(results.values())
    fallback = sorted(f"{k[0]}_{k[1]:04d}" for k, r in results.items() if r["fallback"])
    detected = np.array([r["box"] for r in values if not r["fallback"]], np.float64)
    n_computed = sum(1 for r in values if r["computed"])
    same_fpr_at = float(np.mean(distances[~same] < FIXED_THRESHOLD)) if (~same).any() else None
    report = {
        "benchmark": "LFW verification, 10-fold (View 2)" if len(set(folds.tolist())) == 10
        else f"LFW-style verification, {len(set(folds.tolist()))}-fold",
        "variant": settings.tag(),
        "settings": dataclasses.asdict(settings),
        "images_dir": str(images_dir),
        "pairs_file": str(pairs_file),
        "pairs_sha256": hashlib.sha256(pathlib.Path(pairs_file).read_bytes()).hexdigest(),
        "n_pairs": int(len(pairs)),
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
        "n_images": len(keys),
        "accuracy_mean": protocol["mean"],
        "accuracy_std": protocol["std"],
        "accuracy_stderr": protocol["stderr"],
        "mean_threshold": protocol["mean_threshold"],
        "folds": protocol["folds"],
        "fixed_threshold": FIXED_THRESHOLD,
        "accuracy_at_fixed_threshold": fixed,
        "accuracy_at_fixed_threshold_per_fold": fixed_per_fold,
        "true_accept_rate_at_fixed_threshold":
            float(np.mean(distances[same] < FIXED_THRESHOLD)) if same.any() else None,
        "false_accept_rate_at_fixed_threshold": same_fpr_at,
        "best_threshold_all_pairs": best_all,
        "best_accuracy_all_pairs": best_all_acc,
        "auc": auc(fpr, tpr),
        "errors_count": len(errors),
        "errors_with_fallback_image": sum(1 for e in errors if e["fallback_images"]),
        "errors": errors,
        "fallback_count": len(fallback),
        "fallback_images": fallback,
        "multiple_faces_count": sum(1 for r in values if len(r["boxes"]) > 1),
        "median_detected_box": np.median(detected, axis=0).tolist() if len(detected) else None,
        "seconds_per_face": float(np.mean([r["seconds"] for r in values])),
        "seconds_per_face_stages": {
            "detect": float(np.mean([r["detect_s"] for r in values])),
            "landmarks": float(np.mean([r["landmarks_s"] for r in values])),
            "chip_and_embed": float(np.mean([r["embed_s"] for r in values])),
        },
        "descriptors_computed": n_computed,
        "descriptors_from_cache": len(values) - n_computed,
        "describe_wall_seconds": describe_wall,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": time.time() - started,
        "distances_same_mean": float(distances[same].mean()) if same.any() else None,
        "distances_different_mean": float(distances[~same].mean()) if (~same).any() else None,
    }
    curves = {"fpr": fpr, "tpr": tpr, "distances": distances, "same": same, "folds": folds}
    return report, curves
