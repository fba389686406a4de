#!/usr/bin/env python3
"""Benchmark facerec_server.dlibhog (dlib's HOG detector without dlib) against dlib itself.

Speed: dlib's frontal face detector vs ``FhogDetector`` with 2 threads and with 1 thread on
640x480 and 1280x720 frames (registry faces), upsample 0 and 1; in each round each of the
three runs ``--block`` consecutive detections on the same frame, the order rotating between
rounds, forwards and backwards in turn (each side follows each other side about equally
often). Frames per second (medians of all timed runs) and ratios. Then the same with the
whole process pinned to one CPU (``os.sched_setaffinity``, like ``taskset -c 0``): the
single-core figure.

Profile: the CPU time of each stage of ours on one thread
(``FhogDetector.profile``), and dlib's CPU time.

Equality: every LFW image (``--lfw``, default ``$FACEREC_LFW`` or the shared dataset;
``--lfw-step`` to sample) and the registry faces at upsample 0 and 1, and a HOG object
detector trained here on synthetic scenes (upsample 0 and 1, also with a lowered
threshold): images whose detections (rectangles, weight vectors, order) are identical to
dlib's, and the largest score difference.

Prints tables and writes JSON (default bench/results/hog.json) with the command, the date,
the machine and its load average. The machine is shared: compare ratios, not absolute times.

    python bench/bench_hog.py [--reps 9] [--block 3] [--lfw-step 1] [--workers 2]
                              [--skip-equality] [--skip-speed]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerec_server.dlibhog import FhogDetector, frontal_face_model, read_svm  # noqa: E402
from facerec_server.tools.make_test_detector import (  # noqa: E402
    bullseye_scene, train_bullseye_detector)
from facerec_server.tools.registry_faces import astronaut_path, messi_path  # noqa: E402
from lfw_descriptors import default_lfw  # noqa: E402  (bench/: $FACEREC_LFW or ../shared)


def rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def frames():
    astronaut, messi = rgb(astronaut_path()), rgb(messi_path())
    frame_720 = np.hstack([cv2.resize(astronaut, (720, 720)), cv2.resize(messi, (560, 720))])
    return {"640x480": cv2.resize(messi, (640, 480)),
            "1280x720": np.ascontiguousarray(frame_720)}


def dlib_hits(detector, image, upsample, adjust=0.0):
    rects, scores, indices = detector.run(image, upsample, adjust)
    return [((r.left(), r.top(), r.right(), r.bottom()), s, int(i))
            for r, s, i in zip(rects, scores, indices)]


def compare(want, got, stats):
    same = [(r, i) for r, _, i in want] == [(r, i) for r, _, i in got]
    stats["images"] += 1
    stats["identical"] += int(same)
    stats["detections"] += len(want)
    if same:
        for (_, a, _), (_, b, _) in zip(want, got):
            stats["max_score_diff"] = max(stats["max_score_diff"], abs(a - b))
    elif len(stats["mismatches"]) < 20:
        stats["mismatches"].append({"dlib": want, "ours": got})
    return same


def new_stats():
    return {"images": 0, "identical": 0, "detections": 0, "max_score_diff": 0.0,
            "mismatches": [], "dlib_s": 0.0, "ours_s": 0.0}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def speed(args, dlib, label):
    reference = dlib.get_frontal_face_detector()
    engines = {"ours_2_threads": FhogDetector(frontal_face_model(), threads=2),
               "ours_1_thread": FhogDetector(frontal_face_model(), threads=1)}
    runners = {"dlib": lambda img, up: reference.run(img, up, 0.0)}
    runners.update({name: (lambda e: lambda img, up: e.detect(img, up))(engine)
                    for name, engine in engines.items()})
    rows = []
    for name, frame in frames().items():
        for upsample in (0, 1):
            for run in runners.values():  # warm-up (and kernel compilation)
                run(frame, upsample)
            times = {key: [] for key in runners}
            names = list(runners)
            for rep in range(args.reps):
                # each side runs a block of consecutive frames; the order rotates, forwards
                # and backwards in turn, so every side follows every other side (its data
                # pushed out of the caches) about equally often
                base = names if rep % 2 == 0 else names[::-1]
                shift = (rep // 2) % len(names)
                for key in base[shift:] + base[:shift]:
                    for _ in range(args.block):
                        seconds, _ = timed(runners[key], frame, upsample)
                        times[key].append(seconds)
            med = {key: statistics.median(v) for key, v in times.items()}
            row = {"frame": name, "upsample": upsample, "reps": args.reps,
                   "block": args.block,
                   "median_ms": {k: v * 1000 for k, v in med.items()},
                   "fps": {k: 1.0 / v for k, v in med.items()},
                   "speedup": {k: med["dlib"] / med[k] for k in engines},
                   "per_rep_speedups_2_threads": [
                       statistics.median(times["dlib"][i:i + args.block])
                       / statistics.median(times["ours_2_threads"][i:i + args.block])
                       for i in range(0, len(times["dlib"]), args.block)]}
            rows.append(row)
            print(f"{label:10s} {name:9s} up {upsample}  dlib {row['fps']['dlib']:6.1f} fps"
                  f"  ours 2 threads {row['fps']['ours_2_threads']:6.1f} fps "
                  f"({row['speedup']['ours_2_threads']:.2f}x)  ours 1 thread "
                  f"{row['fps']['ours_1_thread']:6.1f} fps "
                  f"({row['speedup']['ours_1_thread']:.2f}x)")
            row["ours_1_thread_cpu_ms"] = profile(engines["ours_1_thread"], frame, upsample,
                                                  args.reps)
            row["dlib_cpu_ms"] = statistics.median(
                cpu_time(runners["dlib"], frame, upsample) for _ in range(args.reps))
            p = row["ours_1_thread_cpu_ms"]
            print(f"{'':10s} CPU ms, dlib {row['dlib_cpu_ms']:.1f}; ours (1 thread): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in p.items()))
    for engine in engines.values():
        engine.close()
    return rows


def cpu_time(fn, *args) -> float:
    start = time.thread_time()
    fn(*args)
    return (time.thread_time() - start) * 1000


def profile(engine, frame, upsample, reps):
    """CPU ms (medians) of the stages of one detection on one thread, and their total."""
    runs = [engine.profile(frame, upsample)[1] for _ in range(reps)]
    out = {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in runs[0]}
    out["total"] = statistics.median(sum(run.values()) for run in runs)
    return out


def equality(args, dlib, results):
    reference = dlib.get_frontal_face_detector()
    ours = FhogDetector(frontal_face_model(), threads=2)
    out = {}
    registry = {0: new_stats(), 1: new_stats()}
    for path in (astronaut_path(), messi_path()):
        image = rgb(path)
        for upsample in (0, 1):
            compare(dlib_hits(reference, image, upsample), ours.detect(image, upsample),
                    registry[upsample])
    out["registry_faces"] = {f"upsample_{k}": v for k, v in registry.items()}
    lfw_dir = pathlib.Path(args.lfw) / "images"
    if lfw_dir.is_dir():
        paths = [str(p) for p in sorted(lfw_dir.glob("*/*.jpg"))[::args.lfw_step]]
        chunks = [paths[i::args.workers] for i in range(args.workers)]
        started = time.monotonic()
        with ProcessPoolExecutor(args.workers) as pool:
            parts = list(pool.map(lfw_chunk, chunks))
        lfw = {0: new_stats(), 1: new_stats()}
        for part in parts:
            for upsample in (0, 1):
                mine, theirs = lfw[upsample], part[upsample]
                for key in ("images", "identical", "detections", "dlib_s", "ours_s"):
                    mine[key] += theirs[key]
                mine["max_score_diff"] = max(mine["max_score_diff"], theirs["max_score_diff"])
                mine["mismatches"] = (mine["mismatches"] + theirs["mismatches"])[:20]
        out["lfw"] = {f"upsample_{k}": v for k, v in lfw.items()}
        out["lfw"]["images_total"] = len(paths)
        out["lfw"]["workers"] = args.workers
        out["lfw"]["seconds"] = time.monotonic() - started
    else:
        out["lfw"] = f"skipped: {lfw_dir} not found"
    out["trained_object_model"] = trained_model(dlib)
    results["equality"] = out
    print(f"{'set':28s} {'images':>7s} {'identical':>9s} {'detections':>10s} "
          f"{'max |score diff|':>16s}")
    for group, parts in out.items():
        if not isinstance(parts, dict):
            print(f"{group:28s} {parts}")
            continue
        for key, s in parts.items():
            if isinstance(s, dict):
                print(f"{group + ' ' + key:28s} {s['images']:7d} {s['identical']:9d} "
                      f"{s['detections']:10d} {s['max_score_diff']:16.2e}")


def lfw_chunk(paths):
    """Equality on some LFW images (one worker process): stats per upsample."""
    import dlib
    reference = dlib.get_frontal_face_detector()
    ours = FhogDetector(frontal_face_model(), threads=1)
    stats = {0: new_stats(), 1: new_stats()}
    for i, path in enumerate(paths):
        image = rgb(path)
        for upsample in (0, 1):
            t_dlib, want = timed(dlib_hits, reference, image, upsample)
            t_ours, got = timed(ours.detect, image, upsample)
            stats[upsample]["dlib_s"] += t_dlib
            stats[upsample]["ours_s"] += t_ours
            if not compare(want, got, stats[upsample]):
                print(f"MISMATCH {path} upsample {upsample}: {want} vs {got}", flush=True)
        if (i + 1) % 1000 == 0:
            print(f"  a worker has compared {i + 1}/{len(paths)} LFW images", flush=True)
    return stats


def trained_model(dlib):
    """Train a bullseye detector like test/test_objects.py and compare on new scenes."""
    with tempfile.TemporaryDirectory() as folder:
        path = train_bullseye_detector(pathlib.Path(folder) / "bullseye.svm")
        reference = dlib.fhog_object_detector(str(path))
        ours = FhogDetector(read_svm(path), threads=2)
    rng = np.random.default_rng(21)
    stats = {}
    for upsample in (0, 1):
        for adjust in (0.0, -1.0):
            s = stats[f"upsample_{upsample}_adjust_{adjust:g}"] = new_stats()
            for _ in range(50):
                scene, _ = bullseye_scene(rng, int(rng.integers(40, 100)), side=320)
                image = np.ascontiguousarray(cv2.cvtColor(scene, cv2.COLOR_BGR2RGB))
                compare(dlib_hits(reference, image, upsample, adjust),
                        ours.detect(image, upsample, adjust), s)
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9,
                        help="rounds per frame: each side runs --block frames per round")
    parser.add_argument("--block", type=int, default=3,
                        help="consecutive timed runs of one side per round (1: every run "
                             "follows another side's run, its data out of the caches)")
    parser.add_argument("--lfw", default=str(default_lfw()))
    parser.add_argument("--lfw-step", type=int, default=1, help="every n-th LFW image")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for the LFW equality (each runs both detectors)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-equality", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hog.json"))
    args = parser.parse_args()
    import dlib
    import numba
    results = {"command": " ".join([sys.executable, *sys.argv]),
               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "loadavg_start": os.getloadavg()},
               "versions": {"dlib": dlib.__version__, "opencv": cv2.__version__,
                            "numpy": np.__version__, "numba": numba.__version__}}
    if not args.skip_speed:
        results["speed"] = speed(args, dlib, "2 cores")
        results["machine"]["loadavg_after_speed"] = os.getloadavg()
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})
        try:
            results["speed_single_core"] = speed(args, dlib, "1 core")
        finally:
            os.sched_setaffinity(0, set(cpus))
        results["machine"]["loadavg_after_single_core"] = os.getloadavg()
    if not args.skip_equality:
        equality(args, dlib, results)
    out = pathlib.Path(args.out)
    if out.is_file() and (args.skip_speed or args.skip_equality):
        # keep the part not run this time (with the command that produced it)
        previous = json.loads(out.read_text())
        for key in ("speed", "speed_single_core", "equality"):
            if key not in results and key in previous:
                results[key] = previous[key]
                results.setdefault("kept_from", {})[key] = previous.get("command")
    results["machine"]["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"load average start {results['machine']['loadavg_start']} end "
          f"{results['machine']['loadavg_end']} (shared machine); wrote {out}")


if __name__ == "__main__":
    main()
