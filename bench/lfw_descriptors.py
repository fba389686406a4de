#!/usr/bin/env python3
"""Descriptors of every LFW image, computed with the server's own face stages, cached.

The server's defaults (HOG, upsample 0, 5-point chip 150 px with padding 0.25, dlib's ResNet
run by the OpenCV embedder), through :mod:`facerec_server.eval.lfw`'s ``Describer`` (its
per-image cache under ``~/.cache/facerec/lfw`` is shared with ``facerec-eval``). Where HOG
finds no face the evaluation's fixed fallback box is used, so every image has a descriptor.
The whole set is also saved as one ``.npz`` next to that cache, so later runs load in a second.

    python bench/lfw_descriptors.py [--images DIR] [--workers 2]

``--images`` defaults to ``$FACEREC_LFW/images`` (``FACEREC_LFW`` defaults to the shared
datasets folder beside the repository). Used by ``bench_match_scale.py``.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import List, Tuple

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def default_lfw() -> pathlib.Path:
    """``$FACEREC_LFW``, else the shared datasets folder beside the checkout (``../shared``),
    or beside its parent (a worktree one level down)."""
    if os.environ.get("FACEREC_LFW"):
        return pathlib.Path(os.environ["FACEREC_LFW"])
    candidates = [base / "shared" / "datasets" / "lfw"
                  for base in (REPO.parent, REPO.parent.parent)]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def all_images(images_dir: pathlib.Path) -> List[Tuple[str, int]]:
    """(name, index) of every ``<name>/<name>_NNNN.jpg`` under ``images_dir``, sorted."""
    keys = []
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        for image in sorted(folder.glob(f"{folder.name}_*.jpg")):
            keys.append((folder.name, int(image.stem.rsplit("_", 1)[1])))
    return keys


def load(images_dir=None, workers: int = 2, progress: bool = True):
    """``(names, descriptors)``: one row per LFW image, (N, 128) float32, sorted by (name, index).

    Raises FileNotFoundError naming what is missing when the LFW images are not there.
    """
    from facerec_server.eval import lfw
    from facerec_server.eval.cli import default_cache_dir

    images_dir = pathlib.Path(images_dir) if images_dir else default_lfw() / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"LFW images not found in {images_dir}: set FACEREC_LFW to the "
                                "folder holding images/ (the deep-funneled LFW)")
    settings = lfw.Settings(embedder="opencv")
    cache = default_cache_dir()
    keys = all_images(images_dir)
    whole = cache / f"all-{settings.align_key()}-{len(keys)}.npz"
    if whole.is_file():
        with np.load(whole) as data:
            names = [str(n) for n in data["names"]]
            if len(names) == len(keys):
                return names, data["descriptors"].astype(np.float32)
    paths = {key: lfw.image_path(images_dir, *key) for key in keys}
    results = lfw.describe_images(paths, settings, cache, workers, progress)
    names = [key[0] for key in keys]
    matrix = np.stack([results[key]["descriptor"] for key in keys]).astype(np.float32)
    whole.parent.mkdir(parents=True, exist_ok=True)
    temp = whole.with_suffix(".tmp.npz")
    np.savez(temp, names=np.array(names), descriptors=matrix)
    os.replace(temp, whole)
    return names, matrix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=pathlib.Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        names, matrix = load(args.images, args.workers)
    except FileNotFoundError as error:
        print(f"lfw_descriptors: {error}", file=sys.stderr)
        return 1
    print(f"{matrix.shape[0]} descriptors of {len(set(names))} people")
    return 0


if __name__ == "__main__":
    sys.exit(main())
