"""Face tracks: each person in view keeps one id, and one name decided by a vote.

Per input (a camera topic, a bridge client) a :class:`FaceTracker` follows the faces across
frames. The work is split so that images are only touched where the models are (the face
worker processes; workers keep no per-input state) while the tracks live with the caller
(the node's thread for that input). Nothing here imports dlib or ROS:

1. ``plan = tracker.plan(stamp)`` (caller): what the next frame needs. The full-frame detector
   runs on the first frame (or after a gap longer than ``lost_timeout``), when a track was
   just lost (inside the image also on its 4th, 7th... missed frame), and every
   ``detect_every`` frames. Otherwise only a region around each track's predicted box is
   searched, scaled so the face is ~85 px (measured: ~2 ms per face against 40-125 ms of
   CPU for the frame; dlib's correlation tracker took ~4 ms and cannot tell that a face is
   gone; see bench/bench_tracking.py).
   The worker adds the frame's own detector where the image changed outside the tracked
   people (someone may be coming in; ``motion_trigger``) or on the whole frame when its
   size changed. The plan also says which tracks need a descriptor: tentative ones, those
   not described for ``describe_every`` frames, and all while enrollment captures samples.
2. ``frame = pipeline.follow(image, plan)`` (worker, ``FacePipeline.follow``): detection,
   association of the faces found with the tracks (:func:`associate`, :func:`resolve`:
   by overlap with the predicted boxes; by descriptor where two tracks compete or a lost one
   is found again), landmarks, and descriptors only where the plan or a change of the face
   (its width by more than ``redescribe_growth``, its pose) asks for one.
3. ``faces = tracker.update(frame, stamp, matcher)`` (caller): tracks are created, moved or
   missed; each track's name is decided by a vote (:meth:`Track.vote`) over its newest
   ``vote_window`` descriptors matched against the gallery (again whenever the gallery or the
   threshold changes), each weighted by face size and by how far its distance is from the
   threshold. A track is *tentative* until ``confirm_votes`` descriptors give its name at
   least 60 % of the weight (or the window is full), then *confirmed*; a confirmed name
   changes only when another name (or unknown) holds 60 % of the weight, so a single bad
   frame never flips it.

:meth:`FaceTracker.step` runs the three steps in one process (plain numpy frames). A track
ends when it has not been seen for ``lost_timeout`` seconds (of the frames' stamps); the
``on_end`` callback then receives the :class:`Track` (id, name, state, votes, descriptors):
a person who comes back later gets a new id. Ids come from a :class:`TrackIds` (one per
node, so unique across its inputs), never 0. :class:`TrackerSet` holds the trackers of a
node's inputs or clients (bounded). The public API for code built on tracks: ``FaceTracker``
(``tracks``, ``track(id)``, ``on_end``, ``reset``), ``Track`` (``id``, ``state``, ``name``,
``distance``, ``confidence``, ``votes``, ``descriptors``, ``box``, ``first_seen``,
``last_seen``), and ``FaceResult.track_id`` / ``track_state`` on every face.

Boxes are ``(left, top, right, bottom)`` pixels (see :mod:`core.types`); stamps are seconds.
A tracker expects one frame at a time (per input); its methods hold a lock, so a reset from
another thread (a client leaving) waits for a frame being updated. ``on_end`` runs under it.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
import threading
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .checks import is_int, is_number
from .types import Box, FaceResult, FrameResult

#: Track states, as ``facerec_msgs/Face.track_state``.
TRACK_NONE, TRACK_TENTATIVE, TRACK_CONFIRMED = 0, 1, 2
STATE_NAMES = {TRACK_NONE: "none", TRACK_TENTATIVE: "tentative", TRACK_CONFIRMED: "confirmed"}

#: A name is confirmed, or a confirmed name replaced, with this share of the vote's weight.
VOTE_SHARE = 0.6
#: Faces this wide (px) or wider count fully in the vote; narrower ones proportionally less.
FULL_WEIGHT_WIDTH = 80.0
#: A detection matches a track's predicted box geometrically from this IoU on.
MATCH_IOU = 0.25
#: A face whose geometry fits no track joins a lost one when its descriptor is this close
#: (as a fraction of the face threshold) to one of that track's descriptors.
REJOIN_FRACTION = 0.8
#: Region search: the predicted box grows by this fraction of its width on every side, and
#: the region is scaled so that the face is REGION_FACE_WIDTH px wide (HOG's window is 80).
REGION_MARGIN = 0.25
REGION_FACE_WIDTH = 85.0
#: A track lost inside the image (hidden, or a failed detection) gets the full-frame detector
#: on its 1st, 4th, 7th... missed frame; one that walked out of the image only on its 1st.
LOST_DETECT_EVERY = 3
#: A track's box is extrapolated from its velocity for at most this many seconds.
MAX_PREDICTION = 0.5
#: A track's velocity: the least-squares slope of its box centre over its observations of
#: the last VELOCITY_WINDOW seconds (the newest VELOCITY_POINTS), zero until they span
#: MIN_VELOCITY_SPAN seconds. A detector's boxes jitter by a few pixels from frame to frame;
#: divided by the few milliseconds between two frames that is hundreds of px/s, and the
#: predicted box lands far from the face (its region search then misses it).
VELOCITY_POINTS = 8
VELOCITY_WINDOW = 1.0
MIN_VELOCITY_SPAN = 0.15
#: Change of the (yaw, pitch) pose measure (see :func:`pose_of`) that asks for a descriptor.
POSE_CHANGE = 0.2
#: Motion check: width of the grey thumbnail, and the grey-level change that counts.
THUMBNAIL_WIDTH = 80
MOTION_LEVEL = 20


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking settings (plain values, e.g. from the ``face.tracking.*`` parameters).

    enabled: follow faces across frames (False: every frame from scratch, track_id 0).
    detect_every: run the full-frame detector at least every this many frames (1 = always).
    describe_every: re-describe a confirmed track at least every this many frames.
    lost_timeout: seconds a track survives unseen; after that it ends and a face found
        there later gets a new id.
    confirm_votes: descriptors a track needs before its name can be confirmed (a full
        ``vote_window`` confirms its leader in any case).
    vote_window: the newest descriptors kept per track and voted over.
    redescribe_growth: re-describe when the face's width changed by more than this fraction
        since its last descriptor.
    motion_trigger: run the full-frame detector when more than this fraction of the image
        changed outside the tracked people since the last frame (0 = never).
    max_tracks: most tracks per input (the longest unseen one ends first).
    """

    enabled: bool = True
    detect_every: int = 10
    describe_every: int = 10
    lost_timeout: float = 2.0
    confirm_votes: int = 3
    vote_window: int = 10
    redescribe_growth: float = 0.2
    motion_trigger: float = 0.01
    max_tracks: int = 32

    def validate(self) -> "TrackingConfig":
        """Return self, or raise ValueError naming every invalid field and why."""
        problems = []
        for name, low, high in (("detect_every", 1, 1000), ("describe_every", 1, 1000),
                                ("confirm_votes", 1, 100), ("vote_window", 1, 100),
                                ("max_tracks", 1, 1000)):
            value = getattr(self, name)
            if not is_int(value) or not low <= value <= high:
                problems.append(f"{name} must be an integer within {low}..{high}, "
                                f"got {value!r}")
        for name, low, high in (("lost_timeout", 0.0, 3600.0), ("redescribe_growth", 0.0, 10.0),
                                ("motion_trigger", 0.0, 1.0)):
            value = getattr(self, name)
            if not is_number(value) or not low <= value <= high:
                problems.append(f"{name} must be within {low:g}..{high:g}, got {value!r}")
        if not isinstance(self.enabled, (bool, np.bool_)):
            problems.append(f"enabled must be a bool, got {self.enabled!r}")
        if problems:
            raise ValueError("invalid tracking config: " + "; ".join(problems))
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "TrackingConfig":
        """A validated config from e.g. parameter values; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown tracking config keys {unknown}; known: {sorted(known)}")
        return cls(**values).validate()

    def replace(self, **changes) -> "TrackingConfig":
        return replace(self, **changes).validate()


# --- what crosses the process boundary (plain, picklable) -----------------------------------

@dataclass
class TrackHint:
    """What the worker needs to know about one live track."""

    track_id: int
    box: Box  # predicted for this frame (unclipped)
    missed: int  # frames in a row it was not found
    describe: bool  # the plan asks for a descriptor
    described_width: float  # face width at its last descriptor (0: none yet)
    described_pose: Optional[Tuple[float, float]]
    references: Optional[np.ndarray]  # (K, 128) float32: its recent descriptors
    last_box: Optional[Box] = None  # where it was last seen (unclipped)


@dataclass
class FramePlan:
    """What :meth:`FacePipeline.follow` does with one frame."""

    full_detection: bool
    reason: str  # why the full detector runs: start / lost / periodic ("" = regions)
    hints: List[TrackHint]
    previous_thumbnail: Optional[np.ndarray] = None
    motion_trigger: float = 0.0
    redescribe_growth: float = 0.2
    describe_all: bool = False
    previous_size: Optional[Tuple[int, int]] = None  # (height, width) of the last frame


@dataclass
class Observation:
    """One face found in a frame: ``track_id`` is the plan's track it belongs to (0: none,
    a new face). ``descriptor`` is None when the budget did not ask for one."""

    box: Box  # clipped to the image
    unclipped: Box
    detection_score: float
    landmarks: np.ndarray
    descriptor: Optional[np.ndarray]
    track_id: int = 0
    pose: Optional[Tuple[float, float]] = None


@dataclass
class TrackedFrame:
    """The worker's answer to a :class:`FramePlan`."""

    observations: List[Observation]
    full_detection: bool
    reason: str  # start / lost / periodic (the plan's), new view / motion, "" = regions
    thumbnail: Optional[np.ndarray]
    processing_time: float = 0.0
    image_size: Optional[Tuple[int, int]] = None  # (height, width)

    @property
    def described(self) -> int:
        return sum(1 for o in self.observations if o.descriptor is not None)


# --- geometry and association (pure) ----------------------------------------------------------

def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / float(union) if union > 0 else 0.0


def span(box: Box, other: Optional[Box] = None) -> Box:
    """The smallest box holding ``box`` and ``other`` (``box`` when ``other`` is None)."""
    if other is None:
        return tuple(box)
    return (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]),
            max(box[3], other[3]))


def region_of(box: Box, width: int, height: int,
              last: Optional[Box] = None) -> Tuple[Box, float]:
    """(crop box clipped to the image, scale) for searching a face predicted at ``box`` and
    last seen at ``last``: both boxes (the prediction is a guess: the face may have stopped,
    or its velocity be wrong) grown by REGION_MARGIN of the face on every side, scaled so
    the face is REGION_FACE_WIDTH px."""
    size = max(box[2] - box[0], box[3] - box[1], 1)
    left, top, right, bottom = span(box, last)
    margin = REGION_MARGIN * size
    crop = (int(max(0, math.floor(left - margin))), int(max(0, math.floor(top - margin))),
            int(min(width, math.ceil(right + margin))),
            int(min(height, math.ceil(bottom + margin))))
    return crop, REGION_FACE_WIDTH / float(size)


def pose_of(landmarks: np.ndarray) -> Optional[Tuple[float, float]]:
    """(yaw, pitch) measure of a face from dlib's 5 points: the nose's offset from the eyes'
    midpoint along and across the eye line, in inter-ocular distances (0, ~0.6 frontal)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        return None
    eye_a, eye_b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    axis = eye_a - eye_b
    distance = float(np.hypot(*axis))
    if distance < 1e-6:
        return None
    along = axis / distance
    across = np.array([-along[1], along[0]])
    offset = points[4] - (eye_a + eye_b) / 2.0
    return float(offset @ along / distance), float(offset @ across / distance)


def associate(hints: Sequence[TrackHint], boxes: Sequence[Box]
              ) -> Tuple[Dict[int, int], set]:
    """Geometric association: ``({detection index: hint index}, ambiguous detections)``.

    Pairs need IoU >= MATCH_IOU between a detection and a track's predicted box (or its last
    box, if that overlaps more) and are taken greedily by IoU. A detection is *ambiguous*
    when it overlaps two tracks that way, or its track overlaps two detections: appearance
    has to decide (see :func:`resolve`).
    """
    table = np.array([[_overlap(box, hint) for hint in hints] for box in boxes], dtype=float)
    table = table.reshape(len(boxes), len(hints))
    candidates = table >= MATCH_IOU
    ambiguous = set()
    for i in range(len(boxes)):
        if candidates[i].sum() > 1:
            ambiguous.add(i)
    for h in range(len(hints)):
        rows = np.flatnonzero(candidates[:, h])
        if len(rows) > 1:
            ambiguous.update(int(i) for i in rows)
    pairs: Dict[int, int] = {}
    used = set()
    order = sorted(((table[i, h], i, h) for i in range(len(boxes)) for h in range(len(hints))
                    if candidates[i, h]), reverse=True)
    for _, i, h in order:
        if i not in pairs and h not in used:
            pairs[i] = h
            used.add(h)
    return pairs, ambiguous


def _overlap(box: Box, hint: TrackHint) -> float:
    """IoU of a detection with a track's predicted box, or with its last box when that is
    larger (a wrong prediction must not cost the track its face)."""
    value = iou(box, hint.box)
    return max(value, iou(box, hint.last_box)) if hint.last_box is not None else value


def _appearance(descriptor: Optional[np.ndarray], hint: TrackHint) -> float:
    if descriptor is None or hint.references is None or len(hint.references) == 0:
        return math.inf
    diff = np.asarray(hint.references, dtype=np.float64) - np.asarray(descriptor, np.float64)
    return float(np.sqrt(np.einsum("ij,ij->i", diff, diff)).min())


def resolve(hints: Sequence[TrackHint], descriptors: Sequence[Optional[np.ndarray]],
            pairs: Mapping[int, int], ambiguous: Iterable[int], threshold: float
            ) -> Dict[int, int]:
    """Final ``{detection index: hint index}`` once the wanted descriptors exist.

    * An unambiguous pair with a track seen in the last frame stands, whatever the descriptor
      says (a bad frame must not split a track: its descriptor is just a weak vote).
    * An ambiguous detection, or one re-found after misses, keeps a track only when its
      descriptor is within ``threshold`` of that track's descriptors; ambiguous ones go to
      the track whose descriptors are nearest.
    * A detection left over joins a track left over (lost, or not found by its geometry)
      whose descriptors are within REJOIN_FRACTION * ``threshold``, nearest first.
    """
    ambiguous = {i for i in ambiguous if descriptors[i] is not None}  # else: geometry alone
    final: Dict[int, int] = {}
    for i, h in pairs.items():
        if i in ambiguous:
            continue
        if hints[h].missed == 0 or descriptors[i] is None or hints[h].references is None \
                or _appearance(descriptors[i], hints[h]) < threshold:
            final[i] = h
    taken = set(final.values())
    options = sorted((_appearance(descriptors[i], hints[h]), i, h)
                     for i in ambiguous for h in range(len(hints)) if h not in taken)
    for distance, i, h in options:
        if distance < threshold and i not in final and h not in taken:
            final[i] = h
            taken.add(h)
    options = sorted((_appearance(descriptors[i], hints[h]), i, h)
                     for i in range(len(descriptors)) if i not in final
                     for h in range(len(hints)) if h not in taken)
    for distance, i, h in options:
        if distance < REJOIN_FRACTION * threshold and i not in final and h not in taken:
            final[i] = h
            taken.add(h)
    return final


def wants_descriptor(plan: FramePlan, hint: Optional[TrackHint], width: float,
                     pose: Optional[Tuple[float, float]], ambiguous: bool) -> bool:
    """The descriptor budget for one detection (``hint`` None: a new face)."""
    if hint is None or ambiguous or plan.describe_all or hint.describe or hint.missed > 0:
        return True
    if hint.described_width <= 0 or hint.references is None:
        return True
    change = width / hint.described_width
    if abs(change - 1.0) > plan.redescribe_growth and \
            abs(1.0 / max(change, 1e-6) - 1.0) > plan.redescribe_growth:
        return True
    if pose is not None and hint.described_pose is not None:
        if math.hypot(pose[0] - hint.described_pose[0],
                      pose[1] - hint.described_pose[1]) > POSE_CHANGE:
            return True
    return False


def make_thumbnail(image_bgr: np.ndarray) -> np.ndarray:
    """The motion check's grey thumbnail of a BGR (or RGB) frame, THUMBNAIL_WIDTH px wide."""
    height, width = image_bgr.shape[:2]
    size = (THUMBNAIL_WIDTH, max(1, int(round(height * THUMBNAIL_WIDTH / float(width)))))
    small = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


def motion_outside(previous: Optional[np.ndarray], current: np.ndarray,
                   boxes: Sequence[Box], image_size: Tuple[int, int]
                   ) -> Tuple[float, List[Box]]:
    """Where the image changed outside the tracked people since the ``previous`` thumbnail:
    ``(fraction of the thumbnail that changed by MOTION_LEVEL grey levels or more, boxes of
    the changed areas in image pixels)``. Each face box is widened to where its person's head
    and body are (1.5 face widths to each side, one face above, three below) and left out.
    ``(0.0, [])`` without a comparable previous thumbnail."""
    if previous is None or previous.shape != current.shape:
        return 0.0, []
    height, width = image_size
    scale_x, scale_y = current.shape[1] / float(width), current.shape[0] / float(height)
    changed = np.abs(current.astype(np.int16) - previous.astype(np.int16)) >= MOTION_LEVEL
    for left, top, right, bottom in boxes:
        w, h = right - left, bottom - top
        x0, x1 = int((left - 1.5 * w) * scale_x), int(math.ceil((right + 1.5 * w) * scale_x))
        y0, y1 = int((top - h) * scale_y), int(math.ceil((bottom + 3 * h) * scale_y))
        changed[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
    fraction = float(changed.mean())
    if fraction == 0.0:
        return 0.0, []
    mask = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    regions = []
    for x, y, w, h, _ in stats[1:count]:
        regions.append((int(math.floor(x / scale_x)), int(math.floor(y / scale_y)),
                        int(math.ceil((x + w) / scale_x)), int(math.ceil((y + h) / scale_y))))
    return fraction, regions


def detection_areas(regions: Sequence[Box], width: int, height: int,
                    smallest: int = 100) -> Optional[List[Box]]:
    """The areas to run the full detector on for changed ``regions``: each grown to at least
    ``smallest`` px a side and clipped, overlapping ones merged; None when together they
    cover half the image or more (then the whole image is searched at once)."""
    areas: List[List[int]] = []
    for left, top, right, bottom in regions:
        grow_x, grow_y = max(0, smallest - (right - left)) / 2.0, \
            max(0, smallest - (bottom - top)) / 2.0
        box = [int(max(0, left - grow_x - 8)), int(max(0, top - grow_y - 8)),
               int(min(width, right + grow_x + 8)), int(min(height, bottom + grow_y + 8))]
        merged = True
        while merged:
            merged = False
            for other in areas:
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] \
                        and other[1] < box[3]:
                    areas.remove(other)
                    box = list(span(box, other))
                    merged = True
                    break
        areas.append(box)
    if sum((a[2] - a[0]) * (a[3] - a[1]) for a in areas) >= 0.5 * width * height:
        return None
    return [tuple(a) for a in areas]


# --- tracks (caller side) ----------------------------------------------------------------------

class TrackIds:
    """Thread-safe source of track ids: 1, 2, ... up to 2**32 - 1, then 1 again (uint32)."""

    LIMIT = 2 ** 32 - 1

    def __init__(self, start: int = 1):
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return (next(self._counter) - 1) % self.LIMIT + 1


@dataclass
class Track:
    """One face followed across frames. Read its fields; the tracker changes them.

    ``descriptors`` holds the newest ``vote_window`` descriptors (float32 (128,)) with the
    face width each was taken at; ``name`` / ``state`` / ``distance`` / ``confidence`` are the
    vote's outcome (``distance``: from the newest descriptor to the nearest gallery sample of
    ``name``, or to any sample when unknown; ``confidence`` as ``core.match.confidence``).
    """

    id: int
    box: Box
    first_seen: float
    last_seen: float
    state: int = TRACK_TENTATIVE
    name: str = ""
    distance: float = math.inf
    confidence: float = 0.0
    hits: int = 0
    missed: int = 0
    since_described: int = 0
    described_width: float = 0.0
    described_pose: Optional[Tuple[float, float]] = None
    descriptors: Deque[Tuple[np.ndarray, float]] = field(default_factory=collections.deque)
    velocity: Tuple[float, float] = (0.0, 0.0)
    trail: Deque[Tuple[float, float, float]] = field(  # (stamp, centre x, centre y)
        default_factory=lambda: collections.deque(maxlen=VELOCITY_POINTS))
    votes: Dict[str, float] = field(default_factory=dict)
    described: int = 0  # descriptors taken so far (the window keeps the newest)
    _voted: Tuple = ()

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    def predicted(self, stamp: float) -> Box:
        """The box extrapolated to ``stamp`` from the track's velocity (px per second)."""
        dt = min(max(stamp - self.last_seen, 0.0), MAX_PREDICTION)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        left, top, right, bottom = self.box
        return (int(round(left + dx)), int(round(top + dy)), int(round(right + dx)),
                int(round(bottom + dy)))

    def _observe(self, obs: Observation, stamp: float, window: int) -> None:
        self.trail.append((stamp,) + _centre(obs.unclipped))
        while stamp - self.trail[0][0] > VELOCITY_WINDOW:
            self.trail.popleft()
        self.velocity = _slope(self.trail)
        self.box = tuple(int(v) for v in obs.unclipped)
        self.last_seen = stamp
        self.hits += 1
        self.missed = 0
        if obs.descriptor is not None:
            width = float(obs.unclipped[2] - obs.unclipped[0])
            self.descriptors.append((np.asarray(obs.descriptor, np.float32).reshape(-1),
                                     width))
            while len(self.descriptors) > window:
                self.descriptors.popleft()
            self.described_width, self.described_pose = width, obs.pose
            self.described += 1
            self.since_described = 0
        else:
            self.since_described += 1

    def vote(self, matcher, threshold: float, config: TrackingConfig) -> None:
        """Decide name and state from the descriptors (re-matched when the gallery, the
        threshold or the descriptors changed since the last vote)."""
        if not self.descriptors:
            return
        key = (matcher.generation, threshold, self.described)
        if key == self._voted:
            return
        self._voted = key
        stack = np.stack([d for d, _ in self.descriptors])
        totals: Dict[str, float] = {}
        for (_, width), found in zip(self.descriptors, matcher.match(stack, threshold)):
            totals[found.name] = totals.get(found.name, 0.0) + vote_weight(
                found.name, found.distance, width, threshold)
        self.votes = totals
        leader = max(totals, key=lambda n: (totals[n], n == self.name))
        share = totals[leader] / max(sum(totals.values()), 1e-12)
        if self.state != TRACK_CONFIRMED:
            self.name = leader
            if (len(self.descriptors) >= config.confirm_votes and share >= VOTE_SHARE) \
                    or len(self.descriptors) >= config.vote_window:
                self.state = TRACK_CONFIRMED
        elif leader != self.name and share >= VOTE_SHARE:
            self.name = leader
        newest = self.descriptors[-1][0]
        if self.name:
            self.distance = matcher.distance_to(newest, self.name)
            self.confidence = _confidence(self.distance, threshold)
        else:
            nearest = matcher.match(newest, threshold)[0]
            self.distance, self.confidence = nearest.distance, 0.0

    def left_view(self, size: Optional[Tuple[int, int]]) -> bool:
        """Whether the last box touched the border of an image of ``size`` (height, width)
        while moving out of it: the person most likely walked out of view."""
        if size is None:
            return False
        height, width = size
        left, top, right, bottom = self.box
        margin = 0.1 * (right - left)
        vx, vy = self.velocity
        return ((left <= margin and vx < 0) or (right >= width - margin and vx > 0)
                or (top <= margin and vy < 0) or (bottom >= height - margin and vy > 0))

    def hint(self, stamp: float, describe: bool) -> TrackHint:
        references = (np.stack([d for d, _ in self.descriptors]) if self.descriptors else None)
        return TrackHint(self.id, self.predicted(stamp), self.missed, describe,
                         self.described_width, self.described_pose, references, self.box)


def vote_weight(name: str, distance: float, width: float, threshold: float) -> float:
    """Weight of one descriptor in its track's vote: face size (full from FULL_WEIGHT_WIDTH
    px) times certainty, which is 0.5 at the threshold and grows to 1 with the distance from
    it (``1 - d / 2t`` for a name, ``d / 2t`` capped at 1 for unknown)."""
    size = min(1.0, max(width, 1.0) / FULL_WEIGHT_WIDTH)
    if threshold <= 0:
        certainty = 1.0
    elif name:
        certainty = 1.0 - distance / (2.0 * threshold)
    else:
        certainty = min(1.0, distance / (2.0 * threshold))
    return size * max(certainty, 0.05)


def _confidence(distance: float, threshold: float) -> float:
    if threshold <= 0:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - distance / (2.0 * threshold))))


def _slope(trail: Sequence[Tuple[float, float, float]]) -> Tuple[float, float]:
    """Least-squares (x, y) px per second of (stamp, x, y) points; zero when they span less
    than MIN_VELOCITY_SPAN seconds."""
    if len(trail) < 2 or trail[-1][0] - trail[0][0] < MIN_VELOCITY_SPAN:
        return 0.0, 0.0
    points = np.asarray(trail, dtype=np.float64)
    t = points[:, 0] - points[:, 0].mean()
    scale = float(t @ t)
    return float(t @ points[:, 1]) / scale, float(t @ points[:, 2]) / scale


def _centre(box: Sequence[float]) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _locked(method):
    """Run a FaceTracker method under its lock (a client leaving may reset a tracker while
    its last frame is still being updated in another thread)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class FaceTracker:
    """The tracks of one input (see the module docstring for the three steps).

    ``ids``: shared :class:`TrackIds` (one per node, so ids are unique across inputs).
    ``on_end(track)``: called in the caller's thread when a track ends (lost for
    ``lost_timeout``, :meth:`reset`, clock going backwards, or room made by ``max_tracks``).
    """

    def __init__(self, config: Optional[TrackingConfig] = None, ids: Optional[TrackIds] = None,
                 on_end: Optional[Callable[[Track], None]] = None):
        self._config = (config or TrackingConfig()).validate()
        self._ids = ids or TrackIds()
        self.on_end = on_end
        self._tracks: Dict[int, Track] = {}
        self._thumbnail: Optional[np.ndarray] = None
        self._size: Optional[Tuple[int, int]] = None  # (height, width) of the last frame
        self._since_full = 0
        self._last_stamp: Optional[float] = None
        self._space = None
        self._lock = threading.RLock()

    @property
    def config(self) -> TrackingConfig:
        return self._config

    @config.setter
    def config(self, config: TrackingConfig) -> None:
        self._config = config.validate()

    @property
    def tracks(self) -> List[Track]:
        """The live tracks (seen within ``lost_timeout``), oldest first."""
        with self._lock:
            return list(self._tracks.values())

    def track(self, track_id: int) -> Optional[Track]:
        return self._tracks.get(track_id)

    @_locked
    def use_descriptors(self, space) -> None:
        """Say which descriptors the next frames get (any comparable value, e.g. embedder,
        model file, chip settings): when it differs from the last, the tracks end, as their
        stored descriptors could not be compared with new ones."""
        if space != self._space:
            if self._space is not None:
                self.reset()
            self._space = space

    # --- step 1 ---------------------------------------------------------------------------
    @_locked
    def plan(self, stamp: float, describe_all: bool = False) -> FramePlan:
        """What the frame stamped ``stamp`` (seconds) needs; ``describe_all`` asks for a
        descriptor of every face (e.g. while enrollment captures samples)."""
        if self._last_stamp is not None and stamp < self._last_stamp - 1e-6:
            self.reset()  # the clock went back: a replayed recording or a restarted camera
        self._expire(stamp)
        config = self._config
        tracks = list(self._tracks.values())
        if self._thumbnail is None or (self._last_stamp is not None
                                       and stamp - self._last_stamp > config.lost_timeout):
            reason = "start"  # nothing to compare with: the first frame, or a long gap
        elif any(t.missed == 1 or (t.missed % LOST_DETECT_EVERY == 1
                                   and not t.left_view(self._size)) for t in tracks):
            reason = "lost"
        elif self._since_full + 1 >= config.detect_every:
            reason = "periodic"
        else:
            reason = ""
        hints = [t.hint(stamp, describe_all or t.state != TRACK_CONFIRMED
                        or t.since_described + 1 >= config.describe_every) for t in tracks]
        return FramePlan(bool(reason), reason, hints, self._thumbnail, config.motion_trigger,
                         config.redescribe_growth, describe_all, self._size)

    # --- step 3 ---------------------------------------------------------------------------
    @_locked
    def update(self, frame: TrackedFrame, stamp: float, matcher,
               threshold: Optional[float] = None) -> List[FaceResult]:
        """Apply the worker's ``frame`` (for the plan made at ``stamp``); returns the faces
        of this frame with track id, state and voted name (``matcher``: core.match.Matcher,
        ``threshold`` overrides its own)."""
        threshold = matcher.threshold if threshold is None else float(threshold)
        config = self._config
        self._last_stamp = stamp if self._last_stamp is None else max(self._last_stamp, stamp)
        self._thumbnail, self._size = frame.thumbnail, frame.image_size
        self._since_full = 0 if frame.full_detection else self._since_full + 1
        seen: Dict[int, Observation] = {}
        untracked: List[Observation] = []
        for obs in frame.observations:
            track = self._tracks.get(obs.track_id) if obs.track_id else None
            if track is None or track.id in seen:
                track = self._new_track(obs, stamp, seen)
            if track is None:
                untracked.append(obs)
                continue
            track._observe(obs, stamp, config.vote_window)
            seen[track.id] = obs
        for track in self._tracks.values():
            if track.id not in seen:
                track.missed += 1
                track.since_described += 1
        faces = []
        for track_id, obs in seen.items():
            track = self._tracks[track_id]
            track.vote(matcher, threshold, config)
            faces.append(FaceResult(
                box=obs.box, detection_score=obs.detection_score, landmarks=obs.landmarks,
                descriptor=obs.descriptor, name=track.name, distance=track.distance,
                confidence=track.confidence, track_id=track.id, track_state=track.state))
        if untracked:
            plain = [FaceResult(box=o.box, detection_score=o.detection_score,
                                landmarks=o.landmarks, descriptor=o.descriptor)
                     for o in untracked]
            matcher.name_faces(plain, threshold)
            faces.extend(plain)
        return faces

    def _new_track(self, obs: Observation, stamp: float, seen) -> Optional[Track]:
        if len(self._tracks) >= self._config.max_tracks:
            idle = [t for t in self._tracks.values() if t.id not in seen]
            if not idle:
                return None
            self._end(min(idle, key=lambda t: t.last_seen))
        track = Track(self._ids.next(), tuple(int(v) for v in obs.unclipped), stamp, stamp)
        self._tracks[track.id] = track
        return track

    # --- both ----------------------------------------------------------------------------
    def step(self, image_bgr: np.ndarray, pipeline, stamp: float,
             describe_all: bool = False) -> FrameResult:
        """Plan, run ``pipeline.follow`` (a core FacePipeline) and update, in this process;
        faces are named by ``pipeline.matcher``."""
        plan = self.plan(stamp, describe_all)
        frame = pipeline.follow(image_bgr, plan)
        faces = self.update(frame, stamp, pipeline.matcher, pipeline.config.threshold)
        return FrameResult(faces=faces, processing_time=frame.processing_time,
                           full_detection=frame.full_detection, described=frame.described)

    @_locked
    def reset(self) -> None:
        """End every track (``on_end`` for each); the next frame starts from scratch."""
        for track in list(self._tracks.values()):
            self._end(track)
        self._thumbnail = None
        self._since_full = 0
        self._last_stamp = None

    def _expire(self, stamp: float) -> None:
        timeout = self._config.lost_timeout
        for track in list(self._tracks.values()):
            if stamp - track.last_seen > timeout:
                self._end(track)

    def _end(self, track: Track) -> None:
        self._tracks.pop(track.id, None)
        if self.on_end is not None:
            self.on_end(track)


class TrackerSet:
    """Trackers by input key (a topic, a bridge client name), bounded to ``capacity``: the
    least recently used one is reset and dropped to make room. Thread-safe to look up; each
    tracker is used by one thread at a time. ``on_end(key, track)`` when a track ends."""

    def __init__(self, config: Optional[TrackingConfig] = None, capacity: int = 64,
                 on_end: Optional[Callable[[str, Track], None]] = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._config = (config or TrackingConfig()).validate()
        self.capacity = int(capacity)
        self.ids = TrackIds()
        self.on_end = on_end
        self._trackers: "collections.OrderedDict[str, FaceTracker]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def config(self) -> TrackingConfig:
        return self._config

    @config.setter
    def config(self, config: TrackingConfig) -> None:
        self._config = config.validate()
        with self._lock:
            for tracker in self._trackers.values():
                tracker.config = self._config

    def get(self, key: str) -> FaceTracker:
        """The tracker of ``key`` (made on first use)."""
        evicted = None
        with self._lock:
            tracker = self._trackers.get(key)
            if tracker is None:
                tracker = FaceTracker(self._config, self.ids, self._ender(key))
                self._trackers[key] = tracker
                if len(self._trackers) > self.capacity:
                    _, evicted = self._trackers.popitem(last=False)
            else:
                self._trackers.move_to_end(key)
        if evicted is not None:
            evicted.reset()
        return tracker

    def drop(self, key: str) -> None:
        """Forget ``key``'s tracker, ending its tracks (a client left, an input went)."""
        with self._lock:
            tracker = self._trackers.pop(key, None)
        if tracker is not None:
            tracker.reset()

    def keys(self) -> List[str]:
        with self._lock:
            return list(self._trackers)

    def _ender(self, key: str):
        def on_end(track: Track) -> None:
            if self.on_end is not None:
                self.on_end(key, track)
        return on_end
