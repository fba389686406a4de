"""facerec_server: face (and object) recognition on CompressedImage streams.

A thin adapter around the ROS-free core: subscriptions hand frames to one latest-frame
worker per input; workers run the face pipeline in worker processes (core.face_workers),
match against the gallery here, and publish ``~/faces``, overlays and diagnostics.
Parameters are declared from ``facerec_server.params`` and validated in one callback.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, DurabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from facerec_msgs.msg import FaceArray, ObjectArray
from facerec_msgs.srv import (Enroll, Forget, ListAnonymous, ListFaces, ListSamples, Merge,
                              NameIdentity, NotPerson, RemoveSample, Rename, Sightings)
from facerec_server import conversions, node_process, params
from facerec_server.ecosystem_outputs import EcosystemOutputs, Frame
from facerec_server.ros_params import declare
from facerec_server.core import face_workers
from facerec_server.core.anonymous import Strangers
from facerec_server.core.enroll import Enroller
from facerec_server.core.gallery import Gallery, GalleryError, GalleryMatcherSync
from facerec_server.core import input_health
from facerec_server.core.images import ImageDecodeError, decode_image, encode_jpeg
from facerec_server.core.latest import InputStats, LatestWorker
from facerec_server.core.match import Matcher
from facerec_server.core.models import ModelError
from facerec_server.core.overlay import draw_overlay
from facerec_server.core.tracking import TrackerSet
from facerec_server.object_runner import ObjectRunner
from facerec_server.settings import ServerSettings, apply_changes, resolve_model_paths

FRAME_TIMEOUT = 120.0  # seconds a face worker may take for one frame before it is restarted


def _image_qos(reliability: str) -> QoSProfile:
    """Depth 1 keep-last; best effort matches sensor-data publishers (camera default)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.VOLATILE,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT))


@dataclass
class _Input:
    """One image input: its topic, worker thread, counters and newest object results."""

    configured: str  # as written in image_topics; ``topic`` becomes the resolved name
    topic: str = ""
    stats: InputStats = field(default_factory=InputStats)
    worker: Optional[LatestWorker] = None
    objects: list = field(default_factory=list)
    capture: Optional[object] = None  # an enroll.CaptureSession while one is running
    subscription: Optional[object] = None
    last_frame: Optional[float] = None    # time.monotonic() of the newest frame received
    matched_since: Optional[float] = None  # time.monotonic() when a publisher matched


class FacerecServer(Node):
    """The recognition server node (see the README for topics, services and parameters)."""

    def __init__(self, **node_kwargs):
        super().__init__("facerec_server", **node_kwargs)
        try:
            self._start()
        except BaseException:
            self.destroy_node()  # stop whatever child processes already started
            raise

    def _start(self) -> None:
        declare(self, params.SPECS)  # ValueError: a wrong type, out of range, refused
        ObjectRunner.declare_model_parameters(self)
        values = self._values()
        settings = ServerSettings.from_values(values)
        # (settings, model paths) swap together: a frame reads one consistent pair.
        self._snapshot = (settings, resolve_model_paths(settings))  # ModelError: stop here
        self.add_on_set_parameters_callback(self.parameters_callback)

        self._matcher = Matcher(self.settings.face.threshold)
        self._outputs = EcosystemOutputs(
            self, self.settings.outputs, "f", lambda: self.settings.tracking.lost_timeout)
        self._anonymous = Matcher(self.settings.anonymous.threshold)  # anonymous identities
        self._trackers = TrackerSet(self.settings.tracking,
                                    capacity=max(1, len(self.settings.image_topics)),
                                    on_end=self._track_ended)
        self.gallery = Gallery(self.settings.gallery_path)  # GalleryError: stop at start-up
        self._sync = GalleryMatcherSync(self.gallery, self._matcher, anonymous=self._anonymous)
        self._sync.refresh(force=True)
        self._strangers = Strangers(self.gallery, self._anonymous, self.settings.anonymous,
                                    after_write=lambda: self._sync.refresh(force=True),
                                    log=self.get_logger().info)
        self._pool = face_workers.FaceWorkerPool(self.settings.pool_size())
        try:
            self._pool.warmup(self.settings.face, self._model_paths)  # ModelError: bad file
        except face_workers.WorkerCrashed as exc:
            raise ModelError(f"face workers could not load the models: {exc}") from None
        self._enroller = Enroller(self.gallery, face_workers.PoolDescriber(
            lambda: (self._pool, self.settings.face, self._model_paths)),
            self.settings.enroll_config())
        self._import_reference()
        self._objects = ObjectRunner(self, self._object_results_callback)

        self._faces_pub = self.create_publisher(FaceArray, "~/faces", 10)
        self._objects_pub = self.create_publisher(ObjectArray, "~/objects", 10)
        self._annotated_pub = self.create_publisher(Image, "~/annotated", 1)
        self._annotated_jpeg_pub = self.create_publisher(
            CompressedImage, "~/annotated/compressed", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        images_group = ReentrantCallbackGroup()
        self._inputs: Dict[str, _Input] = {}  # by resolved topic name (the FaceArray source)
        qos = _image_qos(self.settings.image_reliability)
        for topic in self.settings.image_topics:
            entry = _Input(topic, topic)
            subscription = self.create_subscription(
                CompressedImage, topic, lambda msg, e=entry: self.image_callback(e, msg), qos,
                callback_group=images_group, event_callbacks=self._input_events(entry))
            entry.topic = subscription.topic_name
            entry.subscription = subscription
            entry.worker = LatestWorker(f"faces:{entry.topic}",
                                        lambda msg, e=entry: self._process(e, msg),
                                        lambda exc, e=entry: self._worker_error(e, exc))
            self._inputs[entry.topic] = entry
        self._capture_lock = threading.Lock()

        # Each service group holds at most one executor thread: a live capture (up to
        # its timeout) never starves image callbacks, diagnostics or the other services.
        self.create_service(Enroll, "~/enroll", self.enroll_callback,
                            callback_group=MutuallyExclusiveCallbackGroup())
        services_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Forget, "~/forget", self.forget_callback,
                            callback_group=services_group)
        self.create_service(ListFaces, "~/list_faces", self.list_faces_callback,
                            callback_group=services_group)
        for srv_type, name, callback in (
                (NameIdentity, "~/name", self.name_callback),
                (Rename, "~/rename", self.rename_callback),
                (Merge, "~/merge", self.merge_callback),
                (ListSamples, "~/list_samples", self.list_samples_callback),
                (RemoveSample, "~/remove_sample", self.remove_sample_callback),
                (NotPerson, "~/not_person", self.not_person_callback),
                (Sightings, "~/sightings", self.sightings_callback),
                (ListAnonymous, "~/list_anonymous", self.list_anonymous_callback)):
            self.create_service(srv_type, name, callback, callback_group=services_group)
        self._last_snapshot: Dict[str, dict] = {}
        self._warnings = input_health.WarningLog(self.get_logger().warning)
        self.create_timer(self.settings.diagnostics_period, self.diagnostics_callback)
        self.get_logger().info(
            f"ready: inputs {list(self._inputs)}, {self._pool.size} face worker process(es), "
            f"detector {self.settings.face.detector}, gallery {self.gallery.path} "
            f"({len(self._matcher.names)} samples)")

    # --- parameters --------------------------------------------------------------------
    @property
    def settings(self) -> ServerSettings:
        return self._snapshot[0]

    @property
    def _model_paths(self) -> dict:
        return self._snapshot[1]

    def _values(self) -> dict:
        return {name: p.value for name, p in self.get_parameters_by_prefix("").items()}

    def parameters_callback(self, changes) -> SetParametersResult:
        """Validate a batch of changes; apply all of them from the next frame, or none."""
        try:
            settings, model_paths = apply_changes(self._values(), changes)
            # New model files load once before they are accepted: a corrupt one is refused.
            self._pool.load_if_changed((self.settings.face, self._model_paths),
                                       (settings.face, model_paths))
        except (ValueError, ModelError, face_workers.WorkerCrashed) as exc:
            self.get_logger().warning(f"refused {[c.name for c in changes]}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        self._snapshot = (settings, model_paths)
        self._matcher.threshold = settings.face.threshold
        self._anonymous.threshold = settings.anonymous.threshold
        self._strangers.config = settings.anonymous
        self._trackers.config = settings.tracking
        self._enroller.config = settings.enroll_config()
        self._outputs.configure(settings.outputs)
        return SetParametersResult(successful=True)

    # --- frames --------------------------------------------------------------------------
    def _track_ended(self, key: str, track) -> None:
        """A face track ended (TrackerSet.on_end): its REP-155 face goes, and its descriptors
        stay a while for a "not this person" correction (anonymous identities)."""
        self._outputs.track_ended(key, track)
        self._strangers.track_ended(track)

    def _input_events(self, entry: _Input) -> SubscriptionEventCallbacks:
        """Frames lost on the way and incompatible publishers are counted per input."""
        def matched(info):
            if info.current_count == 0:
                entry.matched_since = None
            elif entry.matched_since is None:
                entry.matched_since = time.monotonic()
        return SubscriptionEventCallbacks(
            matched=matched,
            message_lost=lambda info: entry.stats.count("lost", info.total_count_change),
            incompatible_qos=lambda info: entry.stats.count("incompatible_qos"))

    def image_callback(self, entry: _Input, msg: CompressedImage) -> None:
        entry.last_frame = time.monotonic()
        entry.stats.count("received")
        if entry.worker.submit(msg):
            entry.stats.count("dropped_replaced")

    def _age(self, msg) -> Optional[float]:
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e9

    def _stamp(self, msg) -> float:
        """The frame's time in seconds for its tracks: the header stamp, else now."""
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return self.get_clock().now().nanoseconds / 1e9
        return stamp.sec + stamp.nanosec / 1e9

    def _process(self, entry: _Input, msg: CompressedImage) -> None:
        """One frame of one input (worker thread): faces now, objects on their own schedule."""
        settings, model_paths = self._snapshot
        age = self._age(msg)
        if settings.max_frame_age > 0 and age is not None and abs(age) > settings.max_frame_age:
            entry.stats.count("dropped_stale" if age > 0 else "dropped_future")
            return
        data = bytes(msg.data)
        if settings.objects_enabled:
            self._objects.offer(entry.topic, msg.header, data, msg.format)
        if not settings.face_enabled or not settings.tracking.enabled:
            self._trackers.drop(entry.topic)  # tracks end; re-enabling starts new ones
        if not settings.face_enabled:
            entry.stats.count("dropped_disabled")
            return
        start = time.perf_counter()
        capture = entry.capture
        tracker = self._trackers.get(entry.topic) if settings.tracking.enabled else None
        self._sync.refresh()
        stamp = self._stamp(msg)
        try:
            result = self._pool.recognise(
                settings.face, model_paths, data, msg.format, self._matcher, tracker,
                stamp, describe_all=capture is not None, timeout=FRAME_TIMEOUT,
                max_pixels=settings.max_pixels)
        except ImageDecodeError as exc:
            entry.stats.error("decode_errors", str(exc))
            self.get_logger().warning(f"{entry.topic}: dropped a frame: {exc}",
                                      throttle_duration_sec=5.0)
            return
        faces = result.faces
        frame = Frame(data, msg.format)  # decoded here only for face pictures / crops
        if tracker is not None:  # anonymous identities and sightings (core.anonymous)
            self._strangers.observe(entry.topic, tracker, faces, stamp, image=frame.image)
        entry.stats.count("full_detections", int(result.full_detection))
        entry.stats.count("faces_described",
                          len(faces) if result.described is None else result.described)
        if capture is not None:
            capture.offer_faces(faces)
        elapsed = time.perf_counter() - start
        self._faces_pub.publish(conversions.face_array(
            msg.header, entry.topic, faces, elapsed, settings.publish_descriptors))
        self._outputs.faces(msg.header, faces, frame)
        latency = self._age(msg)
        entry.stats.count("processed")
        entry.stats.timing(elapsed, latency)
        self._publish_overlay(entry, msg, data, faces, settings)

    def _publish_overlay(self, entry: _Input, msg, data: bytes, faces, settings) -> None:
        want_raw = self._annotated_pub.get_subscription_count() > 0
        want_jpeg = self._annotated_jpeg_pub.get_subscription_count() > 0
        if not (want_raw or want_jpeg):
            return  # nobody watches: no decode, no drawing, no encoding
        try:
            image = draw_overlay(decode_image(data, msg.format, settings.max_pixels), faces,
                                 entry.objects)
        except ImageDecodeError:
            return
        if want_raw:
            self._annotated_pub.publish(conversions.image_msg(msg.header, image))
        if want_jpeg:
            self._annotated_jpeg_pub.publish(conversions.compressed_msg(
                msg.header, encode_jpeg(image, settings.annotated_quality)))

    def _worker_error(self, entry: _Input, exc: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: a frame in flight could not be published; not an error
        entry.stats.error("errors", f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"{entry.topic}: frame failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=5.0)

    def _object_results_callback(self, topic: str, header, objects, processing_time) -> None:
        entry = self._inputs.get(topic)
        if entry is not None:
            entry.objects = list(objects)
        self._objects_pub.publish(conversions.object_array(header, topic, objects,
                                                           processing_time))
        self._outputs.objects(header, objects)

    # --- diagnostics ---------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        """Per input: totals since start, timings of the last period, and what to check."""
        node = self.get_fully_qualified_name()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for topic, entry in list(self._inputs.items()):
            snap = entry.stats.snapshot()
            snap["pool_restarts"] = self._pool.restarts
            snap["publishers"] = entry.subscription.get_publisher_count()
            last = self._last_snapshot.get(topic) or {key: 0 for key in snap}
            self._last_snapshot[topic] = snap
            level, text = input_health.assess(self._input_view(entry, snap, last))
            self._warnings(topic, level, text)
            status = DiagnosticStatus(name=f"{node}: {topic}", hardware_id=node,
                                      level=bytes([level]), message=text)
            status.values = [KeyValue(key=key, value=_fmt(value)) for key, value in snap.items()]
            msg.status.append(status)
        msg.status.append(self._objects.diagnostic_status(node))
        self._diag_pub.publish(msg)

    def _input_view(self, entry: _Input, snap: dict, last: dict) -> input_health.InputView:
        now = time.monotonic()
        return input_health.InputView(
            received=snap["received"], publishers=snap["publishers"],
            silent_for=None if entry.last_frame is None else now - entry.last_frame,
            matched_for=None if entry.matched_since is None else now - entry.matched_since,
            grew={key: snap[key] - last.get(key, 0) for key in InputStats.COUNTERS},
            last_error=snap["last_error"], max_frame_age=self.settings.max_frame_age,
            input_timeout=self.settings.input_timeout)

    # --- services ------------------------------------------------------------------------
    def enroll_callback(self, request, response):
        """Enroll from request.images, or capture from a live input when images is empty.

        Never raises: every failure becomes success=false with a message (an exception in
        a service callback would stop the executor, and with it the node).
        """
        try:
            if request.images:
                images = [bytes(image.data) for image in request.images]
                result = self._enroller.enroll_images(
                    request.name, images, source="service:images",
                    force=self.settings.allow_conflicts)
            else:
                result = self._capture(request)
            if result.success:
                self._sync.refresh(force=True)
            response.success = bool(result.success)
            response.message = result.message
            response.samples_added = int(result.samples_added)
        except Exception as exc:  # noqa: B902 - reported to the caller, node lives on
            response.success, response.samples_added = False, 0
            response.message = f"enrollment failed: {type(exc).__name__}: {exc}"
        self.get_logger().info(f"enroll {request.name!r}: {response.message}")
        return response

    def _find_input(self, name: str) -> Optional[_Input]:
        """An input by resolved name, or by the name as configured in image_topics."""
        if name in self._inputs:
            return self._inputs[name]
        for entry in self._inputs.values():
            if entry.configured == name or entry.topic.lstrip("/") == name.lstrip("/"):
                return entry
        return None

    def _capture(self, request):
        from facerec_server.core.enroll import EnrollResult
        topic = request.source or next(iter(self._inputs))
        entry = self._find_input(topic)
        if entry is None:
            return EnrollResult(False, f"refused: {topic!r} is not an input of this server "
                                f"(inputs: {', '.join(self._inputs)}); nothing written")
        if not self.settings.face_enabled:
            return EnrollResult(False, "refused: face_recognition.enabled is false, so no "
                                "frames are analysed; nothing written")
        try:
            session = self._enroller.capture(
                request.name, samples=int(request.samples), timeout=float(request.timeout),
                source=f"live:{entry.topic}", force=self.settings.allow_conflicts)
        except ValueError as exc:
            return EnrollResult(False, f"refused: {exc}; nothing written")
        with self._capture_lock:
            if entry.capture is not None:
                return EnrollResult(False, f"refused: a capture is already running on "
                                    f"{entry.topic}; nothing written")
            entry.capture = session
        try:
            session.wait()
        finally:
            with self._capture_lock:
                entry.capture = None
        return self._enroller.finish(session)

    def forget_callback(self, request, response):
        try:
            removed = self.gallery.forget(request.name)
            self._sync.refresh(force=True)
        except Exception as exc:  # noqa: B902 - reported to the caller, node lives on
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
            return response
        response.samples_removed = int(removed)
        response.success = removed > 0
        response.message = (f"forgot {request.name!r} ({removed} samples)" if removed
                            else f"{request.name!r} is not in the gallery")
        return response

    def list_faces_callback(self, request, response):
        try:
            response.names, response.samples = conversions.names_and_counts(
                self.gallery.people())
        except Exception as exc:  # noqa: B902 - an empty answer, and the reason logged
            self.get_logger().error(f"list_faces failed: {type(exc).__name__}: {exc}")
        return response

    # --- people: naming, corrections, sightings (core.gallery, core.anonymous) ----------
    def _change(self, response, change, describe) -> object:
        """Run one gallery ``change``; on success reload the matchers (results change from
        the next frame) and ``describe(result)`` fills the response. Never raises."""
        try:
            result = change()
            self._sync.refresh(force=True)
            describe(result)
            response.success = True
        except Exception as exc:  # noqa: B902 - reported to the caller, node lives on
            response.success = False
            response.message = (f"refused: {exc}; nothing written" if isinstance(exc, ValueError)
                                else f"{type(exc).__name__}: {exc}")
        self.get_logger().info(f"{type(response).__name__.split('_')[0]}: {response.message}")
        return response

    def name_callback(self, request, response):
        def describe(result):
            response.samples, response.merged = int(result[0]), bool(result[1])
            response.message = (f"{request.anonymous_id} is {request.name!r}"
                                f"{' (samples added to the existing person)' if result[1] else ''}"
                                f"; {result[0]} samples")
        return self._change(response, lambda: self.gallery.name_anonymous(
            request.anonymous_id, request.name), describe)

    def rename_callback(self, request, response):
        def describe(samples):
            response.samples = int(samples)
            response.message = f"renamed {request.name!r} to {request.new_name!r}"
        return self._change(response, lambda: self.gallery.rename(
            request.name, request.new_name), describe)

    def merge_callback(self, request, response):
        def describe(samples):
            response.samples = int(samples)
            response.message = (f"merged {request.source!r} into {request.target!r} "
                                f"({samples} samples)")
        return self._change(response, lambda: self.gallery.merge(
            request.source, request.target), describe)

    def remove_sample_callback(self, request, response):
        def describe(name):
            response.name = name
            response.message = f"removed sample {request.sample_id} of {name!r}"
        return self._change(response, lambda: self.gallery.remove_sample(
            request.sample_id), describe)

    def not_person_callback(self, request, response):
        def describe(added):
            response.negatives_added = int(added)
            response.message = f"{added} negative example(s): that face is not {request.name!r}"
        return self._change(response, lambda: self.gallery.add_negatives(
            request.name, self._face_descriptors(request), source="service:not_person"),
            describe)

    def _face_descriptors(self, request):
        """The descriptors of a NotPerson request: its track's, or one face per photo."""
        if request.track_id:
            for key in self._trackers.keys():
                track = self._trackers.get(key).track(request.track_id)
                if track is not None and track.descriptors:
                    return [d for d, _ in track.descriptors]
            recent = self._strangers.recent_descriptors(request.track_id)
            if recent is None:
                raise ValueError(f"track {request.track_id} is not known (any more): give "
                                 "photos of the face instead")
            return list(recent)
        if not request.images:
            raise ValueError("give a track_id (Face.track_id) or photos of the face")
        descriptors = []
        for number, image in enumerate(request.images, 1):
            sample, reason = self._enroller.sample_from_image(bytes(image.data))
            if sample is None:
                raise ValueError(f"photo {number}: {reason}")
            descriptors.append(sample.descriptor)
        return descriptors

    def list_samples_callback(self, request, response):
        try:
            for sample in self.gallery.samples(request.name):
                response.ids.append(sample["id"])
                response.created_at.append(float(sample["created_at"]))
                response.sources.append(sample["source"])
        except Exception as exc:  # noqa: B902 - an empty answer, and the reason logged
            self.get_logger().error(f"list_samples failed: {type(exc).__name__}: {exc}")
        return response

    def sightings_callback(self, request, response):
        try:
            self._strangers.flush()  # what was seen up to now
            for row in self.gallery.sightings(request.name, request.input):
                response.names.append(row["name"])
                response.anonymous.append(row["anonymous"])
                response.inputs.append(row["input"])
                response.first_seen.append(float(row["first_seen"]))
                response.last_seen.append(float(row["last_seen"]))
                response.counts.append(min(row["count"], 2 ** 32 - 1))
        except Exception as exc:  # noqa: B902 - an empty answer, and the reason logged
            self.get_logger().error(f"sightings failed: {type(exc).__name__}: {exc}")
        return response

    def list_anonymous_callback(self, request, response):
        try:
            for row in self.gallery.anonymous():
                response.anonymous_ids.append(row["name"])
                response.samples.append(row["samples"])
                response.last_seen.append(float(row["last_seen"] or 0.0))
        except Exception as exc:  # noqa: B902 - an empty answer, and the reason logged
            self.get_logger().error(f"list_anonymous failed: {type(exc).__name__}: {exc}")
        return response

    # --- start-up helpers ----------------------------------------------------------------
    def _import_reference(self) -> None:
        path = self.settings.reference_file
        if not path:
            return
        from facerec_server.core.reference import ReferenceError, import_reference
        try:
            report = import_reference(path, self._enroller, force=self.settings.allow_conflicts)
        except ReferenceError as exc:
            self.get_logger().error(f"reference file {path} not imported: {exc}")
            return
        for line in report.lines():
            self.get_logger().info(f"reference file: {line}")
        self._sync.refresh(force=True)

    def destroy_node(self):
        """Stop workers and child processes; safe on a node whose start-up failed half-way."""
        inputs = list(getattr(self, "_inputs", {}).values())
        for entry in inputs:
            if entry.capture is not None:
                entry.capture.cancel()  # a waiting ~/enroll returns at once
        for entry in inputs:
            entry.worker.slot.close()
        for entry in inputs:
            entry.worker.stop()
        if getattr(self, "_objects", None) is not None:
            self._objects.stop()
        if getattr(self, "_outputs", None) is not None:
            self._outputs.close()  # candidate matches end (confidence 0), face topics go
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown()
        if getattr(self, "_strangers", None) is not None:
            try:
                self._strangers.flush()  # the last sightings
            except Exception as exc:  # noqa: B902 - shutting down; say why
                print(f"[facerec_server] sightings not written at exit: {exc}", file=sys.stderr)
        if getattr(self, "gallery", None) is not None:
            self.gallery.close()
        return super().destroy_node()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def main(args=None) -> int:
    if not node_process.init("facerec_server", args):
        return 1
    try:
        with node_process.starting():
            node = FacerecServer()
    except (ModelError, GalleryError, ValueError) as exc:
        # A start-up problem the user must fix: say what and how, without a traceback.
        node_process.stopping()
        print(f"[facerec_server] cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node_process.stopping()
        node.destroy_node()
        executor.shutdown(timeout_sec=2.0)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
