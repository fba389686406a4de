"""facerec_bridge: the secure websocket bridge for devices without ROS, as a ROS 2 node.

A thin host around :mod:`facerec_server.bridge` (ROS-free). Devices speaking the
iot-facerecognition protocol connect over wss:// (see ``facerec-ws-camera``); their frames
are recognised with the same face pipeline settings and the same gallery file as
``facerec_server`` (``face.*``, ``gallery.*``, ``object_recognition.*`` parameters;
people enrolled through the server's ``~/enroll`` are picked up within a second) and, under
the client's name (with ``bridge.auth`` token or mtls its token's name or certificate CN,
which SETTING_NAME cannot change; with none the name it sets):

* each client's frames are republished as ``sensor_msgs/CompressedImage`` on
  ``~/clients/<sanitised_name>/image/compressed`` (frame_id = client name, stamp = receipt
  time; best-effort depth-1 QoS, like the camera node) when ``bridge.publish_images``;
* results go to ``~/faces`` (FaceArray) and ``~/objects`` (ObjectArray) with
  ``source`` = client name, header = the frame's, only for the parts the client enabled;
* bridge counters go to ``/diagnostics`` every ``diagnostics_period`` seconds (plus
  ``object_schedulers``: clients with an object scheduler).

Faces run in face worker processes (``workers``), one frame per client at a time
(latest-frame semantics), tracked per client name as in the server (``face.tracking.*``:
track ids, states and voted names in ``~/faces``; a client's tracks end when it leaves or is
renamed); the frame's reply (MESSAGE_TAG_FACE) carries faces only, so object
models never delay it. Object models run in a child process, per client on its own
latest-frame :class:`~facerec_server.core.object_scheduler.ObjectScheduler` at most
``object_recognition.max_rate`` times per second (created on the client's first frame with
objects enabled, removed when it leaves or is renamed), with the client's settings
(label_count, deterministic) at the time of the run; results go to the client as
MESSAGE_TAG_OBJECT on their own schedule (``BridgeServer.send_objects``) and to
``~/objects`` with the stamp of the frame they were computed on. Flow control: clients that
wait for one reply per frame must wait for the face reply (command 3); object replies
(command 4) are not per frame. The event loop runs in its own thread. ``bridge.*``
parameters are read-only (restart the node to change them).

With ``bridge.web`` the same port serves the web pages (:mod:`facerec_server.bridge.web`):
enrollment and people management through the core's Enroller and Gallery on this node's
gallery (the server picks changes up within a second), and every input of every
``facerec_server`` on the graph (:class:`~facerec_server.server_watch.ServerWatch`).
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import replace
from typing import Dict, Optional

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from facerec_msgs.msg import FaceArray, ObjectArray
from facerec_server import conversions, node_process, params
from facerec_server.ecosystem_outputs import EcosystemOutputs, Frame
from facerec_server.ros_params import declare
from facerec_server.bridge import (BridgeConfig, BridgeConfigError, BridgeServer, BridgeThread,
                                   ClientSettings, FrameFailed, UndecodableFrame)
from facerec_server.bridge.board import Board
from facerec_server.bridge.config import AUTH_MODES
from facerec_server.bridge.web import GalleryAccess, WebApp
from facerec_server.bridge.protocol import sanitize_name
from facerec_server.core import face_workers
from facerec_server.core.anonymous import Strangers
from facerec_server.core.enroll import Enroller
from facerec_server.core.gallery import Gallery, GalleryError, GalleryMatcherSync
from facerec_server.core.images import ImageDecodeError, decode_image
from facerec_server.core.match import Matcher
from facerec_server.core.object_scheduler import ObjectScheduler
from facerec_server.core.tracking import TrackerSet
from facerec_server.core.models import ModelError
from facerec_server.object_runner import ObjectRunner
from facerec_server.server_watch import ServerWatch
from facerec_server.settings import ServerSettings, apply_changes, resolve_model_paths

NODE_NAME = "facerec_bridge"

BRIDGE_SPECS = (
    params.ParamSpec("bridge.host", "0.0.0.0", "string",
                     "address the wss:// server binds to", read_only=True),
    params.ParamSpec("bridge.port", 50000, "int", "TCP port (50000 as the original)",
                     low=0, high=65535, read_only=True),
    params.ParamSpec("bridge.certfile", "", "string",
                     "PEM certificate chain (required: TLS always). Make a test pair with "
                     "`python3 -m facerec_server.bridge.certs --out-dir DIR --host NAME`",
                     read_only=True),
    params.ParamSpec("bridge.keyfile", "", "string", "PEM private key (required)",
                     read_only=True),
    params.ParamSpec("bridge.auth", "token", "string",
                     "client authentication: token (bearer token), mtls (client "
                     "certificate signed by bridge.ca_file) or none (explicit; warns)",
                     choices=AUTH_MODES, read_only=True),
    params.ParamSpec("bridge.tokens_file", "", "string",
                     "file with one token per line, or name:token (auth=token)", read_only=True),
    params.ParamSpec("bridge.ca_file", "", "string",
                     "CA certificate(s) that sign client certificates (auth=mtls)",
                     read_only=True),
    params.ParamSpec("bridge.max_frame_size", 2 * 1024 * 1024, "int",
                     "largest websocket message in bytes (bigger: closed with 1009)",
                     low=1024, high=64 * 1024 * 1024, read_only=True),
    params.ParamSpec("bridge.max_clients", 16, "int",
                     "most connected clients (more: closed with 1013)", low=1, high=1024,
                     read_only=True),
    params.ParamSpec("bridge.max_pending", 32, "int",
                     "connections still in their TLS/websocket handshake (more: the oldest is "
                     "closed); bounds what idle connections cost", low=1, high=4096,
                     read_only=True),
    params.ParamSpec("bridge.max_message_rate", 60.0, "double",
                     "messages/s per client, token bucket with 2 s burst (more: closed with "
                     "1008); 0 = unlimited", low=0.0, high=10000.0, read_only=True),
    params.ParamSpec("bridge.send_queue_size", 2, "int",
                     "result sets queued per client before the stalest is dropped",
                     low=1, high=64, read_only=True),
    params.ParamSpec("bridge.frame_timeout", 30.0, "double",
                     "seconds a face worker may take for one frame before it is restarted "
                     "(that frame is not processed); a hung worker holds the other clients "
                     "up at most this long", low=1.0, high=600.0, read_only=True),
    params.ParamSpec("bridge.publish_images", True, "bool",
                     "republish client frames on ~/clients/<name>/image/compressed"),
    params.ParamSpec("bridge.web", True, "bool",
                     "serve the web pages (live camera, enrollment, people, cameras, "
                     "statistics) on the same port, behind the same authentication",
                     read_only=True),
)

# Server parameters that mean nothing here (no subscriptions, no overlays, no reference file).
_SERVER_ONLY = {"image_topics", "image_reliability", "max_frame_age", "input_timeout",
                "annotated.jpeg_quality", "gallery.reference_file"}
# ROS4HRI has one humans/faces/tracked list per namespace: the server's by default (both nodes
# run in one namespace in the launch files), the bridge's clients' faces when switched on.
_BRIDGE_DEFAULTS = {"outputs.hri": (False, "publish ROS4HRI (REP-155) faces of the clients "
                                    "under the node's namespace (as facerec_server's "
                                    "outputs.hri, face ids b<track id>); off by default: one "
                                    "node per namespace may publish humans/faces/tracked")}
SHARED_SPECS = tuple(
    replace(s, default=_BRIDGE_DEFAULTS[s.name][0], description=_BRIDGE_DEFAULTS[s.name][1])
    if s.name in _BRIDGE_DEFAULTS else s
    for s in params.SPECS if s.name not in _SERVER_ONLY)

IMAGE_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST, depth=1,
                       durability=DurabilityPolicy.VOLATILE)


def _stamp(seconds: float) -> Time:
    sec = int(math.floor(seconds))
    return Time(sec=sec, nanosec=min(int((seconds - sec) * 1e9), 999_999_999))


class FacerecBridge(Node):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        declare(self, SHARED_SPECS + BRIDGE_SPECS)  # ValueError: wrong type, range, check
        ObjectRunner.declare_model_parameters(self)
        self.settings = ServerSettings.from_values(self._values())
        self.add_on_set_parameters_callback(self._parameters_callback)
        config = self._bridge_config()  # BridgeConfigError: stop at start-up
        config.validate()

        self._model_paths = resolve_model_paths(self.settings)
        self._matcher = Matcher(self.settings.face.threshold)
        self._anonymous = Matcher(self.settings.anonymous.threshold)  # anonymous identities
        try:
            self._start(config)
        except BaseException:
            self._cleanup()  # no orphaned worker processes when start-up fails half-way
            raise

    def _start(self, config: BridgeConfig) -> None:
        self.gallery = Gallery(self.settings.gallery_path)
        self._sync = GalleryMatcherSync(self.gallery, self._matcher, anonymous=self._anonymous)
        self._sync.refresh(force=True)
        # the clients' strangers, as the server's inputs' (sightings: input = client name)
        self._strangers = Strangers(self.gallery, self._anonymous, self.settings.anonymous,
                                    after_write=lambda: self._sync.refresh(force=True),
                                    log=self.get_logger().info)
        self._frame_timeout = float(self.get_parameter("bridge.frame_timeout").value)
        self._pool = face_workers.FaceWorkerPool(max(1, self.settings.workers or 1))
        self._pool.warmup(self.settings.face, self._model_paths)
        self._outputs = EcosystemOutputs(self, self.settings.outputs, "b",
                                         lambda: self.settings.tracking.lost_timeout)
        # client name -> its frame being processed (decoded at most once, for face pictures
        # and the ecosystem's crops)
        self._frames: Dict[str, Frame] = {}
        # face tracks per client name (a rename or a departure ends that client's tracks)
        self._trackers = TrackerSet(self.settings.tracking, capacity=config.max_clients,
                                    on_end=self._track_ended)
        self._recognizer = None
        # client name -> its object scheduler; changed on the bridge's event loop thread only
        self._object_schedulers: Dict[str, ObjectScheduler] = {}
        self._objects_lock = threading.Lock()  # one object run at a time, checked under it
        self._closing = False
        configs = ObjectRunner.configs_of(self)
        if configs:
            from facerec_server.core.object_scheduler import RecognizerProcess
            self._recognizer = RecognizerProcess(configs)

        self._faces_pub = self.create_publisher(FaceArray, "~/faces", 10)
        self._objects_pub = self.create_publisher(ObjectArray, "~/objects", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._image_pubs: Dict[str, object] = {}
        self._pubs_lock = threading.Lock()

        self.bridge = BridgeServer(config, self.process, on_frame=self._on_frame,
                                   on_result=self._on_result, on_client=self._on_client,
                                   web=self._web_app())
        self._thread = BridgeThread(self.bridge)
        self._thread.start()  # OSError (port in use) propagates
        self.create_timer(self.settings.diagnostics_period, self._diagnostics)
        self.get_logger().info(
            f"bridge on wss://{config.host}:{self.bridge.port} (auth={config.auth}), "
            f"{self._pool.size} face worker(s), gallery {self.gallery.path} "
            f"({len(self._matcher.names)} samples)")

    def _web_app(self) -> Optional[WebApp]:
        """The web pages: enrollment through the core's Enroller on this node's gallery
        (faces described in its worker processes), every server's inputs from ROS."""
        if not self.get_parameter("bridge.web").value:
            return None
        self._enroller = Enroller(self.gallery, face_workers.PoolDescriber(
            lambda: (self._pool, self.settings.face, self._model_paths),
            timeout=self._frame_timeout), self.settings.enroll_config())
        access = GalleryAccess(self.gallery, self._enroller,
                               changed=lambda: self._sync.refresh(force=True),
                               allow_conflicts=lambda: self.settings.allow_conflicts)
        board = Board()
        self._watch = ServerWatch(self, board)
        return WebApp(access, board)

    # --- parameters ------------------------------------------------------------------------
    def _values(self) -> dict:
        values = params.defaults()  # the server's parameters this node does not declare
        values.update({name: p.value for name, p in self.get_parameters_by_prefix("").items()})
        return values

    def _bridge_config(self) -> BridgeConfig:
        v = self._values()
        return BridgeConfig(
            host=v["bridge.host"], port=int(v["bridge.port"]),
            certfile=_path(v["bridge.certfile"]), keyfile=_path(v["bridge.keyfile"]),
            auth=v["bridge.auth"], tokens_file=_path(v["bridge.tokens_file"]),
            ca_file=_path(v["bridge.ca_file"]), max_frame_size=int(v["bridge.max_frame_size"]),
            max_clients=int(v["bridge.max_clients"]), max_pending=int(v["bridge.max_pending"]),
            max_message_rate=float(v["bridge.max_message_rate"]),
            send_queue_size=int(v["bridge.send_queue_size"]),
            workers=max(1, self.settings.workers or 1),
            default_settings=ClientSettings(
                objects_enabled=self.settings.objects_enabled,
                label_count=self.settings.label_count,
                deterministic=self.settings.deterministic),
            name_prefix="bridge.")

    def _parameters_callback(self, changes) -> SetParametersResult:
        try:
            settings, model_paths = apply_changes(self._values(), changes)
            if hasattr(self, "_pool"):  # after start-up: new model files must load
                self._pool.load_if_changed((self.settings.face, self._model_paths),
                                           (settings.face, model_paths))
        except (ValueError, ModelError, face_workers.WorkerCrashed) as exc:
            self.get_logger().warning(f"refused {[c.name for c in changes]}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        if hasattr(self, "_matcher"):  # after start-up
            self.settings, self._model_paths = settings, model_paths
            self._matcher.threshold = settings.face.threshold
            self._anonymous.threshold = settings.anonymous.threshold
            if getattr(self, "_strangers", None) is not None:
                self._strangers.config = settings.anonymous
            if getattr(self, "_enroller", None) is not None:
                self._enroller.config = settings.enroll_config()
            if hasattr(self, "_trackers"):
                self._trackers.config = settings.tracking
            if hasattr(self, "_outputs"):
                self._outputs.configure(settings.outputs)
        return SetParametersResult(successful=True)

    def _track_ended(self, key: str, track) -> None:
        """A client's face track ended (TrackerSet.on_end): its REP-155 face goes, and its
        descriptors stay a while for a "not this person" correction."""
        self._outputs.track_ended(key, track)
        self._strangers.track_ended(track)

    # --- the processor (bridge worker threads) -----------------------------------------------
    def process(self, client_id: str, jpeg: bytes, client: ClientSettings):
        """Faces only: ``(faces, None)``. Objects run on the client's object scheduler
        (see :meth:`_offer_objects`), so the face reply is never held up by them.

        A face worker that dies or takes longer than ``bridge.frame_timeout`` is restarted
        (and its models loaded again) and this frame fails with FrameFailed."""
        settings, model_paths = self.settings, self._model_paths
        faces = []
        try:
            if not (client.faces_enabled and settings.face_enabled and settings.tracking.enabled):
                self._trackers.drop(client.name)
            if client.faces_enabled and settings.face_enabled:
                tracker = self._trackers.get(client.name) if settings.tracking.enabled else None
                self._sync.refresh()
                now = time.time()
                faces = self._pool.recognise(settings.face, model_paths, jpeg, "jpeg",
                                             self._matcher, tracker, now,
                                             timeout=self._frame_timeout,
                                             max_pixels=settings.max_pixels).faces
                frame = Frame(jpeg, "jpeg")
                if tracker is not None:  # anonymous identities and sightings
                    self._strangers.observe(client.name, tracker, faces, now, image=frame.image)
                self._frames[client.name] = frame  # for _on_result (one frame per client)
        except ImageDecodeError as exc:
            raise UndecodableFrame(str(exc)) from None
        except face_workers.WorkerCrashed as exc:
            self._warm_restarted_pool(settings, model_paths)
            raise FrameFailed(str(exc)) from None
        return faces, None

    def _warm_restarted_pool(self, settings: ServerSettings, model_paths) -> None:
        """Load the models in the restarted workers now, so that the next frame's time limit
        does not include loading them."""
        try:
            self._pool.warmup(settings.face, model_paths)
        except Exception as exc:  # noqa: BLE001 - the next frame reports it again
            self.get_logger().warning(f"restarted face workers did not load their models: "
                                      f"{type(exc).__name__}: {exc}")

    # --- object recognition (per client scheduler threads) ------------------------------------
    def _wants_objects(self, client: Optional[ClientSettings]) -> bool:
        return (client is not None and client.objects_enabled and client.label_count > 0
                and self.settings.objects_enabled and self._recognizer is not None)

    def _offer_objects(self, name: str, jpeg: bytes, stamp: float) -> None:
        """Bridge event loop thread: hand the frame to the client's scheduler (never blocks;
        a newer frame replaces one still waiting)."""
        if self._closing or not self._wants_objects(self.bridge.client_settings(name)):
            return
        scheduler = self._object_schedulers.get(name)
        if scheduler is None:
            scheduler = ObjectScheduler(
                self.settings.objects_max_rate,
                lambda frame: self._recognize_objects(name, scheduler, frame),
                lambda out, frame_stamp: self._objects_done(name, frame_stamp, out),
                on_error=self._objects_error, name=f"bridge-objects:{name}")
            self._object_schedulers[name] = scheduler
        scheduler.set_rate(self.settings.objects_max_rate)
        scheduler.submit(jpeg, stamp)

    def _recognize_objects(self, name: str, scheduler: ObjectScheduler, jpeg: bytes):
        """Scheduler thread: ``(objects, elapsed)``, or None when the client left, was
        renamed or no longer wants objects by the time its turn comes."""
        with self._objects_lock:
            recognizer, client = self._recognizer, self.bridge.client_settings(name)
            if self._closing or recognizer is None \
                    or self._object_schedulers.get(name) is not scheduler \
                    or not self._wants_objects(client):
                return None
            started = time.perf_counter()
            objects = recognizer.recognize(
                decode_image(jpeg, "jpeg", self.settings.max_pixels), client.label_count,
                client.deterministic, self.settings.crops)
            return objects, time.perf_counter() - started

    def _objects_done(self, name: str, stamp: float, out) -> None:
        if out is None or self._closing:
            return
        objects, elapsed = out
        self.bridge.send_objects(name, objects)  # dropped if the client left meanwhile
        header = self._header(name, stamp)
        self._objects_pub.publish(conversions.object_array(header, name, objects, elapsed))
        self._outputs.objects(header, objects)

    def _objects_error(self, exc: BaseException) -> None:
        self.get_logger().warning(f"object recognition failed: {type(exc).__name__}: {exc}",
                                  throttle_duration_sec=5.0)

    def _drop_object_scheduler(self, name: str) -> None:
        scheduler = self._object_schedulers.pop(name, None)
        if scheduler is not None:
            scheduler.stop(timeout=0)  # a run in flight finishes; its result is dropped

    # --- bridge callbacks (bridge event-loop thread) -------------------------------------------
    def _header(self, name: str, stamp: float) -> Header:
        return Header(stamp=_stamp(stamp), frame_id=name)

    def _image_pub(self, name: str):
        token = sanitize_name(name)
        with self._pubs_lock:
            pub = self._image_pubs.get(token)
            if pub is None:
                # no QoS event handlers: this publisher is destroyed from the bridge's
                # thread while the executor waits (see EcosystemOutputs._create)
                pub = self.create_publisher(
                    CompressedImage, f"~/clients/{token}/image/compressed", IMAGE_QOS,
                    event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
                self._image_pubs[token] = pub
            return pub

    def _on_client(self, name: str, connected: bool) -> None:
        self.get_logger().info(f"client {name!r} {'connected' if connected else 'left'}")
        if not connected:
            self._drop_object_scheduler(name)
            self._trackers.drop(name)
            self._frames.pop(name, None)
            with self._pubs_lock:
                pub = self._image_pubs.pop(sanitize_name(name), None)
            if pub is not None:
                self.destroy_publisher(pub)

    def _on_frame(self, name: str, jpeg: bytes, stamp: float) -> None:
        self._offer_objects(name, jpeg, stamp)
        if not self.get_parameter("bridge.publish_images").value:
            return
        pub = self._image_pub(name)
        pub.publish(conversions.compressed_msg(self._header(name, stamp), jpeg))

    def _on_result(self, name, stamp, faces, objects, processing_time) -> None:
        # objects is always None here (process() computes faces only): ~/objects is
        # published by _objects_done
        frame = self._frames.pop(name, None)
        if faces is not None:
            header = self._header(name, stamp)
            self._faces_pub.publish(conversions.face_array(
                header, name, faces, processing_time, self.settings.publish_descriptors))
            if frame is not None:
                self._outputs.faces(header, faces, frame)

    # --- diagnostics -------------------------------------------------------------------------
    def _diagnostics(self) -> None:
        stats = self.bridge.stats()
        node = self.get_fully_qualified_name()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        overall = DiagnosticStatus(name=f"{node}: bridge", hardware_id=node,
                                   level=DiagnosticStatus.OK,
                                   message=f"{stats['global']['clients']} client(s)")
        overall.values = [KeyValue(key=k, value=str(v)) for k, v in stats["global"].items()]
        overall.values.append(KeyValue(key="object_schedulers",
                                       value=str(len(self._object_schedulers))))
        overall.values.append(KeyValue(key="face_worker_restarts",
                                       value=str(self._pool.restarts)))
        msg.status.append(overall)
        for name, counters in stats["clients"].items():
            status = DiagnosticStatus(name=f"{node}: client {name}", hardware_id=node,
                                      level=DiagnosticStatus.OK, message="ok")
            errors = counters["decode_errors"] + counters["processing_errors"]
            if errors:
                status.level, status.message = DiagnosticStatus.WARN, f"{errors} bad frame(s)"
            elif counters["frames_dropped"]:
                status.message = "dropping frames (client faster than processing)"
            status.values = [KeyValue(key=k, value=str(v)) for k, v in counters.items()]
            msg.status.append(status)
        self._diag_pub.publish(msg)

    def _cleanup(self) -> None:
        self._closing = True
        thread, self._thread = getattr(self, "_thread", None), None
        if thread is not None:
            thread.stop()
        schedulers = getattr(self, "_object_schedulers", {})
        for name in list(schedulers):
            schedulers.pop(name).stop(timeout=0)
        recognizer, self._recognizer = getattr(self, "_recognizer", None), None
        if recognizer is not None:
            recognizer.close()
        outputs = getattr(self, "_outputs", None)
        if outputs is not None:
            outputs.close()  # candidate matches end (confidence 0), face topics go
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown()
        strangers = getattr(self, "_strangers", None)
        if strangers is not None:
            try:
                strangers.flush()  # the last sightings
            except Exception as exc:  # noqa: B902 - shutting down; say why
                print(f"[{NODE_NAME}] sightings not written at exit: {exc}", file=sys.stderr)
        gallery, self.gallery = getattr(self, "gallery", None), None
        if gallery is not None:
            gallery.close()

    def destroy_node(self):
        self._cleanup()
        return super().destroy_node()


def _path(value: str):
    """A file parameter: ``~`` expanded; empty means not set (None)."""
    return os.path.expanduser(value) if value else None


def main(args=None) -> int:
    if not node_process.init(NODE_NAME, args):
        return 1
    node: Optional[FacerecBridge] = None
    code = 0
    try:
        with node_process.starting():
            node = FacerecBridge()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (BridgeConfigError, ModelError, GalleryError, ValueError, OSError) as exc:
        print(f"[{NODE_NAME}] cannot start: {exc}", file=sys.stderr)
        code = 1
    finally:
        node_process.stopping()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
