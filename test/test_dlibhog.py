"""facerec_server.dlibhog: dlib's fhog detectors read from their files and run without dlib.

Compared with dlib itself (dlib-bin): the frontal face detector on the registry faces at
upsample 0 and 1 (and with a lowered threshold, which yields many more windows), a HOG
object detector trained here, dlib's bilinear resize, and files that are not detectors.
LFW (``FACEREC_LFW``, default the shared dataset folder) adds a sample when present.
"""
import os
import pathlib
import threading

import cv2
import dlib
import numpy as np
import pytest

from facerec_server.core.detect import HogDetector
from facerec_server.core.models import default_model_path
from facerec_server.dlibhog import FhogDetector, HogFormatError, frontal_face_model, read_svm
from facerec_server.dlibhog.pyramid import pyramid_up, resize_rgb
from facerec_server.tools.make_test_detector import bullseye_scene, train_bullseye_detector


def _default_lfw() -> pathlib.Path:
    """``shared/datasets/lfw`` beside the repository or one of its parent folders."""
    relative = pathlib.Path("shared", "datasets", "lfw")
    for folder in pathlib.Path(__file__).resolve().parents:
        if (folder / relative).is_dir():
            return folder / relative
    return pathlib.Path(__file__).resolve().parents[2] / relative


LFW = pathlib.Path(os.environ.get("FACEREC_LFW") or _default_lfw())
SCORE_TOLERANCE = 1e-4  # issue 20's contract


@pytest.fixture(scope="module")
def frontal():
    return dlib.get_frontal_face_detector(), FhogDetector(frontal_face_model(), threads=2)


def dlib_hits(detector, rgb, upsample, adjust=0.0):
    rects, scores, indices = detector.run(rgb, upsample, adjust)
    return [((r.left(), r.top(), r.right(), r.bottom()), s, int(i))
            for r, s, i in zip(rects, scores, indices)]


def assert_same(want, got):
    """Same rectangles and weight vectors in the same order; scores within tolerance."""
    assert [(rect, index) for rect, _, index in got] == \
        [(rect, index) for rect, _, index in want]
    for (_, a, _), (_, b, _) in zip(want, got):
        assert abs(a - b) <= SCORE_TOLERANCE, (a, b)


def rgb_of(bgr):
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("upsample", [0, 1])
def test_registry_faces_equal_dlib(frontal, astronaut, messi, upsample):
    reference, ours = frontal
    found = 0
    for bgr in (astronaut, messi, astronaut[:, ::-1], cv2.resize(messi, None, fx=1.5, fy=1.5)):
        rgb = rgb_of(bgr)
        for adjust in (0.0, -0.8):
            want = dlib_hits(reference, rgb, upsample, adjust)
            assert_same(want, ours.detect(rgb, upsample, adjust))
            found += len(want)
    assert found >= 5  # the comparison covered real detections


def test_face_detector_interface_matches_dlib_backend(astronaut, messi):
    dlib_backend, ours = HogDetector(0, backend="dlib"), HogDetector(0, backend="dlibhog")
    for bgr in (astronaut, messi):
        for upsample in (0, 1):
            want = dlib_backend.with_settings(upsample, 1.0).detect(bgr)
            got = ours.with_settings(upsample, 1.0).detect(bgr)
            assert [d.box for d in got] == [d.box for d in want]
            assert all(abs(a.score - b.score) <= SCORE_TOLERANCE for a, b in zip(got, want))
    assert ours.detect(messi) == []  # messi's face needs upsample 1
    assert len(ours.with_settings(1, 1.0).detect(messi)) == 1


def test_trained_object_detector_equals_dlib(tmp_path):
    path = train_bullseye_detector(tmp_path / "bullseye.svm")
    model = read_svm(path)
    assert model.upsampling == dlib.simple_object_detector(str(path)).upsampling_amount
    assert len(model.detectors) == 1 and model.window == (
        dlib.fhog_object_detector(str(path)).detection_window_width,
        dlib.fhog_object_detector(str(path)).detection_window_height)
    reference = dlib.fhog_object_detector(str(path))
    ours = FhogDetector(model, threads=1)
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(4):
        image, _ = bullseye_scene(rng, int(rng.integers(45, 90)), side=240)
        rgb = rgb_of(image)
        for upsample in (0, 1):
            for adjust in (0.0, -1.0):
                want = dlib_hits(reference, rgb, upsample, adjust)
                assert_same(want, ours.detect(rgb, upsample, adjust))
                found += len(want)
    assert found >= 8


def test_one_and_two_threads_agree(astronaut):
    rgb = rgb_of(astronaut)
    one = FhogDetector(frontal_face_model(), threads=1).detect(rgb, 1, -0.5)
    two = FhogDetector(frontal_face_model(), threads=2).detect(rgb, 1, -0.5)
    assert one == two and len(one) > 2


def test_fast_features_within_rounding_of_dlibs_order(astronaut, messi):
    """The fast fhog kernel (votes summed per row first, bands of cell rows) against the
    reference kernel in dlib's order of float32 operations: the same features up to
    float32 rounding, and bands give the whole level's values."""
    from facerec_server.dlibhog.fhog import BIN_TABLE, NUM_FEATURES, hog_size
    from facerec_server.dlibhog.kernels import fhog_rows
    from facerec_server.dlibhog.pyramid import planar
    from facerec_server.dlibhog.reference import fhog_level
    rng = np.random.default_rng(7)
    images = [rgb_of(astronaut), rgb_of(messi)[:301, :417],
              rng.integers(0, 256, (83, 127, 3), dtype=np.uint8), np.full((40, 48, 3), 9, np.uint8)]
    for image in images:
        rows, cols = hog_size(image.shape[0], image.shape[1], 8)
        want = np.zeros((NUM_FEATURES, rows + 2, cols + 3), np.float64)
        fhog_level(image, 8, BIN_TABLE, want, 1, 2)
        whole = np.zeros(want.shape, np.float32)
        fhog_rows(planar(image), 8, BIN_TABLE, 0, rows, whole, 1, 2)
        bands = np.zeros(want.shape, np.float32)
        for y0 in range(0, rows, 5):
            fhog_rows(planar(image), 8, BIN_TABLE, y0, y0 + 5, bands, 1, 2)
        assert np.array_equal(whole, bands)
        assert np.abs(whole - want).max() <= 1e-6 * max(1.0, np.abs(want).max())
        assert (whole != 0).sum() == (want != 0).sum()


def test_resize_is_dlibs_bit_for_bit():
    rng = np.random.default_rng(5)
    for rows, cols in ((37, 51), (120, 161), (240, 320), (7, 9), (61, 1283)):
        image = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
        image[: rows // 2, : cols // 3] = 200  # flat areas: truncation of x.99999 matters
        # pyramid_down<6>, pyramid_up, and any size: the source pixels gathered 8 columns
        # per shuffle, one by one where 8 columns span more than 16 bytes, or mixed
        for out in (((5 * rows) // 6, (5 * cols) // 6), (2 * rows + 1, 2 * cols + 2),
                    (rows // 3 + 1, cols // 3 + 1), (rows, int(cols * 0.55) + 1),
                    (int(rng.integers(1, 2 * rows)), int(rng.integers(2, 2 * cols)))):
            assert np.array_equal(resize_rgb(image, *out), dlib.resize_image(image, *out)), out
        assert np.array_equal(pyramid_up(image), resize_rgb(image, 2 * rows + 1, 2 * cols + 2))


def test_portable_byte_shuffle_equals_pshufb_and_numpy():
    """The resize's 16-byte shuffle as other processors compile it (element moves) gives
    the bytes this one's instruction does, and numpy's indexing."""
    from numba import njit

    from facerec_server.dlibhog import kernels

    def shuffles(shuffle):
        @njit
        def run(src, starts, masks, out):
            for g in range(starts.shape[0]):
                shuffle(src, starts[g], masks, 16 * g, out, 16 * g)
        return run

    rng = np.random.default_rng(7)
    src = rng.integers(0, 256, 300, dtype=np.uint8)
    starts = rng.integers(0, 300 - 16, 40)
    masks = rng.integers(0, 16, 40 * 16).astype(np.uint8)
    want = src[np.repeat(starts, 16) + masks]
    native, portable = np.zeros(40 * 16, np.uint8), np.zeros(40 * 16, np.uint8)
    shuffles(kernels._shuffle16)(src, starts, masks, native)
    shuffles(kernels.shuffle16_portable)(src, starts, masks, portable)
    assert np.array_equal(portable, want)
    assert np.array_equal(native, want)


@pytest.fixture(scope="module")
def saved_frontal(tmp_path_factory):
    path = tmp_path_factory.mktemp("hog") / "frontal.svm"
    dlib.get_frontal_face_detector().save(str(path))
    return path


def test_reads_dlibs_frontal_face_detector_file(saved_frontal):
    model = read_svm(saved_frontal)
    assert saved_frontal.stat().st_size == 155005  # issue 20: 5 detectors, 80x80 window
    assert (len(model.detectors), model.window, model.cell_size) == (5, (80, 80), 8)
    assert model.upsampling is None and model.source == str(saved_frontal)


def test_corrupt_or_foreign_files_are_refused(tmp_path, saved_frontal):
    data = saved_frontal.read_bytes()
    rng = np.random.default_rng(11)
    cases = {
        "truncated.svm": data[:len(data) // 2],
        "cut-in-header.svm": data[:30],
        "random.svm": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.svm": b"",
        "trailing.svm": data + b"\x01\x07\x00",
        "shape_predictor.dat": pathlib.Path(default_model_path("shape_predictor")).read_bytes(),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(HogFormatError) as caught:
            read_svm(path)
        message = str(caught.value)
        assert str(path) in message and "not a dlib fhog object detector" in message, message
        assert "\n" not in message and len(message) < 400, message
    with pytest.raises(FileNotFoundError):
        read_svm(tmp_path / "missing.svm")


@pytest.mark.skipif(not (LFW / "images").is_dir(),
                    reason=f"LFW not found at {LFW} (set FACEREC_LFW); bench/bench_hog.py runs "
                           "all 13,233 images")
def test_lfw_sample_equals_dlib(frontal):
    reference, ours = frontal
    paths = sorted((LFW / "images").glob("*/*.jpg"))[::400]
    assert len(paths) >= 30
    for path in paths:
        rgb = rgb_of(cv2.imread(str(path)))
        for upsample in (0, 1):
            assert_same(dlib_hits(reference, rgb, upsample), ours.detect(rgb, upsample))


@pytest.mark.parametrize("size", [(250, 250), (480, 640), (720, 1280), (1080, 1920),
                                  (97, 83), (40, 40)])
def test_canvas_keeps_levels_apart_and_inside(size):
    """The packed canvas: every level's cells inside it with the filter's margins, no two
    levels within half a filter of each other (so no window dlib evaluates sees two
    levels), FFT blocks covering every window position, and even DFT sizes."""
    detector = FhogDetector(frontal_face_model(), threads=2)
    layout = detector.layout(*size)
    fr, fc = detector.filter_size
    gap = max(fr // 2, fc // 2)
    boxes = [(y, x, y + hr, x + hc) for (y, x), (hr, hc) in zip(layout.origins, layout.hogs)
             if hr and hc]
    assert boxes or min(size) < 80
    rows, cols = layout.shape
    for top, left, bottom, right in boxes:
        assert top >= (fr - 1) // 2 and left >= (fc - 1) // 2
        assert bottom + fr // 2 <= rows and right + fc // 2 <= cols
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart_rows = a[2] + gap <= b[0] or b[2] + gap <= a[0]
            apart_cols = a[3] + gap <= b[1] or b[3] + gap <= a[1]
            assert apart_rows or apart_cols, (a, b)
    br, bc = layout.block
    assert br % 2 == 0 and bc % 2 == 0
    covered = np.zeros(layout.shape, bool)
    for r0, c0 in layout.blocks:  # window positions each block's FFT gives
        covered[r0:r0 + br - fr + 1, c0:c0 + bc - fc + 1] = True
    assert covered[layout.level_map >= 0].all()
    cells = sum(hr * hc for hr, hc in layout.hogs)
    assert cells <= len(layout.blocks) * br * bc


def test_concurrent_calls_get_their_own_results(astronaut, messi):
    """Calls from several threads at once on frames of one size: each gets its own frame's
    detections (each call takes its own buffers and task graph; the graphs are reused)."""
    frames = [rgb_of(cv2.resize(image, (640, 480))) for image in (astronaut, messi)]
    frames.append(np.ascontiguousarray(frames[0][:, ::-1]))  # mirrored: other boxes
    detector = FhogDetector(frontal_face_model(), threads=2)
    want = [detector.detect(frame, 1, -0.3) for frame in frames]
    assert len({tuple(w) for w in want}) == len(frames)  # the frames differ in detections
    got = {i: [] for i in range(len(frames))}

    def work(i):
        for _ in range(4):
            got[i].append(detector.detect(frames[i], 1, -0.3))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, results in got.items():
        assert results == [want[i]] * 4
    detector.close()


def test_buffers_in_large_pages_are_separate_zeroed_arrays():
    from facerec_server.dlibhog.detector import _arrays_in_large_pages

    specs = [((3, 37, 51), np.uint8), ((31, 96, 231), np.float32), ((1,), np.uint8),
             ((5, 96, 120), np.float32)]
    arrays = _arrays_in_large_pages(specs)
    assert [(a.shape, a.dtype) for a in arrays] == [(s, np.dtype(t)) for s, t in specs]
    for a in arrays:
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0
        assert not a.any()
    for i, a in enumerate(arrays):  # each filled in turn leaves the others as they were
        a[...] = i + 1
    for i, a in enumerate(arrays):
        assert (a == i + 1).all()
