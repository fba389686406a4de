"""Enrollment: turn photos or live frames of one person into gallery samples (no ROS).

Used by the server's ``~/enroll`` service and by the ``facerec-enroll`` CLI.

Rules (each refusal leaves the gallery unchanged):

* The name must pass :func:`~facerec_server.core.gallery.validate_name` (1..64 characters,
  no control characters, no leading/trailing white space).
* Each image must hold **exactly one usable face**. A detection is *usable* when its
  detector score is at least ``min_score`` and its box is at least ``min_face_size`` pixels
  wide and high (in the input image). Detections below ``min_score`` are ignored (a weak
  false hit in the background does not spoil a portrait). Rejection reasons, counted per
  request: ``"no face"``, ``"several faces"`` (more than one usable face), ``"too small"``
  (faces found, none large enough), ``"near-duplicate"`` (descriptor closer than
  ``duplicate_distance`` to a sample already taken in this request), ``"decode error"``.
* Nothing is written when no image yields a sample, or when any sample matches a
  *different* person below ``threshold`` (unless ``force``); that check and the insert are
  one gallery transaction.
* Otherwise every accepted sample is written in one transaction and the result is a
  success, even if some images were rejected (the message lists why).

Images are BGR uint8 arrays, or encoded JPEG/PNG bytes (decoded with
:func:`~facerec_server.core.images.decode_image`). The face pipeline is any object with
``describe(image_bgr) -> list`` of face samples exposing ``detection.box``
(left, top, right, bottom), ``detection.score``, ``descriptor`` (128,) float32 and
optionally ``chip`` (aligned RGB uint8 face chip), as ``core.pipeline.FacePipeline`` does.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .gallery import (DEFAULT_THRESHOLD, ConflictError, EnrollmentError, Gallery, Sample,
                      validate_name)
from .images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image

NO_FACE = "no face"
SEVERAL_FACES = "several faces"
TOO_SMALL = "too small"
NEAR_DUPLICATE = "near-duplicate"
DECODE_ERROR = "decode error"
#: Every rejection reason, in report order.
REASONS = (NO_FACE, SEVERAL_FACES, TOO_SMALL, NEAR_DUPLICATE, DECODE_ERROR)
#: :meth:`CaptureSession.verdict` for a frame offered after the session ended.
SESSION_DONE = "capture over"

DEFAULT_CAPTURE_SAMPLES = 5
DEFAULT_CAPTURE_TIMEOUT = 10.0

#: ``progress(done, total, label, reason_or_None)`` called after each image.
Progress = Callable[[int, int, str, Optional[str]], None]


@dataclass
class EnrollConfig:
    """Enrollment tuning.

    ``min_face_size``: smallest usable face box side in input pixels. Descriptors of
        smaller faces are unreliable; 40 px is what HOG finds at upsample 1.
    ``min_score``: detections scoring lower are ignored (HOG scores: real frontal faces are
        usually > 1, false hits ~0-0.3).
    ``duplicate_distance``: a sample closer than this to one already taken in the same
        request is a near-duplicate (same frame twice adds nothing; dlib's mirror image of
        a face is ~0.19 away, a 0.6x rescale ~0.15).
    ``threshold``: recognition threshold; a new sample closer than this to a *different*
        person is a conflict.
    ``store_chips``/``chip_quality``: keep the aligned chip as JPEG with each sample.
    ``max_images``: most images accepted in one request.
    ``max_samples``/``max_timeout``: bounds for live capture sessions.
    ``max_pixels``: encoded images larger than this are refused from their header, before
        they are decoded (the server's ``max_image_pixels``).
    """

    min_face_size: int = 40
    min_score: float = 0.5
    duplicate_distance: float = 0.06
    threshold: float = DEFAULT_THRESHOLD
    store_chips: bool = True
    chip_quality: int = 90
    max_images: int = 200
    max_samples: int = 50
    max_timeout: float = 120.0
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class EnrollResult:
    """Outcome of one enrollment request.

    ``rejected`` counts rejected images/frames per reason (only reasons that occurred).
    ``per_image`` holds, for image requests, ``None`` (accepted) or the reason per image.
    ``conflict`` names the other person when a conflict refused the request.
    """

    success: bool
    message: str
    samples_added: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)
    name: str = ""
    per_image: List[Optional[str]] = field(default_factory=list)
    conflict: str = ""


def _face_fields(face):
    """(box, score, descriptor, chip) of one pipeline face sample."""
    detection = getattr(face, "detection", None)
    box = getattr(detection, "box", None) if detection is not None else None
    score = getattr(detection, "score", None) if detection is not None else None
    if box is None:
        box = getattr(face, "box")
    if score is None:
        score = getattr(face, "score", getattr(face, "detection_score", 0.0))
    return box, float(score), getattr(face, "descriptor", None), getattr(face, "chip", None)


def _as_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A BGR uint8 (h, w, 3) array from an array or JPEG/PNG bytes (at most ``max_pixels``);
    ImageDecodeError saying why when unusable."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 \
                and image.shape[0] > 0 and image.shape[1] > 0:
            return image
        raise ImageDecodeError(f"not a BGR uint8 image (an array of shape {image.shape}, "
                               f"{image.dtype})")
    return decode_image(image, max_pixels=max_pixels)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _reasons_text(rejected: Dict[str, int], decode_detail: str = "") -> str:
    """"1 no face, 2 decode error" (with the first decode error's reason after it)."""
    text = ", ".join(f"{rejected[r]} {r}" for r in REASONS if rejected.get(r))
    return f"{text}: {decode_detail}" if decode_detail and rejected.get(DECODE_ERROR) else text


class _Picker:
    """Applies the per-image rules and remembers what this request accepted."""

    def __init__(self, config: EnrollConfig):
        self.config = config
        self.accepted: List[Sample] = []
        self.labels: List[str] = []  # what each accepted sample came from, for messages
        self.rejected: Dict[str, int] = {}
        self.decode_detail = ""  # why the first undecodable image was refused

    def consider(self, faces: Sequence, source: Optional[str] = None,
                 label: str = "") -> Optional[str]:
        """Accept one image's faces; return None when a sample was taken, else the reason."""
        reason, sample = self._pick(faces)
        if sample is not None:
            sample.source = source
            self.accepted.append(sample)
            self.labels.append(label or f"sample {len(self.accepted)}")
            return None
        self.reject(reason)
        return reason

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _pick(self, faces: Sequence) -> Tuple[Optional[str], Optional[Sample]]:
        config = self.config
        found = [_face_fields(face) for face in faces]
        found = [f for f in found if f[1] >= config.min_score]
        if not found:
            return NO_FACE, None
        usable = [f for f in found
                  if min(f[0][2] - f[0][0], f[0][3] - f[0][1]) >= config.min_face_size]
        if not usable:
            return TOO_SMALL, None
        if len(usable) > 1:
            return SEVERAL_FACES, None
        _, score, descriptor, chip = usable[0]
        if descriptor is None:
            return NO_FACE, None
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(-1)
        for taken in self.accepted:
            if np.linalg.norm(taken.descriptor - descriptor) < config.duplicate_distance:
                return NEAR_DUPLICATE, None
        return None, Sample(descriptor=descriptor, score=score, chip=self._chip_jpeg(chip))

    def _chip_jpeg(self, chip) -> Optional[bytes]:
        if not self.config.store_chips or chip is None:
            return None
        chip = np.asarray(chip)
        if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3 or chip.size == 0:
            return None
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(chip, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(self.config.chip_quality)])
        return buf.tobytes() if ok else None


class CaptureSession:
    """Collects live samples of one person from frames offered by the caller.

    Create through :meth:`Enroller.capture`; feed frames with :meth:`offer` (a BGR image;
    the session runs the pipeline) or :meth:`offer_faces` (faces the caller's pipeline
    already described for that frame). The session is *done* when it holds ``samples``
    good samples, when ``timeout`` seconds passed since creation, or after :meth:`cancel`;
    offers are then refused. Thread-safe: frames may come from a worker thread while a
    service thread waits in :meth:`wait`. Nothing is written until
    :meth:`Enroller.finish` is called.
    """

    def __init__(self, name: str, samples: int = DEFAULT_CAPTURE_SAMPLES,
                 timeout: float = DEFAULT_CAPTURE_TIMEOUT, describe: Optional[Callable] = None,
                 config: Optional[EnrollConfig] = None, source: str = "", force: bool = False,
                 clock=time.monotonic):
        self.name = validate_name(name)
        self.config = config or EnrollConfig()
        if int(samples) < 1 or int(samples) > self.config.max_samples:
            raise EnrollmentError(
                f"samples must be within 1..{self.config.max_samples}, got {samples}")
        if not 0 < float(timeout) <= self.config.max_timeout:
            raise EnrollmentError(
                f"timeout must be within (0, {self.config.max_timeout}] s, got {timeout}")
        self.samples = int(samples)
        self.timeout = float(timeout)
        self.source = source
        self.force = force
        self.frames = 0
        self._describe = describe
        self._clock = clock
        self._deadline = clock() + self.timeout
        self._picker = _Picker(self.config)
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._cancelled = False

    @property
    def accepted(self) -> List[Sample]:
        return list(self._picker.accepted)

    @property
    def rejected(self) -> Dict[str, int]:
        return dict(self._picker.rejected)

    @property
    def timed_out(self) -> bool:
        return len(self._picker.accepted) < self.samples and self._clock() >= self._deadline

    @property
    def done(self) -> bool:
        if self._finished.is_set():
            return True
        if (self._cancelled or len(self._picker.accepted) >= self.samples
                or self._clock() >= self._deadline):
            self._finished.set()
            return True
        return False

    def remaining(self) -> float:
        """Seconds left before the timeout (0 when done)."""
        return 0.0 if self.done else max(0.0, self._deadline - self._clock())

    def offer(self, image_bgr) -> bool:
        """Describe one frame and keep its face if usable; return True when accepted."""
        return self.verdict(image_bgr) is None

    def verdict(self, image_bgr) -> Optional[str]:
        """As :meth:`offer`, saying why: None when the frame's face was taken, else one of
        :data:`REASONS`, or :data:`SESSION_DONE` when the session no longer takes frames.
        ``image_bgr``: a BGR array or JPEG/PNG bytes."""
        if self.done:
            return SESSION_DONE
        if self._describe is None:
            raise EnrollmentError("this capture session has no pipeline: use offer_faces()")
        try:
            image = _as_image(image_bgr, self.config.max_pixels)
        except ImageDecodeError:
            image = None
        if image is None:
            with self._lock:
                self.frames += 1
                self._picker.reject(DECODE_ERROR)
            return DECODE_ERROR
        return self._consider_faces(self._describe(image))

    def offer_faces(self, faces: Sequence) -> bool:
        """Consider the faces described in one frame; return True when a sample was taken."""
        return self._consider_faces(faces) is None

    def _consider_faces(self, faces: Sequence) -> Optional[str]:
        with self._lock:
            if self.done:
                return SESSION_DONE
            self.frames += 1
            reason = self._picker.consider(faces, label=f"frame {self.frames}")
            self.done  # sets the finished event when enough samples were taken
            return reason

    def cancel(self) -> None:
        """Stop accepting frames (e.g. the service call was abandoned)."""
        self._cancelled = True
        self._finished.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until done or ``timeout`` (default: the session's remaining time) passes.

        Returns ``done``. Frames must be offered from another thread meanwhile.
        """
        limit = self.remaining() if timeout is None else timeout
        end = self._clock() + limit
        while not self.done:
            left = end - self._clock()
            if left <= 0:
                break
            self._finished.wait(min(left, 0.05))
        return self.done


class Enroller:
    """Enrolls people into a :class:`~facerec_server.core.gallery.Gallery`.

    ``pipeline``: object with ``describe(image_bgr) -> list of face samples`` (see module
    docstring). Thread-safe as far as the gallery and pipeline are.
    """

    def __init__(self, gallery: Gallery, pipeline, config: Optional[EnrollConfig] = None):
        self.gallery = gallery
        self.pipeline = pipeline
        self.config = config or EnrollConfig()

    # --- single images ---------------------------------------------------------------------
    def sample_from_image(self, image) -> Tuple[Optional[Sample], Optional[str]]:
        """``(sample, None)`` for an image with exactly one usable face, else ``(None, reason)``.

        ``image``: BGR uint8 array or JPEG/PNG bytes.
        """
        picker = _Picker(self.config)
        reason = self._consider(picker, image, None)
        return (picker.accepted[0] if reason is None else None), reason

    def _consider(self, picker: _Picker, image, source, label: str = "") -> Optional[str]:
        """None when the image gave a sample, else the reason (a decode error with why)."""
        try:
            image = _as_image(image, self.config.max_pixels)
        except ImageDecodeError as error:
            picker.reject(DECODE_ERROR)
            picker.decode_detail = picker.decode_detail or str(error)
            return f"{DECODE_ERROR}: {error}"
        return picker.consider(self.pipeline.describe(image), source, label)

    def enroll_images(self, name: str, images: Sequence, source: str = "",
                      force: bool = False, sources: Optional[Sequence[str]] = None,
                      progress: Optional[Progress] = None,
                      labels: Optional[Sequence[str]] = None) -> EnrollResult:
        """Enroll ``name`` from ``images`` (BGR arrays or JPEG/PNG bytes), one transaction.

        ``source`` is stored with every sample unless ``sources`` gives one per image.
        ``labels`` name the images in ``progress`` calls (default: their 1-based index).
        Refusals come back as ``success=False`` results; :class:`GalleryError` (file
        problems) propagates.
        """
        try:
            validate_name(name)
        except EnrollmentError as error:
            return EnrollResult(False, f"refused: {error}; nothing written", name=str(name))
        images = list(images)
        if not images:
            return EnrollResult(False, f"refused: no images given for {name!r}; "
                                "nothing written", name=name)
        if len(images) > self.config.max_images:
            return EnrollResult(False, f"refused: {len(images)} images, at most "
                                f"{self.config.max_images} per request; nothing written",
                                name=name)
        picker = _Picker(self.config)
        per_image: List[Optional[str]] = []
        for index, image in enumerate(images):
            own = sources[index] if sources is not None else None
            label = labels[index] if labels is not None else f"image {index + 1}"
            reason = self._consider(picker, image, own, label)
            per_image.append(reason)
            if progress is not None:
                progress(index + 1, len(images), label, reason)
        result = self._commit(name, picker, source, force, _plural(len(images), "image"))
        result.per_image = per_image
        return result

    def _commit(self, name: str, picker: _Picker, source: str, force: bool,
                what: str) -> EnrollResult:
        rejected = dict(picker.rejected)
        why = _reasons_text(rejected, picker.decode_detail)
        if not picker.accepted:
            return EnrollResult(
                False, f"refused: no usable face for {name!r} in {what}"
                f"{f' ({why})' if why else ''}; nothing written", rejected=rejected, name=name)
        try:
            added = self.gallery.add_samples(name, picker.accepted, source=source, force=force,
                                             threshold=self.config.threshold)
        except ConflictError as error:
            return EnrollResult(
                False, f"refused: the face in {picker.labels[error.index]} looks like "
                f"{error.other!r} (distance {error.distance:.3f} < threshold "
                f"{self.config.threshold:.2f}); nothing written. Use force to enroll it as "
                f"{name!r} anyway", rejected=rejected, name=name, conflict=error.other)
        except EnrollmentError as error:
            return EnrollResult(False, f"refused: {error}; nothing written",
                                rejected=rejected, name=name)
        message = f"enrolled {_plural(added, 'sample')} for {name!r} from {what}"
        if why:
            message += f"; rejected: {why}"
        return EnrollResult(True, message, added, rejected, name)

    # --- live capture ----------------------------------------------------------------------
    def capture(self, name: str, samples: int = 0, timeout: float = 0.0, source: str = "",
                force: bool = False) -> CaptureSession:
        """Start a live capture session (0 samples/timeout = defaults 5 and 10 s).

        Raises :class:`EnrollmentError` for an invalid name or out-of-range bounds.
        """
        return CaptureSession(name, samples=samples or DEFAULT_CAPTURE_SAMPLES,
                              timeout=timeout or DEFAULT_CAPTURE_TIMEOUT,
                              describe=self.pipeline.describe if self.pipeline else None,
                              config=self.config, source=source, force=force)

    def finish(self, session: CaptureSession) -> EnrollResult:
        """Stop ``session`` and write what it accepted (one transaction)."""
        session.cancel()
        with session._lock:
            what = _plural(session.frames, "live frame")
            if len(session._picker.accepted) < session.samples:
                what += f" ({len(session._picker.accepted)} of {session.samples} wanted)"
            return self._commit(session.name, session._picker, session.source, session.force,
                                what)


def build_pipeline(upsample: int = 1, **options):
    """The standard face pipeline (``core.pipeline.FacePipeline``) with ``upsample``."""
    from .pipeline import FaceConfig, FacePipeline
    return FacePipeline(FaceConfig(upsample=upsample, **options))
