"""Debug overlay drawing (no models needed)."""
import numpy as np
import pytest

from facerec_server.core.overlay import (
    KNOWN_COLOUR, OBJECT_COLOUR, UNKNOWN_COLOUR, draw_overlay, face_label, object_label)
from facerec_server.core.types import FaceResult, ObjectResult

LANDMARKS = np.array([[80, 60], [70, 60], [40, 60], [50, 60], [60, 80]], np.float32)


def _face(name="", distance=float("inf"), box=(30, 40, 100, 120)):
    return FaceResult(box=box, detection_score=1.0, landmarks=LANDMARKS, name=name,
                      distance=distance)


@pytest.fixture
def grey():
    return np.full((240, 320, 3), 128, np.uint8)


def test_labels():
    assert face_label(_face("ada", 0.4213)) == "ada 0.42"
    assert face_label(_face("", 0.71)) == "unknown 0.71"
    assert face_label(_face()) == "unknown"
    assert object_label(ObjectResult("cup", 0.875)) == "cup 0.88"


def test_input_is_not_modified_and_copy_is_returned(grey):
    before = grey.copy()
    out = draw_overlay(grey, [_face("ada", 0.3)], [ObjectResult("cup", 0.9)])
    assert np.array_equal(grey, before)
    assert out.shape == grey.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, grey)
    assert not np.array_equal(out, grey)


def test_nothing_to_draw_gives_an_equal_copy(grey):
    out = draw_overlay(grey, [], [])
    assert np.array_equal(out, grey) and out is not grey


def test_known_face_box_is_green_and_unknown_red(grey):
    known = draw_overlay(grey, [_face("ada", 0.3)], [])
    unknown = draw_overlay(grey, [_face("", 0.8)], [])
    # left edge of the box, well below the label and away from the landmarks
    assert tuple(known[110, 30]) == KNOWN_COLOUR
    assert tuple(unknown[110, 30]) == UNKNOWN_COLOUR
    assert tuple(known[100, 65]) == (128, 128, 128)  # inside the box stays untouched


def test_label_is_drawn_above_the_box(grey):
    plain = draw_overlay(grey, [_face("ada", 0.3, box=(30, 100, 100, 180))], [])
    assert not np.array_equal(plain[80:99, 30:100], grey[80:99, 30:100])


def test_box_at_the_top_puts_label_inside_the_image(grey):
    out = draw_overlay(grey, [_face("ada", 0.3, box=(0, 0, 60, 60))], [])
    assert not np.array_equal(out[60:80, 0:60], grey[60:80, 0:60])  # label below the box


def test_whole_image_objects_are_listed_in_the_corner(grey):
    out = draw_overlay(grey, [], [ObjectResult("person", 0.9), ObjectResult("dog", 0.4)])
    corner = out[:60, :100]
    assert np.any(np.all(corner == OBJECT_COLOUR, axis=2))
    assert np.array_equal(out[120:, 150:], grey[120:, 150:])  # rest untouched


def test_object_with_roi_gets_a_box(grey):
    out = draw_overlay(grey, [], [ObjectResult("cup", 0.5, box=(150, 120, 250, 220))])
    assert tuple(out[200, 150]) == OBJECT_COLOUR
    assert np.array_equal(out[:20, :60], grey[:20, :60])  # nothing listed in the corner


def test_boxes_outside_the_image_do_not_crash(grey):
    out = draw_overlay(grey, [_face("ada", 0.2, box=(300, 220, 400, 300))],
                       [ObjectResult("far", 0.1, box=(-50, -50, 10, 10))])
    assert out.shape == grey.shape
    assert not np.array_equal(out, grey)
