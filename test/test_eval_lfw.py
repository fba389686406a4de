"""facerec-eval lfw: pairs parsing, the 10-fold threshold protocol, the cache, and the CLI.

Nothing here reads /work/shared: the protocol is checked on synthetic distances with known
answers, and the tool end to end on a tiny LFW-shaped folder built from the registry faces.
"""
import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facerec_server.eval import lfw
from facerec_server.eval.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# pairs.txt and the protocol, on synthetic distances
# --------------------------------------------------------------------------------------------

# 3 folds x (4 matched + 4 mismatched) pairs; DISTANCES gives each pair's distance in file order.
SYNTHETIC_PAIRS = """3\t4
A\t1\t2
B\t1\t2
C\t1\t2
D\t1\t2
A\t1\tB\t1
A\t2\tC\t1
B\t2\tD\t1
C\t2\tD\t2
E\t1\t2
F\t1\t2
G\t1\t2
H\t1\t2
E\t1\tF\t1
E\t2\tG\t1
F\t2\tH\t1
G\t2\tH\t2
I\t1\t2
J\t1\t2
K\t1\t3
L\t1\t2
I\t1\tJ\t1
I\t2\tK\t1
J\t2\tL\t1
K\t3\tL\t2
"""
DISTANCES = [
    0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9, 1.0,  # fold 0: separable anywhere in (0.4, 0.7)
    0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9, 1.0,  # fold 1: one mismatched pair at 0.5
    0.1, 0.2, 0.6, 0.6, 0.7, 0.8, 0.9, 1.0,  # fold 2: two matched pairs at 0.6
]
# Held-out fold 0, trained on 1+2: the cut at 0.45 gets 6 same + 8 different = 14/16, the cut
#   at 0.65 gets 8 + 7 = 15/16 (unique best) -> threshold 0.65, fold 0 scores 8/8.
# Held-out fold 1, trained on 0+2: 0.65 separates all 16 -> fold 1 scores 7/8 (0.5 < 0.65).
# Held-out fold 2, trained on 0+1: 0.45 separates all 16 -> fold 2 scores 6/8 (0.6 >= 0.45).
EXPECTED_THRESHOLDS = [0.65, 0.65, 0.45]
EXPECTED_ACCURACIES = [1.0, 0.875, 0.75]
# At the fixed 0.6 ("same" iff d < 0.6): fold 1 loses the 0.5 pair, fold 2 both 0.6 pairs.
EXPECTED_AT_06 = 21 / 24


@pytest.fixture
def synthetic_pairs(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(SYNTHETIC_PAIRS)
    return path


def test_parse_pairs(synthetic_pairs):
    pairs = lfw.parse_pairs(synthetic_pairs)
    assert len(pairs) == 24
    assert [p.fold for p in pairs] == [0] * 8 + [1] * 8 + [2] * 8
    assert [p.same for p in pairs[:8]] == [True] * 4 + [False] * 4
    assert pairs[0] == lfw.Pair("A", 1, "A", 2, True, 0)
    assert pairs[4] == lfw.Pair("A", 1, "B", 1, False, 0)
    assert pairs[-1] == lfw.Pair("K", 3, "L", 2, False, 2)
    images = lfw.referenced_images(pairs)
    assert ("K", 3) in images and len(images) == len(set(images)) == 24
    assert lfw.image_path("/x", "K", 3) == pathlib.Path("/x/K/K_0003.jpg")


@pytest.mark.parametrize("text", [
    "3\t4\n" + "A\t1\t2\n" * 4,  # truncated
    "1\t1\nA\t1\tB\t1\nA\t1\t2\n",  # mismatched pair where a matched one belongs
    "",
])
def test_parse_pairs_rejects_malformed(tmp_path, text):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(ValueError):
        lfw.parse_pairs(path)


def test_best_threshold_known_answers():
    threshold, acc = lfw.best_threshold([0.1, 0.3, 0.5, 0.9], [True, True, False, False])
    assert threshold == pytest.approx(0.4) and acc == 1.0
    # one "different" pair inside the "same" range: the best cut keeps 5 of 6 correct
    threshold, acc = lfw.best_threshold([0.1, 0.2, 0.3, 0.5, 0.7, 0.8],
                                        [True, False, True, True, False, False])
    assert threshold == pytest.approx(0.6) and acc == pytest.approx(5 / 6)
    # equal distances with different labels cannot be split
    threshold, acc = lfw.best_threshold([0.5, 0.5], [True, False])
    assert acc == 0.5
    # everything "same" / everything "different"
    assert lfw.best_threshold([0.2, 0.3], [True, True])[1] == 1.0
    assert lfw.best_threshold([0.2, 0.3], [False, False]) == (pytest.approx(0.2 - 1e-6), 1.0)


def test_k_fold_known_answers(synthetic_pairs):
    pairs = lfw.parse_pairs(synthetic_pairs)
    same = [p.same for p in pairs]
    folds = [p.fold for p in pairs]
    result = lfw.k_fold(DISTANCES, same, folds)
    assert [f["threshold"] for f in result["folds"]] == pytest.approx(EXPECTED_THRESHOLDS)
    assert [f["accuracy"] for f in result["folds"]] == pytest.approx(EXPECTED_ACCURACIES)
    assert [f["train_accuracy"] for f in result["folds"]] == pytest.approx([15 / 16, 1.0, 1.0])
    assert result["mean"] == pytest.approx(0.875)
    assert result["std"] == pytest.approx(0.125)  # sample std (ddof=1) of 1, 0.875, 0.75
    assert result["stderr"] == pytest.approx(0.125 / np.sqrt(3))
    assert lfw.accuracy_at(DISTANCES, same, lfw.FIXED_THRESHOLD) == pytest.approx(EXPECTED_AT_06)


def test_roc_and_auc():
    fpr, tpr, _ = lfw.roc_curve([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
    assert lfw.auc(fpr, tpr) == pytest.approx(1.0)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    fpr, tpr, _ = lfw.roc_curve([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
    assert lfw.auc(fpr, tpr) == pytest.approx(0.75)


def test_roc_png(tmp_path):
    path = tmp_path / "roc.png"
    fpr, tpr, _ = lfw.roc_curve([0.1, 0.3, 0.5, 0.7], [True, False, True, False])
    lfw.draw_roc(path, {"test": (fpr, tpr)}, "title", [(0.5, 0.5, "d < 0.6")])
    image = cv2.imread(str(path))
    assert image is not None and image.shape[2] == 3


# --------------------------------------------------------------------------------------------
# Face selection and the descriptor cache (stub stages: no models)
# --------------------------------------------------------------------------------------------

def test_variant_tags():
    assert lfw.Settings().tag() == "hog-opencv-embedder"  # the default embedder, named
    assert lfw.Settings(embedder="dlib").tag() == "hog"  # as the earlier result files
    assert lfw.Settings(upsample=1, jitter=10, flip=True, embedder="dlib").tag() == \
        "hog-up1-jitter10-flip"
    assert lfw.Settings(backend="dlib").tag() == "dlib-hog"
    assert lfw.Settings(fallback_box=(0.2, 0.2, 0.8, 0.8)).tag() == \
        "hog-opencv-embedder-fallback-0.200-0.200-0.800-0.800"
    assert lfw.Settings().align_key() == lfw.Settings(jitter=3, flip=True).align_key()
    assert lfw.Settings().align_key() != lfw.Settings(upsample=1).align_key()
    assert lfw.Settings(decoder="dlib").tag() == "hog-dlib-decoder-opencv-embedder"
    assert lfw.Settings(embedder="opencv").tag() == "hog-opencv-embedder"
    assert lfw.Settings().align_key() != lfw.Settings(embedder="dlib").align_key()
    assert lfw.Settings(backend="dlib").align_key() == \
        lfw.Settings(backend="dlib", embedder="dlib").align_key()
    assert lfw.Settings().align_key() != lfw.Settings(decoder="dlib").align_key()


def test_select_face_closest_to_centre_and_fallback():
    boxes = [(0, 0, 50, 50), (100, 110, 160, 170), (200, 200, 250, 250)]
    assert lfw.select_face(boxes, 250, 250) == (1, (100, 110, 160, 170), False)
    # no detection: the fixed box, the median HOG box on deep-funneled LFW for 250x250
    assert lfw.select_face([], 250, 250) == (-1, (77, 89, 182, 190), True)
    assert lfw.select_face([], 500, 500) == (-1, (154, 178, 364, 380), True)


class StubStages:
    """Counts stage calls; descriptor = mean colour of the chip's left half, padded to 128-D."""

    def __init__(self, boxes=((60, 60, 190, 190),)):
        self.boxes = list(boxes)
        self.calls = {"detect": 0, "landmarks": 0, "chip": 0, "embed": 0}

    def detect(self, image_bgr):
        self.calls["detect"] += 1
        return self.boxes

    def landmarks(self, image_rgb, box):
        self.calls["landmarks"] += 1
        self.last_box = box
        return np.zeros((5, 2), np.float32)

    def chip(self, image_rgb, landmarks, box):
        self.calls["chip"] += 1
        return image_rgb[:150, :150]

    def embed(self, chips):
        self.calls["embed"] += 1
        out = np.zeros((len(chips), 128), np.float32)
        for k, chip in enumerate(chips):
            out[k, :3] = chip[:, :75].reshape(-1, 3).mean(axis=0) / 255.0
        return out


@pytest.fixture
def half_image(tmp_path):
    image = np.zeros((250, 250, 3), np.uint8)
    image[:, :75] = 255  # left half of the 150x150 chip white, right half black
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return path


def test_describer_flip_and_cache(tmp_path, half_image):
    cache = tmp_path / "cache"
    stub = StubStages()
    plain = lfw.Describer(lfw.Settings(), cache, stub).describe_file(half_image)
    assert stub.calls == {"detect": 1, "landmarks": 1, "chip": 1, "embed": 1}
    assert plain["descriptor"][0] == pytest.approx(1.0, abs=0.02)
    assert plain["computed"] and not plain["fallback"]

    # flip: the plain descriptor and the alignment come from the cache, only the mirror is new
    stub = StubStages()
    flipped = lfw.Describer(lfw.Settings(flip=True), cache, stub).describe_file(half_image)
    assert stub.calls == {"detect": 0, "landmarks": 0, "chip": 1, "embed": 1}
    assert flipped["descriptor"][0] == pytest.approx(0.5, abs=0.02)  # mean of white and black

    # everything cached now: no stage runs, same answers, timings kept from the first run
    stub = StubStages()
    again = lfw.Describer(lfw.Settings(flip=True), cache, stub).describe_file(half_image)
    assert sum(stub.calls.values()) == 0 and not again["computed"]
    np.testing.assert_array_equal(again["descriptor"], flipped["descriptor"])
    assert again["seconds"] == pytest.approx(flipped["seconds"])

    # another jitter is another descriptor, but the same alignment
    stub = StubStages()
    lfw.Describer(lfw.Settings(jitter=3), cache, stub).describe_file(half_image)
    assert stub.calls == {"detect": 0, "landmarks": 0, "chip": 1, "embed": 1}
    # another chip size is another alignment key
    stub = StubStages()
    lfw.Describer(lfw.Settings(chip_size=160), cache, stub).describe_file(half_image)
    assert stub.calls["detect"] == 1


def test_describer_fallback_box(tmp_path, half_image):
    stub = StubStages(boxes=[])
    result = lfw.Describer(lfw.Settings(), None, stub).describe_file(half_image)
    assert result["fallback"] and result["box"] == (77, 89, 182, 190)
    assert stub.last_box == (77, 89, 182, 190)


class FlatStages(StubStages):
    """Descriptor = (grey level / 100, 0, ...): distances are |level1 - level2| / 100.
    A black image has no detection (fallback box)."""

    def detect(self, image_bgr):
        return [] if image_bgr.mean() < 10 else [(60, 60, 190, 190)]

    def embed(self, chips):
        out = np.zeros((len(chips), 128), np.float32)
        for k, chip in enumerate(chips):
            out[k, 0] = round(float(chip.mean())) / 100.0
        return out


def flat_stages(settings):
    return FlatStages()


# 2 folds x (2 matched + 2 mismatched); grey levels chosen for known distances
FLAT_PAIRS = """2\t2
A\t1\t2
B\t1\t2
A\t1\tC\t1
B\t2\tD\t1
E\t1\t2
F\t1\t2
E\t1\tG\t1
F\t2\tH\t1
"""
FLAT_LEVELS = {("A", 1): 100, ("A", 2): 120, ("B", 1): 100, ("B", 2): 130, ("C", 1): 180,
               ("D", 1): 200, ("E", 1): 50, ("E", 2): 100, ("F", 1): 60, ("F", 2): 80,
               ("G", 1): 150, ("H", 1): 0}


def test_evaluate_known_answers(tmp_path):
    """Fold 0 distances: same .2 .3, different .8 .7; fold 1: same .5 .2, different 1.0 .8.
    Fold 0 is scored with the threshold from fold 1 (0.65): 4/4. Fold 1 with the one from
    fold 0 (0.5): the matched pair E at exactly 0.5 is an error, 3/4. At 0.6 all are right."""
    for (name, index), level in FLAT_LEVELS.items():
        path = lfw.image_path(tmp_path / "images", name, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((250, 250, 3), level, np.uint8))
    (tmp_path / "pairs.txt").write_text(FLAT_PAIRS)
    report, curves = lfw.evaluate(tmp_path / "images", tmp_path / "pairs.txt", lfw.Settings(),
                                  cache_dir=None, workers=1, progress=False,
                                  stages_factory=flat_stages)
    np.testing.assert_allclose(curves["distances"], [.2, .3, .8, .7, .5, .2, 1.0, .8], atol=1e-6)
    assert [f["threshold"] for f in report["folds"]] == pytest.approx([0.65, 0.5])
    assert [f["accuracy"] for f in report["folds"]] == [1.0, 0.75]
    assert report["accuracy_mean"] == pytest.approx(0.875)
    assert report["accuracy_at_fixed_threshold"] == 1.0
    assert report["errors_count"] == 1
    assert report["errors"][0]["pair"] == "E 1 E 2" and report["errors"][0]["same"]
    assert report["fallback_count"] == 1 and report["fallback_images"] == ["H_0001"]
    assert report["n_images"] == 12 and report["descriptors_computed"] == 12
    assert report["auc"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# End to end: the CLI on a tiny LFW-shaped folder made from the registry faces
# --------------------------------------------------------------------------------------------

# HOG boxes (upsample 1 for messi) in the registry images, (left, top, right, bottom)
ASTRONAUT_BOX = (179, 83, 267, 171)
MESSI_BOX = (225, 94, 262, 131)


def lfw_crop(image, box, scale=1.0, dx=0.0, dy=0.0, mirror=False, size=250):
    """An LFW-like 250x250 crop: the face box becomes ~105 px wide at (77..182, 89..190)."""
    left, top, right, bottom = box
    width = (right - left) * scale
    side = width * 250 / 105
    cx = (left + right) / 2 - 4.5 / 105 * width + dx * width
    cy = (top + bottom) / 2 - 14.5 / 105 * width + dy * width
    s = size / side
    matrix = np.float32([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(out[:, ::-1]) if mirror else out


TINY_PAIRS = """2\t3
Eileen_Collins\t1\t2
Eileen_Collins\t1\t3
Lionel_Messi\t1\t4
Eileen_Collins\t1\tLionel_Messi\t2
Eileen_Collins\t4\tLionel_Messi\t3
Nobody\t1\tEileen_Collins\t2
Lionel_Messi\t1\t2
Lionel_Messi\t2\t3
Eileen_Collins\t3\t4
Eileen_Collins\t2\tLionel_Messi\t1
Eileen_Collins\t3\tLionel_Messi\t4
Nobody\t1\tLionel_Messi\t1
"""


@pytest.fixture
def tiny_lfw(tmp_path, astronaut, messi):
    images = tmp_path / "images"
    for name, image, box in (("Eileen_Collins", astronaut, ASTRONAUT_BOX),
                             ("Lionel_Messi", messi, MESSI_BOX)):
        variants = [lfw_crop(image, box), lfw_crop(image, box, mirror=True),
                    lfw_crop(image, box, scale=1.15, dx=0.05),
                    lfw_crop(image, box, scale=0.9, dy=-0.05)]
        (images / name).mkdir(parents=True)
        for k, variant in enumerate(variants, 1):
            cv2.imwrite(str(lfw.image_path(images, name, k)), variant)
    # a flat grey "face": HOG finds nothing, so the fallback box is used; it is not dropped
    (images / "Nobody").mkdir()
    cv2.imwrite(str(lfw.image_path(images, "Nobody", 1)), np.full((250, 250, 3), 128, np.uint8))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(TINY_PAIRS)
    return images, pairs


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "facerec_server.eval.cli", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cli_end_to_end(tmp_path, tiny_lfw):
    images, pairs = tiny_lfw
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["lfw", "--images", images, "--pairs", pairs, "--workers", 2, "--cache", cache,
            "--output", out]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "lfw_hog-opencv-embedder.json").read_text())
    roc = cv2.imread(str(out / "lfw_hog-opencv-embedder_roc.png"))
    assert roc is not None and roc.shape[0] > 100
    assert report["n_pairs"] == 12 and report["n_images"] == 9
    assert report["fallback_count"] == 1 and report["fallback_images"] == ["Nobody_0001"]
    assert report["accuracy_mean"] == 1.0 and report["accuracy_std"] == 0.0
    assert report["accuracy_at_fixed_threshold"] == 1.0
    assert report["errors_count"] == 0 and report["errors"] == []
    assert len(report["folds"]) == 2
    assert report["descriptors_computed"] == 9 and report["seconds_per_face"] > 0
    assert "accuracy (10-fold) 100.00%" in proc.stdout

    # the second run takes every descriptor from the cache and gives the same answer
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((out / "lfw_hog-opencv-embedder.json").read_text())
    assert again["descriptors_from_cache"] == 9 and again["descriptors_computed"] == 0
    assert again["accuracy_mean"] == 1.0
    assert again["best_threshold_all_pairs"] == report["best_threshold_all_pairs"]

    # test-time flip: same answers, new mirrored descriptors, about twice the embedding cost
    proc = run_cli(*args, "--flip")
    assert proc.returncode == 0, proc.stderr
    flip = json.loads((out / "lfw_hog-flip-opencv-embedder.json").read_text())
    assert flip["accuracy_mean"] == 1.0 and flip["accuracy_at_fixed_threshold"] == 1.0
    assert flip["descriptors_computed"] == 9
    assert (out / "lfw_hog-flip-opencv-embedder_roc.png").is_file()


def test_cli_missing_image_is_an_error(tmp_path, tiny_lfw, capsys):
    images, pairs = tiny_lfw
    (images / "Nobody" / "Nobody_0001.jpg").unlink()
    code = main(["lfw", "--images", str(images), "--pairs", str(pairs), "--no-cache",
                 "--output", str(tmp_path / "out"), "--workers", "1"])
    assert code == 2
    assert "missing" in capsys.readouterr().err
