"""The ecosystem outputs of a node (server or bridge): one place for their publishers.

A node makes one :class:`EcosystemOutputs` and calls :meth:`faces` for every frame's faces,
:meth:`objects` for object results and :meth:`track_ended` when a face track ends
(``TrackerSet.on_end``); the messages come from :mod:`facerec_server.ecosystem`.

* ``outputs.hri`` (hri_msgs): REP-155 topics relative to the node's namespace.
  ``humans/faces/tracked`` lists the faces whose track is alive (all inputs), published with
  each frame; a face's ``humans/faces/<id>/roi`` (every frame it is seen), ``/cropped`` and
  ``/aligned`` (``outputs.hri_image_size`` square; decoded, cut and sent only while someone
  subscribes) are created when the face first appears and destroyed when its track ends,
  at most ``outputs.hri_max_faces`` faces at a time (the longest unseen ends first); a face
  not seen for ``face.tracking.lost_timeout`` + 1 s of wall time also ends (an input that
  went silent). ``humans/candidate_matches`` gets face -> person with the match's
  confidence on every frame a face has an identity, and confidence 0 when the track ends,
  when its identity changes (for the old one) and when the output is switched off.
  Untracked faces (``face.tracking.enabled`` false) have no face id: not published here.
* ``outputs.vision_msgs``: ``~/faces/detections``, ``~/objects/detections``.
* ``outputs.foxglove``: ``~/faces/annotations``, ``~/objects/annotations``.

Publishers exist only while their output is on (switching one off removes them from the
graph). An output whose message package is not importable is reported once (a warning
naming the package) and stays off; the node runs on. Thread-safe (frames of several inputs,
track ends and the expiry timer come from different threads).
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from builtin_interfaces.msg import Time
from rclpy.event_handler import PublisherEventCallbacks
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from facerec_server import conversions, ecosystem
from facerec_server.core.face_crops import aligned_face, cropped_face
from facerec_server.core.images import ImageDecodeError, decode_image, encoded_size
from facerec_server.settings import OutputsConfig

RESULTS_DEPTH = 10  # reliable, as ~/faces
IMAGES_DEPTH = 1  # reliable depth 1, as ~/annotated
STALE_MARGIN = 1.0  # s added to lost_timeout before a silent face ends


class Frame:
    """A compressed frame, decoded only when asked (once), with its size from the header."""

    def __init__(self, data: bytes, fmt: str = "jpeg"):
        self.data, self.fmt = data, fmt
        self._image = None

    def size(self) -> Optional[Tuple[int, int]]:
        """(width, height), or None when neither the header nor a decode tells."""
        size = encoded_size(self.data)
        if size is None:
            image = self.image()
            size = None if image is None else (image.shape[1], image.shape[0])
        return size

    def image(self):
        """The BGR image, or None when it does not decode."""
        if self._image is None:
            try:
                self._image = decode_image(self.data, self.fmt)
            except ImageDecodeError:
                return None
        return self._image


@dataclass
class _Face:
    """One face's topics and what was last sent about it."""

    id: str
    roi: object
    cropped: object
    aligned: object
    frame_id: str = ""
    person: Optional[str] = None
    last_seen: float = 0.0


class EcosystemOutputs:
    """The ``outputs.*`` publishers of ``node``; face ids are ``<face_prefix><track id>``."""

    def __init__(self, node, config: OutputsConfig, face_prefix: str = "f",
                 lost_timeout: Callable[[], float] = lambda: 2.0):
        self._node = node
        self._prefix = face_prefix
        self._lost_timeout = lost_timeout
        self._lock = threading.RLock()
        self._missing: Dict[str, Optional[str]] = {}
        self._pubs: Dict[str, object] = {}
        self._faces: "collections.OrderedDict[int, _Face]" = collections.OrderedDict()
        self._config = OutputsConfig(hri=False, vision_msgs=False, foxglove=False)
        self._on = {name: False for name in ecosystem.PACKAGES}
        self.configure(config)
        node.create_timer(0.5, self.expire_callback)

    # --- which outputs are on ------------------------------------------------------------
    def available(self, output: str) -> bool:
        """Whether ``output``'s package imports (checked once; reported once if not)."""
        if output not in self._missing:
            reason = ecosystem.missing(output)
            self._missing[output] = reason
            if reason is not None:
                self._node.get_logger().warning(f"{reason}; running without it")
        return self._missing[output] is None

    def configure(self, config: OutputsConfig) -> None:
        """Switch outputs on and off (publishers made or destroyed) to match ``config``."""
        with self._lock:
            if config == self._config:
                return
            self._config = config
            for output, wanted in (("hri", config.hri), ("vision_msgs", config.vision_msgs),
                                   ("foxglove", config.foxglove)):
                on = wanted and self.available(output)
                if on != self._on[output]:
                    (self._open if on else self._close)(output)
                    self._on[output] = on
            while len(self._faces) > config.hri_max_faces:
                self._end(next(iter(self._faces)))

    def is_on(self, output: str) -> bool:
        return self._on[output]

    def _create(self, msg_type, topic: str, depth: int):
        """A publisher without QoS event handlers. These publishers are created and destroyed
        from the nodes' worker threads while the executor waits; rclpy's executor fails on
        the event handler of a publisher destroyed under it ("InvalidHandle: cannot use
        Destroyable because destruction was requested": the server died of it in a test)."""
        return self._node.create_publisher(
            msg_type, topic, depth,
            event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))

    def _open(self, output: str) -> None:
        from importlib import import_module
        create = self._create
        if output == "hri":
            msg = import_module("hri_msgs.msg")
            self._pubs["tracked"] = create(msg.IdsList, "humans/faces/tracked", RESULTS_DEPTH)
            self._pubs["matches"] = create(msg.IdsMatch, "humans/candidate_matches",
                                           RESULTS_DEPTH)
        elif output == "vision_msgs":
            msg = import_module("vision_msgs.msg")
            self._pubs["face_detections"] = create(msg.Detection2DArray, "~/faces/detections",
                                                   RESULTS_DEPTH)
            self._pubs["object_detections"] = create(
                msg.Detection2DArray, "~/objects/detections", RESULTS_DEPTH)
        else:
            msg = import_module("foxglove_msgs.msg")
            self._pubs["face_annotations"] = create(
                msg.ImageAnnotations, "~/faces/annotations", RESULTS_DEPTH)
            self._pubs["object_annotations"] = create(
                msg.ImageAnnotations, "~/objects/annotations", RESULTS_DEPTH)

    def _close(self, output: str) -> None:
        if output == "hri":
            for track_id in list(self._faces):
                self._end(track_id)
            self._publish_tracked(self._now_header(""))
        keys = {"hri": ("tracked", "matches"),
                "vision_msgs": ("face_detections", "object_detections"),
                "foxglove": ("face_annotations", "object_annotations")}[output]
        for key in keys:
            pub = self._pubs.pop(key, None)
            if pub is not None:
                self._node.destroy_publisher(pub)

    # --- results -------------------------------------------------------------------------
    def faces(self, header, faces: Sequence, frame: Frame) -> None:
        """One frame's faces (core FaceResults) of the image ``frame`` with ``header``."""
        with self._lock:
            ids = [ecosystem.face_id(f.track_id, self._prefix) for f in faces]
            if self._on["vision_msgs"]:
                self._pubs["face_detections"].publish(
                    ecosystem.face_detections(header, faces, ids))
            if self._on["foxglove"]:
                self._pubs["face_annotations"].publish(
                    ecosystem.face_annotations(header, faces, ids))
            if self._on["hri"]:
                self._hri_faces(header, faces, ids, frame)

    def objects(self, header, objects: Sequence) -> None:
        with self._lock:
            if self._on["vision_msgs"]:
                self._pubs["object_detections"].publish(
                    ecosystem.object_detections(header, objects))
            if self._on["foxglove"]:
                self._pubs["object_annotations"].publish(
                    ecosystem.object_annotations(header, objects))

    def _hri_faces(self, header, faces, ids, frame: Frame) -> None:
        now = time.monotonic()
        size = frame.size() if any(ids) else None
        for face, fid in zip(faces, ids):
            if not fid:
                continue
            entry = self._faces.get(face.track_id) or self._new_face(face.track_id, fid)
            self._faces.move_to_end(face.track_id)
            entry.last_seen, entry.frame_id = now, header.frame_id
            if size is not None:
                entry.roi.publish(ecosystem.normalized_roi(header, face.box, size,
                                                           face.detection_score))
            self._face_images(header, face, entry, frame)
            person = ecosystem.person_of(face)
            if entry.person is not None and entry.person != person:
                self._pubs["matches"].publish(ecosystem.ids_match(fid, entry.person, 0.0))
            if person is not None:
                self._pubs["matches"].publish(ecosystem.ids_match(
                    fid, person, ecosystem.match_confidence(face)))
            entry.person = person
        self._publish_tracked(header)

    def _face_images(self, header, face, entry: _Face, frame: Frame) -> None:
        size = self._config.hri_image_size
        if entry.cropped.get_subscription_count() > 0:
            image = frame.image()
            if image is not None:
                entry.cropped.publish(conversions.image_msg(
                    header, cropped_face(image, face.box, size)))
        if entry.aligned.get_subscription_count() > 0 and face.landmarks is not None:
            image = frame.image()
            if image is not None:
                entry.aligned.publish(conversions.image_msg(
                    header, aligned_face(image, face.box, face.landmarks, size)))

    def _new_face(self, track_id: int, fid: str) -> _Face:
        while len(self._faces) >= self._config.hri_max_faces:
            self._end(next(iter(self._faces)))
        from hri_msgs.msg import NormalizedRegionOfInterest2D as roi_type
        create = self._create
        base = f"humans/faces/{fid}"
        entry = _Face(fid, create(roi_type, f"{base}/roi", RESULTS_DEPTH),
                      create(Image, f"{base}/cropped", IMAGES_DEPTH),
                      create(Image, f"{base}/aligned", IMAGES_DEPTH))
        self._faces[track_id] = entry
        return entry

    # --- ends ----------------------------------------------------------------------------
    def track_ended(self, key: str, track) -> None:
        """``TrackerSet.on_end``: the face of ``track`` is gone (its candidate match gets
        confidence 0, its topics go, ``tracked`` is sent without it)."""
        with self._lock:
            entry = self._faces.get(track.id)
            if entry is None:
                return
            self._end(track.id)
            if self._on["hri"]:
                self._publish_tracked(self._now_header(entry.frame_id))

    def expire_callback(self) -> None:
        """Timer: faces not seen for lost_timeout + STALE_MARGIN s of wall time end."""
        limit = time.monotonic() - (self._lost_timeout() + STALE_MARGIN)
        with self._lock:
            stale = [tid for tid, entry in self._faces.items() if entry.last_seen < limit]
            for track_id in stale:
                frame_id = self._faces[track_id].frame_id
                self._end(track_id)
            if stale and self._on["hri"]:
                self._publish_tracked(self._now_header(frame_id))

    def _end(self, track_id: int) -> None:
        entry = self._faces.pop(track_id)
        matches = self._pubs.get("matches")
        if entry.person is not None and matches is not None and self._node.context.ok():
            matches.publish(ecosystem.ids_match(entry.id, entry.person, 0.0))
        for pub in (entry.roi, entry.cropped, entry.aligned):
            self._node.destroy_publisher(pub)

    def close(self) -> None:
        """End every face (confidence 0 sent while the context is valid: not after Ctrl-C)
        and remove every publisher."""
        with self._lock:
            for output in ecosystem.PACKAGES:
                if self._on[output]:
                    self._close(output)
                    self._on[output] = False

    # --- helpers -------------------------------------------------------------------------
    def _publish_tracked(self, header) -> None:
        pub = self._pubs.get("tracked")
        if pub is not None and self._node.context.ok():
            pub.publish(ecosystem.ids_list(header, [e.id for e in self._faces.values()]))

    def _now_header(self, frame_id: str) -> Header:
        nanoseconds = self._node.get_clock().now().nanoseconds
        return Header(stamp=Time(sec=nanoseconds // 1_000_000_000,
                                 nanosec=nanoseconds % 1_000_000_000), frame_id=frame_id)
