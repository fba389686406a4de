"""facerec_msgs between two real processes over real DDS (loopback)."""
import math

import pytest
from geometry_msgs.msg import Point32
from sensor_msgs.msg import RegionOfInterest

from facerec_msgs.msg import Face, FaceArray, Object, ObjectArray
from facerec_msgs.srv import Enroll, Forget, ListFaces
from rosutil import Proc


@pytest.fixture
def peer(tmp_path, ros_context):
    proc = Proc.module("facerec_server.tools.msg_peer", tmp_path, "peer",
                       ros_args=["-p", "names:=['ada', 'grace', 'émile']",
                                 "-p", "samples:=[5, 2, 7]"])
    yield proc
    assert proc.stop() == 0, proc.output()


def _full_face_array() -> FaceArray:
    msg = FaceArray()
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_789_000
    msg.header.frame_id = "camera_optical"
    msg.source = "/robot1/camera/image/compressed"
    msg.processing_time = 0.0425
    for i in range(2):
        face = Face()
        face.name = "ada" if i == 0 else ""
        face.distance = 0.31 + i
        face.confidence = 0.74 if i == 0 else 0.0
        face.roi = RegionOfInterest(x_offset=10 + i, y_offset=20, height=64, width=60,
                                    do_rectify=False)
        face.detection_score = 1.25
        face.track_id = 7 + i
        face.track_state = Face.TRACK_CONFIRMED if i == 0 else Face.TRACK_TENTATIVE
        face.landmarks = [Point32(x=float(k), y=float(k) * 2.5, z=0.0) for k in range(5)]
        face.descriptor = [math.sin(k) for k in range(128)]
        msg.faces.append(face)
    return msg


def _faces_equal(a: Face, b: Face) -> None:
    assert a.name == b.name
    assert a.distance == pytest.approx(b.distance, rel=1e-6)
    assert a.confidence == pytest.approx(b.confidence, rel=1e-6)
    assert (a.roi.x_offset, a.roi.y_offset, a.roi.width, a.roi.height, a.roi.do_rectify) == \
        (b.roi.x_offset, b.roi.y_offset, b.roi.width, b.roi.height, b.roi.do_rectify)
    assert a.detection_score == pytest.approx(b.detection_score, rel=1e-6)
    assert a.track_id == b.track_id
    assert a.track_state == b.track_state
    assert [(p.x, p.y, p.z) for p in a.landmarks] == [(p.x, p.y, p.z) for p in b.landmarks]
    assert list(a.descriptor) == pytest.approx(list(b.descriptor), rel=1e-6)


def test_face_array_round_trip_between_processes(peer, graph):
    received = graph.subscribe(FaceArray, "peer/out")
    pub = graph.publisher(FaceArray, "peer/in")
    assert graph.wait_for_subscribers(pub, timeout=30), peer.output()
    sent = _full_face_array()
    # Discovery of the peer's publisher may lag its subscriber: resend until the echo arrives.
    for _ in range(100):
        pub.publish(sent)
        if received.wait_count(1, timeout=0.3):
            break
    assert received.messages, "no FaceArray echoed back: " + peer.output()
    got = received.messages[0]
    assert got.header.stamp.sec == sent.header.stamp.sec
    assert got.header.stamp.nanosec == sent.header.stamp.nanosec
    assert got.header.frame_id == sent.header.frame_id
    assert got.source == sent.source
    assert got.processing_time == pytest.approx(sent.processing_time, rel=1e-6)
    assert len(got.faces) == len(sent.faces) == 2
    for a, b in zip(got.faces, sent.faces):
        _faces_equal(a, b)


def test_list_faces_service_between_processes(peer, graph):
    response = graph.call(ListFaces, "peer/list_faces", ListFaces.Request(), timeout=30)
    assert list(response.names) == ["ada", "grace", "émile"]
    assert list(response.samples) == [5, 2, 7]


def test_interface_fields_are_the_contract():
    """The field names and types other parts and external checks rely on."""
    assert Face.get_fields_and_field_types() == {
        "name": "string", "distance": "float", "confidence": "float",
        "roi": "sensor_msgs/RegionOfInterest", "detection_score": "float",
        "track_id": "uint32", "track_state": "uint8", "anonymous_id": "string",
        "landmarks": "sequence<geometry_msgs/Point32>", "descriptor": "sequence<float>"}
    from facerec_server.core import tracking
    assert (Face.TRACK_NONE, Face.TRACK_TENTATIVE, Face.TRACK_CONFIRMED) == (0, 1, 2) == \
        (tracking.TRACK_NONE, tracking.TRACK_TENTATIVE, tracking.TRACK_CONFIRMED)
    assert FaceArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "source": "string",
        "faces": "sequence<facerec_msgs/Face>", "processing_time": "float"}
    assert Object.get_fields_and_field_types() == {
        "label": "string", "score": "float", "roi": "sensor_msgs/RegionOfInterest",
        "model": "string"}
    assert ObjectArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "source": "string",
        "objects": "sequence<facerec_msgs/Object>", "processing_time": "float"}
    assert Enroll.Request.get_fields_and_field_types() == {
        "name": "string", "images": "sequence<sensor_msgs/CompressedImage>",
        "source": "string", "samples": "uint32", "timeout": "float"}
    assert Enroll.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "samples_added": "uint32"}
    assert Forget.Request.get_fields_and_field_types() == {"name": "string"}
    assert Forget.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "samples_removed": "uint32"}
    assert ListFaces.Request.get_fields_and_field_types() == {}
    assert ListFaces.Response.get_fields_and_field_types() == {
        "names": "sequence<string>", "samples": "sequence<uint32>"}
