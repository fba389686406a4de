#!/usr/bin/env python3
"""CPU per frame of the camera node's capture + encode + publish vs a bare cv2.imencode.

The node path is the real one: ``FacerecCamera`` (parameters, source, encoder, publisher)
with ``CaptureLoop.step()`` called back to back (no rate pacing), publishing over real DDS to
a subscriber in a separate process. The baseline JPEG-encodes the same test-pattern frames
(pre-generated) with ``cv2.imencode`` at the same quality. Both are measured as process CPU
time (all threads, so DDS work is included) per frame, in alternating batches; the medians of
the batches and their ratio are printed and written to ``bench/results/camera.json``.

    python bench/bench_camera.py [--width 640 --height 480 --quality 80 --frames 60 --repeats 11]
"""
import argparse
import json
import os
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import cv2  # noqa: E402
import rclpy  # noqa: E402

from facerec_camera.camera_node import FacerecCamera  # noqa: E402
from facerec_camera.sources import TestPatternSource  # noqa: E402

TOPIC = "/bench/camera/image/compressed"

SUBSCRIBER = f"""
import signal, sys, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
rclpy.init()
node = rclpy.create_node("bench_camera_subscriber")
count = [0]
node.create_subscription(CompressedImage, "{TOPIC}",
                         lambda m: count.__setitem__(0, count[0] + 1), qos_profile_sensor_data)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
print("received", count[0], flush=True)
"""


def cpu_per_frame(run, frames):
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    run()
    return ((time.process_time() - started_cpu) / frames,
            (time.perf_counter() - started_wall) / frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--frames", type=int, default=60, help="frames per batch")
    parser.add_argument("--repeats", type=int, default=11, help="batches per side")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "camera.json"))
    args = parser.parse_args()

    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER], stdout=subprocess.PIPE,
                                  text=True)
    rclpy.init(args=["--ros-args", "-p", "source:=pattern", "-p", f"width:={args.width}",
                     "-p", f"height:={args.height}", "-p", f"jpeg_quality:={args.quality}",
                     "-p", f"topic:={TOPIC}"])
    node = None
    try:
        node = FacerecCamera()
        node.start(run=False)
        loop = node.capture_loop
        deadline = time.monotonic() + 30
        while node._publisher.get_subscription_count() < 1:
            if time.monotonic() > deadline:
                raise SystemExit("subscriber not matched within 30 s")
            time.sleep(0.05)
        time.sleep(0.5)  # let discovery settle

        pattern = TestPatternSource(args.width, args.height).open()
        images = [pattern.read().image_bgr for _ in range(args.frames)]
        params = [cv2.IMWRITE_JPEG_QUALITY, args.quality]

        def node_batch():
            for _ in range(args.frames):
                assert loop.step() is True

        def bare_batch():
            for image in images:
                ok, _ = cv2.imencode(".jpg", image, params)
                assert ok

        def capture_batch():  # the pattern source alone: how much of the gap is "capture"
            for _ in range(args.frames):
                pattern.read()

        encoder = loop.encoder

        def capture_encode_batch():  # the node's source + encoder, without the publish
            for _ in range(args.frames):
                encoder.encode(loop.source.read())

        node_batch()  # warm-up all paths
        bare_batch()
        capture_batch()
        capture_encode_batch()
        node_runs, bare_runs, capture_runs, capenc_runs = [], [], [], []
        for _ in range(args.repeats):
            node_runs.append(cpu_per_frame(node_batch, args.frames))
            bare_runs.append(cpu_per_frame(bare_batch, args.frames))
            capture_runs.append(cpu_per_frame(capture_batch, args.frames))
            capenc_runs.append(cpu_per_frame(capture_encode_batch, args.frames))
        published = loop.stats.frames
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        subscriber.send_signal(2)
        try:
            out, _ = subscriber.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            subscriber.kill()
            out, _ = subscriber.communicate()
    received = int(out.split()[-1]) if out and out.split()[0] == "received" else None

    node_cpu = statistics.median(r[0] for r in node_runs)
    bare_cpu = statistics.median(r[0] for r in bare_runs)
    result = {
        "benchmark": "facerec_camera capture+encode+publish vs bare cv2.imencode",
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"source": "pattern", "width": args.width, "height": args.height,
                   "jpeg_quality": args.quality, "frames_per_batch": args.frames,
                   "repeats": args.repeats, "topic": TOPIC},
        "node_cpu_ms_per_frame_median": round(node_cpu * 1e3, 3),
        "bare_imencode_cpu_ms_per_frame_median": round(bare_cpu * 1e3, 3),
        "ratio_node_over_bare": round(node_cpu / bare_cpu, 3),
        "pattern_capture_cpu_ms_per_frame_median": round(
            statistics.median(r[0] for r in capture_runs) * 1e3, 3),
        "capture_encode_no_publish_cpu_ms_per_frame_median": round(
            statistics.median(r[0] for r in capenc_runs) * 1e3, 3),
        "node_wall_ms_per_frame_median": round(statistics.median(r[1] for r in node_runs) * 1e3,
                                               3),
        "bare_wall_ms_per_frame_median": round(statistics.median(r[1] for r in bare_runs) * 1e3,
                                               3),
        "node_cpu_ms_runs": [round(r[0] * 1e3, 3) for r in node_runs],
        "bare_cpu_ms_runs": [round(r[0] * 1e3, 3) for r in bare_runs],
        "frames_published": published,
        "frames_received_by_subscriber": received,
        "environment": {"python": platform.python_version(), "opencv": cv2.__version__,
                        "rmw": os.environ.get("RMW_IMPLEMENTATION", "default"),
                        "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }
    out_path = pathlib.Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"node capture+encode+publish: {result['node_cpu_ms_per_frame_median']:.3f} ms CPU/frame"
          f" (median of {args.repeats})")
    print(f"bare cv2.imencode:           {result['bare_imencode_cpu_ms_per_frame_median']:.3f} "
          f"ms CPU/frame")
    print(f"of which test-pattern capture: "
          f"{result['pattern_capture_cpu_ms_per_frame_median']:.3f} ms CPU/frame")
    print(f"capture+encode without publish: "
          f"{result['capture_encode_no_publish_cpu_ms_per_frame_median']:.3f} ms CPU/frame")
    print(f"ratio node/bare: {result['ratio_node_over_bare']:.3f}  "
          f"(published {published}, received {received}) -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
