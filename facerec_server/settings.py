"""A consistent, immutable snapshot of the server's parameter values.

The node swaps the whole snapshot when parameters change, so a worker reads one coherent set
of settings for a whole frame (a change takes effect from the next frame).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple

from facerec_server import params
from facerec_server.core.anonymous import AnonymousConfig
from facerec_server.core.enroll import EnrollConfig
from facerec_server.core.models import (MODEL_FILES, ModelPaths, check_model_file,
                                        kinds_used)
from facerec_server.core.pipeline import FaceConfig
from facerec_server.core.tracking import TrackingConfig

_MODEL_PARAMS = {
    "shape_predictor": "face.models.shape_predictor",
    "recognition": "face.models.recognition",
    "cnn_detector": "face.models.cnn_detector",
}


@dataclass(frozen=True)
class OutputsConfig:
    """Which ecosystem outputs a node publishes (``outputs.*``; see ecosystem_outputs)."""

    hri: bool = True
    vision_msgs: bool = True
    foxglove: bool = True
    hri_image_size: int = 128
    hri_max_faces: int = 64


@dataclass(frozen=True)
class ServerSettings:
    """Typed view of the parameters in ``facerec_server.params``."""

    image_topics: Tuple[str, ...]
    image_reliability: str
    max_frame_age: float
    input_timeout: float
    publish_descriptors: bool
    workers: int
    diagnostics_period: float
    annotated_quality: int
    max_pixels: int
    face_enabled: bool
    face: FaceConfig
    tracking: TrackingConfig
    model_overrides: Tuple[Tuple[str, str], ...]
    gallery_path: str
    reference_file: str
    gallery_min_face_size: int
    allow_conflicts: bool
    anonymous: AnonymousConfig
    objects_enabled: bool
    label_count: int
    deterministic: bool
    crops: int
    objects_max_rate: float
    outputs: OutputsConfig = OutputsConfig()

    @classmethod
    def from_values(cls, v: Dict[str, Any]) -> "ServerSettings":
        """Build from {parameter name: value}; raises ValueError for an invalid combination."""
        face = FaceConfig(
            detector=v["face.detector"], embedder=v["face.embedder"],
            upsample=int(v["face.upsample"]), detect_scale=float(v["face.detect_scale"]),
            chip_size=int(v["face.chip_size"]), padding=float(v["face.padding"]),
            jitter=int(v["face.jitter"]), threshold=float(v["face.threshold"]),
            min_face_size=int(v["face.min_size"])).validate()
        tracking = TrackingConfig(
            enabled=bool(v["face.tracking.enabled"]),
            detect_every=int(v["face.tracking.detect_every"]),
            describe_every=int(v["face.tracking.describe_every"]),
            lost_timeout=float(v["face.tracking.lost_timeout"]),
            confirm_votes=int(v["face.tracking.confirm_votes"]),
            vote_window=int(v["face.tracking.vote_window"]),
            redescribe_growth=float(v["face.tracking.redescribe_growth"]),
            motion_trigger=float(v["face.tracking.motion_trigger"]),
            max_tracks=int(v["face.tracking.max_tracks"])).validate()
        anonymous = AnonymousConfig(
            enabled=bool(v["anonymous.enabled"]), threshold=float(v["anonymous.threshold"]),
            min_face_size=int(v["anonymous.min_face_size"]),
            max_identities=int(v["anonymous.max_identities"]),
            max_samples=int(v["anonymous.max_samples"]),
            retention=float(v["anonymous.retention"]),
            max_sightings=int(v["sightings.max_rows"])).validate()
        overrides = tuple((kind, str(v[name])) for kind, name in _MODEL_PARAMS.items()
                          if v.get(name))
        return cls(
            image_topics=tuple(v["image_topics"]), image_reliability=v["image_reliability"],
            max_frame_age=float(v["max_frame_age"]),
            input_timeout=float(v["input_timeout"]),
            publish_descriptors=bool(v["publish_descriptors"]), workers=int(v["workers"]),
            diagnostics_period=float(v["diagnostics_period"]),
            annotated_quality=int(v["annotated.jpeg_quality"]),
            max_pixels=int(v["max_image_pixels"]),
            face_enabled=bool(v["face_recognition.enabled"]), face=face, tracking=tracking,
            model_overrides=overrides,
            gallery_path=os.path.expanduser(v["gallery.path"]),
            reference_file=os.path.expanduser(v["gallery.reference_file"]),
            gallery_min_face_size=int(v["gallery.min_face_size"]),
            allow_conflicts=bool(v["gallery.allow_conflicts"]), anonymous=anonymous,
            objects_enabled=bool(v["object_recognition.enabled"]),
            label_count=int(v["object_recognition.label_count"]),
            deterministic=bool(v["object_recognition.deterministic"]),
            crops=int(v["object_recognition.crops"]),
            objects_max_rate=float(v["object_recognition.max_rate"]),
            outputs=OutputsConfig(
                hri=bool(v["outputs.hri"]), vision_msgs=bool(v["outputs.vision_msgs"]),
                foxglove=bool(v["outputs.foxglove"]),
                hri_image_size=int(v["outputs.hri_image_size"]),
                hri_max_faces=int(v["outputs.hri_max_faces"])))

    def enroll_config(self) -> EnrollConfig:
        """Enrollment rules from these settings (the server's ~/enroll and the bridge's web
        pages enroll with the same ones)."""
        return replace(EnrollConfig(), min_face_size=self.gallery_min_face_size,
                       threshold=self.face.threshold, max_pixels=self.max_pixels)

    def pool_size(self) -> int:
        """Worker processes: the parameter, or one per input capped at the core count."""
        if self.workers > 0:
            return self.workers
        return max(1, min(len(self.image_topics), os.cpu_count() or 1))


def resolve_model_paths(settings: ServerSettings) -> Dict[str, str]:
    """Paths of the model files the settings need, and of every file a ``face.models.*``
    parameter names even if the detector does not use it (the README's promise: a bad
    model file stops the start-up, or refuses the change). ModelError names a missing,
    special or oversized one; the face workers load each (``job_warmup``), so a corrupt
    one is refused too."""
    paths = ModelPaths.from_mapping(dict(settings.model_overrides))
    needed = kinds_used(settings.face.detector)
    resolved: Dict[str, Optional[str]] = {}
    for kind in MODEL_FILES:
        if kind in needed or getattr(paths, kind):
            resolved[kind] = str(check_model_file(paths.resolve(kind), kind))
    return {k: p for k, p in resolved.items() if p}


def apply_changes(values: Dict[str, Any], changes) -> Tuple[ServerSettings, Dict[str, str]]:
    """Settings and model paths after a batch of parameter ``changes`` (objects with ``name``
    and ``value``, e.g. rclpy Parameters) over ``values``: all of them or none.

    Raises ValueError (a value out of its range, an invalid combination) or ModelError (a
    model file that is missing) with the reason to give the caller.
    """
    values = dict(values)
    for change in changes:
        reason = params.validate(change.name, change.value)
        if reason is not None:
            raise ValueError(reason)
        values[change.name] = change.value
    settings = ServerSettings.from_values(values)
    return settings, resolve_model_paths(settings)
