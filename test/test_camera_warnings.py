"""The camera node tells its user when frames cannot be delivered (issue 13): frames too big
for Fast DDS's default shared-memory segment, a subscriber whose QoS it cannot serve, and
reliable frames a subscriber does not acknowledge. Real node processes over real DDS; the
stuck subscriber is a real subscriber process stopped with SIGSTOP.
"""
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from rosutil import Proc, child_env, REPO
from test_camera_node import MODULE, ros_args

BIG = "exceed Fast DDS's default 512 KB shared-memory segment"
INCOMPATIBLE = "requests a QoS this publisher does not offer"
UNACKED = "was not acknowledged by all 1 subscriber(s) within delivery_timeout"


def _wait_output(proc, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.output():
            return True
        if not proc.alive():
            break
        time.sleep(0.2)
    return text in proc.output()


def _noise_jpeg(path, width=2000, height=1500):
    """A JPEG that stays large after the camera re-encodes it (noise does not compress)."""
    image = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def _camera(tmp_path, name, params, profile=True):
    env = {} if profile else {"FASTDDS_DEFAULT_PROFILES_FILE": None,
                              "FASTRTPS_DEFAULT_PROFILES_FILE": None}
    return Proc.module(MODULE, tmp_path, name, ros_args=ros_args(params), **env)


def test_big_frames_warn_once_without_the_transport_profile_and_not_with_it(tmp_path, graph):
    photo = _noise_jpeg(tmp_path / "noise.jpg")
    params = {"source": str(photo), "fps": 5.0, "jpeg_quality": 95,
              "topic": f"/warn_big_{id(tmp_path) % 10000}"}
    bare = _camera(tmp_path, "bare", params, profile=False)
    shipped = _camera(tmp_path, "shipped", dict(params, topic=params["topic"] + "_p"))
    frames = graph.subscribe(CompressedImage, params["topic"] + "_p",
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    try:
        assert _wait_output(bare, BIG, 60), bare.output()
        time.sleep(2.0)  # frames go on: the warning is said once, not per frame
        assert bare.output().count(BIG) == 1, bare.output()
        assert "fastdds.xml" in bare.output()
        assert frames.wait_count(1, 60), shipped.output()  # big frames went out, and arrived
        assert len(frames.messages[-1].data) > 512 * 1024
        assert BIG not in shipped.output(), shipped.output()
    finally:
        assert bare.stop() == 0, bare.output()
        assert shipped.stop() == 0, shipped.output()


def test_a_reliable_subscriber_of_a_best_effort_camera_is_reported(tmp_path, graph):
    topic = f"/warn_qos_{id(tmp_path) % 10000}"
    camera = _camera(tmp_path, "best_effort", {"source": "pattern", "width": 160, "height": 120,
                                               "fps": 5.0, "topic": topic,
                                               "reliability": "best_effort"})
    try:
        graph.subscribe(CompressedImage, topic,
                        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        assert _wait_output(camera, INCOMPATIBLE, 60), camera.output()
        assert "set the camera's reliability to reliable" in camera.output()
    finally:
        assert camera.stop() == 0, camera.output()


SUBSCRIBER = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
    rclpy.init()
    node = rclpy.create_node("stuck_subscriber")
    node.create_subscription(CompressedImage, sys.argv[1],
                             lambda msg: print("frame", flush=True),
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    rclpy.spin(node)
""")


def test_frames_a_stopped_subscriber_does_not_acknowledge_are_reported(tmp_path):
    topic = f"/warn_ack_{id(tmp_path) % 10000}"
    log = open(tmp_path / "subscriber.log", "wb")
    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, topic], stdout=log,
                                  stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO))
    camera = _camera(tmp_path, "reliable", {"source": "pattern", "width": 320, "height": 240,
                                            "fps": 10.0, "topic": topic,
                                            "reliability": "reliable",
                                            "delivery_timeout": 0.5,
                                            "match_server_rate": False})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and \
                (tmp_path / "subscriber.log").read_text().count("frame") < 3:
            time.sleep(0.2)
        assert (tmp_path / "subscriber.log").read_text().count("frame") >= 3, \
            (tmp_path / "subscriber.log").read_text() + camera.output()
        assert UNACKED not in camera.output(), camera.output()  # acknowledged while running
        subscriber.send_signal(signal.SIGSTOP)  # stuck: receives nothing, acknowledges nothing
        assert _wait_output(camera, UNACKED, 30), camera.output()
        assert "lower fps, size or jpeg_quality" in camera.output()
    finally:
        subscriber.send_signal(signal.SIGCONT)
        subscriber.kill()
        subscriber.wait()
        log.close()
        assert camera.stop() == 0, camera.output()
