"""People the robot has not been introduced to: anonymous identities and sightings.

A face track (:mod:`core.tracking`) whose name is confirmed as unknown, with faces of good
quality (at least ``min_face_size`` px wide), is given an *anonymous identity*: the track's
descriptors are matched against the anonymous identities kept in the gallery (their own
matcher, apart from the known people's, so nothing about a known person changes) and

* when at least half of them are within ``threshold`` of one identity (:func:`vote_identity`),
  the track is that identity, and its descriptors are added to it (the oldest go beyond
  ``max_samples``);
* otherwise a new identity ``unknown-<n>`` is created from them (the least recently seen
  identities go beyond ``max_identities``).

Identities live in the gallery (SQLite or PostgreSQL), so the same stranger gets the same id
later, after a restart and on every input of every server sharing the gallery. Faces carry it
in ``FaceResult.anonymous_id`` (``Face.anonymous_id``); their ``name`` stays empty.

Sightings: for every tracked face with a name or an anonymous identity, who was seen on which
input, first and last time (frame stamps, seconds) and how often (visits = tracks). They are
kept in memory and written to the gallery at most every ``FLUSH_PERIOD`` seconds in one
transaction, which also applies the bounds: identities not seen for ``retention`` seconds
are removed, and the sightings table keeps its ``max_sightings`` newest rows.

Thread-safe (one lock): the node's input threads call :meth:`Strangers.observe` per frame.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .checks import is_int, is_number
from .face_crops import chip_jpeg
from .gallery import GalleryError, Sample
from .match import confidence
from .tracking import TRACK_CONFIRMED, Track
from .types import Match

#: Seconds between two writes of the sightings gathered meanwhile (one transaction each).
FLUSH_PERIOD = 5.0
#: Seconds between two retention passes when nobody was seen meanwhile.
PRUNE_PERIOD = 3600.0
#: Descriptors of good quality a confirmed unknown track needs before it gets an identity.
MIN_DESCRIPTORS = 2
#: Ended tracks whose descriptors are kept for "this face is not X" by track id.
RECENT_TRACKS = 64
#: Live tracks remembered at most (their identity and the names already counted).
MAX_TRACKS = 4096


@dataclass(frozen=True)
class AnonymousConfig:
    """Settings of anonymous identities and sightings (the ``anonymous.*`` and
    ``sightings.*`` parameters).

    enabled: group unknown faces into anonymous identities (sightings are kept either way).
    threshold: distance below which a descriptor belongs to an anonymous identity (chosen by
        the LFW clustering figure of bench/bench_clustering.py).
    min_face_size: descriptors of faces narrower than this (px) are not used.
    max_identities: most anonymous identities (the least recently seen go first).
    max_samples: most samples per anonymous identity (the oldest go first).
    retention: seconds an anonymous identity is kept after it was last seen (0 = forever).
    max_sightings: most rows of the sightings table (the least recently seen go first).
    """

    enabled: bool = True
    threshold: float = 0.45
    min_face_size: int = 60
    max_identities: int = 1000
    max_samples: int = 20
    retention: float = 30 * 86400.0
    max_sightings: int = 10000

    def validate(self) -> "AnonymousConfig":
        problems = []
        for name, low, high in (("min_face_size", 0, 4096), ("max_identities", 1, 1000000),
                                ("max_samples", 1, 1000), ("max_sightings", 1, 10000000)):
            value = getattr(self, name)
            if not is_int(value) or not low <= value <= high:
                problems.append(f"{name} must be an integer within {low}..{high}, got {value!r}")
        for name, low, high in (("threshold", 0.0, 2.0), ("retention", 0.0, 1e10)):
            value = getattr(self, name)
            if not is_number(value) or not low <= value <= high:
                problems.append(f"{name} must be within {low:g}..{high:g}, got {value!r}")
        if problems:
            raise ValueError("invalid anonymous identity config: " + "; ".join(problems))
        return self

    def replace(self, **changes) -> "AnonymousConfig":
        return replace(self, **changes).validate()


def vote_identity(matches: Sequence[Match]) -> str:
    """The identity at least half of a track's descriptors match (each :class:`Match` is one
    descriptor's nearest identity within the threshold, name '' when none), or '' (a new
    identity). Among several with half each, the one with the smaller mean distance."""
    if not matches:
        return ""
    counts: Dict[str, List[float]] = {}
    for found in matches:
        if found.name:
            counts.setdefault(found.name, []).append(found.distance)
    best = [(len(d), -float(np.mean(d)), name) for name, d in counts.items()
            if 2 * len(d) >= len(matches)]
    return max(best)[2] if best else ""


@dataclass
class _Seen:
    """What is remembered about one live track."""

    identity: str = ""       # its anonymous identity ('' = none yet)
    added: int = 0           # Track.described when its descriptors were last stored
    counted: Tuple[str, ...] = ()  # names/identities already counted as a visit


class Strangers:
    """Anonymous identities for a node's tracks, and its sightings (module docstring).

    ``gallery``: core.gallery.Gallery; ``matcher``: the core.match.Matcher holding the
    anonymous identities (kept equal to the gallery by GalleryMatcherSync's ``anonymous``);
    ``after_write()``: called after this class changed the identities (reload the matchers
    at once, so the next frame of any input sees them); ``clock``: wall time for the bounds.
    """

    def __init__(self, gallery, matcher, config: Optional[AnonymousConfig] = None,
                 after_write: Optional[Callable[[], None]] = None, clock=time.time,
                 log: Optional[Callable[[str], None]] = None):
        self.gallery = gallery
        self.matcher = matcher
        self._config = (config or AnonymousConfig()).validate()
        self.after_write = after_write
        self._clock = clock
        self._log = log
        self._lock = threading.RLock()
        self._tracks: "collections.OrderedDict[int, _Seen]" = collections.OrderedDict()
        self._recent: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._visits: Dict[Tuple[str, str], List[float]] = {}  # (name, input): [first, last, n]
        self._flushed = clock()
        self._pruned = -math.inf
        self.created = 0  # identities this node created
        self.errors = 0  # gallery errors while writing

    @property
    def config(self) -> AnonymousConfig:
        return self._config

    @config.setter
    def config(self, config: AnonymousConfig) -> None:
        self._config = config.validate()

    # --- per frame ------------------------------------------------------------------------
    def observe(self, source: str, tracker, faces, stamp: float,
                image: Optional[Callable[[], Optional[np.ndarray]]] = None) -> None:
        """Fill ``anonymous_id`` of the unknown faces of confirmed tracks (creating or
        growing identities in the gallery) and count the sightings of one frame of input
        ``source`` (``faces`` from ``tracker.update``; ``stamp``: the frame's seconds).
        ``image()``: the frame (BGR, or None); the newest sample an identity gets from this
        frame carries the face's aligned chip cut from it, so that people can see whom it
        holds. It is called only when samples are written."""
        with self._lock:
            try:
                for face in faces:
                    track = tracker.track(face.track_id) if face.track_id else None
                    if track is None:
                        continue
                    seen = self._seen(track.id)
                    if face.name:
                        seen.identity = ""
                        self._visit(seen, face.name, source, stamp)
                    elif self._config.enabled:
                        identity = self._identity(
                            track, seen, stamp, (lambda f=face: chip_jpeg(
                                image(), f.box, f.landmarks)) if image else None)
                        if identity:
                            face.anonymous_id = identity
                            face.anonymous_confidence = self._confidence(face, track, identity)
                            self._visit(seen, identity, source, stamp)
                self._maybe_flush()
            except GalleryError as error:  # e.g. the database is unreachable: next frame
                self.errors += 1
                self._say(f"anonymous identities / sightings not written: {error}")

    def track_ended(self, track: Track) -> None:
        """A tracker's ``on_end``: forget the track, keep its descriptors a while."""
        with self._lock:
            self._tracks.pop(track.id, None)
            if track.descriptors:
                self._recent[track.id] = np.stack([d for d, _ in track.descriptors])
                while len(self._recent) > RECENT_TRACKS:
                    self._recent.popitem(last=False)

    def recent_descriptors(self, track_id: int) -> Optional[np.ndarray]:
        """Descriptors (K, 128) of a recently ended track, or None."""
        with self._lock:
            return self._recent.get(int(track_id))

    def _seen(self, track_id: int) -> _Seen:
        seen = self._tracks.get(track_id)
        if seen is None:
            seen = self._tracks[track_id] = _Seen()
            while len(self._tracks) > MAX_TRACKS:
                self._tracks.popitem(last=False)
        else:
            self._tracks.move_to_end(track_id)
        return seen

    def _visit(self, seen: _Seen, name: str, source: str, stamp: float) -> None:
        entry = self._visits.get((name, source))
        if entry is None:
            entry = self._visits[(name, source)] = [stamp, stamp, 0]
        entry[0], entry[1] = min(entry[0], stamp), max(entry[1], stamp)
        if name not in seen.counted:
            seen.counted += (name,)
            entry[2] += 1

    def _identity(self, track: Track, seen: _Seen, stamp: float, chip=None) -> str:
        """The track's anonymous identity (assigned when it qualifies), or ''. ``chip()``:
        the picture stored with the newest sample written (see :meth:`observe`)."""
        if seen.identity and seen.identity in set(self.matcher.names):
            if track.described > seen.added:  # new descriptors: the identity learns them
                try:
                    self._grow(track, seen, stamp, chip=chip)
                except ValueError:  # EnrollmentError: named or removed meanwhile
                    seen.identity = ""
                    return ""
            return seen.identity
        if track.state != TRACK_CONFIRMED or track.name:
            return ""
        good = self._good(track)
        if len(good) < MIN_DESCRIPTORS:
            return ""
        config = self._config
        leader = vote_identity(self.matcher.match(good, config.threshold))
        try:
            if leader:
                seen.identity = leader
                self._grow(track, seen, stamp, good, chip)
            else:
                seen.identity = self.gallery.add_anonymous(
                    _samples(good[-config.max_samples:], chip), seen_at=stamp,
                    max_identities=config.max_identities, source="track")
                seen.added = track.described
                self.created += 1
                self._say(f"new anonymous identity {seen.identity}")
        except ValueError:  # EnrollmentError: the identity went meanwhile (named, removed)
            seen.identity = ""
            return ""
        self._changed()
        return seen.identity

    def _grow(self, track: Track, seen: _Seen, stamp: float,
              good: Optional[np.ndarray] = None, chip=None) -> None:
        """Add the track's descriptors taken since ``seen.added`` to its identity."""
        new = track.described - seen.added
        good = self._good(track, max(0, new)) if good is None else good
        seen.added = track.described
        if len(good) == 0:
            return
        self.gallery.add_anonymous_samples(seen.identity, _samples(good, chip),
                                           self._config.max_samples,
                                           seen_at=stamp, source="track")
        self._changed()

    def _confidence(self, face, track: Track, identity: str) -> float:
        """match.confidence of the face (or its track's newest descriptor, on frames that
        follow the face without describing it) to its identity's samples."""
        descriptor = face.descriptor if face.descriptor is not None else (
            track.descriptors[-1][0] if track.descriptors else None)
        if descriptor is None:
            return 0.0
        return confidence(self.matcher.distance_to(descriptor, identity),
                          self._config.threshold)

    def _good(self, track: Track, newest: Optional[int] = None) -> np.ndarray:
        """The track's descriptors of faces at least min_face_size wide (the ``newest``)."""
        items = list(track.descriptors)
        if newest is not None:
            items = items[len(items) - min(newest, len(items)):] if newest else []
        good = [d for d, width in items if width >= self._config.min_face_size]
        return np.stack(good) if good else np.zeros((0, 128), np.float32)

    def _changed(self) -> None:
        if self.after_write is not None:
            self.after_write()

    # --- sightings ------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        now = self._clock()
        if now - self._flushed >= FLUSH_PERIOD:
            self.flush(now)

    def flush(self, now: Optional[float] = None) -> List[str]:
        """Write the sightings gathered so far and apply the bounds (one transaction);
        returns the anonymous identities removed by the retention time."""
        with self._lock:
            now = self._clock() if now is None else now
            self._flushed = now
            if not self._visits and now - self._pruned < PRUNE_PERIOD:
                return []
            visits, self._visits = self._visits, {}
            config = self._config
            removed = self.gallery.record_sightings(
                [(name, source, first, last, count)
                 for (name, source), (first, last, count) in visits.items()],
                max_rows=config.max_sightings, retention=config.retention, now=now)
            self._pruned = now
            if removed:
                self._say(f"anonymous identities not seen for {config.retention:g} s "
                          f"removed: {', '.join(removed)}")
                self._changed()
            return removed

    def _say(self, text: str) -> None:
        if self._log is not None:
            self._log(text)


def _samples(descriptors: np.ndarray, chip=None) -> list:
    """Gallery samples of ``descriptors``, the newest with the picture ``chip()`` gives."""
    samples = [Sample(descriptor=d) for d in descriptors]
    if samples and chip is not None:
        samples[-1] = Sample(descriptor=descriptors[-1], chip=chip())
    return samples
