"""launch_testing: bringup.launch.py end to end, as a ROS user runs it.

    launch_test test/test_bringup_launch.py          # or: colcon test --packages-select facerec

Starts bringup.launch.py (camera + server + bridge) in a namespace with a video of
scikit-image's astronaut as the camera source, enrolls the astronaut through the server's
``~/enroll`` service from the live camera stream, waits for a FaceArray naming them,
toggles parameters at run time (``face_recognition.enabled``, a refused value, the camera's
``fps``), checks the bridge listens, and after shutdown that every process exited with 0.

Needs launch, launch_ros, launch_testing and launch_testing_ros (a full ROS 2 install, not
PyPI): skipped when they are missing. The same start-up is exercised without them by
test_config_params.py (nodes started with the launch files' command lines).
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-testing, not on PyPI); run under a full ROS 2 "
                    "install")
pytest.importorskip("launch_testing_ros", reason="launch_testing_ros is not installed (ROS 2 "
                    "package ros-$ROS_DISTRO-launch-testing-ros, not on PyPI)")
pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-ros, not on PyPI)")

import pathlib  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import cv2  # noqa: E402
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import launch_testing.markers  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # launch_test does not put the test folder on sys.path

NAMESPACE = "bringup_test"
NODE = f"/{NAMESPACE}/facerec_server"
CAMERA = f"/{NAMESPACE}/facerec_camera"
PERSON = "astronaut"


def share_dir() -> pathlib.Path:
    """The installed share/facerec (colcon build), else the source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return pathlib.Path(get_package_share_directory("facerec"))
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return HERE.parent


def write_astronaut_video(path: pathlib.Path, count: int = 30) -> pathlib.Path:
    """An MJPG .avi of the astronaut (one real face), slightly panning."""
    from conftest import astronaut_path
    image = cv2.imread(str(astronaut_path()), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    size = (w * 7 // 8, h * 7 // 8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/.avi"
    for i in range(count):
        x = (i * (w - size[0])) // max(1, count - 1)
        writer.write(image[:size[1], x:x + size[0]])
    writer.release()
    return path


def params_copy(share: pathlib.Path, name: str, tmp: pathlib.Path, changes: dict):
    """config/<name> with ``changes``: the installed file is what the user's launch reads."""
    data = yaml.safe_load((share / "config" / name).read_text())
    [body] = data.values()
    body["ros__parameters"].update(changes)
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def bridge_files(tmp: pathlib.Path, port: int) -> dict:
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "bridge.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "bridge.key"))
    (tmp / "tokens").write_text("launch_test:bringup-launch-test-token\n")
    return {"bridge.host": "127.0.0.1", "bridge.port": port,
            "bridge.certfile": str(tmp / "bridge.pem"), "bridge.keyfile": str(tmp / "bridge.key"),
            "bridge.tokens_file": str(tmp / "tokens"), "gallery.path": str(tmp / "gallery.db"),
            "workers": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.launch_test
def generate_test_description():
    share = share_dir()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="facerec_bringup_"))
    video = write_astronaut_video(tmp / "astronaut.avi")
    port = _free_port()
    arguments = {
        "namespace": NAMESPACE,
        "source": str(video),
        "camera_params_file": str(params_copy(share, "camera.yaml", tmp, {"fps": 5.0})),
        "server_params_file": str(params_copy(share, "server.yaml", tmp, {
            "gallery.path": str(tmp / "gallery.db"), "workers": 1, "max_frame_age": 5.0})),
        "use_bridge": "true",
        "bridge_params_file": str(params_copy(share, "bridge.yaml", tmp,
                                              bridge_files(tmp, port))),
        "log_level": "info",
    }
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(share / "launch" / "bringup.launch.py")),
        launch_arguments=arguments.items())
    return (launch.LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]),
            {"bridge_port": port, "tmp": tmp})


class TestBringup(unittest.TestCase):
    """Runs while the launch is up (unittest order: test_1_..., test_2_...)."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("facerec_bringup_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return predicate()

    def _call(self, srv_type, name, request, timeout=60.0):
        client = self.node.create_client(srv_type, name)
        try:
            self.assertTrue(client.wait_for_service(timeout_sec=timeout), f"{name} not up")
            future = client.call_async(request)
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
            self.assertTrue(future.done(), f"{name} did not answer in {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def _set(self, node, values):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        return self._call(SetParameters, f"{node}/set_parameters", request).results

    def _faces(self):
        from facerec_msgs.msg import FaceArray
        received = []
        self.node.create_subscription(FaceArray, f"{NODE}/faces", received.append, 10)
        return received

    def test_1_nodes_come_up(self, proc_output):
        proc_output.assertWaitFor("ready: inputs", timeout=180)
        proc_output.assertWaitFor(f"/{NAMESPACE}/camera/image/compressed", timeout=60)

    def test_2_enroll_from_the_camera_then_recognise(self):
        from facerec_msgs.srv import Enroll, ListFaces
        response = self._call(Enroll, f"{NODE}/enroll",
                              Enroll.Request(name=PERSON, samples=3, timeout=60.0), timeout=120)
        self.assertTrue(response.success, response.message)
        self.assertEqual(response.samples_added, 3)
        people = self._call(ListFaces, f"{NODE}/list_faces", ListFaces.Request())
        self.assertIn(PERSON, list(people.names))
        faces = self._faces()
        self.assertTrue(self._spin_until(
            lambda: any(PERSON in [f.name for f in m.faces] for m in faces), 60),
            "no FaceArray names the enrolled person")
        message = next(m for m in faces if PERSON in [f.name for f in m.faces])
        self.assertTrue(message.source.endswith("camera/image/compressed"), message.source)
        self.assertEqual(message.header.frame_id, "camera")

    def test_3_parameters_toggle_at_run_time(self):
        faces = self._faces()
        self.assertTrue(self._spin_until(lambda: len(faces) > 0, 60))
        [result] = self._set(NODE, {"face_recognition.enabled": False})
        self.assertTrue(result.successful, result.reason)
        self._spin_until(lambda: False, 2.0)  # frames already in the pipeline come out
        count = len(faces)
        self._spin_until(lambda: False, 3.0)
        self.assertEqual(len(faces), count, "faces published while disabled")
        [result] = self._set(NODE, {"face_recognition.enabled": True})
        self.assertTrue(result.successful, result.reason)
        self.assertTrue(self._spin_until(lambda: len(faces) > count, 60))
        [refused] = self._set(NODE, {"face.threshold": -0.5})
        self.assertFalse(refused.successful)
        [result] = self._set(CAMERA, {"fps": 2.0})
        self.assertTrue(result.successful, result.reason)

    def test_4_bridge_listens(self, bridge_port):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", bridge_port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.5)
        self.fail(f"facerec_bridge not listening on {bridge_port}")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_every_process_exits_cleanly(self, proc_info):
        """SIGINT from launch: camera, server and bridge all end with exit code 0."""
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_tracebacks(self, proc_output):
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
