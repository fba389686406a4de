#!/usr/bin/env python3
"""Benchmark facerec_server.dlibnet against dlib itself on LFW (bench only, not a test).

Embedder: >= 200 LFW faces (dlib HOG + 5-point landmarks + ``get_face_chip(150, 0.25)``);
max abs descriptor difference vs ``face_recognition_model_v1.compute_face_descriptor``;
per-face time at batch 1 and batch 8, dlib vs OpenCV DNN (and ONNX Runtime when installed),
measured alternately in one run; medians and ratios.

MMOD: >= 100 LFW images (+ some at upsample 1, + 2x2 mosaics of LFW images); every dlib
detection must be matched by one of ours with IoU >= 0.9 and |confidence difference| <= 0.01,
no extra detections; per-image time alternating dlib/ours; medians and ratio.

Prints a table and writes JSON (default bench/results/dlibnet.json). The machine is shared:
compare ratios, not absolute times.

    python bench/bench_dlibnet.py [--faces 240] [--images 120] [--up1-images 20]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerec_server.core.models import default_model_path  # noqa: E402
from facerec_server.dlibnet.embed import OpenCVEmbedder  # noqa: E402
from facerec_server.dlibnet.mmod import MmodNet  # noqa: E402

LFW = pathlib.Path("/work/shared/datasets/lfw/images")


def lfw_images(limit=None):
    paths = sorted(LFW.glob("*/*.jpg"))
    # spread over the alphabet (deterministic), not just the first few people
    step = max(1, len(paths) // (limit * 2)) if limit else 1
    return paths[::step]


def collect_chips(n, dlib):
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(default_model_path("shape_predictor")))
    chips = []
    for path in lfw_images(n):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        rects = detector(rgb, 0)
        if not rects:
            continue
        chips.append(dlib.get_face_chip(rgb, predictor(rgb, rects[0]), 150, 0.25))
        if len(chips) >= n:
            break
    return chips


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter)


def bench_embedder(args, dlib, results):
    chips = collect_chips(args.faces, dlib)
    print(f"embedder: {len(chips)} LFW face chips")
    model = dlib.face_recognition_model_v1(str(default_model_path("recognition")))
    engines = {"opencv": OpenCVEmbedder(backend="opencv")}
    try:
        import onnxruntime  # noqa: F401
        engines["onnxruntime"] = OpenCVEmbedder(backend="onnxruntime")
    except ImportError:
        pass
    for engine in engines.values():
        engine.load()
        engine.embed_chips(chips[:8])  # warm-up (graph set-up for both batch sizes)
        engine.embed_chips(chips[:1])
    ref = np.array([np.asarray(v) for v in model.compute_face_descriptor(chips)], np.float32)
    accuracy = {}
    for name, engine in engines.items():
        got = engine.embed_chips(chips)
        diff = np.abs(got - ref)
        accuracy[name] = {"max_abs_diff": float(diff.max()),
                          "mean_abs_diff": float(diff.mean()),
                          "max_l2_diff": float(np.linalg.norm(got - ref, axis=1).max())}
    times = {f"{name}_b{b}": [] for name in ["dlib", *engines] for b in (1, 8)}
    rng = np.random.default_rng(0)
    for rep in range(args.reps):
        for batch in (1, 8):
            idx = rng.choice(len(chips), batch, replace=False)
            sample = [chips[i] for i in idx]
            order = ["dlib", *engines] if rep % 2 == 0 else [*engines, "dlib"][::-1]
            for name in order:
                if name == "dlib":
                    fn = (lambda s: model.compute_face_descriptor(s[0])) if batch == 1 else \
                        model.compute_face_descriptor
                else:
                    fn = engines[name].embed_chips
                seconds, _ = timed(fn, sample)
                times[f"{name}_b{batch}"].append(seconds * 1000 / batch)
    med = {k: statistics.median(v) for k, v in times.items()}
    speed = {}
    for name in engines:
        for b in (1, 8):
            speed[f"{name}_b{b}"] = {
                "dlib_ms_per_face": med[f"dlib_b{b}"], "ms_per_face": med[f"{name}_b{b}"],
                "cost_ratio": med[f"{name}_b{b}"] / med[f"dlib_b{b}"],
                "speedup": med[f"dlib_b{b}"] / med[f"{name}_b{b}"]}
    results["embedder"] = {"faces": len(chips), "reps": args.reps, "accuracy": accuracy,
                           "speed": speed}
    print(f"{'engine':12s} {'batch':>5s} {'dlib ms/face':>13s} {'ms/face':>9s} "
          f"{'cost ratio':>10s} {'speedup':>8s}")
    for key, row in speed.items():
        name, b = key.rsplit("_b", 1)
        print(f"{name:12s} {b:>5s} {row['dlib_ms_per_face']:13.1f} {row['ms_per_face']:9.1f} "
              f"{row['cost_ratio']:10.3f} {row['speedup']:7.1f}x")
    for name, acc in accuracy.items():
        print(f"{name}: max abs diff {acc['max_abs_diff']:.2e} over {len(chips)} faces, "
              f"max L2 diff {acc['max_l2_diff']:.2e}")


def bench_mmod(args, dlib, results):
    path = str(default_model_path("cnn_detector"))
    ref = dlib.cnn_face_detection_model_v1(path)
    engines = {"opencv": MmodNet(path, backend="opencv")}
    try:
        import onnxruntime  # noqa: F401
        engines["onnxruntime"] = MmodNet(path, backend="onnxruntime")
    except ImportError:
        pass
    paths = lfw_images(args.images)[:args.images]
    up1_step = max(1, len(paths) // max(1, args.up1_images))
    jobs = [(p, 0) for p in paths] + [(p, 1) for p in paths[::up1_step][:args.up1_images]]
    # 2x2 mosaics of LFW images (500x500, 4+ faces): bigger frames, more pyramid tiles
    every = sorted(LFW.glob("*/*.jpg"))
    extra = every[7::max(1, len(every) // max(1, 4 * args.mosaics))][:4 * args.mosaics]
    jobs += [(tuple(extra[4 * i:4 * i + 4]), "mosaic") for i in range(args.mosaics)]
    rgb0 = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    for engine in engines.values():
        engine.detect(rgb0, 0)  # warm-up
    ref(rgb0, 0)
    groups = (0, 1, "mosaic")
    stats = {(g, e): {"images": 0, "dlib_dets": 0, "matched": 0, "extra": 0, "missed": 0,
                      "max_conf_diff": 0.0, "min_iou": 1.0, "t_dlib": [], "t_mine": []}
             for g in groups for e in engines}
    for i, (p, group) in enumerate(jobs):
        if group == "mosaic":
            tiles = [cv2.resize(cv2.imread(str(q)), (250, 250)) for q in p]
            bgr = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        else:
            rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        upsample = 0 if group == "mosaic" else group
        order = ["dlib", *engines]
        order = order if i % 2 == 0 else order[::-1]  # alternate who runs first
        timing, found = {}, {}
        for name in order:
            fn = ref if name == "dlib" else engines[name].detect
            timing[name], found[name] = timed(fn, rgb, upsample)
        want = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                for d in found["dlib"]]
        for name in engines:
            s = stats[(group, name)]
            s["images"] += 1
            s["t_dlib"].append(timing["dlib"])
            s["t_mine"].append(timing[name])
            s["dlib_dets"] += len(want)
            unused = list(found[name])
            for wrect, wconf in want:
                best = max(unused, key=lambda g: iou(g[0], wrect), default=None)
                if best is not None and iou(best[0], wrect) >= 0.9 \
                        and abs(best[1] - wconf) <= 0.01:
                    s["matched"] += 1
                    s["max_conf_diff"] = max(s["max_conf_diff"], abs(best[1] - wconf))
                    s["min_iou"] = min(s["min_iou"], iou(best[0], wrect))
                    unused.remove(best)
                else:
                    s["missed"] += 1
            s["extra"] += len(unused)
    out = {}
    print(f"{'images':>19s} {'engine':>11s} {'n':>4s} {'dlib dets':>9s} {'matched':>7s} "
          f"{'missed':>6s} {'extra':>5s} {'max|dconf|':>10s} {'min IoU':>7s} {'dlib s':>7s} "
          f"{'ours s':>7s} {'speedup':>7s}")
    labels = {0: "lfw_upsample0", 1: "lfw_upsample1", "mosaic": "mosaic500_upsample0"}
    for (group, name), s in stats.items():
        if not s["images"]:
            continue
        md, mm = statistics.median(s["t_dlib"]), statistics.median(s["t_mine"])
        row = {k: v for k, v in s.items() if not k.startswith("t_")}
        row.update({"dlib_median_s": md, "ours_median_s": mm, "speedup": md / mm,
                    "dlib_total_s": sum(s["t_dlib"]), "ours_total_s": sum(s["t_mine"])})
        out.setdefault(labels[group], {})[name] = row
        print(f"{labels[group]:>19s} {name:>11s} {s['images']:4d} {s['dlib_dets']:9d} "
              f"{s['matched']:7d} {s['missed']:6d} {s['extra']:5d} "
              f"{s['max_conf_diff']:10.2e} {s['min_iou']:7.3f} {md:7.3f} {mm:7.3f} "
              f"{md / mm:6.1f}x")
    results["mmod"] = out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=240)
    parser.add_argument("--reps", type=int, default=30, help="timing repetitions per batch")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--up1-images", type=int, default=20)
    parser.add_argument("--mosaics", type=int, default=20, help="2x2 LFW mosaics (500x500)")
    parser.add_argument("--skip-embedder", action="store_true")
    parser.add_argument("--skip-mmod", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dlibnet.json"))
    args = parser.parse_args()
    import dlib
    results = {"command": " ".join([sys.executable, *sys.argv]),
               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "loadavg_start": os.getloadavg()},
               "versions": {"dlib": dlib.__version__, "opencv": cv2.__version__,
                            "numpy": np.__version__, "cv2_threads": cv2.getNumThreads()}}
    try:
        import onnxruntime
        results["versions"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if not args.skip_embedder:
        bench_embedder(args, dlib, results)
    if not args.skip_mmod:
        bench_mmod(args, dlib, results)
    results["machine"]["loadavg_end"] = os.getloadavg()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"load average start {results['machine']['loadavg_start']} end "
          f"{results['machine']['loadavg_end']} (shared machine); wrote {out}")


if __name__ == "__main__":
    main()
