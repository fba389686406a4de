"""Enrollment rules with the real dlib models and real faces (astronaut, messi)."""
import threading
import time

import cv2
import numpy as np
import pytest

from facerec_server.core.enroll import (DECODE_ERROR, NEAR_DUPLICATE, NO_FACE, SEVERAL_FACES,
                                        TOO_SMALL, EnrollConfig, Enroller, build_pipeline)
from facerec_server.core.gallery import EnrollmentError, Gallery, GalleryMatcherSync


@pytest.fixture(scope="module")
def pipeline():
    """Upsample 1 (messi's face is 37 px); shared by the module: models load once."""
    return build_pipeline(upsample=1)


@pytest.fixture
def gallery(tmp_path):
    with Gallery(str(tmp_path / "gallery.db")) as opened:
        yield opened


def _state(gallery):
    return gallery.people(), gallery.count(), gallery.change_token()


def _mirror(image):
    return np.ascontiguousarray(image[:, ::-1])


def _two_faces(astronaut):
    half = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)  # face ~45 px
    return cv2.hconcat([half, _mirror(half)])


def test_each_rejection_leaves_gallery_unchanged(pipeline, gallery, astronaut, messi):
    enroller = Enroller(gallery, pipeline)
    assert enroller.enroll_images("existing", [astronaut]).success
    before = _state(gallery)
    blank = np.full((240, 320, 3), 127, np.uint8)
    cases = [
        ("", [astronaut], None, "name is empty"),
        ("x" * 65, [astronaut], None, "at most 64"),
        ("bad\nname", [astronaut], None, "control character"),
        ("nul\x00", [astronaut], None, "control character"),
        ("carol", [], None, "no images"),
        ("carol", [blank], {NO_FACE: 1}, "no usable face"),
        ("carol", [_two_faces(astronaut)], {SEVERAL_FACES: 1}, "no usable face"),
        ("carol", [messi], {TOO_SMALL: 1}, "no usable face"),  # 37 px < 40 px
        ("carol", [b"\x89PNG but not really", b"", np.zeros((9, 9), np.uint8)],
         {DECODE_ERROR: 3}, "no usable face"),
    ]
    for name, images, rejected, message in cases:
        result = enroller.enroll_images(name, images)
        assert not result.success, (name, result)
        assert message in result.message and "nothing written" in result.message
        assert result.samples_added == 0
        if rejected is not None:
            assert result.rejected == rejected
        assert _state(gallery) == before, result.message


def test_all_reasons_counted_in_one_request(pipeline, gallery, astronaut, messi):
    enroller = Enroller(gallery, pipeline)
    blank = np.zeros((100, 100, 3), np.uint8)
    ok, png = cv2.imencode(".png", _mirror(astronaut))
    images = [astronaut, blank, _two_faces(astronaut), messi, astronaut.copy(), b"junk",
              png.tobytes()]
    seen = []
    result = enroller.enroll_images("eileen", images, source="test",
                                    progress=lambda *args: seen.append(args))
    assert result.success and result.samples_added == 2
    assert result.rejected == {NO_FACE: 1, SEVERAL_FACES: 1, TOO_SMALL: 1, NEAR_DUPLICATE: 1,
                               DECODE_ERROR: 1}
    assert result.per_image[:5] + result.per_image[6:] == [None, NO_FACE, SEVERAL_FACES,
                                                           TOO_SMALL, NEAR_DUPLICATE, None]
    # a decode error says why: "decode error: not a JPEG or PNG image (...)"
    assert result.per_image[5].startswith(DECODE_ERROR + ": not a JPEG or PNG image")
    assert "enrolled 2 samples" in result.message and "1 near-duplicate" in result.message
    assert [s[:2] for s in seen] == [(i, 7) for i in range(1, 8)]
    assert gallery.people() == [("eileen", 2)]
    assert gallery.sources() == {"test": ("eileen", 2)}
    chips = gallery.chips("eileen")
    assert len(chips) == 2 and cv2.imdecode(np.frombuffer(chips[0], np.uint8),
                                            cv2.IMREAD_COLOR).shape == (150, 150, 3)


def test_enroll_astronaut_then_messi_is_unknown(pipeline, gallery, astronaut, messi):
    enroller = Enroller(gallery, pipeline)
    result = enroller.enroll_images("astronaut", [astronaut], source="photo")
    assert result.success and result.samples_added == 1, result.message
    sync = GalleryMatcherSync(gallery, pipeline.matcher, min_interval=0.0)
    assert sync.refresh()
    try:
        unknown = pipeline.process(messi).faces
        assert len(unknown) == 1 and unknown[0].name == "" and unknown[0].distance > 0.6
        known = [f for f in pipeline.process(_mirror(astronaut)).faces if f.name]
        assert [f.name for f in known] == ["astronaut"] and known[0].distance < 0.4
        # a different person is no conflict; messi needs a smaller min_face_size
        small = Enroller(gallery, pipeline, EnrollConfig(min_face_size=30))
        result = small.enroll_images("messi", [messi])
        assert result.success, result.message
        assert sync.refresh()
        assert [f.name for f in pipeline.process(messi).faces] == ["messi"]
        assert gallery.people() == [("astronaut", 1), ("messi", 1)]
    finally:
        pipeline.matcher.clear()


def test_conflict_with_other_person_refused_unless_forced(pipeline, gallery, astronaut):
    enroller = Enroller(gallery, pipeline)
    assert enroller.enroll_images("alice", [astronaut]).success
    before = _state(gallery)
    result = enroller.enroll_images("bob", [_mirror(astronaut)], labels=["mirror.jpg"])
    assert not result.success and result.conflict == "alice"
    assert "mirror.jpg looks like 'alice'" in result.message and "force" in result.message
    assert _state(gallery) == before
    # the same person may get more samples
    assert enroller.enroll_images("alice", [_mirror(astronaut)]).samples_added == 1
    forced = enroller.enroll_images("bob", [_mirror(astronaut)], force=True)
    assert forced.success and forced.samples_added == 1
    assert gallery.people() == [("alice", 2), ("bob", 1)]


def test_capture_session_near_duplicates_and_bounds(pipeline, gallery, astronaut):
    enroller = Enroller(gallery, pipeline)
    session = enroller.capture("eileen", samples=3, timeout=60.0, source="camera")
    assert session.offer(astronaut) is True
    assert session.offer(astronaut.copy()) is False  # same face again: near-duplicate
    assert session.offer(np.zeros((120, 160, 3), np.uint8)) is False
    assert session.offer(_mirror(astronaut)) is True  # ~0.19 away: a new sample
    assert not session.done and gallery.count() == 0  # nothing written while capturing
    scaled = cv2.resize(astronaut, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    assert session.offer(scaled) is True
    assert session.done and not session.timed_out and session.wait(0) is True
    assert session.offer(_mirror(scaled)) is False  # done: bounded
    assert session.frames == 5
    assert session.rejected == {NEAR_DUPLICATE: 1, NO_FACE: 1}
    result = enroller.finish(session)
    assert result.success and result.samples_added == 3, result.message
    assert gallery.people() == [("eileen", 3)]
    assert set(gallery.sources()) == {"camera"}


def test_capture_session_timeout_and_threads(pipeline, gallery, astronaut):
    enroller = Enroller(gallery, pipeline)
    # the server feeds the FaceResults of its own per-frame processing (no chips)
    described = pipeline.process(astronaut).faces
    session = enroller.capture("late", samples=5, timeout=0.3)
    feeder = threading.Thread(target=session.offer_faces, args=(described,))
    feeder.start()  # frames come from another thread while this one waits
    start = time.monotonic()
    assert session.wait() is True
    assert 0.25 <= time.monotonic() - start < 5.0
    feeder.join()
    assert session.timed_out and session.offer_faces(described) is False
    result = enroller.finish(session)
    assert result.success and result.samples_added == 1
    assert "1 of 5 wanted" in result.message
    assert gallery.people() == [("late", 1)] and gallery.chips("late") == []
    # a session that saw no face writes nothing
    before = _state(gallery)
    empty = enroller.capture("nobody", samples=2, timeout=0.05)
    time.sleep(0.1)
    assert empty.done and empty.offer_faces([]) is False
    result = enroller.finish(empty)
    assert not result.success and "nothing written" in result.message
    assert _state(gallery) == before
    # invalid requests are refused before any frame is taken
    for bad in (dict(name=""), dict(name="ok", samples=1000), dict(name="ok", timeout=1e6)):
        with pytest.raises(EnrollmentError):
            enroller.capture(**bad)
