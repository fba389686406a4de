"""The end-to-end demo (``make demo``): camera node -> DDS -> recognition server -> results.

What it does, all on this machine (DDS discovery limited to localhost)::

    1. make a short video from real registry faces (demo_video): the astronaut (enrolled,
       mirrored/scaled/shifted) and messi5 (never enrolled) -> <output>/demo.avi (MJPG)
    2. start ``facerec_server`` as its own process, gallery = a fresh <output>/gallery.db
    3. enroll the astronaut through the server's ``~/enroll`` service (the PNG photo)
    4. start ``facerec_camera`` as its own process: source:=<video>, loop:=false, fps:=10
    5. print every FaceArray as it arrives (name or unknown, box, distance, latency)
    6. save an annotated snapshot (the server's ``~/annotated/compressed``) as a PNG
    7. stop the server and print a summary; exit 0, or 1 with the reason
    (ROS log files go to <output>/ros-log unless ROS_LOG_DIR or ROS_HOME is set)

``--source`` (or the SOURCE environment variable) streams that camera or file instead of the
made video; the demo then runs until Ctrl-C (``--name``/``--enroll-image`` enroll your own
photo; the snapshot is refreshed every few seconds). Children run in their own sessions and are
stopped (SIGINT, then SIGKILL of their process group) on every way out, Ctrl-C included; on
Linux they also get SIGTERM should the demo itself be killed.

Run ``python -m facerec_server.tools.demo --help``.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

DEFAULT_NAME = "eileen"  # Eileen Collins, the astronaut in scikit-image's astronaut.png
SERVER = "/facerec_server"
CAMERA_TOPIC = "camera/image/compressed"


class DemoError(RuntimeError):
    """A failure the user is told about in one clear message (exit code 1)."""


class Interrupted(Exception):
    """Ctrl-C / SIGTERM while the demo was running."""


# --- environment ---------------------------------------------------------------------------
def loopback_env() -> None:
    """Keep DDS on this machine; one ROS domain per run unless the user chose one; the
    project's transport settings (config/fastdds.xml) unless the user has their own."""
    from facerec_camera.transport import default_share_dir, profile_env
    os.environ.update(profile_env(default_share_dir()))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # Jazzy and later
    if os.environ.get("ROS_DISTRO", "") in ("humble", "iron"):
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


def _child_env() -> dict:
    """The children import the same facerec packages as this process, unbuffered."""
    import facerec_server
    root = str(pathlib.Path(facerec_server.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> Optional[Callable[[], None]]:
    """Linux: the child gets SIGTERM (a clean ROS shutdown) if the demo itself is killed."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)  # loaded before the fork: just a call


class Child:
    """A node process in its own session (a terminal's Ctrl-C reaches only the demo, which
    then stops the node in order); output goes to ``<output>/<name>.log``."""

    def __init__(self, name: str, args: List[str], log_path: pathlib.Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=_child_env(), start_new_session=True,
                                      preexec_fn=_die_with_parent())

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGINT to the node (as Ctrl-C), SIGKILL to its process group if it hangs."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGINT)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name}: did not stop within {timeout:g} s; killing it",
                      file=sys.stderr)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                pass
        try:  # the node's own session: also ends worker processes it left behind
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def frames_sent(self) -> Optional[int]:
        """The camera's own count, from its last "N frames sent" log line (None if none)."""
        found = re.findall(r"(\d+) frames sent", self.log_path.read_text(errors="replace"))
        return int(found[-1]) if found else None

    def tail(self, lines: int = 15) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:]) or "    (no output)"


def _node_args(module: str, params_file: pathlib.Path) -> List[str]:
    return [sys.executable, "-m", module, "--ros-args", "--params-file", str(params_file)]


def _write_params(path: pathlib.Path, node: str, values: dict) -> pathlib.Path:
    import yaml
    path.write_text(yaml.safe_dump({node: {"ros__parameters": values}}, sort_keys=False))
    return path


# --- results -------------------------------------------------------------------------------
def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _key(header) -> Tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _face_text(face) -> str:
    r = face.roi
    box = f"box x={r.x_offset} y={r.y_offset} w={r.width} h={r.height}"
    return f"{face.name or 'unknown'} ({box}, distance {face.distance:.2f})"


def _face_results(msg) -> list:
    """FaceArray -> core FaceResults, for draw_overlay."""
    from facerec_server.core.types import FaceResult
    out = []
    for f in msg.faces:
        r = f.roi
        landmarks = np.array([[p.x, p.y] for p in f.landmarks], np.float32).reshape(-1, 2)
        out.append(FaceResult(box=(r.x_offset, r.y_offset, r.x_offset + r.width,
                                   r.y_offset + r.height),
                              detection_score=f.detection_score, landmarks=landmarks,
                              name=f.name, distance=f.distance, confidence=f.confidence))
    return out


class Results:
    """Everything the demo hears over DDS: frames, FaceArrays, overlays, diagnostics."""

    def __init__(self, node, name: str, keep: int = 120):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage

        from facerec_msgs.msg import FaceArray
        self.node = node
        self.name = name
        self.frames_seen = 0
        self.first_stamp: Optional[float] = None
        self.arrays: list = []  # (FaceArray, latency seconds)
        self.latencies: List[float] = []
        self.recognised = 0  # frames with the enrolled person recognised
        self.unknown = 0  # frames with at least one unknown face
        self.last_result = 0.0  # monotonic time of the newest FaceArray
        self.diag: Optional[dict] = None
        self.diag_time = 0.0
        self._frames: "collections.OrderedDict" = collections.OrderedDict()
        self._annotated: "collections.OrderedDict" = collections.OrderedDict()
        self._keep = keep
        self.best = None  # (score, FaceArray) for the snapshot
        self.best_changed = False
        self.faces_sub = node.create_subscription(FaceArray, f"{SERVER}/faces", self._faces, 50)
        self.annotated_sub = node.create_subscription(
            CompressedImage, f"{SERVER}/annotated/compressed", self._overlay, 5)
        frames_qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                                reliability=ReliabilityPolicy.BEST_EFFORT)  # as the camera
        node.create_subscription(CompressedImage, CAMERA_TOPIC, self._frame, frames_qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)

    def _remember(self, store, key, value) -> None:
        store[key] = value
        while len(store) > self._keep:
            store.popitem(last=False)

    def _frame(self, msg) -> None:
        self.frames_seen += 1
        self._remember(self._frames, _key(msg.header), bytes(msg.data))

    def _overlay(self, msg) -> None:
        self._remember(self._annotated, _key(msg.header), bytes(msg.data))

    def _diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(SERVER) and status.name.endswith(CAMERA_TOPIC):
                self.diag = {kv.key: kv.value for kv in status.values}
                self.diag_time = time.monotonic()

    def _faces(self, msg) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        stamp = _stamp(msg.header)
        latency = now - stamp
        if self.first_stamp is None:
            self.first_stamp = stamp
        self.arrays.append(msg)
        self.latencies.append(latency)
        self.last_result = time.monotonic()
        names = [f.name for f in msg.faces]
        known = self.name in names
        unknown = "" in names
        self.recognised += known
        self.unknown += unknown
        faces = "; ".join(_face_text(f) for f in msg.faces) or "no face"
        print(f"  frame t+{stamp - self.first_stamp:5.2f} s  latency {latency * 1000:4.0f} ms "
              f"(processing {msg.processing_time * 1000:4.0f} ms)  {faces}", flush=True)
        score = (known and unknown, known, len(msg.faces))
        if self.best is None or score >= self.best[0]:  # ties: the newest
            self.best = (score, msg)
            self.best_changed = True

    def server_done(self, since: float) -> bool:
        """Diagnostics newer than ``since`` show every received frame handled."""
        d = self.diag
        if d is None or self.diag_time < since:
            return False
        try:
            handled = sum(int(d.get(k, 0) or 0) for k in (
                "processed", "dropped_replaced", "dropped_stale", "dropped_disabled",
                "decode_errors", "errors"))
            return handled >= int(d.get("received", 0) or 0)
        except ValueError:
            return False

    def snapshot(self, path: pathlib.Path) -> Optional[str]:
        """Write the best frame's overlay as a PNG; returns how it was made, or None."""
        self.best_changed = False
        if self.best is None:
            return None
        msg = self.best[1]
        key = _key(msg.header)
        data = self._annotated.get(key)
        if data is not None:
            image, how = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), \
                "the server's ~/annotated/compressed"
        elif key in self._frames:  # the overlay did not come: draw it on the camera frame
            from facerec_server.core.overlay import draw_overlay
            frame = cv2.imdecode(np.frombuffer(self._frames[key], np.uint8), cv2.IMREAD_COLOR)
            if frame is None:
                return None
            image, how = draw_overlay(frame, _face_results(msg)), "draw_overlay on the frame"
        else:
            return None
        if image is None or not cv2.imwrite(str(path), image):
            return None
        names = ", ".join(f.name or "unknown" for f in msg.faces) or "no face"
        return f"frame t+{_stamp(msg.header) - self.first_stamp:.2f} s: {names}; {how}"


# --- the demo ------------------------------------------------------------------------------
class Demo:
    def __init__(self, args):
        self.args = args
        self.out = pathlib.Path(args.output)
        self.children: Dict[str, Child] = {}
        self.stop_requested = False
        self.node = None
        self.executor = None
        self.results: Optional[Results] = None
        self.sent: Optional[int] = None
        self.context = None
        self.server_started = 0.0

    # signals: the first Ctrl-C / SIGTERM asks the demo to stop and clean up
    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt  # second Ctrl-C: stop waiting, cleanup still runs
        self.stop_requested = True

    def spin(self, seconds: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=seconds)
        if self.stop_requested:
            raise Interrupted()
        server = self.children.get("server")
        if server is not None and not server.alive():
            raise DemoError(f"the server exited (code {server.popen.returncode}); "
                            f"end of {server.log_path}:\n{server.tail()}")

    def wait_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
            self.spin()

    def run(self) -> int:
        t0 = time.monotonic()
        live = bool(self.args.source)
        self._prepare_output()
        source = self._source(live)
        self._start_server()
        self._start_ros()
        self._enroll()
        camera = self._start_camera(source, live)
        snapshot = self.out / "snapshot.png"
        note, interrupted = None, False
        try:
            note = self._stream(camera, live, snapshot)
        except Interrupted:
            interrupted = True
            print("\nCtrl-C: stopping the camera and the server", flush=True)
        note = self.results.snapshot(snapshot) or note
        self.stop_children()
        # the camera's own count when it ended by itself; else what this process saw
        self.sent = camera.frames_sent() if not (live or interrupted) else None
        return self.summary(t0, snapshot if note else None, note, live, interrupted)

    def _prepare_output(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name in ("gallery.db", "gallery.db-wal", "gallery.db-shm", "snapshot.png"):
            stale = self.out / name
            if stale.exists():
                stale.unlink()  # a fresh gallery each run; never the user's ~/.ros one
        if not os.environ.get("ROS_LOG_DIR") and not os.environ.get("ROS_HOME"):
            os.environ["ROS_LOG_DIR"] = str((self.out / "ros-log").resolve())  # not ~/.ros/log
        print(f"facerec demo: output in {self.out}/ (ROS_DOMAIN_ID "
              f"{os.environ['ROS_DOMAIN_ID']}, DDS discovery on localhost only)", flush=True)

    def _source(self, live: bool) -> str:
        """The camera's source: the user's, or the video made now."""
        if live:
            print(f"source: {self.args.source} (runs until Ctrl-C)")
            return self.args.source
        from facerec_server.tools import demo_video
        video = demo_video.make_video(self.out / "demo.avi", self.args.frames, self.args.fps)
        print(f"video: {video.path}, {video.frames} frames {video.size[0]}x{video.size[1]} MJPG "
              f"at {video.fps:g} fps: {self.args.name} (astronaut.png mirrored, scaled, moving) "
              "and messi5.jpg (not enrolled)", flush=True)
        return str(video.path)

    def _start_server(self) -> None:
        gallery = self.out / "gallery.db"
        params = _write_params(self.out / "server.yaml", "facerec_server", {
            "gallery.path": str(gallery.resolve()),
            "face.upsample": 1,  # messi5's face is ~40 px: HOG needs one upsampling
            "diagnostics_period": 0.5,
        })
        self.server_started = time.monotonic()
        server = self.children["server"] = Child(
            "server", _node_args("facerec_server.server_node", params), self.out / "server.log")
        print(f"server: started facerec_server, pid {server.popen.pid} (face.upsample 1, "
              f"gallery {gallery}; log {server.log_path})", flush=True)

    def _start_ros(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("facerec_demo", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.results = Results(self.node, self.args.name)

    def _enroll(self) -> None:
        """The photo, as it is (PNG bytes), through the server's ~/enroll service."""
        from sensor_msgs.msg import CompressedImage

        from facerec_msgs.srv import Enroll
        client = self.node.create_client(Enroll, f"{SERVER}/enroll")
        self.wait_until(client.service_is_ready, self.args.startup_timeout,
                        f"the server's {SERVER}/enroll service (see {self.out / 'server.log'})")
        print(f"server: ready after {time.monotonic() - self.server_started:.1f} s", flush=True)
        path = pathlib.Path(self.args.enroll_image)
        data = path.read_bytes()
        fmt = "png" if data.startswith(b"\x89PNG") else "jpeg"
        future = client.call_async(Enroll.Request(
            name=self.args.name, images=[CompressedImage(format=fmt, data=data)]))
        self.wait_until(future.done, 120, "the enroll service's answer")
        answer = future.result()
        print(f"enroll: {self.args.name!r} from {path} -> "
              f"{'ok' if answer.success else 'FAILED'}: {answer.message}", flush=True)
        if not answer.success:
            raise DemoError(f"enrolling {self.args.name!r} failed: {answer.message}")

    def _start_camera(self, source: str, live: bool) -> Child:
        # Start once this process sees the server's result publishers, so that the first
        # results and overlays are not lost to discovery.
        self.wait_until(lambda: self.results.faces_sub.get_publisher_count() > 0
                        and self.results.annotated_sub.get_publisher_count() > 0, 30,
                        "the server's result topics")
        self._check_alone()
        params = _write_params(self.out / "camera.yaml", "facerec_camera", {
            "source": source, "loop": live, "fps": float(self.args.fps),
            "wait_for_subscribers": 10.0})
        camera = self.children["camera"] = Child(
            "camera", _node_args("facerec_camera.camera_node", params), self.out / "camera.log")
        print(f"camera: started facerec_camera, pid {camera.popen.pid}, streaming {source} at "
              f"{self.args.fps:g} fps{'' if live else ', loop false'} (log {camera.log_path})")
        print("results (one line per processed frame; latency = arrival here - frame stamp, "
              "processing = the server's time on the frame):",
              flush=True)
        return camera

    def _check_alone(self) -> None:
        """Another facerec system in this ROS domain would mix its frames and results in."""
        servers = [n for n, ns in self.node.get_node_names_and_namespaces()
                   if n == SERVER.lstrip("/") and ns == "/"]
        cameras = self.node.count_publishers("/" + CAMERA_TOPIC)
        if len(servers) > 1 or cameras > 0:
            raise DemoError(
                f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']} is in use on this machine ("
                f"{len(servers)} {SERVER} nodes, {cameras} publisher(s) of /{CAMERA_TOPIC} "
                "before the demo's camera); run again with a free ROS_DOMAIN_ID=<0..101>")

    def _stream(self, camera: Child, live: bool, snapshot: pathlib.Path) -> Optional[str]:
        """Print results until the video's last frame is handled (or Ctrl-C when live)."""
        note, last_snapshot, camera_end = None, 0.0, None
        deadline = time.monotonic() + self.args.frames / self.args.fps + 60.0
        while True:
            self.spin(0.1)
            now = time.monotonic()
            if live and self.results.best_changed and now - last_snapshot > 2.0:
                note = self.results.snapshot(snapshot) or note  # one to look at while it runs
                last_snapshot = now
            if camera_end is None and not camera.alive():
                camera_end = now
                code = camera.popen.returncode
                if code != 0 or live:
                    raise DemoError(f"the camera exited with code {code}; end of "
                                    f"{camera.log_path}:\n{camera.tail()}")
                print(f"camera: end of video, {camera.frames_sent()} frames sent; waiting for "
                      "the server's last results", flush=True)
            if camera_end is not None:
                quiet = now - max(self.results.last_result, camera_end)
                if self.results.server_done(camera_end + 0.2) or quiet > 3.0 \
                        or now - camera_end > 20.0:
                    return note
            if not live and now > deadline:
                raise DemoError(f"the video did not finish in time (see {camera.log_path})")

    def summary(self, t0: float, snapshot, note, live: bool, interrupted: bool) -> int:
        r = self.results
        processed = len(r.arrays)
        median = f"{statistics.median(r.latencies):.2f} s" if r.latencies else "n/a"
        if snapshot is not None:
            print(f"snapshot: {snapshot} ({note})")
        d = r.diag or {}
        if d:
            print(f"server counters: received {d.get('received')}, processed "
                  f"{d.get('processed')}, skipped {d.get('dropped_replaced')} (a newer frame "
                  f"came while busy), stale {d.get('dropped_stale')}, errors "
                  f"{d.get('errors')}")
        sent = str(self.sent) if self.sent is not None else \
            f"{r.frames_seen} (seen on {CAMERA_TOPIC})"
        print(f"summary: frames sent {sent}, processed {processed}, recognised "
              f"{r.recognised} as {r.name!r}, unknown faces in {r.unknown}, median latency "
              f"{median} ({time.monotonic() - t0:.1f} s in all)", flush=True)
        problems = []
        if processed == 0:
            problems.append("no recognition result arrived (see "
                            f"{self.out / 'server.log'} and {self.out / 'camera.log'})")
        elif not live and not interrupted and r.recognised == 0:
            problems.append(f"{r.name!r} was never recognised")
        if not live and not interrupted and snapshot is None:
            problems.append("no annotated snapshot could be written")
        if problems:
            print("demo FAILED: " + "; ".join(problems), file=sys.stderr)
            return 1
        if interrupted and not live:
            return 130
        return 0

    def stop_children(self) -> None:
        """The camera first (no frames into a stopping server), then the server; each one is
        stopped even if reporting on another fails."""
        for name in ("camera", "server"):
            child = self.children.pop(name, None)
            if child is None:
                continue
            try:
                running = child.alive()  # one that ended already was reported then
                code = child.stop()
                if running and code not in (0, -signal.SIGINT):
                    print(f"{name}: exited with code {code}; end of {child.log_path}:\n"
                          f"{child.tail()}", file=sys.stderr)
            except Exception as exc:  # keep going: the other child must still be stopped
                print(f"{name}: while stopping it: {type(exc).__name__}: {exc}",
                      file=sys.stderr)
            finally:
                if child.alive():
                    child.popen.kill()
                    child.popen.wait()

    def close(self) -> None:
        self.stop_children()
        if self.node is not None:
            if self.executor is not None:
                self.executor.remove_node(self.node)
            self.node.destroy_node()
            self.node = None
            self.context.try_shutdown()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m facerec_server.tools.demo",
        description="facerec end to end: camera node -> DDS -> recognition server -> results.")
    parser.add_argument("--output", default="demo-output",
                        help="folder for the video, gallery, snapshot and logs "
                             "(default: demo-output)")
    parser.add_argument("--frames", type=int, default=60,
                        help="frames in the made video (default: 60, 6 s at 10 fps)")
    parser.add_argument("--fps", type=float, default=10.0, help="camera rate (default: 10)")
    parser.add_argument("--source", default=os.environ.get("SOURCE", ""),
                        help="camera (0, /dev/video0) or file to stream instead of the made "
                             "video; runs until Ctrl-C (default: $SOURCE)")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"name to enroll the astronaut as (default: {DEFAULT_NAME})")
    parser.add_argument("--enroll-image", default=None,
                        help="photo (JPEG/PNG) to enroll as --name, with --source "
                             "(default: scikit-image's astronaut.png)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds to wait for the server to come up (default: 120)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    if not 0 < args.fps <= 120:
        parser.error("--fps must be within (0, 120]")
    if args.enroll_image and not args.source:
        parser.error("--enroll-image needs --source: the made video shows the astronaut")
    if args.enroll_image and not os.path.isfile(args.enroll_image):
        parser.error(f"--enroll-image: no such file: {args.enroll_image}")
    if not args.enroll_image:
        from facerec_server.tools.demo_video import astronaut_path
        args.enroll_image = str(astronaut_path())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    loopback_env()
    demo = Demo(args)
    previous = {sig: signal.signal(sig, demo._on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return demo.run()
    except Interrupted:
        print("\nCtrl-C: stopped before the video started", file=sys.stderr)
        return 130
    except (DemoError, FileNotFoundError) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            demo.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
