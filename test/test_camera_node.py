"""The facerec_camera node in its own process, over real DDS (loopback, see conftest.py)."""
import signal
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from rosutil import Proc, child_env, REPO
from test_camera_sources import write_video

MODULE = "facerec_camera.camera_node"


def ros_args(params, namespace=None):
    args = []
    for name, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["-p", f"{name}:={value}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    return args


def start(tmp_path, name, params, namespace=None):
    return Proc.module(MODULE, tmp_path, name, ros_args=ros_args(params, namespace))


def decode(msg):
    image = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "message data is not a decodable JPEG"
    return image


def log(proc):
    """The child's output so far (also after Proc.stop() closed the log file)."""
    return proc.log_path.read_text(errors="replace")


def stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def wait_exit(proc, timeout):
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.stop()
        pytest.fail(f"{proc.name} did not exit:\n{log(proc)}")


def receive(proc, collector, count, timeout=40.0):
    if not collector.wait_count(count, timeout):
        proc.stop()
        pytest.fail(f"{proc.name}: {len(collector.messages)}/{count} frames in {timeout} s:\n"
                    f"{log(proc)}")
    return list(collector.messages)


def test_video_file_rate_stamps_resize_quality_and_end(tmp_path, astronaut, graph):
    video = write_video(tmp_path / "pan.avi", astronaut, count=40, size=(320, 240))
    fps = 20.0
    a = graph.subscribe_sensor(CompressedImage, "/t1/high")
    b = graph.subscribe_sensor(CompressedImage, "/t1/low")
    high = start(tmp_path, "high", {"source": str(video), "fps": fps, "resize": 0.5,
                                    "jpeg_quality": 90, "frame_id": "test_cam",
                                    "topic": "/t1/high", "loop": True})
    low = start(tmp_path, "low", {"source": str(video), "fps": fps, "resize": 0.5,
                                  "jpeg_quality": 15, "topic": "/t1/low"})
    once = start(tmp_path, "once", {"source": str(video), "fps": 40.0, "topic": "/t1/once",
                                    "loop": False})
    try:
        msgs = receive(high, a, 60)
        times = list(a.times)
        low_msgs = receive(low, b, 20)
        # a file without loop ends after its 40 frames (1 s at 40 fps): log, exit code 0
        assert wait_exit(once, 40) == 0, log(once)
        assert "end of video file" in log(once) and "40 frames sent" in log(once)
        assert high.alive(), log(high)
    finally:
        high_code = high.stop()
        low_code = low.stop()
        once.stop()
    assert high_code == 0 and low_code == 0, log(high) + log(low)

    msgs, times = msgs[5:], times[5:]  # leave discovery / start-up out
    stamps = [stamp(m) for m in msgs]
    assert all(s2 > s1 for s1, s2 in zip(stamps, stamps[1:])), "stamps not increasing"
    intervals = np.diff(stamps)
    assert statistics.median(intervals) == pytest.approx(1 / fps, rel=0.10)
    span_rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])  # drops would only lower it
    assert span_rate == pytest.approx(fps, rel=0.10), span_rate
    receipt_rate = (len(times) - 1) / (times[-1] - times[0])
    assert receipt_rate == pytest.approx(fps, rel=0.10), receipt_rate
    assert abs(time.time() - stamps[-1]) < 30  # ROS (system) clock at capture
    for msg in msgs:
        assert msg.format == "jpeg" and msg.header.frame_id == "test_cam"
        assert decode(msg).shape == (120, 160, 3)  # resize 0.5 of 320x240

    assert all(m.header.frame_id == "camera" for m in low_msgs)
    assert all(decode(m).shape == (120, 160, 3) for m in low_msgs)
    high_size = statistics.mean(len(m.data) for m in msgs)
    low_size = statistics.mean(len(m.data) for m in low_msgs)
    assert low_size < 0.6 * high_size, (low_size, high_size)


def _set(graph, node, name, value):
    if isinstance(value, float):
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    elif isinstance(value, int):
        pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
    return graph.call(SetParameters, f"{node}/set_parameters", request).results[0]


def test_folder_and_pattern_sources_namespaces_parameters_and_signals(
        tmp_path, astronaut, messi, graph):
    folder = tmp_path / "faces"
    folder.mkdir()
    small = cv2.resize(astronaut, (128, 128))
    cv2.imwrite(str(folder / "1.png"), small)
    cv2.imwrite(str(folder / "2.jpg"), messi)
    cv2.imwrite(str(folder / "3.bmp"), small[:, ::-1])
    faces = graph.subscribe_sensor(CompressedImage, "/robot_a/camera/image/compressed")
    pattern = graph.subscribe_sensor(CompressedImage, "/robot_b/camera/image/compressed")
    folder_proc = start(tmp_path, "folder", {"source": str(folder), "fps": 10}, "/robot_a")
    pattern_proc = start(tmp_path, "pattern", {"source": "pattern", "width": 320,
                                               "height": 240, "fps": 10.0,
                                               "reliability": "best_effort"}, "/robot_b")
    try:
        got = receive(folder_proc, faces, 7)
        shapes = [decode(m).shape for m in got]
        assert set(shapes) == {(128, 128, 3), messi.shape}
        first = [decode(m) for m in got if decode(m).shape == (128, 128, 3)]
        assert any(np.abs(img.astype(int) - small).mean() < 8 for img in first)

        got = receive(pattern_proc, pattern, 3)
        endpoints = graph.node.get_publishers_info_by_topic("/robot_b/camera/image/compressed")
        assert [e.qos_profile.reliability for e in endpoints] == [ReliabilityPolicy.BEST_EFFORT]
        endpoints = graph.node.get_publishers_info_by_topic("/robot_a/camera/image/compressed")
        assert [e.qos_profile.reliability for e in endpoints] == [ReliabilityPolicy.RELIABLE]
        assert all(decode(m).shape == (240, 320, 3) and m.header.frame_id == "camera"
                   for m in got)
        node = "/robot_b/facerec_camera"
        bad = _set(graph, node, "jpeg_quality", 101)
        assert not bad.successful and "jpeg_quality" in bad.reason
        assert not _set(graph, node, "fps", 0.0).successful
        readonly = _set(graph, node, "source", "0")
        assert not readonly.successful and "read-only" in readonly.reason
        assert _set(graph, node, "resize", 0.5).successful
        assert _set(graph, node, "frame_id", "cam_b").successful
        seen = len(pattern.messages)
        assert pattern.wait_for(
            lambda m: len(m) > seen and m[-1].header.frame_id == "cam_b", 10)
        assert pattern.wait_count(len(pattern.messages) + 1, 10)
        assert decode(pattern.messages[-1]).shape == (120, 160, 3)

        pattern_proc.popen.send_signal(signal.SIGTERM)
        assert wait_exit(pattern_proc, 15) == 0, log(pattern_proc)
        assert folder_proc.stop() == 0, log(folder_proc)  # SIGINT (Ctrl-C)
    finally:
        pattern_proc.stop()
        folder_proc.stop()
    for proc in (pattern_proc, folder_proc):
        assert "Traceback" not in log(proc), log(proc)


@pytest.mark.parametrize("params, message", [
    ({"source": "/no/such/video.avi"}, "no such file or directory: /no/such/video.avi"),
    ({"source": "bogus"}, "unknown source 'bogus'"),
    ({"source": "pattern", "jpeg_quality": 0}, "jpeg_quality"),
    ({"source": "pattern", "fps": -5.0}, "fps"),
    ({"source": "pattern", "fps": 0}, "fps must be >= 0.1, got 0.0"),  # an integer: 0.0
    ({"source": "/dev/video77"}, "no such camera device: /dev/video77"),
    ({"source": "pattern", "topic": "bad topic!"}, "topic name"),
    ({"source": "pattern", "reliability": "sometimes"}, "reliability must be one of"),
])
def test_bad_configuration_exits_non_zero_with_a_clear_message(params, message):
    result = subprocess.run([sys.executable, "-m", MODULE, "--ros-args"] + ros_args(params),
                            env=child_env(), cwd=str(REPO), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_wait_for_subscribers_keeps_the_first_frames(tmp_path, astronaut, graph):
    """A 10-frame video at 10 fps would be over before a subscriber arriving 3 s late exists;
    with wait_for_subscribers the camera holds its first frame until one is matched."""
    video = write_video(tmp_path / "ten.avi", astronaut, count=10)
    proc = start(tmp_path, "waiting", {"source": str(video), "fps": 10.0, "loop": False,
                                       "wait_for_subscribers": 30.0})
    time.sleep(3.0)
    assert proc.alive(), log(proc)
    frames = graph.subscribe_sensor(CompressedImage, "camera/image/compressed")
    assert wait_exit(proc, 60) == 0, log(proc)
    time.sleep(0.5)
    assert len(frames.messages) >= 8, f"{len(frames.messages)} of 10 frames:\n{log(proc)}"
    assert "subscriber(s) matched after waiting" in log(proc)
