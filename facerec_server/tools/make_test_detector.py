"""Train a small dlib HOG object detector (``.svm``) on synthetic scenes, for tests, benches
and demos: a distinctive bullseye (white/black/white rings) on a blurred noise background.

Usage::

    python -m facerec_server.tools.make_test_detector OUT.svm

writes the detector (dlib's ``train_simple_object_detector``, 10 scenes, ~2 s) and prints
an example ``object_recognition`` parameter block for config/server.yaml.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np


def bullseye(size: int) -> np.ndarray:
    """A bullseye (white/black/white rings) on black, size x size, BGR uint8."""
    patch = np.zeros((size, size, 3), np.uint8)
    centre = (size // 2, size // 2)
    for fraction, colour in ((0.45, 255), (0.30, 0), (0.15, 255)):
        cv2.circle(patch, centre, int(size * fraction), (colour,) * 3, -1)
    return patch


def bullseye_scene(rng: np.random.Generator, size: int, side: int = 200):
    """(side x side BGR image with one bullseye disc of ``size`` px, its box (l, t, r, b))."""
    image = cv2.GaussianBlur(rng.integers(0, 120, (side, side, 3), dtype=np.uint8), (0, 0), 2)
    x, y = (int(v) for v in rng.integers(0, side - size, 2))
    patch = bullseye(size)
    rows, cols = np.mgrid[0:size, 0:size]
    mask = np.hypot(rows - size // 2, cols - size // 2) <= size * 0.45  # the whole disc
    image[y:y + size, x:x + size][mask] = patch[mask]
    return image, (x, y, x + size, y + size)


def train_bullseye_detector(path, seed: int = 7):
    """Train a dlib HOG detector (.svm) on 10 synthetic bullseye scenes; save it to ``path``."""
    import dlib
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(10):
        image, box = bullseye_scene(rng, int(rng.integers(50, 90)))
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        boxes.append([dlib.rectangle(*box)])
    options = dlib.simple_object_detector_training_options()
    options.add_left_right_image_flips = False
    options.C = 5
    options.num_threads = 1
    dlib.train_simple_object_detector(images, boxes, options).save(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the .svm file")
    args = parser.parse_args()
    path = train_bullseye_detector(args.out)
    print(f"wrote {path}\n"
          "object_recognition.models: [\"targets\"]\n"
          "object_recognition.targets.type: \"hog\"\n"
          f"object_recognition.targets.path: \"{path}\"\n"
          "object_recognition.targets.label: \"bullseye\"")


if __name__ == "__main__":
    main()
