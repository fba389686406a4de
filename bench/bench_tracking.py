#!/usr/bin/env python3
"""Face tracks (``face.tracking.enabled``) vs the per-frame pipeline on the same video.

Per-frame: every frame ``decode_image`` + ``FacePipeline.process`` + gallery match, what the
server does with tracking off. Tracked: ``decode_image`` + ``FaceTracker.plan`` +
``FacePipeline.follow`` + ``FaceTracker.update`` (the node runs ``follow`` in its worker
process and the rest in its own; here all in this process). Same JPEG bytes, same settings
(HOG, the OpenCV embedder, the tracking defaults of ``facerec_server.params``), gallery: the
astronaut photo enrolled as 'eileen' (plus ``--enroll NAME=IMAGE``).

For each ``--upsample`` value the two sides run over the whole video ``--repeats`` times,
alternated (per-frame first on even repeats, tracked first on odd ones); each run gives
frames per second (wall) and CPU ms per frame (this process, all threads). The table shows
the medians and their ratio (tracked / per-frame speed-up) with the paired ratios.

Agreement (first run of each side): every face the per-frame pipeline reports is matched to
a tracked face (IoU >= 0.5); it agrees when the names are equal. Also counted: faces only one
side reports, and tracked names where the per-frame pipeline says unknown. On the generated
video the ground truth gives, per appearance of a person, how many track ids it got, and
whether an id ever covered two people.

The video: by default the one ``facerec_server.tools.track_scenes.bench_scene`` renders (640x480,
15 fps, 24 s: two real registry faces walking in and out, crossing, hidden by a board, coming
back; faces 88-120 px); ``--video FILE`` uses any video file instead (no ground truth).

Also measured (``--options``, generated video only): the cheap step between full detections,
per tracked face: the region search used here, dlib's correlation tracker, and the 5-point
landmarks on the predicted box, with their agreement with the full detector's box.

    python bench/bench_tracking.py [--upsample 1 0] [--repeats 3] [--video FILE] [--fps F]
                                   [--frames N] [--enroll NAME=IMAGE ...] [--no-options]
                                   [--quick] [--output PATH]

Writes JSON (default ``bench/results/tracking.json``; ``tracking_quick.json`` with
``--quick``). The machine is shared: compare ratios, not absolute times.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facerec_server import params  # noqa: E402
from facerec_server.core import tracking  # noqa: E402
from facerec_server.core.images import decode_image  # noqa: E402
from facerec_server.core.pipeline import FaceConfig, FacePipeline  # noqa: E402
from facerec_server.core.tracking import FaceTracker, TrackingConfig  # noqa: E402
from facerec_server.tools.registry_faces import astronaut_path  # noqa: E402
from facerec_server.tools.track_scenes import bench_scene  # noqa: E402

JPEG_QUALITY = 80  # the camera node's default


def tracking_defaults() -> TrackingConfig:
    """The server's face.tracking.* defaults (facerec_server/params.py)."""
    values = {spec.name.split(".")[-1]: spec.default for spec in params.SPECS
              if spec.name.startswith("face.tracking.")}
    return TrackingConfig.from_mapping(values)


# --- the video ---------------------------------------------------------------------------------

def generated_video(frames: int = 0):
    scene = bench_scene()
    count = scene.frames if not frames else min(frames, scene.frames)
    jpegs = [encode(scene.render(i)) for i in range(count)]
    return {"name": "generated (tools.track_scenes.bench_scene)", "size": [scene.width,
            scene.height], "fps": scene.fps, "jpegs": jpegs, "scene": scene}


def file_video(path: str, fps: float = 0.0, frames: int = 0):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"bench_tracking: cannot open the video {path!r} (a file OpenCV "
                         "can read, e.g. .mp4/.avi)")
    rate = fps or capture.get(cv2.CAP_PROP_FPS) or 15.0
    jpegs, size = [], None
    while not frames or len(jpegs) < frames:
        ok, image = capture.read()
        if not ok:
            break
        size = [image.shape[1], image.shape[0]]
        jpegs.append(encode(image))
    capture.release()
    if not jpegs:
        raise SystemExit(f"bench_tracking: no frames could be read from {path!r}")
    return {"name": path, "size": size, "fps": float(rate), "jpegs": jpegs, "scene": None}


def encode(image) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buffer.tobytes()


# --- the two sides -------------------------------------------------------------------------------

def make_pipeline(upsample: int, enroll) -> FacePipeline:
    pipeline = FacePipeline(FaceConfig(upsample=upsample))
    pipeline.load()
    people = [("eileen", str(astronaut_path()))] + list(enroll)
    names, descriptors = [], []
    for name, path in people:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"bench_tracking: cannot read the image {path!r} for {name!r}")
        samples = pipeline.describe(image)
        if not samples:
            raise SystemExit(f"bench_tracking: no face found in {path!r} for {name!r}")
        biggest = max(samples, key=lambda s: s.detection.box[2] - s.detection.box[0])
        names.append(name)  # the biggest face (HOG at upsample 1 also finds astronaut's badge)
        descriptors.append(biggest.descriptor)
    pipeline.matcher.set_gallery(names, np.stack(descriptors))
    return pipeline


def run_side(side: str, video: dict, pipeline: FacePipeline, config: TrackingConfig) -> dict:
    tracker = FaceTracker(config) if side == "tracked" else None
    fps = video["fps"]
    frames, reasons, described = [], collections.Counter(), 0
    cpu, wall = time.process_time(), time.perf_counter()
    for index, data in enumerate(video["jpegs"]):
        image = decode_image(data, "jpeg")
        if tracker is None:
            faces = pipeline.process(image).faces  # names too (the pipeline's matcher)
        else:
            stamp = index / fps
            frame = pipeline.follow(image, tracker.plan(stamp))
            faces = tracker.update(frame, stamp, pipeline.matcher)
            reasons[frame.reason or "regions only"] += 1
            described += frame.described
        frames.append([(tuple(int(v) for v in f.box), f.name, f.track_id, f.track_state)
                       for f in faces])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(video["jpegs"])
    out = {"fps": count / wall, "cpu_ms_per_frame": 1000.0 * cpu / count,
           "wall_ms_per_frame": 1000.0 * wall / count, "frames": frames}
    if tracker is not None:
        out["reasons"] = dict(reasons)
        out["descriptors"] = described
    return out


def agreement(reference: list, tracked: list) -> dict:
    """Per-frame pipeline's faces vs the tracked ones (matched by IoU >= 0.5)."""
    counts = collections.Counter()
    for ref_faces, trk_faces in zip(reference, tracked):
        free = list(trk_faces)
        for box, name, _, _ in ref_faces:
            counts["face_frames"] += 1
            counts["named_face_frames"] += bool(name)
            best = max(free, key=lambda f: tracking.iou(box, f[0]), default=None)
            if best is None or tracking.iou(box, best[0]) < 0.5:
                counts["missing"] += 1
                continue
            free.remove(best)
            if best[1] == name:
                counts["agree"] += 1
            else:
                counts["name_differs"] += 1
                counts["named_where_unknown"] += bool(best[1] and not name)
        for _, name, _, _ in free:
            counts["extra"] += 1
            counts["extra_named"] += bool(name)
    out = dict(counts)
    out["agreement"] = counts["agree"] / max(counts["face_frames"], 1)
    return out


def extras_in_truth(scene, reference: list, tracked: list, enrolled) -> dict:
    """The tracked faces the per-frame pipeline did not report, against the ground truth:
    how many are a real person's face (IoU >= 0.4) and carry that person's name (or no name
    for someone not ``enrolled``)."""
    counts = collections.Counter()
    for index, (ref_faces, trk_faces) in enumerate(zip(reference, tracked)):
        for box, name, _, _ in trk_faces:
            if any(tracking.iou(box, ref[0]) >= 0.5 for ref in ref_faces):
                continue
            counts["extra"] += 1
            truth = max(scene.truth(index), key=lambda t: tracking.iou(box, t.box),
                        default=None)
            if truth is not None and tracking.iou(box, truth.box) >= 0.4:
                counts["a_real_face"] += 1
                counts["with_its_name"] += name == (truth.label if truth.label in enrolled
                                                    else "")
    return dict(counts)


def truth_tracks(scene, tracked: list) -> dict:
    """Track ids per appearance of a person (ground truth of the generated video)."""
    ids = collections.defaultdict(collections.Counter)
    owners = collections.defaultdict(set)
    covered = visible = 0
    for index, faces in enumerate(tracked):
        for truth in scene.truth(index):
            if truth.hidden > 0.5:
                continue
            visible += 1
            best = max(faces, key=lambda f: tracking.iou(truth.box, f[0]), default=None)
            if best is None or tracking.iou(truth.box, best[0]) < 0.4:
                continue
            covered += 1
            ids[truth.actor][best[2]] += 1
            owners[best[2]].add(truth.label)
    appearances = {f"{scene.actors[k].label} #{k}": dict(v) for k, v in sorted(ids.items())}
    return {"ids_per_appearance": appearances,
            "appearances_with_one_id": sum(len(v) == 1 for v in ids.values()),
            "appearances": len(ids),
            "ids_covering_two_people": sum(len(v) > 1 for v in owners.values()),
            "visible_face_frames": visible, "tracked_of_visible": covered}


# --- the cheap step: three candidates ------------------------------------------------------------

def measure_options(video: dict, pipeline: FacePipeline, samples: int = 60) -> dict:
    """Per face, from the previous frame's box to this frame: region search (what follow()
    uses), dlib correlation tracker update, 5-point landmarks on the previous box (the box
    moved with the landmarks' centre). Only the region search can also say "no face here"."""
    import dlib
    scene = video["scene"]
    cases = []
    for index in range(1, len(video["jpegs"])):
        before = {t.actor: t for t in scene.truth(index - 1) if t.hidden < 0.2 and t.inside}
        for truth in scene.truth(index):
            if truth.actor in before and truth.hidden < 0.2 and truth.inside:
                cases.append((index, before[truth.actor].box, truth.box))
    step = max(1, len(cases) // samples)
    cases = cases[::step][:samples]
    aligner = pipeline.aligner
    times = collections.defaultdict(list)
    quality = collections.defaultdict(list)
    for k, (index, previous, _) in enumerate(cases):
        image = decode_image(video["jpegs"][index], "jpeg")
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        full = [f.box for f in pipeline.process(image).faces]
        reference = max(full, key=lambda b: tracking.iou(b, previous), default=None)
        if reference is None or tracking.iou(reference, previous) < 0.3:
            continue
        before = cv2.cvtColor(decode_image(video["jpegs"][index - 1], "jpeg"),
                              cv2.COLOR_BGR2RGB)
        centre_before = aligner.landmarks(before, previous).mean(axis=0)  # the last step's
        correlation = dlib.correlation_tracker()
        correlation.start_track(before, dlib.rectangle(*previous[:2], previous[2] - 1,
                                                       previous[3] - 1))
        order = ["region search", "correlation tracker", "landmarks on the box"]
        if k % 2:
            order.reverse()
        for method in order:
            start = time.process_time()
            if method == "region search":
                found = pipeline.detect_near(image, [previous])
                box = max((d.box for d in found), key=lambda b: tracking.iou(b, previous),
                          default=None)
            elif method == "correlation tracker":
                correlation.update(rgb)
                r = correlation.get_position()
                box = (int(r.left()), int(r.top()), int(r.right()) + 1, int(r.bottom()) + 1)
            else:  # the box follows the landmarks' centre
                dx, dy = aligner.landmarks(rgb, previous).mean(axis=0) - centre_before
                box = (int(previous[0] + dx), int(previous[1] + dy), int(previous[2] + dx),
                       int(previous[3] + dy))
            times[method].append(time.process_time() - start)
            quality[method].append(0.0 if box is None else tracking.iou(box, reference))
    return {method: {"ms_per_face_median": 1000 * statistics.median(times[method]),
                     "iou_with_full_detection_median": statistics.median(quality[method]),
                     "found_iou_0_5": sum(q >= 0.5 for q in quality[method]) / len(
                         quality[method]),
                     "faces": len(times[method])}
            for method in times}


# --- report --------------------------------------------------------------------------------------

def median(values):
    return statistics.median(values) if values else None


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "clean": git("status", "--porcelain", "--untracked-files=no") == ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upsample", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video", help="a video file to use instead of the generated one")
    parser.add_argument("--fps", type=float, default=0.0,
                        help="frame rate of --video (default: the file's)")
    parser.add_argument("--frames", type=int, default=0, help="use only the first N frames")
    parser.add_argument("--enroll", action="append", default=[], metavar="NAME=IMAGE",
                        help="also enrol NAME from IMAGE (one face)")
    parser.add_argument("--no-options", action="store_true",
                        help="skip the measurement of the cheap step's candidates")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 120 frames (a check that it runs, not a measurement)")
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.frames = 1, args.frames or 120
    enroll = []
    for item in args.enroll:
        name, _, path = item.partition("=")
        if not name or not path:
            parser.error(f"--enroll expects NAME=IMAGE, got {item!r}")
        enroll.append((name, path))
    output = args.output or REPO / "bench" / "results" / (
        "tracking_quick.json" if args.quick else "tracking.json")

    video = file_video(args.video, args.fps, args.frames) if args.video else \
        generated_video(args.frames)
    config = tracking_defaults()
    print(f"video: {video['name']}, {len(video['jpegs'])} frames "
          f"{video['size'][0]}x{video['size'][1]} at {video['fps']:g} fps; tracking {config}")
    started = time.time()
    load_before = os.getloadavg()
    out = {"command": "python bench/bench_tracking.py " + " ".join(
               argv if argv is not None else sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "load_before": load_before},
           "git": git_state(), "video": {k: video[k] for k in ("name", "size", "fps")},
           "frames": len(video["jpegs"]), "tracking": config.__dict__, "settings": {}}
    for upsample in args.upsample:
        pipeline = make_pipeline(upsample, enroll)
        runs = {"per-frame": [], "tracked": []}
        for repeat in range(args.repeats):
            order = ["per-frame", "tracked"] if repeat % 2 == 0 else ["tracked", "per-frame"]
            for side in order:
                result = run_side(side, video, pipeline, config)
                runs[side].append(result)
                print(f"  upsample {upsample} repeat {repeat + 1} {side:9}: "
                      f"{result['fps']:6.2f} fps, {result['cpu_ms_per_frame']:7.1f} ms CPU/frame")
        entry = {}
        for key in ("fps", "cpu_ms_per_frame", "wall_ms_per_frame"):
            per = [r[key] for r in runs["per-frame"]]
            trk = [r[key] for r in runs["tracked"]]
            if key == "fps":
                paired = [t / p for p, t in zip(per, trk)]
                ratio = median(trk) / median(per)
            else:
                paired = [p / t for p, t in zip(per, trk)]
                ratio = median(per) / median(trk)
            entry[key] = {"per_frame": median(per), "tracked": median(trk),
                          "speed_up": ratio, "paired_speed_ups": paired}
        first_ref, first_trk = runs["per-frame"][0], runs["tracked"][0]
        entry["agreement"] = agreement(first_ref["frames"], first_trk["frames"])
        entry["reasons"] = first_trk["reasons"]
        entry["descriptors_tracked"] = first_trk["descriptors"]
        entry["face_frames_tracked"] = sum(len(f) for f in first_trk["frames"])
        if video["scene"] is not None:
            entry["truth"] = truth_tracks(video["scene"], first_trk["frames"])
            entry["extras_in_truth"] = extras_in_truth(video["scene"], first_ref["frames"],
                                                       first_trk["frames"],
                                                       set(pipeline.matcher.names))
            entry["per_frame_truth_visible_found"] = truth_tracks(
                video["scene"], [[(b, n, 1, s) for b, n, _, s in faces]
                                 for faces in first_ref["frames"]])["tracked_of_visible"]
        out["settings"][f"upsample {upsample}"] = entry
        print_entry(upsample, entry)
    if video["scene"] is not None and not args.no_options:
        out["options"] = measure_options(video, make_pipeline(0, enroll))
        print("cheap step candidates (per face, previous frame's box -> this frame):")
        for method, values in out["options"].items():
            print(f"  {method:22} {values['ms_per_face_median']:6.2f} ms, IoU with the full "
                  f"detector's box {values['iou_with_full_detection_median']:.2f}, "
                  f"found {100 * values['found_iou_0_5']:.0f}% of {values['faces']}")
    out["machine"]["load_after"] = os.getloadavg()
    out["runtime_s"] = time.time() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


def print_entry(upsample: int, entry: dict) -> None:
    fps, cpu, agree = entry["fps"], entry["cpu_ms_per_frame"], entry["agreement"]
    print(f"upsample {upsample}: {fps['per_frame']:.2f} -> {fps['tracked']:.2f} fps "
          f"(x{fps['speed_up']:.2f}); CPU {cpu['per_frame']:.1f} -> {cpu['tracked']:.1f} ms/frame "
          f"(x{cpu['speed_up']:.2f}); paired CPU "
          + ", ".join(f"{r:.2f}" for r in cpu["paired_speed_ups"]))
    print(f"  names agree on {agree.get('agree', 0)} of {agree.get('face_frames', 0)} face-frames "
          f"({100 * agree['agreement']:.2f}%); missing {agree.get('missing', 0)}, name differs "
          f"{agree.get('name_differs', 0)} (named where per-frame says unknown: "
          f"{agree.get('named_where_unknown', 0)}), extra {agree.get('extra', 0)} "
          f"({agree.get('extra_named', 0)} named)")
    print(f"  full-frame detector: {entry['reasons']}; descriptors "
          f"{entry['descriptors_tracked']} for {entry['face_frames_tracked']} face-frames")
    if "truth" in entry:
        truth = entry["truth"]
        extras = entry["extras_in_truth"]
        print(f"  faces only the tracked side reports: {extras.get('extra', 0)}, of which "
              f"{extras.get('a_real_face', 0)} are a real face, "
              f"{extras.get('with_its_name', 0)} with its person's name")
        print(f"  ground truth: {truth['appearances_with_one_id']} of {truth['appearances']} "
              f"appearances kept one id, {truth['ids_covering_two_people']} ids covered two "
              f"people; {truth['ids_per_appearance']}")


if __name__ == "__main__":
    sys.exit(main())
