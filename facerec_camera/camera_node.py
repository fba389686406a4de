"""ROS 2 node ``facerec_camera``: publishes camera frames as ``sensor_msgs/CompressedImage``.

Run::

    ros2 run facerec facerec_camera --ros-args -p source:=0 -p fps:=15.0
    python -m facerec_camera.camera_node --ros-args -p source:=pattern

Capture and encoding run in their own thread (:class:`CaptureLoop`), not in an executor
callback, so the rate holds while the executor serves parameter requests; publishing runs in
another (:class:`LatestSender`), so capture never waits for the network. With ``reliability``
reliable (the default) the newest frame is sent once the previous one has been acknowledged
by every subscriber: a slow or lossy link costs frames per second, not whole frames. Messages
carry ``format`` "jpeg" (as cv_bridge's ``cv2_to_compressed_imgmsg`` writes it) and a header
stamp taken from the node's clock at capture time.

Exit codes: 0 after Ctrl-C / SIGTERM or when a file source without ``loop`` ends; 1 when the
source fails for good (a file that cannot be read further); 2 for invalid parameters, a
source that cannot be opened at start-up, or ROS 2 that cannot start (one line on stderr says
why). A camera that disappears while running is not fatal: it is re-opened with exponential
back-off. Parameters are ParamSpecs declared by facerec_server.ros_params (an integer is taken
for fps, resize and wait_for_subscribers; the descriptors' ranges are what is accepted).
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import rclpy
import rclpy.executors
import rclpy.logging
import rclpy.task
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from facerec_server import node_process
from facerec_server.core.images import DEFAULT_MAX_PIXELS
from facerec_server.params import ParamSpec
from facerec_server.ros_params import declare

from .encode import FrameEncoder
from .pipeline import CaptureLoop
from .sender import LatestSender
from .sources import Frame, SourceError, open_source

try:  # Humble and later
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - older rclpy
    class ExternalShutdownException(Exception):
        pass

NODE_NAME = "facerec_camera"

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_CONFIG = 0, 1, 2

RELIABILITY = ("reliable", "best_effort")
#: Fast DDS's default shared-memory segment: bigger frames need config/fastdds.xml.
FASTDDS_DEFAULT_SEGMENT = 512 * 1024


def image_qos(reliability: str) -> QoSProfile:
    """Depth 1 (only the newest frame matters; no backlog can grow). Reliable: lost fragments
    of a frame are repaired and the sender waits for the acknowledgement before the next
    frame; best effort: a frame with a lost fragment is lost whole."""
    return QoSProfile(
        reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.VOLATILE)


class ConfigError(RuntimeError):
    """Invalid parameters or a source that cannot be opened: a message for the user."""


def _source(value: str) -> Optional[str]:
    if not value.strip():
        return "source must not be empty (a camera index such as 0, /dev/videoN, picamera, " \
               "pattern, a folder, an image or a video file)"
    return None


def _not_blank(name: str):
    def check(value: str) -> Optional[str]:
        return f"{name} must be a non-empty string" if not value.strip() else None
    return check


# source/width/height/topic/loop/mjpeg_passthrough/wait_for_subscribers are fixed at start-up
# (read-only); fps, jpeg_quality, resize and frame_id may be changed at run time.
SPECS: Tuple[ParamSpec, ...] = (
    ParamSpec("source", "0", "string",
              "What to capture: camera index ('0'), '/dev/videoN', 'picamera', 'pattern' (test "
              "pattern), a directory of jpg/png/bmp images, an image file or a video file. An "
              "integer (source:=0) is taken as a camera index.", read_only=True,
              check=_source, integer_as_string=True),
    ParamSpec("width", 640, "int",
              "Capture width requested from the camera (and test pattern width), pixels",
              low=16, high=8192, read_only=True),
    ParamSpec("height", 480, "int",
              "Capture height requested from the camera (and test pattern height), pixels",
              low=16, high=8192, read_only=True),
    ParamSpec("fps", 15.0, "double",
              "Publishing rate, frames per second; requested from the camera too (a camera "
              "slower than this limits the rate)", low=0.1, high=120.0),
    ParamSpec("jpeg_quality", 80, "int",
              "JPEG quality (not applied to camera MJPEG passed through unchanged)",
              low=1, high=100),
    ParamSpec("resize", 1.0, "double",
              "Scale factor applied before encoding (1.0 keeps the size)", low=0.05, high=1.0),
    ParamSpec("frame_id", "camera", "string", "header.frame_id of the published images",
              check=_not_blank("frame_id")),
    ParamSpec("topic", "camera/image/compressed", "string",
              "Topic for sensor_msgs/CompressedImage (relative: follows the node namespace)",
              read_only=True, check=_not_blank("topic")),
    ParamSpec("loop", True, "bool",
              "Restart video files and image folders at their end; when false the node exits "
              "with code 0 after the last frame", read_only=True),
    ParamSpec("mjpeg_passthrough", True, "bool",
              "Publish a camera's MJPEG frames without re-encoding when resize is 1.0 "
              "(jpeg_quality is then the camera's own)", read_only=True),
    ParamSpec("wait_for_subscribers", 0.0, "double",
              "Seconds to wait at start-up for a matched subscriber before capturing (0 = start "
              "at once). Best-effort frames published before DDS has matched a subscriber are "
              "lost; useful for recordings and demos that must be seen from the first frame.",
              low=0.0, high=3600.0, read_only=True),
    ParamSpec("reliability", "reliable", "string",
              "QoS reliability of the images (depth 1 either way): reliable repairs lost "
              "fragments and sends the newest frame once the previous one is acknowledged, so a "
              "slow or lossy link lowers the frame rate instead of losing frames (the server's "
              "image_reliability must then be reliable too); best_effort matches sensor-data "
              "subscribers and loses a whole frame for one lost fragment",
              choices=RELIABILITY, read_only=True),
    ParamSpec("delivery_timeout", 2.0, "double",
              "Reliable only: seconds to wait for every subscriber to acknowledge a frame before "
              "sending the newest one anyway (counted and reported as unacknowledged)",
              low=0.01, high=60.0),
    ParamSpec("max_image_pixels", DEFAULT_MAX_PIXELS, "int",
              "Largest image or video frame decoded from a file source, in pixels (width x "
              "height): an image declaring more is skipped with a warning (read from its "
              "header, before decoding), a video with larger frames is refused",
              low=1, high=1_000_000_000, read_only=True),
    ParamSpec("match_server_rate", True, "bool",
              "Send no faster than the server processes this topic's frames (its /diagnostics "
              "processing_time_median): a frame then arrives when the server is about to be free "
              "instead of waiting behind the one being processed, and no link or server time is "
              "spent on frames the server would drop. Capture keeps its rate either way."),
)
BY_NAME: Dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}


class FacerecCamera(Node):
    """Publishes JPEG frames from a camera, a file, a folder or a test pattern.

    ``__init__`` only declares parameters and creates the publisher; :meth:`start` opens the
    source and starts the capture thread (``ConfigError`` when the source cannot be opened),
    :meth:`stop` ends it. ``done`` completes with the exit code when capture ends by itself.
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._loop: Optional[CaptureLoop] = None
        self._sender: Optional[LatestSender] = None
        self._finished_code: Optional[int] = None
        self._big_frame_warned = False
        self._last_counts: dict = {}
        self.done = rclpy.task.Future()
        try:
            declare(self, SPECS)
        except ValueError as exc:  # a wrong type, out of range, refused by its check
            raise ConfigError(str(exc)) from None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._frame_id = self.get_parameter("frame_id").value
        self._reliability = self.get_parameter("reliability").value
        self._publisher = self.create_publisher(
            CompressedImage, self.get_parameter("topic").value, image_qos(self._reliability),
            event_callbacks=PublisherEventCallbacks(incompatible_qos=self._incompatible_qos))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._wake = self.create_guard_condition(self._on_capture_finished)
        self._stats_timer = self.create_timer(30.0, self._log_stats)
        self._diag_timer = self.create_timer(1.0, self.diagnostics_callback)
        self._server_pace: dict = {}  # server status name -> (seconds per frame, when seen)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.server_diagnostics_callback,
                                 10)

    # --- parameters -------------------------------------------------------------------------
    def _on_set_parameters(self, params: List[rclpy.Parameter]) -> SetParametersResult:
        reasons = [reason for p in params if p.name in BY_NAME
                   for reason in [BY_NAME[p.name].validate(p.value)] if reason]
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        if self._loop is not None:  # live changes while capturing
            changes = {p.name: p.value for p in params}
            if "fps" in changes:
                self._loop.set_fps(float(changes["fps"]))
            if "jpeg_quality" in changes or "resize" in changes:
                self._loop.set_encoder(self._make_encoder(changes))
            if "frame_id" in changes:
                self._frame_id = changes["frame_id"]
            if "delivery_timeout" in changes and self._sender is not None:
                self._sender.timeout = float(changes["delivery_timeout"])
            if changes.get("match_server_rate") is False and self._sender is not None:
                self._sender.min_interval = 0.0
        return SetParametersResult(successful=True)

    def _param(self, name: str, overrides: Optional[dict] = None):
        if overrides and name in overrides:
            return overrides[name]
        return self.get_parameter(name).value

    def _make_encoder(self, overrides: Optional[dict] = None) -> FrameEncoder:
        resize = float(self._param("resize", overrides))
        return FrameEncoder(int(self._param("jpeg_quality", overrides)),
                            None if resize == 1.0 else resize,
                            max_pixels=int(self._param("max_image_pixels")))

    # --- capture ----------------------------------------------------------------------------
    def start(self, run: bool = True) -> None:
        """Open the source and start capturing; ConfigError with a clear reason on failure.

        With ``run`` false the capture thread is not started: :attr:`capture_loop` ``.step()``
        then captures, encodes and publishes one frame (used by the benchmark).
        """
        p = self._param
        fps = float(p("fps"))
        self._wait_for_subscribers(float(p("wait_for_subscribers")))
        try:
            source = open_source(p("source"), width=p("width"), height=p("height"), fps=fps,
                                 loop=p("loop"), passthrough=p("mjpeg_passthrough"),
                                 max_pixels=p("max_image_pixels"))
            source.log = self.get_logger()
            source.open()
        except SourceError as exc:
            raise ConfigError(str(exc)) from exc
        encoder = self._make_encoder()
        acknowledged = self._acknowledged if self._reliability == "reliable" else None
        self._sender = LatestSender(self._publish, acknowledged,
                                    float(p("delivery_timeout")), self.get_logger())
        self._sender.on_unacknowledged = self._unacknowledged
        deliver = self._sender.offer if run else self._publish
        self._loop = CaptureLoop(source, encoder, fps, deliver, self.get_logger(),
                                 on_finished=self._capture_finished)
        self.get_logger().info(
            f"publishing {source.description} on {self._publisher.topic_name} at {fps:g} fps "
            f"({encoder}, frame_id '{self._frame_id}', {self._reliability})")
        if run:
            self._loop.start()

    def _acknowledged(self) -> bool:
        """Sender thread: has every reliable subscriber acknowledged what was published?
        (True once rclpy is shut down, e.g. by a signal: nothing is waited for then.)"""
        try:
            return self._publisher.wait_for_all_acked(Duration(seconds=0))
        except Exception:  # rclpy's RCLError: the context was shut down under the call
            if self.context.ok():
                raise
            return True

    def _wait_for_subscribers(self, seconds: float) -> None:
        """Block up to ``seconds`` until the image topic has a matched subscriber."""
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        while self._publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        matched = self._publisher.get_subscription_count()
        self.get_logger().info(f"{matched} subscriber(s) matched after waiting "
                               f"{seconds - max(0.0, deadline - time.monotonic()):.1f} s")

    def stop(self) -> None:
        if self._loop is not None:
            if self._loop.stop(5.0):
                self._loop.source.close()
            else:  # stuck in a device read: closing under it could crash; exit frees it
                self.get_logger().warning("capture thread did not stop within 5 s")
        if self._sender is not None:
            self._sender.stop(5.0)

    @property
    def capture_loop(self) -> Optional[CaptureLoop]:
        return self._loop

    @property
    def stats(self):
        return self._loop.stats if self._loop is not None else None

    def _publish(self, data: bytes, frame: Frame) -> None:
        """Sender thread: stamp = node clock now, minus the time since the frame's capture."""
        if not self.context.ok():  # shutting down (Ctrl-C): nothing to publish to
            return
        if len(data) > FASTDDS_DEFAULT_SEGMENT and not self._big_frame_warned:
            self._big_frame_warned = True
            self._warn_big_frame(len(data))
        msg = CompressedImage()
        stamp = self.get_clock().now()
        age = time.time() - frame.capture_time
        if 0.0 < age < 1.0:
            stamp = stamp - Duration(nanoseconds=int(age * 1e9))
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = self._frame_id
        msg.format = "jpeg"
        msg.data = data
        self._publisher.publish(msg)

    def _capture_finished(self, code: int) -> None:
        """Capture thread: hand the exit code to the executor thread."""
        self._finished_code = code
        self._wake.trigger()

    def _on_capture_finished(self) -> None:
        if self._finished_code is not None and not self.done.done():
            self.done.set_result(self._finished_code)

    def _log_stats(self) -> None:
        s = self.stats
        if s is not None:
            sent = self._sender.stats if self._sender is not None else None
            link = (f" ({sent.replaced} not sent while the link was busy, "
                    f"{sent.unacknowledged} unacknowledged)" if sent is not None else "")
            self.get_logger().info(
                f"{sent.sent if sent is not None else s.frames} frames sent{link}, "
                f"{s.skipped} late ticks skipped, source lost {s.lost}x, re-opened "
                f"{s.reopens}x")

    # --- telling the user --------------------------------------------------------------------
    def _warn_big_frame(self, size: int) -> None:
        if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps") \
                and not (os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
                         or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")):
            self.get_logger().warning(
                f"frames of {size // 1024} KB exceed Fast DDS's default 512 KB shared-memory "
                "segment and will not reach subscribers on this host: start the node with "
                "FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix facerec)/share/facerec/config/"
                "fastdds.xml (the launch files do), see the README's 'Transport'")

    def _unacknowledged(self, timeout: float) -> None:
        self.get_logger().warning(
            f"a frame was not acknowledged by all {self._publisher.get_subscription_count()} "
            f"subscriber(s) within delivery_timeout ({timeout:g} s): the link is too slow or "
            "lossy for these frames (lower fps, size or jpeg_quality), or a subscriber is "
            "stuck; check the transport settings (README, 'Transport')",
            throttle_duration_sec=10.0)

    def _incompatible_qos(self, info) -> None:
        self.get_logger().warning(
            f"a subscriber of {self._publisher.topic_name} requests a QoS this publisher does "
            f"not offer (reliability {self._reliability}): set the camera's reliability to "
            "reliable, or the subscriber to best effort", throttle_duration_sec=10.0)

    def server_diagnostics_callback(self, msg: DiagnosticArray) -> None:
        """Pace sending to the fastest server processing this topic (see match_server_rate)."""
        suffix = f": {self._publisher.topic_name}"
        now = time.monotonic()
        for status in msg.status:
            if not status.name.endswith(suffix) or status.hardware_id == \
                    self.get_fully_qualified_name():
                continue
            values = {kv.key: kv.value for kv in status.values}
            try:
                seconds = float(values.get("processing_time_median") or "nan")
            except ValueError:
                continue
            if math.isfinite(seconds):
                self._server_pace[status.name] = (seconds, now)
        for name in [n for n, (_, seen) in self._server_pace.items() if now - seen > 5.0]:
            del self._server_pace[name]  # that server is gone (or idle): do not pace by it
        if self._sender is not None and self._loop is not None:
            paces = [seconds for seconds, _ in self._server_pace.values()]
            # the sender then waits for the next frame, half a capture period on average
            pace = max(0.0, min(paces) - 0.5 / self._loop.fps) if paces else 0.0
            self._sender.min_interval = pace if self.get_parameter("match_server_rate").value \
                else 0.0

    def diagnostics_callback(self) -> None:
        """One status for the image topic: what was captured, sent and acknowledged."""
        if self._loop is None or self._sender is None:
            return
        node = self.get_fully_qualified_name()
        sent, loop = self._sender.stats, self._loop.stats
        counts = {"frames_captured": loop.frames, "frames_sent": sent.sent,
                  "not_sent_link_busy": sent.replaced, "acknowledged": sent.delivered,
                  "unacknowledged": sent.unacknowledged, "send_errors": sent.send_errors,
                  "encode_errors": loop.encode_errors}
        grew = {key: value - self._last_counts.get(key, 0) for key, value in counts.items()}
        self._last_counts = counts
        level, text = DiagnosticStatus.OK, "ok"
        if grew["unacknowledged"] or grew["send_errors"]:
            level = DiagnosticStatus.WARN
            text = ("frames not acknowledged by every subscriber within delivery_timeout, or "
                    "not sent: link too slow or lossy? (README, 'Transport')")
        elif grew["not_sent_link_busy"]:
            text = (f"sending {grew['frames_sent']} of {grew['frames_captured']} frames this "
                    "period: the link is slower than the camera (newest frame first)")
        elif self._publisher.get_subscription_count() == 0:
            text = "no subscriber"
        status = DiagnosticStatus(name=f"{node}: {self._publisher.topic_name}",
                                  hardware_id=node, level=level, message=text)
        values = dict(counts, subscribers=self._publisher.get_subscription_count(),
                      reliability=self._reliability,
                      min_send_interval=f"{self._sender.min_interval:.3f}",
                      delivery_seconds=f"{sent.delivery_seconds:.3f}",
                      frame_bytes=loop.bytes // max(loop.frames, 1))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def destroy_node(self):
        self.stop()
        return super().destroy_node()


def main(args=None) -> int:
    """Entry point ``facerec_camera``: returns the process exit code (see module docstring)."""
    if not node_process.init(NODE_NAME, args):
        return EXIT_CONFIG
    node = None
    code = EXIT_OK
    try:
        with node_process.starting():
            node = FacerecCamera()
            node.start()
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin_until_future_complete(node.done)
        if node.done.done():
            code = node.done.result()
    except (ParameterException, NameValidationException, ConfigError) as exc:
        logger = node.get_logger() if node is not None else rclpy.logging.get_logger(NODE_NAME)
        logger.error(f"{exc}")
        code = EXIT_CONFIG
    except (KeyboardInterrupt, ExternalShutdownException):
        code = EXIT_OK
    finally:
        node_process.stopping()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
