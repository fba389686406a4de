"""Object recognition inside the running server: ~/objects, runtime settings, no face delay."""
import statistics
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from facerec_msgs.msg import FaceArray, ObjectArray
from facerec_msgs.srv import ListFaces
from facerec_server.core.models import default_model_path
from facerec_server.tools.make_test_classifier import make_colour_classifier
from boxes import iou
from test_objects import _scene, train_bullseye_detector
from rosutil import (compressed, jpeg, publish_until, set_parameters, start_node,
                     wait_for_service)

NODE = "/facerec_server"


@pytest.fixture(scope="module")
def object_server(tmp_path_factory, module_graph):
    tmp = tmp_path_factory.mktemp("objects")
    onnx_path, labels = make_colour_classifier(tmp / "colours.onnx", tmp / "colours.txt")
    svm_path = train_bullseye_detector(tmp / "bullseye.svm")
    proc = start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "g.db"),
        "object_recognition.models": ["faces", "colours", "targets"],
        "object_recognition.targets.type": "hog",
        "object_recognition.targets.path": str(svm_path),
        "object_recognition.targets.label": "bullseye",
        "object_recognition.max_rate": 5.0,
        "object_recognition.faces.type": "mmod",
        "object_recognition.faces.path": str(default_model_path("cnn_detector")),
        "object_recognition.faces.label": "face",
        "object_recognition.faces.max_side": 384,
        "object_recognition.colours.type": "onnx",
        "object_recognition.colours.path": str(onnx_path),
        "object_recognition.colours.labels_file": str(labels),
        "object_recognition.colours.swap_rb": True,
        "object_recognition.colours.scale": 1.0 / 255.0,
        "object_recognition.colours.input_size": [64, 64],
    })
    wait_for_service(module_graph, ListFaces, f"{NODE}/list_faces", proc, timeout=180)
    yield proc
    assert proc.stop() == 0, proc.output()


def _objects_for(graph, image, predicate, timeout=120):
    results = graph.subscribe(ObjectArray, f"{NODE}/objects")
    pub = graph.publisher(CompressedImage, "camera/image/compressed", 1)
    data = jpeg(image)
    ok = publish_until(graph, pub, lambda: compressed(graph, data), results, predicate,
                       timeout=timeout, period=1.0)
    graph.node.destroy_publisher(pub)
    return ok, results.messages


def _with(label):
    return lambda msgs: any(any(o.label == label for o in m.objects) for m in msgs)


def test_mmod_face_model_and_classifier_publish_sorted_objects(object_server, module_graph,
                                                               astronaut):
    ok, msgs = _objects_for(module_graph, astronaut, _with("face"))
    assert ok, object_server.output()[-3000:]
    msg = next(m for m in msgs if any(o.label == "face" for o in m.objects))
    assert msg.source == "/camera/image/compressed"
    scores = [o.score for o in msg.objects]
    assert scores == sorted(scores, reverse=True)
    assert len(msg.objects) <= 5
    face = next(o for o in msg.objects if o.label == "face")
    assert face.model == "mmod:faces"
    assert face.roi.width > 50 and face.roi.height > 50
    # The MMOD box overlaps the face HOG finds.
    from facerec_server.core.detect import HogDetector
    left, top, right, bottom = HogDetector().detect(astronaut)[0].box
    cx, cy = face.roi.x_offset + face.roi.width / 2, face.roi.y_offset + face.roi.height / 2
    assert left < cx < right and top < cy < bottom
    colours = [o for o in msg.objects if o.model == "onnx:colours"]
    assert colours and all(o.roi.width == 0 and o.roi.height == 0 for o in colours)


def test_label_count_and_enabled_apply_at_runtime(object_server, module_graph):
    red = np.zeros((240, 320, 3), np.uint8)
    red[:, :, 2] = 255  # BGR: pure red
    try:
        [r] = set_parameters(module_graph, NODE, {"object_recognition.label_count": 1})
        assert r.successful
        ok, msgs = _objects_for(module_graph, red, lambda ms: any(
            len(m.objects) == 1 and m.objects[0].label == "red" for m in ms))
        assert ok, [[(o.label, o.score) for o in m.objects] for m in msgs]
        [r] = set_parameters(module_graph, NODE, {"object_recognition.enabled": False})
        assert r.successful
        time.sleep(3.0)
        results = module_graph.subscribe(ObjectArray, f"{NODE}/objects")
        pub = module_graph.publisher(CompressedImage, "camera/image/compressed", 1)
        for _ in range(8):
            pub.publish(compressed(module_graph, jpeg(red)))
            time.sleep(0.5)
        assert results.messages == []
    finally:
        set_parameters(module_graph, NODE, {"object_recognition.label_count": 5,
                                            "object_recognition.enabled": True})


def _face_latencies(graph, image, seconds):
    results = graph.subscribe(FaceArray, f"{NODE}/faces")
    pub = graph.publisher(CompressedImage, "camera/image/compressed", 1)
    data = jpeg(image)
    sent = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = compressed(graph, data)
        sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        pub.publish(msg)
        time.sleep(0.25)
    time.sleep(1.5)
    graph.node.destroy_publisher(pub)
    lat = [t - sent[(m.header.stamp.sec, m.header.stamp.nanosec)]
           for m, t in zip(results.messages, results.times)
           if (m.header.stamp.sec, m.header.stamp.nanosec) in sent]
    return lat


def test_slow_object_model_does_not_delay_face_results(object_server, module_graph, astronaut):
    """Face-result latency with the MMOD object model running vs with objects disabled."""
    image = cv2.resize(astronaut, (640, 640))
    with_objects = _face_latencies(module_graph, image, 10)
    set_parameters(module_graph, NODE, {"object_recognition.enabled": False})
    try:
        time.sleep(2.0)
        without = _face_latencies(module_graph, image, 10)
    finally:
        set_parameters(module_graph, NODE, {"object_recognition.enabled": True})
    assert len(with_objects) >= 5 and len(without) >= 5
    med_with, med_without = statistics.median(with_objects), statistics.median(without)
    print(f"face latency median: {med_with * 1000:.0f} ms with objects, "
          f"{med_without * 1000:.0f} ms without")
    # Seconds-long MMOD passes would show up as seconds of face latency if they blocked it.
    assert med_with < 2 * med_without + 0.3, (med_with, med_without)


def test_hog_detector_trained_by_the_test_finds_its_object(object_server, module_graph):
    scene, box = _scene(np.random.default_rng(11), 70, side=240)
    ok, msgs = _objects_for(module_graph, scene, _with("bullseye"))
    assert ok, object_server.output()[-3000:]
    found = next(o for m in msgs for o in m.objects if o.label == "bullseye")
    assert found.model == "hog:targets"
    roi = (found.roi.x_offset, found.roi.y_offset, found.roi.x_offset + found.roi.width,
           found.roi.y_offset + found.roi.height)
    assert iou(roi, box) > 0.5, (roi, box)
