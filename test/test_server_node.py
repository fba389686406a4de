"""The recognition server as a real process over real DDS, with real dlib models and faces.

Faces: scikit-image's astronaut (enrolled) and Debian opencv-doc's messi5 (a different
person, small: the server runs with face.upsample 1 so it is found).
"""
import re
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import Enroll, ListFaces
from rosutil import (compressed, jpeg, publish_until, recognise, set_parameters,
                     start_node, wait_for_service)
from boxes import iou

NODE = "/facerec_server"


def _box(face):
    r = face.roi
    return (r.x_offset, r.y_offset, r.x_offset + r.width, r.y_offset + r.height)


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph, astronaut):
    """One server for this module, astronaut enrolled as 'eileen' through ~/enroll."""
    tmp = tmp_path_factory.mktemp("server")
    proc = start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "gallery.db"), "face.upsample": 1,
        "max_frame_age": 5.0, "diagnostics_period": 0.5})
    wait_for_service(module_graph, Enroll, f"{NODE}/enroll", proc)
    request = Enroll.Request(name="eileen", images=[CompressedImage(format="jpeg",
                                                                    data=jpeg(astronaut))])
    response = module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120)
    assert response.success and response.samples_added == 1, response.message
    yield proc
    code = proc.stop()
    assert code == 0, f"server exit code {code}:\n{proc.output()}"


def _recognise(graph, image, frame_id="cam_optical", topic="camera/image/compressed"):
    """Publish ``image`` until a FaceArray for one of our stamps arrives; return (sent, got)."""
    return recognise(graph, jpeg(image), frame_id=frame_id, topic=topic)


def test_enrolled_person_recognised_in_another_view(server, module_graph, astronaut):
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    _, got = _recognise(module_graph, mirrored)
    known = [f for f in got.faces if f.name == "eileen"]
    assert len(known) == 1, [(f.name, f.distance) for f in got.faces]
    face = known[0]
    assert face.distance < 0.4
    assert 0.5 < face.confidence <= 1.0
    assert len(face.landmarks) == 5
    assert len(face.descriptor) == 0  # publish_descriptors defaults to false
    # The box overlaps the face: mirror the box found on the original image.
    from facerec_server.core.detect import HogDetector
    left, top, right, bottom = max(HogDetector(upsample=0).detect(astronaut),
                                   key=lambda d: d.score).box
    w = astronaut.shape[1]
    assert iou(_box(face), (w - right, top, w - left, bottom)) > 0.5


def test_different_person_is_unknown(server, module_graph, messi):
    _, got = _recognise(module_graph, messi)
    assert len(got.faces) >= 1
    for face in got.faces:
        assert face.name == ""
        assert face.distance > 0.6
        assert face.confidence == 0.0


def test_header_copied_from_image(server, module_graph, astronaut):
    sent, got = _recognise(module_graph, astronaut, frame_id="head_camera_optical")
    assert got.header.stamp == sent.header.stamp
    assert got.header.frame_id == "head_camera_optical"
    assert got.source == "/camera/image/compressed"  # the resolved input topic
    assert got.processing_time > 0


def test_face_recognition_toggle_and_invalid_values(server, module_graph, astronaut):
    results = module_graph.subscribe(FaceArray, f"{NODE}/faces")
    pub = module_graph.publisher(CompressedImage, "camera/image/compressed", 1)
    data = jpeg(astronaut)
    try:
        [ok] = set_parameters(module_graph, NODE, {"face_recognition.enabled": False})
        assert ok.successful, ok.reason
        time.sleep(1.0)  # let a frame already in the pipeline come out
        count = len(results.messages)
        for _ in range(10):
            pub.publish(compressed(module_graph, data))
            time.sleep(0.3)
        assert len(results.messages) == count, "faces published while disabled"
        [ok] = set_parameters(module_graph, NODE, {"face_recognition.enabled": True})
        assert ok.successful, ok.reason
        assert publish_until(module_graph, pub, lambda: compressed(module_graph, data), results,
                             lambda m: len(m) > count, timeout=60)
        # Invalid values are refused with a reason; the old value stays.
        for name, value in (("face.threshold", -0.5), ("face.detector", "sift"),
                            ("object_recognition.label_count", 0), ("face.jitter", 1000)):
            [result] = set_parameters(module_graph, NODE, {name: value})
            assert not result.successful, name
            assert result.reason, name
        from rcl_interfaces.srv import GetParameters
        got = module_graph.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(
            names=["face.threshold", "face.detector"]))
        assert got.values[0].double_value == pytest.approx(0.6)
        assert got.values[1].string_value == "hog"
    finally:
        set_parameters(module_graph, NODE, {"face_recognition.enabled": True})
        module_graph.node.destroy_publisher(pub)


def test_threshold_change_applies_from_next_frame(server, module_graph, astronaut):
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    try:
        [ok] = set_parameters(module_graph, NODE, {"face.threshold": 0.1})
        assert ok.successful
        _, got = _recognise(module_graph, mirrored)
        assert all(f.name == "" for f in got.faces)
    finally:
        set_parameters(module_graph, NODE, {"face.threshold": 0.6})
    _, got = _recognise(module_graph, mirrored)
    assert any(f.name == "eileen" for f in got.faces)


def test_bad_frames_are_counted_and_the_node_lives_on(server, module_graph, astronaut):
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = module_graph.publisher(CompressedImage, "camera/image/compressed", 10)
    assert module_graph.wait_for_subscribers(pub)  # best effort: unmatched frames are lost
    time.sleep(0.5)
    good = jpeg(astronaut)
    corrupted = good[: len(good) // 3] + bytes(200) + b"garbage"
    for data, fmt in ((corrupted, "jpeg"), (b"", "jpeg"), (b"\x00" * 64, "jpeg")):
        pub.publish(compressed(module_graph, data, fmt))
        time.sleep(1.0)  # one at a time: the latest-frame slot would drop all but the last

    def decode_errors(messages):
        for msg in reversed(messages):
            for status in msg.status:
                if status.name.endswith(": /camera/image/compressed"):
                    values = {kv.key: kv.value for kv in status.values}
                    return int(values["decode_errors"])
        return -1

    assert diagnostics.wait_for(lambda m: decode_errors(m) >= 2, 20), server.output()[-2000:]
    assert server.alive()
    assert re.search(r"dropped a frame: .*(empty|decode|not a)", server.output(), re.I), \
        server.output()[-2000:]
    # A PNG is processed normally afterwards.
    ok, png = cv2.imencode(".png", astronaut)
    _, got = recognise(module_graph, png.tobytes(), "png")
    assert any(f.name == "eileen" for f in got.faces)
    module_graph.node.destroy_publisher(pub)


def test_annotated_images_follow_cv_bridge_conventions(server, module_graph, astronaut):
    raw = module_graph.subscribe(Image, f"{NODE}/annotated", 1)
    comp = module_graph.subscribe(CompressedImage, f"{NODE}/annotated/compressed", 1)
    time.sleep(1.0)
    _recognise(module_graph, astronaut)
    assert raw.wait_count(1, 30) and comp.wait_count(1, 30)
    img = raw.messages[-1]
    assert (img.encoding, img.is_bigendian) == ("bgr8", 0)
    assert (img.height, img.width) == astronaut.shape[:2]
    assert img.step == img.width * 3 and len(img.data) == img.step * img.height
    assert comp.messages[-1].format == "jpeg"
    decoded = cv2.imdecode(np.frombuffer(bytes(comp.messages[-1].data), np.uint8),
                           cv2.IMREAD_COLOR)
    assert decoded.shape == astronaut.shape
    drawn = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
    assert np.abs(drawn.astype(int) - astronaut.astype(int)).max() > 100  # something drawn


def test_list_faces(server, module_graph):
    response = module_graph.call(ListFaces, f"{NODE}/list_faces", ListFaces.Request())
    assert list(response.names) == ["eileen"] and list(response.samples) == [1]


def test_overload_keeps_latency_bounded(server, module_graph, astronaut):
    """Frames published much faster than processed: results stay fresh, frames are dropped."""
    results = module_graph.subscribe(FaceArray, f"{NODE}/faces")
    pub = module_graph.publisher(CompressedImage, "camera/image/compressed", 1)
    data = jpeg(cv2.resize(astronaut, (1024, 1024)))
    end = time.monotonic() + 12.0
    while time.monotonic() < end:
        pub.publish(compressed(module_graph, data))
        time.sleep(1 / 60)
    time.sleep(1.0)
    now_ns = module_graph.node.get_clock().now().nanoseconds
    latencies = []
    for msg, received in zip(results.messages, results.times):
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((received, (now_ns - stamp_ns) / 1e9 - (time.monotonic() - received)))
    assert len(latencies) >= 6, f"only {len(latencies)} results in 12 s"
    third = len(latencies) // 3
    first = sorted(lat for _, lat in latencies[:third])[third // 2]
    last = sorted(lat for _, lat in latencies[-third:])[third // 2]
    processing = sorted(m.processing_time for m in results.messages)[len(results.messages) // 2]
    # No backlog: the delay at the end is about one frame's processing, not growing with time.
    assert last < first + 1.0 + 2 * processing, (first, last, processing)
    assert last < 3.0, (first, last, processing)
    module_graph.node.destroy_publisher(pub)


def test_corrupt_model_file_refused_at_runtime_and_the_node_lives_on(
        server, module_graph, astronaut, tmp_path):
    corrupt = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    corrupt.write_bytes(bytes(range(256)) * 64)
    [result] = set_parameters(module_graph, NODE, {"face.models.recognition": str(corrupt)})
    assert not result.successful
    assert str(corrupt) in result.reason
    request = Enroll.Request(name="eileen", images=[CompressedImage(format="jpeg",
                                                                    data=jpeg(astronaut))])
    response = module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120)
    assert response.samples_added in (0, 1) and response.message  # answered, node alive
    assert server.alive()
    _, got = _recognise(module_graph, np.ascontiguousarray(astronaut[:, ::-1]))
    assert any(f.name == "eileen" for f in got.faces)


def test_diagnostics_recover_to_ok_after_errors(server, module_graph, astronaut):
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = module_graph.publisher(CompressedImage, "camera/image/compressed", 1)
    assert module_graph.wait_for_subscribers(pub)  # best effort: unmatched frames are lost
    time.sleep(0.5)
    pub.publish(compressed(module_graph, b"not an image"))
    time.sleep(1.0)
    data = jpeg(astronaut)

    def ok_after_warn(messages):
        levels = [ord(s.level) if isinstance(s.level, bytes) else s.level
                  for m in messages for s in m.status
                  if s.name.endswith(": /camera/image/compressed")]
        return 1 in levels and levels[-1] == 0  # WARN for the bad frame, then OK again

    assert publish_until(module_graph, pub, lambda: compressed(module_graph, data),
                         diagnostics, ok_after_warn, timeout=30)
    module_graph.node.destroy_publisher(pub)


def test_implementations_switch_at_runtime_and_agree(server, module_graph, astronaut):
    """face.embedder opencv (default) vs dlib give the same distance; the OpenCV MMOD
    detector finds the same face. Tracking is off here: every frame is described from its
    own full-frame box (a track's distance can come from an earlier frame's box)."""
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])

    def eileen():
        _, got = _recognise(module_graph, mirrored)
        return next(f for f in got.faces if f.name == "eileen")

    [r] = set_parameters(module_graph, NODE, {"face.tracking.enabled": False})
    assert r.successful, r.reason
    default = eileen()
    try:
        [r] = set_parameters(module_graph, NODE, {"face.embedder": "dlib"})
        assert r.successful, r.reason
        with_dlib = eileen()
        assert with_dlib.distance == pytest.approx(default.distance, abs=1e-4)
        results = set_parameters(module_graph, NODE, {"face.detector": "cnn_opencv",
                                                      "face.upsample": 0})
        assert all(r.successful for r in results), [r.reason for r in results]
        with_cnn = eileen()
        assert iou(_box(with_cnn), _box(default)) > 0.5
        assert with_cnn.detection_score > 0.5  # MMOD confidence, not a HOG margin
    finally:
        set_parameters(module_graph, NODE, {"face.embedder": "opencv", "face.detector": "hog",
                                            "face.upsample": 1, "face.tracking.enabled": True})
