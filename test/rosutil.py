"""Helpers for tests that talk to real nodes over real DDS (loopback only, see conftest.py)."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data

REPO = pathlib.Path(__file__).resolve().parent.parent


def child_env(**extra: Optional[str]) -> dict:
    """Environment for a child process: this run's ROS domain, loopback DDS, the source tree;
    ``extra`` adds variables (None removes one)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return {key: value for key, value in env.items() if value is not None}


class Proc:
    """A child process whose output goes to a log file the test can read on failure."""

    def __init__(self, args: List[str], log_dir: pathlib.Path, name: str, **env: str):
        self.name = name
        self.log_path = pathlib.Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=child_env(**env), cwd=str(REPO))

    @classmethod
    def module(cls, module: str, log_dir, name: str, ros_args: Optional[List[str]] = None,
               **env: str) -> "Proc":
        args = [sys.executable, "-m", module]
        if ros_args:
            args += ["--ros-args"] + ros_args
        return cls(args, log_dir, name, **env)

    def output(self) -> str:
        if not self._log.closed:  # also after stop(), for its assertion messages
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (as Ctrl-C / ros2 launch do), then SIGKILL if it does not end in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Collector:
    """Messages received on one topic, with a wait helper."""

    def __init__(self):
        self.messages: list = []
        self.times: list = []
        self._cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self._cond:
            self.messages.append(msg)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_count(self, count: int, timeout: float) -> bool:
        return self.wait_for(lambda m: len(m) >= count, timeout)


class Graph:
    """A node in the test process, spun by its own executor thread."""

    def __init__(self, context, name: str = "test_graph"):
        self.node = rclpy.create_node(name + f"_{os.getpid()}_{id(self) % 10000}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = False
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                return

    def subscribe(self, msg_type, topic: str, qos=10) -> Collector:
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def subscribe_sensor(self, msg_type, topic: str) -> Collector:
        return self.subscribe(msg_type, topic, qos_profile_sensor_data)

    def publisher(self, msg_type, topic: str, qos=10):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if publisher.get_subscription_count() >= count:
                return True
            time.sleep(0.05)
        return False

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer in {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def write_params(path: pathlib.Path, node_name: str, values: dict) -> pathlib.Path:
    """A ROS parameter file ``{node: {ros__parameters: values}}`` (as launch files pass)."""
    import yaml
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": values}}))
    return path


def start_node(module: str, log_dir, name: str, node_name: str, values: dict,
               extra_ros_args: Optional[List[str]] = None) -> Proc:
    """Start a node module with its parameters in a YAML file, as a launch file would."""
    params_file = write_params(pathlib.Path(log_dir) / f"{name}.yaml", node_name, values)
    return Proc.module(module, log_dir, name,
                       ros_args=["--params-file", str(params_file)] + (extra_ros_args or []))


def wait_for_service(graph: "Graph", srv_type, name: str, proc: Proc, timeout: float = 90.0):
    client = graph.node.create_client(srv_type, name)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.wait_for_service(timeout_sec=0.5):
                return
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                                     + proc.output())
        raise AssertionError(f"{name} not up after {timeout} s:\n" + proc.output())
    finally:
        graph.node.destroy_client(client)


def jpeg(image, quality: int = 90) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def compressed(graph: "Graph", data: bytes, fmt: str = "jpeg", frame_id: str = "camera"):
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage(format=fmt, data=data)
    msg.header.frame_id = frame_id
    msg.header.stamp = graph.node.get_clock().now().to_msg()
    return msg


def publish_until(graph: "Graph", pub, make_msg: Callable, collector: Collector,
                  predicate: Callable[[list], bool], timeout: float = 60.0,
                  period: float = 0.5) -> bool:
    """Publish a fresh message every ``period`` s until ``predicate(collector.messages)``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(make_msg())
        if collector.wait_for(predicate, period):
            return True
    return False


class FrameStream:
    """Frames to a server input and their results: each frame is published on ``topic``
    (again every 0.5 s: a frame may be lost) until ``node``'s FaceArray for it (that stamp,
    from that input) arrives. A frame sent again keeps its capture time (its first stamp
    plus 1 us per resend, so that each send has its own stamp), as a camera's would: a
    stamp of the resend time would tell the server's tracker that the faces moved for 0.5 s
    more, and its region search would look in the wrong place. Only a frame older than
    ``RESTAMP_AFTER`` s (the server drops frames older than 1 s) is stamped anew."""

    RESTAMP_AFTER = 0.8

    def __init__(self, graph: "Graph", node: str, topic: str):
        from facerec_msgs.msg import FaceArray
        from sensor_msgs.msg import CompressedImage
        self.graph, self.topic = graph, topic
        self.results = graph.subscribe(FaceArray, f"{node}/faces")
        self.pub = graph.publisher(CompressedImage, topic, 1)
        assert graph.wait_for_subscribers(self.pub)

    def send(self, image, timeout: float = 60.0):
        data = jpeg(image)
        deadline = time.monotonic() + timeout
        first, resends = None, 0
        while time.monotonic() < deadline:
            msg = compressed(self.graph, data)
            now = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if first is None or now - first > self.RESTAMP_AFTER * 1e9:
                first, resends = now, 0
            else:
                resends += 1
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
                    first + 1000 * resends, 1_000_000_000)
            stamp = _stamp_key(msg)

            def mine(result):
                return _stamp_key(result) == stamp and result.source.endswith(self.topic)
            self.pub.publish(msg)
            if self.results.wait_for(lambda m: any(mine(r) for r in m), 0.5):
                return next(r for r in self.results.messages if mine(r))
        raise AssertionError(f"no FaceArray for a frame on {self.topic}")

    def close(self) -> None:
        self.graph.node.destroy_publisher(self.pub)


def set_parameters(graph: "Graph", node: str, values: dict):
    """Call ``<node>/set_parameters`` (what ``ros2 param set`` does); returns the results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    request = SetParameters.Request(parameters=[
        Parameter(name, value=value).to_parameter_msg()
        for name, value in values.items()])
    return graph.call(SetParameters, f"{node}/set_parameters", request).results


def _stamp_key(msg) -> tuple:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def recognise(graph: "Graph", data: bytes, fmt: str = "jpeg", node: str = "/facerec_server",
              topic: str = "camera/image/compressed", frame_id: str = "camera",
              timeout: float = 90.0):
    """Publish ``data`` (freshly stamped each time) on ``topic`` until ``node``'s FaceArray
    for one of those stamps arrives; return (the image message sent, the FaceArray)."""
    from facerec_msgs.msg import FaceArray
    from sensor_msgs.msg import CompressedImage
    results = Collector()
    sub = graph.node.create_subscription(FaceArray, f"{node}/faces", results, 10)
    pub = graph.publisher(CompressedImage, topic, 1)
    sent = {}

    def make():
        msg = compressed(graph, data, fmt, frame_id=frame_id)
        sent[_stamp_key(msg)] = msg
        return msg

    try:
        assert publish_until(graph, pub, make, results,
                             lambda msgs: any(_stamp_key(m) in sent for m in msgs),
                             timeout=timeout), f"no FaceArray from {node} came back"
    finally:  # a test may call this hundreds of times on one node: nothing accumulates
        graph.node.destroy_publisher(pub)
        graph.node.destroy_subscription(sub)
    got = next(m for m in results.messages if _stamp_key(m) in sent)
    return sent[_stamp_key(got)], got
