"""Two facerec_server processes sharing one gallery on a real PostgreSQL server, over DDS.

Like two workstations sharing the cameras of a fleet: server A (namespace /ws1) serves the
camera /robot1, server B (/ws2) the camera /robot2, both with gallery.path = the database's
postgresql:// URL (as ``server.launch.py namespace:=ws1 cameras:=robot1 gallery:=...``
passes them). Checked: an enrollment through A is used by B within 1 s; SIGKILL of A during
an enrollment loses no committed sample and never leaves part of one; a PostgreSQL restart
is survived by both (recognition goes on meanwhile, enrollment fails clearly and works after).
"""
import random
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import Enroll, ListFaces
from facerec_server.core.gallery import Gallery
from rosutil import compressed, jpeg, recognise, start_node, wait_for_service

SERVERS = {"a": ("/ws1", "/robot1/camera/image/compressed"),
           "b": ("/ws2", "/robot2/camera/image/compressed")}


@pytest.fixture(scope="module")
def pg():
    """This module's own PostgreSQL server (one test restarts it), logging every statement."""
    from pgutil import server_or_skip
    server = server_or_skip({"log_statement": "all", "log_line_prefix": "%p %a: "})
    yield server
    server.cleanup()


class Fleet:
    """The two servers, their gallery URL and log folder."""

    def __init__(self, graph, url, log_dir):
        self.graph, self.url, self.log_dir = graph, url, log_dir
        self.procs = {}
        self.starts = 0

    def start(self, key):
        namespace, topic = SERVERS[key]
        self.starts += 1
        proc = start_node("facerec_server.server_node", self.log_dir,
                          f"server_{key}{self.starts}", "/**/facerec_server", {
                              "gallery.path": self.url, "image_topics": [topic],
                              "face.upsample": 1, "workers": 1,
                              "max_frame_age": 0.0},  # a loaded machine: never drop as stale
                          extra_ros_args=["-r", f"__ns:={namespace}"])
        self.procs[key] = proc
        # A SIGKILLed predecessor stays in the DDS graph until its lease expires, so a service
        # "available" may still be the dead one: wait for this process to say it is ready,
        # then for an answer from it.
        deadline = time.monotonic() + 180
        while "ready:" not in proc.output():
            assert proc.alive() and time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.2)
        wait_for_service(self.graph, Enroll, f"{namespace}/facerec_server/enroll", proc)
        while True:
            try:
                self.graph.call(ListFaces, f"{namespace}/facerec_server/list_faces",
                                ListFaces.Request(), timeout=5)
                return proc
            except TimeoutError:
                assert time.monotonic() < deadline, proc.output()[-3000:]

    def node(self, key):
        return f"{SERVERS[key][0]}/facerec_server"

    def names(self, key, image, timeout=60):
        _, msg = recognise(self.graph, jpeg(image), node=self.node(key),
                           topic=SERVERS[key][1], timeout=timeout)
        return [face.name for face in msg.faces]

    def enroll(self, key, name, images, timeout=120):
        request = Enroll.Request(name=name, images=[
            CompressedImage(format="jpeg", data=jpeg(image)) for image in images])
        return self.graph.call(Enroll, f"{self.node(key)}/enroll", request, timeout=timeout)

    def stop(self):
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def fleet(pg, module_graph, tmp_path_factory):
    fleet = Fleet(module_graph, pg.new_database(), tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start("a")
        fleet.start("b")
        yield fleet
    finally:
        fleet.stop()


def _views(image, count):
    """Different views of one face (mirror, scale) on larger canvases."""
    out = []
    for i in range(count):
        face = cv2.resize(image, None, fx=1.0 + 0.12 * i, fy=1.0 + 0.12 * i)
        if i % 2:
            face = np.ascontiguousarray(face[:, ::-1])
        canvas = np.full((face.shape[0] + 60, face.shape[1] + 80, 3), 30 * i, np.uint8)
        canvas[30:30 + face.shape[0], 40:40 + face.shape[1]] = face
        out.append(canvas)
    return out


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_enrollment_on_one_server_is_used_by_the_other_within_one_second(fleet, astronaut):
    assert set(fleet.names("b", astronaut)) == {""}  # nobody known yet
    graph = fleet.graph
    results = graph.subscribe(FaceArray, f"{fleet.node('b')}/faces")
    pub = graph.publisher(CompressedImage, SERVERS["b"][1], 1)
    data = jpeg(astronaut)
    response = fleet.enroll("a", "eileen", [astronaut])
    done = time.time()
    assert response.success and response.samples_added == 1, response.message
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                _stamp(m) >= done + 1.0 for m in results.messages):
            pub.publish(compressed(graph, data))
            results.wait_for(lambda msgs: False, 0.2)
    finally:
        graph.node.destroy_publisher(pub)
    later = [m for m in results.messages if _stamp(m) >= done + 1.0]
    assert later, "server B returned no result for frames sent after the enrollment"
    for msg in later:  # every frame B took 1 s or more after the commit knows eileen
        assert "eileen" in [f.name for f in msg.faces], fleet.procs["b"].output()[-2000:]
    first = min(_stamp(m) for m in results.messages if "eileen" in [f.name for f in m.faces])
    print(f"B first recognised eileen in a frame stamped {first - done:+.3f} s after A's "
          "enrollment returned")


def _known_samples(gallery):
    """{sample id: sample} of the known people (the servers also keep anonymous identities
    of the unknown faces they see, which grow and shrink on their own)."""
    return {s["id"]: s for p in gallery.export()["people"] if not p["anonymous"]
            for s in p["samples"]}


def test_sigkill_of_a_server_during_enrollment_loses_no_committed_sample(fleet, astronaut):
    """Kills spread over an enrollment's duration: before, around and after its commit."""
    rng = random.Random(19)
    views = _views(astronaut, 3)
    outcomes = []
    for fraction in (0.5, 0.8, 0.95, 1.05, 1.3):
        started = time.monotonic()
        trial = fleet.enroll("a", "eileen", views)  # how long one takes here and now
        duration = time.monotonic() - started
        assert trial.success, trial.message
        with Gallery(fleet.url) as gallery:
            before = _known_samples(gallery)
        client = fleet.graph.node.create_client(Enroll, f"{fleet.node('a')}/enroll")
        assert client.wait_for_service(timeout_sec=30)
        future = client.call_async(Enroll.Request(name="eileen", images=[
            CompressedImage(format="jpeg", data=jpeg(view)) for view in views]))
        time.sleep(duration * fraction * rng.uniform(0.95, 1.05))
        answered = future.done()
        fleet.procs["a"].popen.kill()  # SIGKILL, mid-enrollment or just after
        fleet.procs["a"].stop()
        fleet.graph.node.destroy_client(client)
        with Gallery(fleet.url) as gallery:
            after = _known_samples(gallery)
            people = gallery.people()
        assert set(before) <= set(after), "a committed sample disappeared"
        new = [after[i] for i in set(after) - set(before)]
        assert len({s["created_at"] for s in new}) <= 1, "samples of two transactions"
        assert len(new) in (0, trial.samples_added), "part of an enrollment"
        if answered and future.result().success:
            assert len(new) == future.result().samples_added
        assert sum(n for _, n in people) == len(after)
        outcomes.append(f"{fraction:.2f} of {duration:.2f} s: {len(new)} committed"
                        f"{', answered' if answered else ''}")
        fleet.start("a")
    print(f"kills at fractions of an enrollment's duration: {outcomes}")
    assert "eileen" in fleet.names("a", astronaut)
    assert "eileen" in fleet.names("b", astronaut)


def test_postgresql_restart_is_survived_by_both_servers(fleet, pg, astronaut, messi):
    leo = cv2.resize(messi, None, fx=1.3, fy=1.3)  # messi5's face is small: enrollable at 1.3x
    if "eileen" not in fleet.names("a", astronaut):  # when run on its own
        assert fleet.enroll("a", "eileen", [astronaut]).success
    assert _eventually(lambda: "eileen" in fleet.names("b", astronaut), 10)
    pg.stop()
    try:
        stopped = time.monotonic()
        # recognition goes on with the gallery each server had
        for key in ("a", "b"):
            assert "eileen" in fleet.names(key, astronaut), key
        response = fleet.enroll("a", "leo", [leo])
        assert not response.success and response.samples_added == 0
        assert "unreachable" in response.message and ("nothing was written" in response.message
                                                      or "nothing was changed" in response.message)
        assert "\n" not in response.message
        print(f"during the outage ({time.monotonic() - stopped:.1f} s): {response.message}")
    finally:
        pg.start()
    deadline = time.monotonic() + 60
    while True:
        response = fleet.enroll("a", "leo", [leo])
        if response.success or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert response.success, response.message
    assert _eventually(lambda: "leo" in fleet.names("b", leo), 30), \
        fleet.procs["b"].output()[-3000:]
    assert "eileen" in fleet.names("b", astronaut)
    for key in ("a", "b"):
        out = fleet.procs[key].output()
        assert "connection lost" in out and "reachable again" in out, out[-3000:]
        assert fleet.procs[key].alive()


def _eventually(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_servers_never_query_the_database_per_frame(fleet, astronaut, pg):
    """Pushed, not polled: frames cause no statement at all (the server logs every one)."""
    import psycopg
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        fleet.names("b", astronaut)
        fleet.names("a", astronaut)
        conn.execute("SELECT 'frames-start'")
        frames = 0
        started = time.monotonic()
        while time.monotonic() - started < 5.0 or frames < 4:
            fleet.names("ab"[frames % 2], astronaut)
            frames += 1
        conn.execute("SELECT 'frames-end'")
        mine = conn.info.backend_pid
    log = pg.log_text()
    window = log[log.index("'frames-start'"):log.index("'frames-end'")]
    statements = [line for line in window.splitlines()
                  if "statement:" in line and not line.startswith(f"{mine} ")]
    assert statements == [], f"{len(statements)} statements during {frames} frames"
    assert log.count("LISTEN facerec_gallery") >= 2  # both servers listen


def test_ros2_launch_starts_a_server_for_a_group_of_cameras(fleet, astronaut, tmp_path):
    """``ros2 launch facerec server.launch.py namespace:=ws3 cameras:=... gallery:=URL``."""
    import importlib.util
    import shutil
    ros2 = shutil.which("ros2")
    if ros2 is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("ros2 launch is not installed (launch, launch_ros, ros2cli: make setup "
                    "installs them from ../shared/ros-tools-src, or source a ROS 2 install)")
    from launchutil import get_parameters
    from rosutil import Proc
    if "eileen" not in fleet.names("a", astronaut):  # when run on its own
        assert fleet.enroll("a", "eileen", [astronaut]).success
    launch = Proc([ros2, "launch", "facerec", "server.launch.py", "namespace:=ws3",
                   "cameras:=robot3, robot4", f"gallery:={fleet.url}"], tmp_path, "launch")
    try:
        wait_for_service(fleet.graph, Enroll, "/ws3/facerec_server/enroll", launch, timeout=180)
        values = get_parameters(fleet.graph, "/ws3/facerec_server",
                                ["gallery.path", "image_topics"])
        assert values == {"gallery.path": fleet.url,
                          "image_topics": ["/robot3/camera/image/compressed",
                                           "/robot4/camera/image/compressed"]}
        _, msg = recognise(fleet.graph, jpeg(astronaut), node="/ws3/facerec_server",
                           topic="/robot4/camera/image/compressed", timeout=90)
        assert msg.source == "/robot4/camera/image/compressed"
        assert "eileen" in [face.name for face in msg.faces]  # from the shared gallery
    finally:
        code = launch.stop(timeout=30)
    assert code == 0, launch.output()[-3000:]
