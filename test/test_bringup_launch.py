"""launch_testing: bringup.launch.py end to end, as a ROS user runs it.

    launch_test test/test_bringup_launch.py          # or: colcon test --packages-select facerec
    python -m pytest test/test_bringup_launch.py     # the same, through launch_testing's plugin

Starts the installed bringup.launch.py (camera + server + bridge) in a namespace with a video
of scikit-image's astronaut as the camera source and parameter files made from the installed
ones (each with a value of its own: the camera's frame_id, the server's face.threshold and
gallery, the bridge's port), with HOME a temporary folder. Checks what matters to a user:
the camera publishes the video's frames (not a log line), the astronaut enrolled through
``~/enroll`` from the live stream is named in FaceArrays whose stamps are the camera's
frames' stamps, the parameter files given are the ones used, run-time parameter changes
work, the bridge listens; after shutdown every process exited with 0 without a traceback,
none (face workers included) outlives the launch, no ros2 daemon was started, and nothing
was written to HOME's ~/.ros/facerec.

Needs launch, launch_ros, launch_testing and launch_testing_ros (ROS 2 packages, not on PyPI:
`make setup` installs them from $FACEREC_ROS_TOOLS_SRC): skipped, naming them, when missing.
"""
import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed (ROS 2 package "
                    "ros-$ROS_DISTRO-launch-testing, not on PyPI; `make setup` installs it "
                    "from $FACEREC_ROS_TOOLS_SRC)")
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
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import GroupAction, IncludeLaunchDescription  # noqa: E402
from launch.actions import SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # launch_test does not put the test folder on sys.path

from launchutil import (free_port, get_parameters, params_copy, process_tree,  # noqa: E402
                        ros2_daemons, share_dir, still_running)

NAMESPACE = "bringup_test"
NODE = f"/{NAMESPACE}/facerec_server"
CAMERA = f"/{NAMESPACE}/facerec_camera"
TOPIC = f"/{NAMESPACE}/camera/image/compressed"
PERSON = "astronaut"
FRAME_ID = "bringup_test_camera"  # only the camera parameter file given says this
THRESHOLD = 0.55  # only the server parameter file given says this
REAL_GALLERY = pathlib.Path.home() / ".ros" / "facerec" / "gallery.db"


def _stamp(msg) -> tuple:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _stat(path: pathlib.Path):
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def write_astronaut_video(path: pathlib.Path, count: int = 30) -> tuple:
    """An MJPG .avi of the astronaut (one real face), slightly panning; (width, height)."""
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
    return size


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


@pytest.mark.launch_test
def generate_test_description():
    share = share_dir()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="facerec_bringup_"))
    home = tmp / "home"
    home.mkdir()
    video = tmp / "astronaut.avi"
    size = write_astronaut_video(video)
    port = free_port()
    arguments = {
        "namespace": NAMESPACE,
        "source": str(video),
        "camera_params_file": str(params_copy("camera.yaml", tmp, {
            "fps": 5.0, "frame_id": FRAME_ID})),
        "server_params_file": str(params_copy("server.yaml", tmp, {
            "gallery.path": str(tmp / "gallery.db"), "workers": 1, "max_frame_age": 5.0,
            "face.threshold": THRESHOLD})),
        "use_bridge": "true",
        "bridge_params_file": str(params_copy("bridge.yaml", tmp, bridge_files(tmp, port))),
        "log_level": "info",
    }
    bringup = GroupAction(scoped=True, actions=[  # HOME for the nodes only, then restored
        SetEnvironmentVariable("HOME", str(home)),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(share / "launch" / "bringup.launch.py")),
            launch_arguments=arguments.items())])
    return (launch.LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]),
            {"bridge_port": port, "tmp": tmp, "home": home, "video_size": size,
             "seen": {}, "daemons_before": ros2_daemons(),
             "real_gallery_before": _stat(REAL_GALLERY)})


class TestBringup(unittest.TestCase):
    """Runs while the launch is up (unittest order: test_1_..., test_2_...)."""

    @classmethod
    def setUpClass(cls):
        from facerec_msgs.msg import FaceArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage
        rclpy.init()
        cls.node = rclpy.create_node("facerec_bringup_test")
        cls.frames, cls.faces = [], []
        cls.node.create_subscription(CompressedImage, TOPIC, cls.frames.append,
                                     qos_profile_sensor_data)
        cls.node.create_subscription(FaceArray, f"{NODE}/faces", cls.faces.append, 10)

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

    def _graph(self):
        """rosutil.Graph-like access for launchutil.get_parameters."""
        test = self

        class _Graph:
            def call(self, srv_type, name, request):
                return test._call(srv_type, name, request)
        return _Graph()

    def test_1_the_camera_publishes_the_video(self, proc_info, seen, video_size):
        from facerec_msgs.srv import ListFaces
        self._call(ListFaces, f"{NODE}/list_faces", ListFaces.Request(), timeout=180)
        self.assertTrue(self._spin_until(lambda: len(self.frames) >= 3, 60),
                        f"{len(self.frames)} frames on {TOPIC}")
        frame = self.frames[-1]
        image = cv2.imdecode(np.frombuffer(bytes(frame.data), np.uint8), cv2.IMREAD_COLOR)
        self.assertEqual((image.shape[1], image.shape[0]), tuple(video_size),
                         "the camera does not publish the video given as source:=")
        self.assertEqual(frame.header.frame_id, FRAME_ID,
                         "the camera does not use the parameter file given")
        seen.update(process_tree(info.pid for info in proc_info))

    def test_2_enroll_from_the_camera_then_recognise_its_frames(self, proc_info, seen):
        from facerec_msgs.srv import Enroll, ListFaces
        response = self._call(Enroll, f"{NODE}/enroll",
                              Enroll.Request(name=PERSON, samples=3, timeout=60.0), timeout=120)
        self.assertTrue(response.success, response.message)
        self.assertEqual(response.samples_added, 3)
        people = self._call(ListFaces, f"{NODE}/list_faces", ListFaces.Request())
        self.assertIn(PERSON, list(people.names))

        def named():
            """FaceArrays naming the person, for frames this test saw the camera publish."""
            camera = {_stamp(m) for m in self.frames}
            return [m for m in self.faces
                    if PERSON in [f.name for f in m.faces] and _stamp(m) in camera]

        self.assertTrue(self._spin_until(lambda: bool(named()), 60),
                        "no FaceArray names the enrolled person in a frame the camera published")
        message = named()[0]
        self.assertEqual(message.source, TOPIC)
        self.assertEqual(message.header.frame_id, FRAME_ID)
        seen.update(process_tree(info.pid for info in proc_info))

    def test_3_the_parameter_files_given_are_used(self, tmp):
        server = get_parameters(self._graph(), NODE, ["face.threshold", "gallery.path"])
        self.assertEqual(server, {"face.threshold": THRESHOLD,
                                  "gallery.path": str(tmp / "gallery.db")})
        camera = get_parameters(self._graph(), CAMERA, ["fps", "frame_id"])
        self.assertEqual(camera, {"fps": 5.0, "frame_id": FRAME_ID})

    def test_4_parameters_toggle_at_run_time(self):
        count = len(self.faces)
        self.assertTrue(self._spin_until(lambda: len(self.faces) > count, 60))
        [result] = self._set(NODE, {"face_recognition.enabled": False})
        self.assertTrue(result.successful, result.reason)
        self._spin_until(lambda: False, 2.0)  # frames already in the pipeline come out
        count = len(self.faces)
        self._spin_until(lambda: False, 3.0)
        self.assertEqual(len(self.faces), count, "faces published while disabled")
        [result] = self._set(NODE, {"face_recognition.enabled": True})
        self.assertTrue(result.successful, result.reason)
        self.assertTrue(self._spin_until(lambda: len(self.faces) > count, 60))
        [refused] = self._set(NODE, {"face.threshold": -0.5})
        self.assertFalse(refused.successful)
        [result] = self._set(CAMERA, {"fps": 2})  # an integer for a double
        self.assertTrue(result.successful, result.reason)

    def test_5_bridge_listens_on_the_port_of_its_file(self, bridge_port, proc_info, seen):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", bridge_port), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            self.fail(f"facerec_bridge not listening on {bridge_port}")
        seen.update(process_tree(info.pid for info in proc_info))


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_every_process_exits_cleanly(self, proc_info):
        """SIGINT from launch: camera, server and bridge all end with exit code 0."""
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_tracebacks(self, proc_output):
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))

    def test_no_process_outlives_the_launch(self, seen, daemons_before):
        workers = [cmd for cmd in seen.values() if "multiprocessing" in cmd]
        self.assertTrue(workers, seen)  # the face worker processes were seen running
        self.assertEqual(still_running(seen), {})
        new = {pid: cmd for pid, cmd in ros2_daemons().items() if pid not in daemons_before}
        self.assertEqual(new, {}, "a ros2 daemon was started")

    def test_nothing_written_to_home(self, tmp, home, real_gallery_before):
        self.assertTrue((tmp / "gallery.db").is_file(), "the given gallery.path was not used")
        self.assertFalse((home / ".ros" / "facerec").exists(),
                         "a node wrote into ~/.ros/facerec: not the parameter file given")
        self.assertEqual(_stat(REAL_GALLERY), real_gallery_before)
