"""``facerec-eval``: offline benchmarks of the recognition core.

    facerec-eval lfw --images DIR --pairs FILE [--detector hog] [--upsample N] [--jitter N]
                     [--flip] [--workers N] [--cache DIR | --no-cache] [--output DIR]

Also runnable as ``python -m facerec_server.eval.cli lfw ...``. Writes
``<output>/lfw_<variant>.json`` and ``<output>/lfw_<variant>_roc.png`` and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Optional, Sequence


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "facerec" / "lfw"


def _box(text: str):
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError("expected four fractions L,T,R,B in [0, 1]")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facerec-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lfw = sub.add_parser("lfw", help="LFW verification with the standard 10-fold protocol")
    lfw.add_argument("--images", required=True, type=pathlib.Path,
                     help="folder of <Name>/<Name>_NNNN.jpg")
    lfw.add_argument("--pairs", required=True, type=pathlib.Path, help="LFW pairs.txt")
    lfw.add_argument("--detector", default="hog", choices=["hog", "cnn"],
                     help="face detector (default: hog, the server's default; cnn is dlib's "
                          "MMOD detector, very slow on a CPU)")
    lfw.add_argument("--upsample", type=int, default=0, help="detector upsampling (default 0)")
    lfw.add_argument("--jitter", type=int, default=0,
                     help="jittered copies averaged per descriptor (default 0; cost ~N x)")
    lfw.add_argument("--flip", action="store_true",
                     help="average the descriptors of the chip and its mirror image (cost ~2x)")
    lfw.add_argument("--chip-size", type=int, default=150,
                     help="aligned chip side in px (default 150, what the dlib ResNet expects)")
    lfw.add_argument("--padding", type=float, default=0.25,
                     help="chip padding, fraction of the face width (default 0.25, dlib's)")
    lfw.add_argument("--fallback-box", type=_box, default=None,
                     help="box used when no face is detected, as fractions L,T,R,B of the "
                          "image (default: the median HOG box on LFW)")
    lfw.add_argument("--embedder", default=None, choices=["dlib", "opencv"],
                     help="opencv (default, as the server's face.embedder): dlib's ResNet file "
                          "run by OpenCV DNN (same LFW accuracy to every digit, ~5x faster); "
                          "dlib: dlib's own code (the default with --backend dlib)")
    lfw.add_argument("--decoder", default="opencv", choices=["opencv", "dlib"],
                     help="JPEG decoding: opencv (default, as the server decodes frames) or "
                          "dlib.load_rgb_image (as dlib's published LFW figures)")
    lfw.add_argument("--backend", default="core", choices=["core", "dlib"],
                     help="core: the server's stages (default); dlib: dlib called directly "
                          "(reference, to tell pipeline differences from protocol ones)")
    lfw.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="processes (default: all cores)")
    lfw.add_argument("--cache", type=pathlib.Path, default=None,
                     help=f"descriptor cache folder (default {default_cache_dir()})")
    lfw.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    lfw.add_argument("--output", type=pathlib.Path, default=pathlib.Path("lfw-results"),
                     help="folder for the JSON report and the ROC PNG (default ./lfw-results)")
    lfw.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def settings_from_args(args):
    """The ``lfw.Settings`` of parsed ``lfw`` arguments. The embedder defaults to the
    server's (opencv); with ``--backend dlib`` (dlib called directly) to dlib's own."""
    from facerec_server.eval import lfw

    if args.backend == "dlib" and args.embedder not in (None, "dlib"):
        raise ValueError("--backend dlib runs dlib's own embedder; drop --embedder "
                         f"{args.embedder} or use --backend core")
    embedder = args.embedder or ("dlib" if args.backend == "dlib" else lfw.Settings.embedder)
    return lfw.Settings(detector=args.detector, upsample=args.upsample, jitter=args.jitter,
                        flip=args.flip, chip_size=args.chip_size, padding=args.padding,
                        fallback_box=args.fallback_box or lfw.FALLBACK_BOX,
                        backend=args.backend, decoder=args.decoder, embedder=embedder)


def run_lfw(args) -> int:
    from facerec_server.eval import lfw

    settings = settings_from_args(args)
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    report, curves = lfw.evaluate(args.images, args.pairs, settings, cache_dir=cache,
                                  workers=max(1, args.workers),
                                  progress=not args.no_progress)
    argv = args.argv if args.argv is not None else sys.argv[1:]
    report["command"] = "facerec-eval " + " ".join(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"lfw_{settings.tag()}"
    json_path = args.output / f"{stem}.json"
    png_path = args.output / f"{stem}_roc.png"
    report["roc_png"] = str(png_path)
    fixed_fpr = report["false_accept_rate_at_fixed_threshold"]
    fixed_tpr = report["true_accept_rate_at_fixed_threshold"]
    points = []
    if fixed_fpr is not None and fixed_tpr is not None:
        points.append((fixed_fpr, fixed_tpr, f"d < {lfw.FIXED_THRESHOLD}"))
    title = (f"LFW {settings.tag()}: {100 * report['accuracy_mean']:.2f}% "
             f"+/- {100 * report['accuracy_std']:.2f}, AUC {report['auc']:.4f}")
    lfw.draw_roc(png_path, {settings.tag(): (curves["fpr"], curves["tpr"])}, title, points)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"variant            {report['variant']}")
    print(f"pairs / images     {report['n_pairs']} / {report['n_images']}")
    print(f"accuracy (10-fold) {100 * report['accuracy_mean']:.2f}% "
          f"+/- {100 * report['accuracy_std']:.2f} (std over {len(report['folds'])} folds; "
          f"mean threshold {report['mean_threshold']:.3f})")
    fixed = 100 * report["accuracy_at_fixed_threshold"]
    print(f"accuracy at {lfw.FIXED_THRESHOLD}    {fixed:.2f}%")
    print(f"fallback boxes     {report['fallback_count']}")
    print(f"seconds per face   {report['seconds_per_face']:.4f} "
          f"(computed {report['descriptors_computed']}, cached "
          f"{report['descriptors_from_cache']}, wall {report['wall_seconds']:.0f} s)")
    print(f"wrote              {json_path} {png_path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    if args.command == "lfw":
        try:
            return run_lfw(args)
        except (FileNotFoundError, ValueError) as exc:
            print(f"facerec-eval: error: {exc}", file=sys.stderr)
            return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
