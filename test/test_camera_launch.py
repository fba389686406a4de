"""launch_testing: camera.launch.py alone (the robot side), as a ROS user runs it.

    launch_test test/test_camera_launch.py

Two cameras under two namespaces (test pattern), showing that nothing collides: each
publishes JPEG CompressedImage best effort on <ns>/camera/image/compressed, takes a run-time
fps change, refuses a read-only change, and exits with 0 on shutdown.
Skipped when launch_testing / launch_ros are missing (not on PyPI).
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-testing, not on PyPI); run under a full ROS 2 "
                    "install")
pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-ros, not on PyPI)")

import pathlib  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import GroupAction, IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402

NAMESPACES = ("cam_left", "cam_right")


def _launch_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(pathlib.Path(get_package_share_directory("facerec")) / "launch"
                   / "camera.launch.py")
    except Exception:  # not installed: the source tree
        return str(pathlib.Path(__file__).resolve().parent.parent / "launch" / "camera.launch.py")


@pytest.mark.launch_test
def generate_test_description():
    cameras = [GroupAction(scoped=True, actions=[IncludeLaunchDescription(
        PythonLaunchDescriptionSource(_launch_file()),
        launch_arguments={"namespace": ns, "source": "pattern"}.items())])
        for ns in NAMESPACES]
    return launch.LaunchDescription(cameras + [launch_testing.actions.ReadyToTest()])


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

    def test_each_namespace_gets_its_own_jpeg_stream(self):
        from sensor_msgs.msg import CompressedImage
        received = {ns: [] for ns in NAMESPACES}
        for ns in NAMESPACES:
            self.node.create_subscription(CompressedImage, f"/{ns}/camera/image/compressed",
                                          received[ns].append, qos_profile_sensor_data)
        self.assertTrue(self._spin_until(lambda: all(len(m) >= 3 for m in received.values()),
                                         60), {ns: len(m) for ns, m in received.items()})
        for ns in NAMESPACES:
            msg = received[ns][-1]
            self.assertEqual(msg.format, "jpeg")
            self.assertEqual(bytes(msg.data[:2]), b"\xff\xd8")
            [info] = self.node.get_publishers_info_by_topic(f"/{ns}/camera/image/compressed")
            self.assertEqual(info.qos_profile.reliability, ReliabilityPolicy.RELIABLE)

    def test_run_time_and_read_only_parameters(self):
        node = f"/{NAMESPACES[0]}/facerec_camera"
        self.assertTrue(self._set(node, "fps", 5.0).successful)
        self.assertFalse(self._set(node, "width", 320).successful)  # read-only


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
