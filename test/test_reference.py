"""Reference-file import: real faces, idempotence, changed photos, bad entries."""
import hashlib
import json

import cv2
import numpy as np
import pytest

from facerec_server.core.enroll import EnrollConfig, Enroller, build_pipeline
from facerec_server.core.gallery import Gallery
from facerec_server.core.reference import ReferenceError, import_reference, photo_source


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(upsample=1)


def _write(path, image, *params):
    ok, buf = cv2.imencode(path.suffix, image, list(params))
    assert ok
    path.write_bytes(buf.tobytes())


def test_import_idempotent_changed_and_bad_entries(tmp_path, pipeline, astronaut, messi):
    photos = tmp_path / "people"
    photos.mkdir()
    _write(photos / "a1.png", astronaut)
    _write(photos / "a2.jpg", np.ascontiguousarray(astronaut[:, ::-1]))
    _write(photos / "m.jpg", messi, cv2.IMWRITE_JPEG_QUALITY, 95)
    _write(photos / "blank.png", np.full((120, 120, 3), 200, np.uint8))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([
        {"tag": "alice", "photos": ["people/a1.png", "people/a2.jpg"]},
        {"tag": "messi", "photos": "people/m.jpg"},
        {"photos": ["people/a1.png"]},                       # missing tag
        {"tag": "ghost", "photos": ["people/missing.jpg"]},  # missing file
        {"tag": "blank", "photos": "people/blank.png"},      # no face
        "not an object",
        {"tag": "bad\ntag", "photos": "people/a1.png"},
        {"tag": "nophotos"},
    ]))
    with Gallery(str(tmp_path / "gallery.db")) as gallery:
        enroller = Enroller(gallery, pipeline, EnrollConfig(min_face_size=30))
        calls = []
        report = import_reference(str(reference), enroller,
                                  progress=lambda *args: calls.append(args))
        assert [(tag, photo) for tag, photo, _ in report.imported] == [
            ("alice", "people/a1.png"), ("alice", "people/a2.jpg"), ("messi", "people/m.jpg")]
        errors = {(tag, where): detail for tag, where, detail in report.errors}
        assert len(errors) == 6 and not report.ok
        assert "bad tag" in errors[("", "entry 3")]
        assert "cannot read" in errors[("ghost", "people/missing.jpg")]
        assert "no face" in errors[("blank", "people/blank.png")]
        assert "not an object" in errors[("", "entry 6")]
        assert "control character" in errors[("bad\ntag", "entry 7")]
        assert "photos" in errors[("nophotos", "entry 8")]
        assert len(calls) == 5 and calls[-1][:2] == (5, 5)
        lines = report.lines()
        assert lines[0] == "imported people/a1.png as 'alice' (new)" and len(lines) == 10
        assert lines[-1] == "3 photos imported, 0 unchanged, 6 skipped"
        assert gallery.people() == [("alice", 2), ("messi", 1)]
        digest = hashlib.sha256((photos / "m.jpg").read_bytes()).hexdigest()
        assert gallery.sources("reference:people/m.jpg#") == {
            photo_source("people/m.jpg", digest): ("messi", 1)}

        # a restart imports the same file again: nothing changes, nothing is written
        state = (gallery.people(), gallery.matrix()[0], gallery.change_token())
        again = import_reference(str(reference), enroller)
        assert again.imported == [] and len(again.unchanged) == 3 and len(again.errors) == 6
        assert (gallery.people(), gallery.matrix()[0], gallery.change_token()) == state

        # a changed photo replaces the samples of its old content
        _write(photos / "m.jpg", messi, cv2.IMWRITE_JPEG_QUALITY, 70)
        changed = import_reference(str(reference), enroller)
        assert changed.imported == [("messi", "people/m.jpg", "changed: replaced 1 samples")]
        assert len(changed.unchanged) == 2
        assert gallery.people() == [("alice", 2), ("messi", 1)]
        new_digest = hashlib.sha256((photos / "m.jpg").read_bytes()).hexdigest()
        assert new_digest != digest
        assert set(gallery.sources("reference:people/m.jpg#")) == {
            photo_source("people/m.jpg", new_digest)}


def test_unusable_reference_files(tmp_path, pipeline):
    with Gallery(str(tmp_path / "gallery.db")) as gallery:
        enroller = Enroller(gallery, pipeline)
        cases = {"object.json": '{"tag": "alice", "photos": "a.jpg"}',
                 "broken.json": '[{"tag": "alice",',
                 "binary.json": "\udcff"}
        for name, text in cases.items():
            target = tmp_path / name
            target.write_bytes(text.encode("utf-8", "surrogateescape"))
            with pytest.raises(ReferenceError):
                import_reference(str(target), enroller)
        with pytest.raises(ReferenceError, match="cannot read"):
            import_reference(str(tmp_path / "absent.json"), enroller)
        assert gallery.people() == [] and gallery.change_token() == 0


def test_reference_files_and_photos_that_would_hang_or_overflow(tmp_path, pipeline, astronaut):
    """Issue 21 items 11 and 14: a deeply nested reference file gave a raw traceback
    (RecursionError); a FIFO as the reference file or as a photo hung the import; a photo
    declaring 12000x9000 behind a stray byte was decoded. Each is one line naming the file,
    and the rest of the file is imported."""
    import os
    from jpeg_bombs import bomb
    with Gallery(str(tmp_path / "gallery.db")) as gallery:
        enroller = Enroller(gallery, pipeline, EnrollConfig(min_face_size=30))
        nested = tmp_path / "nested.json"
        nested.write_text("[" * 100_000 + "]" * 100_000)
        with pytest.raises(ReferenceError, match="nested.json.*nested too deeply") as refused:
            import_reference(str(nested), enroller)
        assert "\n" not in str(refused.value)
        fifo = tmp_path / "reference.fifo"
        os.mkfifo(fifo)
        with pytest.raises(ReferenceError, match=r"not a regular file \(a FIFO\)"):
            import_reference(str(fifo), enroller)
        os.mkfifo(tmp_path / "pipe.jpg")
        (tmp_path / "big.jpg").write_bytes(bomb("stray byte", 12000, 9000))
        _write(tmp_path / "a.png", astronaut)
        reference = tmp_path / "reference.json"
        reference.write_text(json.dumps([{"tag": "alice", "photos": ["pipe.jpg", "big.jpg",
                                                                     "a.png"]}]))
        report = import_reference(str(reference), enroller)
        errors = {photo: detail for _, photo, detail in report.errors}
        assert "not a regular file (a FIFO)" in errors["pipe.jpg"]
        assert "12000x9000 = 108000000 pixels exceeds max_pixels" in errors["big.jpg"]
        assert [photo for _, photo, _ in report.imported] == ["a.png"]
