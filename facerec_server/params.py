"""ROS parameters as plain data: :class:`ParamSpec`, and the server's table of them.

No rclpy here: every node (server, bridge, camera) describes its parameters as ParamSpecs and
declares them with :func:`facerec_server.ros_params.declare`; ``config/*.yaml`` repeat the
defaults and a test checks they agree. Validation returns a reason string (None when valid)
so a node's on-set-parameters callback can refuse a value and keep the old one.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from facerec_server.core import files
from facerec_server.core.images import DEFAULT_MAX_PIXELS

DETECTORS = ("hog", "hog_dlib", "cnn", "cnn_opencv")
EMBEDDERS = ("dlib", "opencv")
RELIABILITY = ("best_effort", "reliable")
DEFAULT_GALLERY = os.path.join("~", ".ros", "facerec", "gallery.db")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. ``kind`` is bool, int, double, string, string_array, int_array or
    double_array. ``low``/``high`` are inclusive and become the descriptor's range.
    ``integer_as_string``: a string parameter that also takes an integer, stored as its
    decimal string (the camera's ``source:=0``). An integer is always taken for a double
    (see ros_params)."""

    name: str
    default: Any
    kind: str
    description: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Tuple[str, ...] = ()
    read_only: bool = False
    check: Optional[Callable[[Any], Optional[str]]] = None
    integer_as_string: bool = False

    def validate(self, value: Any) -> Optional[str]:
        """Reason the value is refused, or None."""
        if (self.low is not None or self.high is not None) and isinstance(value, float) \
                and not math.isfinite(value):  # NaN compares false with any bound
            return f"{self.name} must be a finite number, got {value}"
        if self.low is not None and value < self.low:
            return f"{self.name} must be >= {self.low}, got {value}"
        if self.high is not None and value > self.high:
            return f"{self.name} must be <= {self.high}, got {value}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.check is not None:
            return self.check(value)
        return None


def kind_of(default: Any) -> str:
    """The ParamSpec kind of a default value (bool, int, double, string or a non-empty list
    of int, double or string)."""
    if isinstance(default, (list, tuple)):
        return {int: "int_array", float: "double_array", str: "string_array"}[type(default[0])]
    return {bool: "bool", int: "int", float: "double", str: "string"}[type(default)]


_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def topic_name_error(name: str) -> Optional[str]:
    """Why ``name`` is not a ROS 2 topic name rclpy accepts for a subscription (None when
    it is): ``part/part``, ``/part/part`` or ``~/part``, each part letters, digits and
    ``_`` not starting with a digit (the rules of rcl's topic name validation; ``{}``
    substitutions are not taken)."""
    body = name
    if body.startswith("~"):
        body = body[1:]
        if not body:
            return None
        if not body.startswith("/"):
            return "'~' must be followed by '/'"
    if body.startswith("/"):
        body = body[1:]
    if not body:
        return "it names no topic"
    for part in body.split("/"):
        if not part:
            return "it has an empty part ('//' or a trailing '/')"
        if not _NAME_PART.match(part):
            if part[0].isdigit():
                return f"the part {part!r} starts with a digit"
            return f"the part {part!r} holds characters other than letters, digits and _"
    return None


def _topics(value: Sequence[str]) -> Optional[str]:
    if not value:
        return "image_topics needs at least one topic"
    for topic in value:
        reason = topic_name_error(topic)
        if reason is not None:
            return (f"image_topics holds an invalid topic name {topic!r}: {reason}; use names "
                    "such as camera/image/compressed (letters, digits and _, each part "
                    "starting with a letter or _)")
    if len(set(value)) != len(value):
        return f"image_topics lists a topic twice: {list(value)}"
    return None


def _model_file(kind: str) -> Callable[[str], Optional[str]]:
    """Check of a ``face.models.<kind>`` path: empty, or a regular file of a sane size."""
    def check(value: str) -> Optional[str]:
        if not value:
            return None
        try:
            path = files.expand_user(value, f"{kind} model file")
            if not os.path.lexists(path):
                return (f"model file not found: {files.shown(value)} (the standard models "
                        "come with `pip install face_recognition_models`, or from "
                        "http://dlib.net/files/)")
            files.check_regular(path, f"{kind} model file", files.MAX_FACE_MODEL_FILE)
        except files.UnusableFile as error:
            return str(error)
        return None
    return check


SPECS: Tuple[ParamSpec, ...] = (
    # Inputs and outputs
    ParamSpec("image_topics", ["camera/image/compressed"], "string_array",
              "sensor_msgs/CompressedImage topics (JPEG or PNG) to process; relative names "
              "follow the node's namespace", read_only=True, check=_topics),
    ParamSpec("image_reliability", "reliable", "string",
              "QoS reliability of the image subscriptions (depth 1): reliable (facerec_camera's "
              "default: lost fragments are repaired and the camera sends the newest frame once "
              "the previous one is acknowledged); best_effort for sensor-data publishers that "
              "offer only best effort", choices=RELIABILITY, read_only=True),
    ParamSpec("max_frame_age", 1.0, "double",
              "frames whose header stamp is older than this many seconds, or this far in the "
              "future, are dropped (0 = off)", low=0.0, high=3600.0),
    ParamSpec("input_timeout", 3.0, "double",
              "an input with a matched publisher but no frame for this many seconds is reported "
              "(WARN in /diagnostics and the log; 0 = off)", low=0.0, high=3600.0),
    ParamSpec("publish_descriptors", False, "bool",
              "fill Face.descriptor (128 floats per face) in ~/faces"),
    ParamSpec("workers", 0, "int",
              "face worker processes (0 = one per input, at most the number of CPU cores)",
              low=0, high=64, read_only=True),
    ParamSpec("diagnostics_period", 1.0, "double",
              "seconds between /diagnostics messages", low=0.1, high=60.0, read_only=True),
    ParamSpec("annotated.jpeg_quality", 80, "int",
              "JPEG quality of ~/annotated/compressed", low=1, high=100),
    ParamSpec("max_image_pixels", DEFAULT_MAX_PIXELS, "int",
              "largest image decoded, in pixels (width x height; a 12 MP photo is 12000000): "
              "a frame, ~/enroll image or object model input declaring more is refused from its "
              "header, before any memory is spent on it", low=1, high=1_000_000_000),
    # What other ROS packages read (facerec_server.ecosystem_outputs)
    ParamSpec("outputs.hri", True, "bool",
              "publish ROS4HRI (REP-155) faces under the node's namespace: humans/faces/"
              "tracked, humans/faces/<id>/roi, /cropped, /aligned and humans/candidate_matches "
              "(face id = track id, so face.tracking.enabled; needs hri_msgs)"),
    ParamSpec("outputs.vision_msgs", True, "bool",
              "publish vision_msgs/Detection2DArray on ~/faces/detections and "
              "~/objects/detections (needs vision_msgs)"),
    ParamSpec("outputs.foxglove", True, "bool",
              "publish foxglove_msgs/ImageAnnotations (boxes and labels for Foxglove's Image "
              "panel) on ~/faces/annotations and ~/objects/annotations (needs foxglove_msgs)"),
    ParamSpec("outputs.hri_image_size", 128, "int",
              "width and height in pixels of humans/faces/<id>/cropped and /aligned",
              low=16, high=1024),
    ParamSpec("outputs.hri_max_faces", 64, "int",
              "most faces with humans/faces/<id>/ topics at a time (the longest unseen ends "
              "first)", low=1, high=1000),
    # Face recognition
    ParamSpec("face_recognition.enabled", True, "bool",
              "run face detection and recognition; false stops the computation and ~/faces"),
    ParamSpec("face.detector", "hog", "string",
              "face detector: hog (dlib's frontal HOG detector run by facerec_server.dlibhog: "
              "dlib's boxes and scores, 2 threads), hog_dlib (the same detector run by dlib), "
              "cnn (dlib MMOD CNN, slow on CPU, finds more poses), cnn_opencv (the MMOD "
              "network run by OpenCV DNN)",
              choices=DETECTORS),
    ParamSpec("face.embedder", "opencv", "string",
              "descriptor network implementation: opencv (dlib's ResNet file read by "
              "facerec_server.dlibnet and run by OpenCV DNN: descriptors within 1e-6 of dlib's, "
              "~8x faster) or dlib (dlib's own code)", choices=EMBEDDERS),
    ParamSpec("face.upsample", 0, "int",
              "times the image is upsampled before detection (finds smaller faces, ~4x cost each)",
              low=0, high=3),
    ParamSpec("face.detect_scale", 1.0, "double",
              "detect on a copy scaled by this factor (0 < s <= 1) for speed; boxes are mapped "
              "back to full resolution", low=0.05, high=1.0),
    ParamSpec("face.min_size", 0, "int",
              "ignore detected faces smaller than this many pixels (box width)", low=0, high=4096),
    ParamSpec("face.chip_size", 150, "int",
              "aligned face chip size in pixels (the descriptor network expects 150)",
              low=50, high=600),
    ParamSpec("face.padding", 0.25, "double",
              "padding around the aligned face chip, as a fraction of the face size",
              low=0.0, high=1.0),
    ParamSpec("face.jitter", 0, "int",
              "descriptors averaged over this many jittered copies (0 = off; cost grows linearly)",
              low=0, high=100),
    ParamSpec("face.threshold", 0.6, "double",
              "descriptor distance below which a face matches a known person", low=0.0, high=2.0),
    ParamSpec("face.models.shape_predictor", "", "string",
              "5-point landmark model (.dat); empty = from the face_recognition_models package",
              check=_model_file("shape_predictor")),
    ParamSpec("face.models.recognition", "", "string",
              "ResNet descriptor model (.dat); empty = from the face_recognition_models package",
              check=_model_file("recognition")),
    ParamSpec("face.models.cnn_detector", "", "string",
              "MMOD face detector (.dat); empty = from the face_recognition_models package",
              check=_model_file("cnn_detector")),
    # Face tracks
    ParamSpec("face.tracking.enabled", True, "bool",
              "follow faces across frames per input: Face.track_id/track_state, one name voted "
              "per track, the full-frame detector and the descriptor network on few frames "
              "(false: every frame from scratch, track_id 0)"),
    ParamSpec("face.tracking.detect_every", 10, "int",
              "run the full-frame detector at least every this many frames; in between only "
              "regions around the tracks are searched (1 = every frame)", low=1, high=1000),
    ParamSpec("face.tracking.describe_every", 10, "int",
              "re-describe a confirmed track at least every this many frames (tentative ones: "
              "every frame)", low=1, high=1000),
    ParamSpec("face.tracking.lost_timeout", 2.0, "double",
              "seconds (of frame stamps) a track survives unseen (occlusion, missed "
              "detections); a face found after that gets a new track id", low=0.0, high=3600.0),
    ParamSpec("face.tracking.confirm_votes", 3, "int",
              "descriptors a track needs before its name is confirmed (a full vote_window "
              "confirms its leader in any case)", low=1, high=100),
    ParamSpec("face.tracking.vote_window", 10, "int",
              "newest descriptors kept per track and voted over, weighted by face size and "
              "distance", low=1, high=100),
    ParamSpec("face.tracking.redescribe_growth", 0.2, "double",
              "re-describe a track when its face width changed by more than this fraction",
              low=0.0, high=10.0),
    ParamSpec("face.tracking.motion_trigger", 0.01, "double",
              "run the full-frame detector when more than this fraction of the image changed "
              "outside the tracked people (someone may be coming in; 0 = only every "
              "detect_every frames)", low=0.0, high=1.0),
    ParamSpec("face.tracking.max_tracks", 32, "int",
              "most tracks per input (the longest unseen ends first)", low=1, high=1000),
    # Gallery
    ParamSpec("gallery.path", DEFAULT_GALLERY, "string",
              "gallery of known people: an SQLite file (created on first use), or a "
              "postgresql://[user@]host[:port]/database URL to share one gallery between "
              "servers on several machines", read_only=True),
    ParamSpec("gallery.reference_file", "", "string",
              "JSON reference file of tagged photos imported at start-up (original format)",
              read_only=True),
    ParamSpec("gallery.min_face_size", 40, "int",
              "enrollment: smallest accepted face (box width in pixels)", low=0, high=4096),
    ParamSpec("gallery.allow_conflicts", False, "bool",
              "enrollment: accept a face that already matches a different person"),
    # People the robot has not been introduced to
    ParamSpec("anonymous.enabled", True, "bool",
              "group unknown faces of confirmed tracks into anonymous identities kept in the "
              "gallery (Face.anonymous_id, e.g. unknown-17); needs face.tracking.enabled"),
    ParamSpec("anonymous.threshold", 0.45, "double",
              "descriptor distance below which an unknown face belongs to an anonymous identity "
              "(chosen by the LFW clustering figure, bench/bench_clustering.py)",
              low=0.0, high=2.0),
    ParamSpec("anonymous.min_face_size", 60, "int",
              "only faces at least this wide (px) make or grow anonymous identities",
              low=0, high=4096),
    ParamSpec("anonymous.max_identities", 1000, "int",
              "most anonymous identities in the gallery (the least recently seen go first)",
              low=1, high=1000000),
    ParamSpec("anonymous.max_samples", 20, "int",
              "most samples per anonymous identity (the oldest go first)", low=1, high=1000),
    ParamSpec("anonymous.retention", 2592000.0, "double",
              "seconds an anonymous identity is kept after it was last seen (0 = forever; "
              "default 30 days)", low=0.0, high=1e10),
    ParamSpec("sightings.max_rows", 10000, "int",
              "most rows of the sightings table (person, input, first/last seen, visits; the "
              "least recently seen go first)", low=1, high=10000000),
    # Object recognition
    ParamSpec("object_recognition.enabled", True, "bool",
              "run the configured object models (none configured = nothing runs)"),
    ParamSpec("object_recognition.label_count", 5, "int",
              "at most this many object labels per frame", low=1, high=1000),
    ParamSpec("object_recognition.deterministic", False, "bool",
              "classifiers use a fixed crop set instead of random crops and flips"),
    ParamSpec("object_recognition.crops", 16, "int",
              "crops averaged per classification", low=1, high=256),
    ParamSpec("object_recognition.max_rate", 1.0, "double",
              "most object recognitions per second per input (they never delay face results)",
              low=0.01, high=100.0),
    ParamSpec("object_recognition.models", [""], "string_array",
              "names of the object models (blank entries ignored; [\"\"] = none); each is "
              "configured by object_recognition.<name>.* "
              "parameters (see config/server.yaml)", read_only=True),
)

BY_NAME: Dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}


def validate(name: str, value: Any) -> Optional[str]:
    """Reason ``value`` is refused for parameter ``name`` (None when accepted)."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None
    return spec.validate(value)


def defaults() -> Dict[str, Any]:
    return {spec.name: spec.default for spec in SPECS}
