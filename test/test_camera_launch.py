"""launch_testing: camera.launch.py alone (the robot side), as a ROS user runs it.

    launch_test test/test_camera_launch.py

Two cameras from the installed camera.launch.py under two namespaces, ``source:=pattern``,
the left one with a parameter file of its own (320x240, frame_id ``left_cam``), the right one
with the launch file's default (the installed config/camera.yaml: 640x480, ``camera``), HOME
a temporary folder: each publishes JPEG
CompressedImage best effort on <ns>/camera/image/compressed with its own file's size and
frame_id, takes a run-time fps change (an integer too), refuses a read-only change; after
shutdown both exited with 0, no traceback, no process left.
Skipped when launch_testing / launch_ros are missing (not on PyPI).
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-testing, not on PyPI; `make setup` installs it "
                    "from $FACEREC_ROS_TOOLS_SRC)")
pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-ros, not on PyPI)")

import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import cv2  # noqa: E402
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import GroupAction, IncludeLaunchDescription  # noqa: E402
from launch.actions import SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # for launch_test

from launchutil import params_copy, process_tree, share_dir, still_running  # noqa: E402

#: namespace: (parameter file changes or None for the launch file's default file,
#: (width, height) and frame_id expected)
CAMERAS = {"cam_left": ({"width": 320, "height": 240, "frame_id": "left_cam"},
                        ((320, 240), "left_cam")),
           "cam_right": (None, ((640, 480), "camera"))}


@pytest.mark.launch_test
def generate_test_description():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="facerec_cameras_"))
    home = tmp / "home"
    home.mkdir()
    launch_file = str(share_dir() / "launch" / "camera.launch.py")
    cameras = []
    for ns, (changes, _) in CAMERAS.items():
        arguments = {"namespace": ns, "source": "pattern"}
        if changes is not None:
            arguments["params_file"] = str(params_copy("camera.yaml", tmp, changes,
                                                       f"{ns}.yaml"))
        cameras.append(GroupAction(scoped=True, actions=[
            SetEnvironmentVariable("HOME", str(home)),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                     launch_arguments=arguments.items())]))
    return (launch.LaunchDescription(cameras + [launch_testing.actions.ReadyToTest()]),
            {"home": home, "seen": {}})


class TestCameras(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("facerec_camera_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return predicate()

    def _set(self, node, name, value):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        client = self.node.create_client(SetParameters, f"{node}/set_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=30))
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]))
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=30)
        self.node.destroy_client(client)
        return future.result().results[0]

    def test_each_namespace_gets_its_own_jpeg_stream_from_its_own_file(self, proc_info, seen):
        from sensor_msgs.msg import CompressedImage
        received = {ns: [] for ns in CAMERAS}
        for ns in CAMERAS:
            self.node.create_subscription(CompressedImage, f"/{ns}/camera/image/compressed",
                                          received[ns].append, qos_profile_sensor_data)
        self.assertTrue(self._spin_until(lambda: all(len(m) >= 3 for m in received.values()),
                                         60), {ns: len(m) for ns, m in received.items()})
        for ns, (_, (size, frame_id)) in CAMERAS.items():
            msg = received[ns][-1]
            self.assertEqual(msg.format, "jpeg")
            image = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            self.assertEqual((image.shape[1], image.shape[0]), size, ns)
            self.assertEqual(msg.header.frame_id, frame_id, ns)
            [info] = self.node.get_publishers_info_by_topic(f"/{ns}/camera/image/compressed")
            self.assertEqual(info.qos_profile.reliability, ReliabilityPolicy.RELIABLE)
        seen.update(process_tree(info.pid for info in proc_info))

    def test_run_time_and_read_only_parameters(self):
        node = "/cam_left/facerec_camera"
        self.assertTrue(self._set(node, "fps", 5.0).successful)
        self.assertTrue(self._set(node, "fps", 4).successful)  # an integer for a double
        self.assertFalse(self._set(node, "width", 320).successful)  # read-only


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_tracebacks(self, proc_output):
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))

    def test_no_process_outlives_the_launch(self, seen, home):
        self.assertEqual(len(seen), 2, seen)
        self.assertEqual(still_running(seen), {})
        self.assertFalse((home / ".ros" / "facerec").exists())
