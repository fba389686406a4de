"""The server's ecosystem outputs over real DDS, read with the real message types.

A real facerec_server process runs in the namespace ``/eco<pid>`` with an object model (a
HOG bullseye detector the test trains) and a gallery where the astronaut is enrolled as
'eileen'. The test publishes rendered frames of real registry faces (tools.track_scenes:
eileen walking, messi5's face, never enrolled, standing) on the server's image topic and
reads, next to ``~/faces``:

* ROS4HRI (REP-155, hri_msgs 2.0): ``/eco<pid>/humans/faces/tracked`` (IdsList), per face
  ``/eco<pid>/humans/faces/<id>/roi`` (NormalizedRegionOfInterest2D), ``/cropped`` and
  ``/aligned`` (sensor_msgs/Image 128x128), ``/eco<pid>/humans/candidate_matches``
  (IdsMatch): face ids = track ids, eileen's face matched to person 'eileen' with the
  FaceArray's confidence, none for the unknown face, confidence 0 when the track ends, and
  the face's topics gone from the graph;
* vision_msgs/Detection2DArray on ``~/faces/detections`` and ``~/objects/detections``;
* foxglove_msgs/ImageAnnotations on ``~/faces/annotations`` and ``~/objects/annotations``;

with boxes equal to the FaceArray's and ObjectArray's, and stamps equal to the image's.
Outputs switched off by parameter leave the graph and publish nothing. A second server,
whose hri_msgs import fails (a package of that name that raises ImportError first on
PYTHONPATH: exactly what Python sees when the installed package is missing or broken, and
no test switch in the node), says so once and runs with its other outputs.
"""
import importlib
import os
import re
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from facerec_msgs.msg import FaceArray, ObjectArray
from facerec_msgs.srv import Enroll, ListFaces
from facerec_server import ecosystem
from facerec_server.tools.make_test_detector import bullseye_scene, train_bullseye_detector
from facerec_server.tools.track_scenes import Actor, Scene
from rosutil import (REPO, Collector, Proc, compressed, jpeg, set_parameters, start_node,
                     wait_for_service, write_params)

# The message packages are optional: without one these tests skip, naming it. (A skip raised
# while the module is imported would stop launch_testing's pytest plugin from collecting
# other files too: a mark instead.)
_MISSING = []
for _package in ("hri_msgs", "vision_msgs", "foxglove_msgs"):
    try:
        importlib.import_module(f"{_package}.msg")
    except ImportError as _exc:
        _MISSING.append(f"{_package} ({_exc})")
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"not importable: {', '.join(_MISSING)}; `make setup` builds "
    "them from ros-msgs-src ($FACEREC_ROS_MSGS_SRC)")
if not _MISSING:
    from foxglove_msgs.msg import ImageAnnotations, PointsAnnotation
    from hri_msgs.msg import IdsList, IdsMatch, NormalizedRegionOfInterest2D
    from vision_msgs.msg import Detection2DArray

NS = f"/eco{os.getpid() % 10000}"
NODE = f"{NS}/facerec_server"
LOST_TIMEOUT = 1.0
WIDTH, HEIGHT = 480, 360
STATIC_TOPICS = [f"{NS}/humans/faces/tracked", f"{NS}/humans/candidate_matches",
                 f"{NODE}/faces/detections", f"{NODE}/objects/detections",
                 f"{NODE}/faces/annotations", f"{NODE}/objects/annotations"]


def _key(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _stamp_key(stamp):
    return stamp.sec, stamp.nanosec


def _box(roi):
    return (roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height)


class Client:
    """Subscriptions (kept, so their publisher counts can be read) and a frame sender."""

    def __init__(self, graph, ns=NS, node=NODE):
        self.graph, self.ns, self.node = graph, ns, node
        self.subs = {}
        self.pub = graph.publisher(CompressedImage, f"{ns}/camera/image/compressed", 1)
        self.faces = self.sub("faces", FaceArray, f"{node}/faces")
        assert graph.wait_for_subscribers(self.pub)

    def sub(self, key, msg_type, topic, depth=50):
        collector = Collector()
        self.subs[key] = (self.graph.node.create_subscription(msg_type, topic, collector, depth),
                          collector)
        return collector

    def matched(self, key, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.subs[key][0].get_publisher_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def send(self, image, timeout=60.0):
        """Publish ``image`` (re-stamped, resent every 0.5 s) until its FaceArray comes;
        returns (the JPEG sent, the FaceArray)."""
        data = jpeg(image)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = compressed(self.graph, data)
            self.pub.publish(msg)
            if self.faces.wait_for(lambda m: any(_key(r) == _key(msg) for r in m), 0.5):
                return data, next(r for r in self.faces.messages if _key(r) == _key(msg))
        raise AssertionError("no FaceArray for a frame")

    def close(self):
        for subscription, _ in self.subs.values():
            self.graph.node.destroy_subscription(subscription)
        self.graph.node.destroy_publisher(self.pub)


def _publishers(graph, topic):
    return len(graph.node.get_publishers_info_by_topic(topic))


def _wait_publishers(graph, topic, count, timeout=10.0):
    """The number of ``topic``'s publishers once it is ``count`` (the graph is discovered
    asynchronously), or what it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while _publishers(graph, topic) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _publishers(graph, topic)


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph, astronaut):
    tmp = tmp_path_factory.mktemp("ecosystem")
    svm = train_bullseye_detector(tmp / "bullseye.svm")
    # "/**": the file applies to the node in its namespace (a key "facerec_server" would not)
    proc = start_node("facerec_server.server_node", tmp, "server", "/**", {
        "gallery.path": str(tmp / "gallery.db"), "max_frame_age": 30.0,
        "face.tracking.lost_timeout": LOST_TIMEOUT,
        "object_recognition.models": ["targets"], "object_recognition.max_rate": 20.0,
        "object_recognition.targets.type": "hog",
        "object_recognition.targets.path": str(svm),
        "object_recognition.targets.label": "bullseye"}, ["-r", f"__ns:={NS}"])
    wait_for_service(module_graph, Enroll, f"{NODE}/enroll", proc)
    request = Enroll.Request(name="eileen", images=[CompressedImage(format="jpeg",
                                                                    data=jpeg(astronaut))])
    response = module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120)
    assert response.success, response.message
    yield proc
    code = proc.stop()
    assert code == 0, f"server exit code {code}:\n{proc.log_path.read_text()}"


@pytest.fixture(scope="module")
def scene():
    eileen = Actor.of("astronaut", "eileen", [(0.0, 100, 170, 96), (1.5, 160, 175, 100)],
                      mirror=True)
    messi = Actor.of("messi", "messi", [(0.0, 410, 180, 96), (1.5, 400, 178, 96)])
    return Scene(WIDTH, HEIGHT, 10.0, 1.5, [eileen, messi])


@pytest.fixture(scope="module")
def empty_room():
    return Scene(WIDTH, HEIGHT, 10.0, 1.0, []).render(0)


def _by_position(result):
    assert len(result.faces) == 2, [(f.name, f.roi.x_offset) for f in result.faces]
    return sorted(result.faces, key=lambda f: f.roi.x_offset)


def _end_tracks(client, empty_room):
    """Frames without faces for longer than lost_timeout: every track ends."""
    deadline = time.monotonic() + LOST_TIMEOUT + 1.0
    while time.monotonic() < deadline:
        client.send(empty_room)
        time.sleep(0.1)


def test_rep155_faces_under_the_namespace_with_consistent_ids_and_boxes(
        server, module_graph, scene, empty_room):
    client = Client(module_graph)
    try:
        tracked = client.sub("tracked", IdsList, f"{NS}/humans/faces/tracked")
        matches = client.sub("matches", IdsMatch, f"{NS}/humans/candidate_matches")
        detections = client.sub("detections", Detection2DArray, f"{NODE}/faces/detections")
        annotations = client.sub("annotations", ImageAnnotations, f"{NODE}/faces/annotations")
        for key in ("tracked", "matches", "detections", "annotations"):
            assert client.matched(key), key
        _, first = client.send(scene.render(0))
        eileen, messi = _by_position(first)
        ids = {"eileen": f"f{eileen.track_id}", "messi": f"f{messi.track_id}"}
        assert eileen.track_id and messi.track_id and eileen.track_id != messi.track_id
        per_face = {}
        for who, fid in ids.items():
            for part, msg_type in (("roi", NormalizedRegionOfInterest2D), ("cropped", Image),
                                   ("aligned", Image)):
                topic = f"{NS}/humans/faces/{fid}/{part}"
                assert _wait_publishers(module_graph, topic, 1) == 1, topic
                per_face[who, part] = client.sub((who, part), msg_type, topic)
                assert client.matched((who, part)), topic
        frames = [client.send(scene.render(i)) for i in range(1, scene.frames)]
        time.sleep(1.0)  # the last messages of every topic arrive
    finally:
        client.close()

    assert all(re.fullmatch(r"f[1-9][0-9]*", fid) for fid in ids.values())
    for data, result in frames:
        stamp = _key(result)
        pair = _by_position(result)
        # ids consistent across frames: each person keeps the face id of the first frame
        assert [f"f{f.track_id}" for f in pair] == [ids["eileen"], ids["messi"]]
        lists = [m for m in tracked.messages if _key(m) == stamp]
        assert lists and sorted(lists[-1].ids) == sorted(ids.values())
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        for who, face in zip(("eileen", "messi"), pair):
            left, top, right, bottom = _box(face.roi)
            [roi] = [m for m in per_face[who, "roi"].messages if _key(m) == stamp]
            assert (roi.xmin * WIDTH, roi.ymin * HEIGHT, roi.xmax * WIDTH, roi.ymax * HEIGHT) \
                == pytest.approx((left, top, right, bottom), abs=1e-3)
            assert 0.0 < roi.c <= 1.0 and roi.header.frame_id == result.header.frame_id
            [cropped] = [m for m in per_face[who, "cropped"].messages if _key(m) == stamp]
            [aligned] = [m for m in per_face[who, "aligned"].messages if _key(m) == stamp]
            for msg in (cropped, aligned):
                assert (msg.width, msg.height, msg.encoding, msg.step) == (128, 128, "bgr8", 384)
            got = np.frombuffer(bytes(cropped.data), np.uint8).reshape(128, 128, 3)
            # the face box scaled to fit 128 x 128, centred, black around it (REP-155 /
            # ROS4HRI's cropped face); boxes are nearly square (a row or column of padding)
            scale = 128 / max(right - left, bottom - top)
            w, h = round((right - left) * scale), round((bottom - top) * scale)
            want = np.zeros((128, 128, 3), np.uint8)
            want[(128 - h) // 2:(128 - h) // 2 + h, (128 - w) // 2:(128 - w) // 2 + w] = \
                cv2.resize(image[top:bottom, left:right], (w, h))
            assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0
            assert got[(128 - h) // 2:(128 - h) // 2 + h].mean() > 40  # a face, not black
        [det] = [m for m in detections.messages if _key(m) == stamp]
        assert [d.id for d in det.detections] == [f"f{f.track_id}" for f in result.faces]
        for d, face in zip(det.detections, result.faces):
            left, top, right, bottom = _box(face.roi)
            assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                    d.bbox.size_y) == ((left + right) / 2, (top + bottom) / 2, right - left,
                                       bottom - top)
            assert _key(d) == stamp
            [hypothesis] = d.results
            assert hypothesis.hypothesis.class_id == (face.name or "unknown")
            assert hypothesis.hypothesis.score == pytest.approx(face.confidence, abs=1e-6)
        [notes] = [m for m in annotations.messages
                   if m.points and _stamp_key(m.points[0].timestamp) == stamp]
        assert len(notes.points) == len(notes.texts) == len(result.faces)
        for outline, text, face in zip(notes.points, notes.texts, result.faces):
            left, top, right, bottom = _box(face.roi)
            assert outline.type == PointsAnnotation.LINE_LOOP
            assert [(p.x, p.y) for p in outline.points] == [
                (left, top), (right, top), (right, bottom), (left, bottom)]
            assert _stamp_key(text.timestamp) == stamp
            assert text.text.startswith(face.name or face.anonymous_id or "unknown")
            assert f"[f{face.track_id}]" in text.text
    names = {f.name for _, r in frames for f in _by_position(r)[:1]}
    assert names == {"eileen"}
    # candidate matches: eileen's face -> person 'eileen' with the FaceArray's confidences;
    # messi (never enrolled) -> the anonymous identity the server gave him (Face.anonymous_id:
    # a permanent person id, as ROS4HRI gives unknown faces), none while he has none
    assert matches.messages
    assert {m.id1 for m in matches.messages} <= {ids["eileen"], ids["messi"]}
    assert {(m.id1_type, m.id2_type) for m in matches.messages} == {
        (IdsMatch.FACE, IdsMatch.PERSON)}
    eileen = [m for m in matches.messages if m.id1 == ids["eileen"]]
    assert {m.id2 for m in eileen} == {"eileen"}
    sent = [round(_by_position(r)[0].confidence, 5) for _, r in frames]
    got = [round(m.confidence, 5) for m in eileen]
    assert got[-len(sent):] == sent
    assert all(c > 0.5 for c in got)
    stranger = [_by_position(r)[1].anonymous_id for _, r in frames]
    messi = [m for m in matches.messages if m.id1 == ids["messi"]]
    assert [m.id2 for m in messi][-sum(1 for a in stranger if a):] == [
        ecosystem.person_id(a) for a in stranger if a]
    assert all(a.startswith("unknown-") for a in stranger if a)
    assert all(0.0 < m.confidence <= 1.0 for m in messi)


def test_track_end_sends_confidence_zero_and_removes_the_face_topics(
        server, module_graph, scene, empty_room):
    client = Client(module_graph)
    try:
        tracked = client.sub("tracked", IdsList, f"{NS}/humans/faces/tracked")
        matches = client.sub("matches", IdsMatch, f"{NS}/humans/candidate_matches")
        assert client.matched("tracked") and client.matched("matches")
        _end_tracks(client, empty_room)  # whatever an earlier test left
        _, result = None, None
        for i in range(4):
            _, result = client.send(scene.render(i))
        eileen, messi = _by_position(result)
        assert eileen.name == "eileen"
        fid = f"f{eileen.track_id}"
        topics = [f"{NS}/humans/faces/f{f.track_id}/{part}" for f in (eileen, messi)
                  for part in ("roi", "cropped", "aligned")]
        assert all(_wait_publishers(module_graph, t, 1) == 1 for t in topics)
        before = len(matches.messages)
        _end_tracks(client, empty_room)
        assert matches.wait_for(lambda m: any(
            x.id1 == fid and x.confidence == 0.0 for x in m[before:]), 10.0)
        assert tracked.wait_for(lambda m: m and list(m[-1].ids) == [], 10.0)
        ends = {m.id1: m for m in matches.messages[before:] if m.confidence == 0.0}
        end = ends.pop(fid)
        assert (end.id1, end.id1_type, end.id2, end.id2_type) == (
            fid, IdsMatch.FACE, "eileen", IdsMatch.PERSON)
        # messi (never enrolled): matched only to his anonymous identity, if his track got
        # one in these frames, and then that match ended too
        his = [m for m in matches.messages if m.id1 == f"f{messi.track_id}"]
        assert all(m.id2.startswith("unknown_") for m in his), [m.id2 for m in his]
        assert set(ends) == ({f"f{messi.track_id}"} if his else set()), ends
        assert tracked.wait_for(lambda m: m and list(m[-1].ids) == [], 10.0)
        assert [_wait_publishers(module_graph, t, 0) for t in topics] == [0] * len(topics)
    finally:
        client.close()


def test_faces_of_a_silent_input_end_after_the_lost_timeout(
        server, module_graph, scene, empty_room):
    client = Client(module_graph)
    try:
        matches = client.sub("matches", IdsMatch, f"{NS}/humans/candidate_matches")
        tracked = client.sub("tracked", IdsList, f"{NS}/humans/faces/tracked")
        assert client.matched("matches") and client.matched("tracked")
        _end_tracks(client, empty_room)
        _, result = client.send(scene.render(0))
        eileen, _ = _by_position(result)
        fid = f"f{eileen.track_id}"
        assert tracked.wait_for(lambda m: m and fid in m[-1].ids, 10.0)
        before = len(matches.messages)
        # no more frames: the tracker never runs again, the node's timer ends the faces
        assert matches.wait_for(lambda m: any(
            x.id1 == fid and x.confidence == 0.0 for x in m[before:]), LOST_TIMEOUT + 5.0)
        assert tracked.wait_for(lambda m: list(m[-1].ids) == [], 5.0)
        assert _wait_publishers(module_graph, f"{NS}/humans/faces/{fid}/roi", 0) == 0
    finally:
        client.close()


def test_object_detections_and_annotations_equal_the_object_results(server, module_graph):
    client = Client(module_graph)
    try:
        objects = client.sub("objects", ObjectArray, f"{NODE}/objects")
        detections = client.sub("detections", Detection2DArray, f"{NODE}/objects/detections")
        annotations = client.sub("annotations", ImageAnnotations,
                                 f"{NODE}/objects/annotations")
        for key in ("objects", "detections", "annotations"):
            assert client.matched(key), key
        image, _ = bullseye_scene(np.random.default_rng(11), 70, side=240)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                o.label == "bullseye" for m in objects.messages for o in m.objects):
            client.send(image)
        found = next(m for m in objects.messages
                     if any(o.label == "bullseye" for o in m.objects))
        assert detections.wait_for(lambda m: any(_key(d) == _key(found) for d in m), 10.0)
        assert annotations.wait_for(lambda m: any(
            a.points and _stamp_key(a.points[0].timestamp) == _key(found) for a in m), 10.0)
    finally:
        client.close()
    [det] = [d for d in detections.messages if _key(d) == _key(found)]
    assert len(det.detections) == len(found.objects)
    for d, obj in zip(det.detections, found.objects):
        left, top, right, bottom = _box(obj.roi)
        assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                d.bbox.size_y) == ((left + right) / 2, (top + bottom) / 2, right - left,
                                   bottom - top)
        assert d.results[0].hypothesis.class_id == obj.label == "bullseye"
        assert d.results[0].hypothesis.score == pytest.approx(obj.score, abs=1e-6)
        assert d.id == ""
    [notes] = [a for a in annotations.messages
               if a.points and _stamp_key(a.points[0].timestamp) == _key(found)]
    assert [[(p.x, p.y) for p in outline.points] for outline in notes.points] == [
        [(o.roi.x_offset, o.roi.y_offset), (o.roi.x_offset + o.roi.width, o.roi.y_offset),
         (o.roi.x_offset + o.roi.width, o.roi.y_offset + o.roi.height),
         (o.roi.x_offset, o.roi.y_offset + o.roi.height)] for o in found.objects]
    assert [t.text.split()[0] for t in notes.texts] == ["bullseye"] * len(found.objects)


def test_outputs_switched_off_leave_the_graph_and_publish_nothing(
        server, module_graph, scene, empty_room):
    client = Client(module_graph)
    names = ("outputs.hri", "outputs.vision_msgs", "outputs.foxglove")
    try:
        collectors = [client.sub(topic, msg_type, topic) for topic, msg_type in zip(
            STATIC_TOPICS, (IdsList, IdsMatch, Detection2DArray, Detection2DArray,
                            ImageAnnotations, ImageAnnotations))]
        assert all(client.matched(topic) for topic in STATIC_TOPICS)
        assert all(r.successful for r in set_parameters(
            module_graph, NODE, {name: False for name in names}))
        assert [_wait_publishers(module_graph, t, 0) for t in STATIC_TOPICS] == [0] * 6
        time.sleep(0.5)
        counts = [len(c.messages) for c in collectors]
        results = [client.send(scene.render(i))[1] for i in range(5)]
        assert all(len(r.faces) == 2 and r.faces[0].track_id for r in results)
        faces = [f"{NS}/humans/faces/f{f.track_id}/roi" for r in results for f in r.faces]
        time.sleep(1.0)
        assert all(_publishers(module_graph, t) == 0 for t in faces)
        assert [len(c.messages) for c in collectors] == counts
        # and on again: the same topics come back and carry the next frames
        assert all(r.successful for r in set_parameters(
            module_graph, NODE, {name: True for name in names}))
        assert all(client.matched(topic) for topic in STATIC_TOPICS)
        _, result = client.send(scene.render(5))
        assert collectors[0].wait_for(lambda m: any(_key(x) == _key(result) for x in m), 10.0)
        assert collectors[2].wait_for(lambda m: any(_key(x) == _key(result) for x in m), 10.0)
    finally:
        set_parameters(module_graph, NODE, {name: True for name in names})
        client.close()


def test_missing_message_package_is_reported_once_and_the_node_runs(
        tmp_path, module_graph, scene):
    shadow = tmp_path / "shadow" / "hri_msgs"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('hri_msgs hidden by test_server_ecosystem')\n")
    ns = f"{NS}m"
    node = f"{ns}/facerec_server"
    # the shadow first (after the source tree): the real hri_msgs is later on the path
    path = os.pathsep.join([str(REPO), str(tmp_path / "shadow")] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    params = write_params(tmp_path / "server.yaml", "/**", {
        "gallery.path": str(tmp_path / "gallery.db"), "max_frame_age": 30.0})
    proc = Proc.module("facerec_server.server_node", tmp_path, "server",
                       ros_args=["--params-file", str(params), "-r", f"__ns:={ns}"],
                       PYTHONPATH=path)
    client = None
    try:
        wait_for_service(module_graph, ListFaces, f"{node}/list_faces", proc)
        client = Client(module_graph, ns, node)
        detections = client.sub("detections", Detection2DArray, f"{node}/faces/detections")
        assert client.matched("detections")
        results = [client.send(scene.render(i))[1] for i in range(3)]
        assert all(len(r.faces) == 2 for r in results)
        assert detections.wait_for(lambda m: len(m) >= 3, 10.0)
        # switched off and on again: still reported once
        for value in (False, True):
            assert all(r.successful for r in set_parameters(module_graph, node,
                                                            {"outputs.hri": value}))
        client.send(scene.render(3))
        assert _publishers(module_graph, f"{ns}/humans/faces/tracked") == 0
        ids = {f.track_id for r in results for f in r.faces}
        assert all(_publishers(module_graph, f"{ns}/humans/faces/f{i}/roi") == 0 for i in ids)
        assert proc.alive()
    finally:
        if client is not None:
            client.close()
        code = proc.stop()
    log = proc.log_path.read_text()
    assert code == 0, log
    lines = [line for line in log.splitlines() if "hri_msgs" in line]
    assert len(lines) == 1, log
    assert "outputs.hri" in lines[0] and "not importable" in lines[0] and "WARN" in lines[0]
