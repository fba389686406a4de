"""facerec_server.ecosystem (results -> hri_msgs / vision_msgs / foxglove_msgs) and
core.face_crops, on real message types and real registry faces (no DDS here: see
test_server_ecosystem.py for the node)."""
import importlib

import cv2
import numpy as np
import pytest
from rclpy.validate_topic_name import validate_topic_name
from std_msgs.msg import Header

from facerec_server import ecosystem
from facerec_server.core.align import Aligner
from facerec_server.core.face_crops import aligned_face, cropped_face
from facerec_server.core.pipeline import FaceConfig, FacePipeline
from facerec_server.core.types import FaceResult, ObjectResult


def _require(package):
    try:
        importlib.import_module(f"{package}.msg")
    except ImportError as exc:
        pytest.skip(f"{package} not importable ({exc}); `make setup` builds it from "
                    "ros-msgs-src")


@pytest.mark.parametrize("name", ["eileen", "Alice Smith", "José Núñez", "1st person",
                                  "a__b", "trailing_", "李雷", "x" * 300, "O'Brien"])
def test_person_ids_are_topic_name_tokens_and_distinct(name):
    pid = ecosystem.person_id(name)
    validate_topic_name(f"/humans/persons/{pid}/face_id")  # raises when invalid
    assert len(pid) <= 64
    others = {ecosystem.person_id(n) for n in ("Alice  Smith", "Alice_Smith", "alice smith")}
    assert pid not in others or name in ("Alice  Smith", "Alice_Smith", "alice smith")


def test_person_id_keeps_a_clean_name_and_hashes_the_others():
    assert ecosystem.person_id("eileen") == "eileen"
    assert ecosystem.person_id("Alice Smith").startswith("Alice_Smith_")
    assert ecosystem.person_id("Alice Smith") != ecosystem.person_id("Alice_Smith")
    assert ecosystem.person_id("Alice Smith") == ecosystem.person_id("Alice Smith")


def test_face_ids_and_person_of():
    assert ecosystem.face_id(7) == "f7" and ecosystem.face_id(7, "b") == "b7"
    assert ecosystem.face_id(0) == ""
    validate_topic_name(f"/humans/faces/{ecosystem.face_id(2 ** 32 - 1)}/roi")
    known = FaceResult(box=(0, 0, 1, 1), detection_score=1.0, landmarks=None, name="eileen")
    unknown = FaceResult(box=(0, 0, 1, 1), detection_score=1.0, landmarks=None)
    assert ecosystem.person_of(known) == "eileen" and ecosystem.person_of(unknown) is None
    stranger = FaceResult(box=(0, 0, 1, 1), detection_score=1.0, landmarks=None,
                          anonymous_id="unknown-17", anonymous_confidence=0.8)
    assert ecosystem.person_of(stranger) == ecosystem.person_id("unknown-17")
    assert ecosystem.match_confidence(stranger) == 0.8
    known.confidence = 0.6
    assert ecosystem.match_confidence(known) == 0.6


def test_missing_names_the_package_and_the_output():
    for output, package in ecosystem.PACKAGES.items():
        try:
            importlib.import_module(f"{package}.msg")
        except ImportError:
            assert package in ecosystem.missing(output)
        else:
            assert ecosystem.missing(output) is None


def test_hri_messages():
    _require("hri_msgs")
    from hri_msgs.msg import IdsMatch
    header = Header(frame_id="camera")
    roi = ecosystem.normalized_roi(header, (64, 36, 192, 180), (640, 360), 2.7)
    assert (roi.xmin, roi.ymin, roi.xmax, roi.ymax, roi.c) == pytest.approx(
        (0.1, 0.1, 0.3, 0.5, 1.0))
    assert roi.header.frame_id == "camera"
    match = ecosystem.ids_match("f3", "eileen", 0.83)
    assert (match.id1, match.id1_type, match.id2, match.id2_type) == (
        "f3", IdsMatch.FACE, "eileen", IdsMatch.PERSON)
    assert match.confidence == pytest.approx(0.83)
    assert list(ecosystem.ids_list(header, ["f1", "f2"]).ids) == ["f1", "f2"]


def test_object_annotations_draw_boxes_and_list_whole_image_labels():
    _require("foxglove_msgs")
    _require("vision_msgs")
    from foxglove_msgs.msg import PointsAnnotation
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    objects = [ObjectResult("car", 0.9, (10, 20, 110, 70), "mmod:cars"),
               ObjectResult("red", 0.7), ObjectResult("blue", 0.2)]
    notes = ecosystem.object_annotations(header, objects)
    assert len(notes.points) == 1 and len(notes.texts) == 3
    assert notes.points[0].type == PointsAnnotation.LINE_LOOP
    corners = [(p.x, p.y) for p in notes.points[0].points]
    assert corners == [(10, 20), (110, 20), (110, 70), (10, 70)]
    assert [t.text for t in notes.texts] == ["car 0.90", "red 0.70", "blue 0.20"]
    assert notes.texts[1].position.y < notes.texts[2].position.y
    assert all((t.timestamp.sec, t.timestamp.nanosec) == (12, 345) for t in notes.texts)
    detections = ecosystem.object_detections(header, objects)
    assert [(d.bbox.size_x, d.bbox.size_y) for d in detections.detections] == [
        (100, 50), (0, 0), (0, 0)]
    assert [d.results[0].hypothesis.class_id for d in detections.detections] == [
        "car", "red", "blue"]


def test_cropped_face_fits_the_box_into_a_black_square(astronaut):
    crop = cropped_face(astronaut, (100, 50, 200, 100), 128)  # 2:1 box
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert crop[:32].max() == 0 and crop[96:].max() == 0  # padded above and below
    want = cv2.resize(astronaut[50:100, 100:200], (128, 64))
    assert np.abs(crop[32:96].astype(int) - want.astype(int)).mean() < 1.0
    assert cropped_face(astronaut, (-20, -20, 0, 0), 64).max() == 0  # outside: black


def test_aligned_face_levels_the_eyes_of_a_tilted_face(astronaut):
    height, width = astronaut.shape[:2]
    tilt = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((width / 2, height / 2), 20, 1.0),
                          (width, height))
    [face] = FacePipeline(FaceConfig(upsample=1)).process(tilt).faces

    def eye_slope(landmarks):
        right = landmarks[0:2].mean(axis=0)
        left = landmarks[2:4].mean(axis=0)
        return abs(left[1] - right[1]) / abs(left[0] - right[0])

    assert eye_slope(face.landmarks) > 0.25  # tilted by about 20 degrees
    chip = aligned_face(tilt, face.box, face.landmarks, 128)
    assert chip.shape == (128, 128, 3)
    aligner = Aligner()
    found = aligner.landmarks(np.ascontiguousarray(chip[:, :, ::-1]), (16, 16, 112, 112))
    assert eye_slope(found) < 0.08
