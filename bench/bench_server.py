#!/usr/bin/env python3
"""The recognition server node vs the bare face pipeline: per-frame latency and frames/s.

Bare: ``FacePipeline.process(decode_image(jpeg))`` in this process, on the same JPEG bytes
and with the same settings as the server (its defaults: HOG, upsample 0, empty gallery),
with this process's ROS spin thread parked meanwhile.

Node: the same JPEG bytes published as ``sensor_msgs/CompressedImage`` by a separate
publisher process (sensor-data QoS, like the camera node) -> real DDS (loopback, own domain)
-> ``facerec_server.server_node`` in its own process (default parameters: one face worker
process; face tracks off, so the node does the bare side's work on every frame)
-> ``/facerec_server/faces`` -> this process, which matches results to frames by
header stamp. Latency = result receipt time - the frame's header stamp (same clock).

Two regimes, per image, repeated and alternated (bare first on even repeats, node first on
odd ones) so machine noise hits both sides:

* **unloaded**: one frame at a time (publish, wait for its result, next); per-frame latency.
* **throughput**: frames published at 15 fps (the camera node's default; 3x the bare rate on
  a machine where that is more), well above the processing rate, for ``--seconds``; results
  per second from consecutive completions, ``(n - 1) / (t_last - t_first)``, against the
  bare pipeline run back to back for the same time.

Images: scikit-image's astronaut (512x512; dlib HOG finds two faces in it) and Debian
opencv-doc's messi5 scaled x2 and cropped to 853x480 (one face, ~73 px), JPEG quality 80
(the camera node's default).

Prints a table with the medians over repeats and the node/bare ratios, and writes JSON
(default ``bench/results/server.json``; ``server_quick.json`` with ``--quick``). The machine
is shared: compare ratios, not absolute times.

    python bench/bench_server.py [--quick] [--repeats 5] [--frames 3] [--seconds 6]
                                 [--probe 20] [--idle 3] [--output PATH]

Also measured: a 64x64 no-face probe frame (unloaded only), so the node's fixed per-frame
overhead is not buried under dlib's time; CPU per frame on both sides (bare: the pipeline
thread; node: camera process + server process + its worker, from /proc schedstat), which is
far steadier than wall time on a shared machine; and the node processes' idle CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))
os.environ["ROS_DOMAIN_ID"] = str(random.randint(120, 230))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if os.environ.get("ROS_DISTRO", "") in ("humble", "iron"):
    os.environ["ROS_LOCALHOST_ONLY"] = "1"

import cv2  # noqa: E402
import rclpy  # noqa: E402

from conftest import astronaut_path, messi_path  # noqa: E402
from facerec_msgs.msg import FaceArray  # noqa: E402
from facerec_msgs.srv import Enroll  # noqa: E402
from facerec_server.core.images import decode_image  # noqa: E402
from facerec_server.core.pipeline import FacePipeline  # noqa: E402
from facerec_server.params import SPECS  # noqa: E402
from facerec_server.settings import ServerSettings, resolve_model_paths  # noqa: E402
from rosutil import Graph, child_env, start_node, wait_for_service  # noqa: E402

TOPIC = "/bench/image/compressed"
# The node does the bare pipeline's work on every frame: face tracks would skip most of it on
# a repeated image (bench_tracking.py measures tracks).
SERVER_PARAMS = {"face.tracking.enabled": False}
NODE = "/facerec_server"
JPEG_QUALITY = 80
PROBE = "probe_64x64_noface"

# The "camera process": publishes the prepared JPEGs on command (stdin), prints the stamps.
PUBLISHER = r"""
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
rclpy.init()
node = rclpy.create_node("bench_server_publisher")
pub = node.create_publisher(CompressedImage, sys.argv[1], qos_profile_sensor_data)
messages = {}
for path in sys.argv[2:]:
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with open(path, "rb") as handle:
        messages[name] = CompressedImage(format="jpeg", data=handle.read())
        messages[name].header.frame_id = name
while pub.get_subscription_count() < 1:
    time.sleep(0.05)
time.sleep(0.5)
print("ready", flush=True)

def send(name):
    msg = messages[name]
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    return msg.header.stamp

for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    if words[0] == "one":
        stamp = send(words[1])
        print("sent", stamp.sec, stamp.nanosec, flush=True)
    elif words[0] == "stream":
        name, fps, seconds = words[1], float(words[2]), float(words[3])
        start = time.monotonic()
        count = 0
        while count < int(fps * seconds):
            delay = start + count / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = send(name)
            count += 1
        print("done", count, stamp.sec, stamp.nanosec, flush=True)
node.destroy_node()
rclpy.try_shutdown()
"""


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def load_images() -> dict:
    """name -> JPEG bytes (quality 80)."""
    astronaut = cv2.imread(str(astronaut_path()))
    messi = cv2.imread(str(messi_path()))
    messi = cv2.resize(messi, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)[50:530, 100:953]
    out = {}
    for name, image in (("astronaut_512x512", astronaut), ("messi_853x480", messi)):
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        out[name] = buffer.tobytes()
    return out


def probe_jpeg() -> bytes:
    """A 64x64 grey frame: no face, HOG has nothing to scan, so the node's fixed per-frame
    overhead (DDS, hand-offs) is not hidden under dlib's time."""
    import numpy as np
    ok, buffer = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8),
                              [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buffer.tobytes()


class Results:
    """FaceArray messages from the server, keyed by header stamp (ns), with receipt time."""

    def __init__(self):
        self._cond = threading.Condition()
        self.by_stamp = {}

    def __call__(self, msg) -> None:
        received = time.time_ns()
        with self._cond:
            self.by_stamp[stamp_ns(msg.header.stamp)] = (
                received, float(msg.processing_time), len(msg.faces))
            self._cond.notify_all()

    def wait(self, stamp: int, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while stamp not in self.by_stamp:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.by_stamp[stamp]

    def between(self, first: int, last: int) -> list:
        with self._cond:
            return sorted((s, v) for s, v in self.by_stamp.items() if first <= s <= last)


class Receiver(Graph):
    """rosutil.Graph whose spin thread can be parked, so the bare pipeline runs with no other
    Python thread competing for the GIL (the spin thread wakes every 50 ms otherwise)."""

    def __init__(self, context, name: str):
        self.running = threading.Event()
        self.running.set()
        super().__init__(context, name)

    def _spin(self) -> None:
        while not self._stop:
            self.running.wait()
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                return

    def close(self) -> None:
        self._stop = True
        self.running.set()
        super().close()


class Publisher:
    def __init__(self, log_dir: pathlib.Path, images: dict):
        paths = []
        for name, data in images.items():
            path = log_dir / f"{name}.jpg"
            path.write_bytes(data)
            paths.append(str(path))
        self.proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, TOPIC] + paths,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env(), cwd=str(REPO), text=True)
        self.expect("ready")

    def expect(self, word: str) -> list:
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise RuntimeError(f"publisher said {line!r}, expected {word!r}")
        return line.split()[1:]

    def command(self, line: str, answer: str) -> list:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect(answer)

    def one(self, name: str) -> int:
        sec, nsec = self.command(f"one {name}", "sent")
        return int(sec) * 1_000_000_000 + int(nsec)

    def stream(self, name: str, fps: float, seconds: float):
        count, sec, nsec = self.command(f"stream {name} {fps:.3f} {seconds:.3f}", "done")
        return int(count), int(sec) * 1_000_000_000 + int(nsec)

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _children(pid: int) -> list:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s living threads (``/proc/<pid>/task/<tid>/schedstat``:
    nanosecond run time, unlike the 10 ms ticks of ``/proc/<pid>/stat``)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # thread ended meanwhile
    except OSError:
        pass
    return total / 1e9


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its living descendants."""
    return proc_cpu(pid) + sum(tree_cpu(child) for child in _children(pid))


def rate(completions: list) -> float:
    """Results per second from completion times (s): (n - 1) / (last - first)."""
    if len(completions) < 2 or completions[-1] <= completions[0]:
        return float("nan")
    return (len(completions) - 1) / (completions[-1] - completions[0])


class Bench:
    def __init__(self, args, images, pipeline, publisher, results, server_pid, receiver):
        self.args, self.images, self.pipeline = args, images, pipeline
        self.receiver = receiver
        self.publisher, self.results = publisher, results
        self.server_pid = server_pid
        self.lost = 0

    def node_cpu(self) -> dict:
        """CPU seconds so far of the node side's processes."""
        main = proc_cpu(self.server_pid)
        return {"server": main + sum(tree_cpu(c) for c in _children(self.server_pid)),
                "server_main": main,
                "camera": tree_cpu(self.publisher.proc.pid),
                "receiver": time.process_time() - time.thread_time()}

    @staticmethod
    def cpu_delta(before: dict, after: dict, frames: int) -> dict:
        """CPU ms per frame by process, and their sum."""
        out = {k: 1000 * (after[k] - before[k]) / max(frames, 1) for k in before}
        out["total"] = out["camera"] + out["server"]  # the receiver is this bench harness
        out["server_workers"] = out["server"] - out["server_main"]
        return out

    # --- bare -----------------------------------------------------------------------------
    def bare_once(self, name: str):
        start = time.perf_counter()
        result = self.pipeline.process(decode_image(self.images[name], "jpeg"))
        return time.perf_counter() - start, len(result.faces)

    def bare_unloaded(self, name: str, frames: int) -> dict:
        with self.parked():
            return self._bare_unloaded(name, frames)

    def bare_throughput(self, name: str, seconds: float) -> dict:
        with self.parked():
            return self._bare_throughput(name, seconds)

    @contextlib.contextmanager
    def parked(self):
        self.receiver.running.clear()
        time.sleep(0.06)  # let a spin_once in progress end
        try:
            yield
        finally:
            self.receiver.running.set()

    def _bare_unloaded(self, name: str, frames: int) -> dict:
        cpu = time.thread_time()
        latencies = [self.bare_once(name)[0] for _ in range(frames)]
        return {"latency_ms": [1000 * v for v in latencies],
                "cpu_ms": 1000 * (time.thread_time() - cpu) / frames}

    def _bare_throughput(self, name: str, seconds: float) -> dict:
        cpu = time.thread_time()
        start = time.perf_counter()
        completions = []
        while not completions or completions[-1] - start < seconds:
            self.bare_once(name)
            completions.append(time.perf_counter())
        return {"fps": rate(completions), "results": len(completions),
                "cpu_ms": 1000 * (time.thread_time() - cpu) / len(completions)}

    # --- node -----------------------------------------------------------------------------
    def node_unloaded(self, name: str, frames: int) -> dict:
        latencies, server = [], []
        cpu = self.node_cpu()
        while len(latencies) < frames:
            if self.lost > 10:
                raise RuntimeError("more than 10 frames lost: is the server alive?")
            stamp = self.publisher.one(name)
            got = self.results.wait(stamp, self.args.timeout)
            if got is None:  # a best-effort frame lost on the way: count it, send another
                self.lost += 1
                continue
            received, processing_time, _ = got
            latencies.append((received - stamp) / 1e6)
            server.append(1000 * processing_time)
        cpu = self.cpu_delta(cpu, self.node_cpu(), frames)
        return {"latency_ms": latencies, "server_processing_ms": server,
                "cpu_ms": cpu["total"], "cpu_ms_by_process": cpu}

    def node_throughput(self, name: str, fps: float, seconds: float) -> dict:
        cpu = self.node_cpu()
        first = time.time_ns()
        sent, last = self.publisher.stream(name, fps, seconds)
        if self.results.wait(last, self.args.timeout) is None:
            self.lost += 1
            time.sleep(2.0)  # let the server drain before the next measurement
        got = self.results.between(first, last)
        cpu = self.cpu_delta(cpu, self.node_cpu(), len(got))
        completions = [received / 1e9 for _, (received, _, _) in got]
        completions.sort()
        per_published = cpu["server_main"] * len(got) / max(sent, 1)
        return {"fps": rate(completions), "results": len(got), "published": sent,
                "server_main_cpu_ms_per_published_frame": per_published,
                "publish_fps": fps, "cpu_ms": cpu["total"], "cpu_ms_by_process": cpu,
                "latency_ms": [(received - s) / 1e6 for s, (received, _, _) in got]}


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarize(runs: list, key: str) -> dict:
    """Medians of each repeat (latency lists) or the value per repeat (fps)."""
    per_repeat = [median(r[key]) if isinstance(r[key], list) else r[key] for r in runs]
    return {"median": round(median(per_repeat), 2),
            "min": round(min(per_repeat), 2), "max": round(max(per_repeat), 2),
            "per_repeat": [round(v, 2) for v in per_repeat]}


def compare(bare_runs: list, node_runs: list, key: str) -> dict:
    """Both sides summarized, the ratio of their medians and the median of paired ratios
    (repeat i of the node over repeat i of the bare side, measured back to back)."""
    bare, node = summarize(bare_runs, key), summarize(node_runs, key)
    paired = [n / b for n, b in zip(node["per_repeat"], bare["per_repeat"]) if b]
    return {"bare": bare, "node": node,
            "ratio_node_over_bare": round(node["median"] / bare["median"], 3),
            "paired_ratio_median": round(median(paired), 3),
            "paired_ratios": [round(r, 3) for r in paired]}


def git_state() -> dict:
    """HEAD and the uncommitted changes of the code under test (the tree is shared)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=str(REPO), capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": git("status", "--short", "--untracked-files=no", "--",
                            "facerec_server", "facerec_msgs").splitlines()}


def load_average() -> list:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min): 3 repeats, 1 frame, 2 s throughput windows")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per side (5)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per unloaded repeat per side (3)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="throughput window per repeat per side, seconds (6)")
    parser.add_argument("--probe", type=int, default=None,
                        help="64x64 no-face frames per unloaded repeat per side (20)")
    parser.add_argument("--idle", type=float, default=None,
                        help="seconds of idle CPU measurement (no frames) before the repeats")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for one result before counting it lost")
    parser.add_argument("--output", default=None,
                        help="JSON path (bench/results/server.json; server_quick.json with "
                             "--quick)")
    args = parser.parse_args()
    defaults = (3, 1, 2.0, 10) if args.quick else (5, 3, 6.0, 20)
    args.repeats = args.repeats or defaults[0]
    args.frames = args.frames or defaults[1]
    args.seconds = args.seconds or defaults[2]
    args.probe = args.probe or defaults[3]
    args.idle = args.idle or (1.0 if args.quick else 3.0)
    args.output = args.output or str(REPO / "bench" / "results" / (
        "server_quick.json" if args.quick else "server.json"))

    started = time.perf_counter()
    load_before = load_average()
    code_state = git_state()
    face_images = load_images()
    images = dict(face_images, **{PROBE: probe_jpeg()})
    settings = ServerSettings.from_values({s.name: s.default for s in SPECS})
    pipeline = FacePipeline(settings.face, model_paths=resolve_model_paths(settings))
    pipeline.load()

    context = rclpy.Context()
    rclpy.init(context=context)
    graph = Receiver(context, "bench_server")
    results = Results()
    graph.node.create_subscription(FaceArray, f"{NODE}/faces", results, 50)
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_server_"))
    server = publisher = None
    try:
        server = start_node("facerec_server.server_node", log_dir, "server", "facerec_server", {
            "image_topics": [TOPIC], "gallery.path": str(log_dir / "gallery.db"),
            "max_frame_age": 0.0, **SERVER_PARAMS})
        wait_for_service(graph, Enroll, f"{NODE}/enroll", server)
        publisher = Publisher(log_dir, images)
        bench = Bench(args, images, pipeline, publisher, results, server.popen.pid, graph)
        startup = time.perf_counter() - started

        report = {}
        for name in images:  # warm-up (not counted): first frame in the worker, caches
            bare_ms, faces = bench.bare_once(name)
            bench.node_unloaded(name, 1)
            report[name] = {"faces": faces, "jpeg_bytes": len(images[name]),
                            "warmup_bare_ms": round(1000 * bare_ms, 1)}
        idle_before = bench.node_cpu()
        time.sleep(args.idle)
        idle = {k: round(v, 1) for k, v in bench.cpu_delta(
            idle_before, bench.node_cpu(), args.idle).items()}  # ms per second here
        runs = {name: {"bare_unloaded": [], "node_unloaded": [], "bare_throughput": [],
                       "node_throughput": []} for name in images}
        for repeat in range(args.repeats):
            order = ("bare", "node") if repeat % 2 == 0 else ("node", "bare")
            for side in order:
                if side == "bare":
                    runs[PROBE]["bare_unloaded"].append(bench.bare_unloaded(PROBE, args.probe))
                else:
                    runs[PROBE]["node_unloaded"].append(bench.node_unloaded(PROBE, args.probe))
            for name in face_images:
                # the camera node's default 15 fps, or 3x the bare rate on a faster machine
                publish_fps = min(60.0, max(15.0, 3000.0 / report[name]["warmup_bare_ms"]))
                for side in order:
                    if side == "bare":
                        runs[name]["bare_unloaded"].append(bench.bare_unloaded(name, args.frames))
                    else:
                        runs[name]["node_unloaded"].append(bench.node_unloaded(name, args.frames))
                for side in order:
                    if side == "bare":
                        runs[name]["bare_throughput"].append(
                            bench.bare_throughput(name, args.seconds))
                    else:
                        runs[name]["node_throughput"].append(
                            bench.node_throughput(name, publish_fps, args.seconds))
            print(f"repeat {repeat + 1}/{args.repeats} done "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        load_after = load_average()
    finally:
        if publisher is not None:
            publisher.close()
        server_code = server.stop() if server is not None else None
        graph.close()
        context.try_shutdown()
    if server_code == 0:
        shutil.rmtree(log_dir, ignore_errors=True)  # kept (with the server log) on failure
    else:
        print(f"server exited with {server_code}; its log: {log_dir / 'server.log'}")

    for name, run in runs.items():
        report[name]["unloaded"] = compare(run["bare_unloaded"], run["node_unloaded"],
                                           "latency_ms")
        u = report[name]["unloaded"]
        u["node_server_processing_ms"] = summarize(run["node_unloaded"], "server_processing_ms")
        u["node_minus_bare_ms"] = round(u["node"]["median"] - u["bare"]["median"], 1)
        u["outside_server_ms"] = round(
            u["node"]["median"] - u["node_server_processing_ms"]["median"], 1)
        u["server_minus_bare_ms"] = round(
            u["node_server_processing_ms"]["median"] - u["bare"]["median"], 1)
        if run["bare_throughput"]:
            report[name]["throughput"] = compare(run["bare_throughput"],
                                                 run["node_throughput"], "fps")
            t = report[name]["throughput"]
            t["node_latency_ms"] = summarize(run["node_throughput"], "latency_ms")
            t["node_published"] = [r["published"] for r in run["node_throughput"]]
            t["node_results"] = [r["results"] for r in run["node_throughput"]]
            t["publish_fps"] = round(run["node_throughput"][0]["publish_fps"], 2)
            t["server_main_cpu_ms_per_published_frame"] = summarize(
                run["node_throughput"], "server_main_cpu_ms_per_published_frame")
        for regime in ("unloaded", "throughput"):
            if not run[f"bare_{regime}"]:
                continue
            report[name][regime]["cpu_ms_per_frame"] = compare(
                run[f"bare_{regime}"], run[f"node_{regime}"], "cpu_ms")
            report[name][regime]["cpu_ms_per_frame"]["node_by_process"] = {
                proc: round(median([r["cpu_ms_by_process"][proc]
                                    for r in run[f"node_{regime}"]]), 1)
                for proc in ("camera", "server", "server_main", "server_workers", "receiver")}

    command = "python bench/bench_server.py" + (" --quick" if args.quick else "") + (
        "" if (args.repeats, args.frames, args.seconds, args.probe) == defaults else
        f" --repeats {args.repeats} --frames {args.frames} --seconds {args.seconds:g}"
        f" --probe {args.probe}")
    out = {
        "benchmark": "facerec_server node (camera process -> DDS -> server -> result) "
                     "vs bare FacePipeline.process(decode(jpeg))",
        "command": command,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "rmw": os.environ.get("RMW_IMPLEMENTATION") or _rmw(),
                    "git": code_state, "load_average_before": load_before,
                    "load_average_after": load_after,
                    "note": "2 cores shared with other jobs; compare ratios, not absolutes"},
        "definitions": {
            "latency": "node: result receipt time - frame header stamp (set just before "
                       "publish); bare: decode + process wall time",
            "results_per_s": "(n - 1) / (last completion - first completion) in the window",
            "cpu_ms_per_frame": "bare: CPU time of the thread running the pipeline / frames; "
                                "node: CPU time of the camera (publisher) process + the server "
                                "process and its worker process(es) / results (split into "
                                "server_main and server_workers); the receiver "
                                "(this bench process, polling every 50 ms) is listed apart "
                                "and not counted",
            "paired_ratios": "node repeat i / bare repeat i, measured back to back"},
        "settings": {"repeats": args.repeats, "frames_per_unloaded_repeat": args.frames,
                     "throughput_seconds": args.seconds, "jpeg_quality": JPEG_QUALITY,
                     "probe_frames_per_unloaded_repeat": args.probe,
                     "face": dataclasses.asdict(settings.face),
                     "server_workers": settings.pool_size(),
                     "server_params": {"max_frame_age": 0.0, **SERVER_PARAMS},
                     "publisher_qos": "sensor data (best effort, keep last 5)",
                     "server_qos": "best effort, keep last 1 (server default)"},
        "startup_s": round(startup, 1),
        "runtime_s": round(time.perf_counter() - started, 1),
        "idle_cpu_ms_per_s": idle,
        "lost_frames": bench.lost,
        "server_exit_code": server_code,
        "images": report,
    }
    path = pathlib.Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print_table(out)
    print(f"wrote {path}")
    return 0 if server_code == 0 else 1


def _rmw() -> str:
    try:
        from rclpy.utilities import get_rmw_implementation_identifier
        return get_rmw_implementation_identifier()
    except Exception:  # older rclpy
        return "default"


def print_table(out: dict) -> None:
    m = out["machine"]
    print(f"\n`{out['command']}` - {m['cpus']} CPUs, load average (1/5/15 min) before "
          f"{m['load_average_before']}, after {m['load_average_after']}; medians of "
          f"{out['settings']['repeats']} alternated repeats per side\n")
    print("| image | measure | bare | node | node / bare | paired ratios |")
    print("|---|---|---:|---:|---:|---|")
    for name, entry in out["images"].items():
        u, t = entry["unloaded"], entry.get("throughput")
        label = f"{name} ({entry['faces']} face{'s' if entry['faces'] != 1 else ''})"
        fine = "{:.1f}" if t is None else "{:.0f}"
        rows = ((label, "unloaded latency, ms", u, fine),
                ("", "unloaded CPU/frame, ms", u["cpu_ms_per_frame"], fine))
        if t is not None:
            rows += (("", "throughput, results/s", t, "{:.2f}"),
                     ("", "throughput CPU/result, ms", t["cpu_ms_per_frame"], "{:.0f}"))
        for first, what, c, fmt in rows:
            paired = ", ".join(f"{r:.2f}" for r in c["paired_ratios"])
            print(f"| {first} | {what} | {fmt.format(c['bare']['median'])} | "
                  f"{fmt.format(c['node']['median'])} | {c['ratio_node_over_bare']:.2f} | "
                  f"{paired} |")
    idle = out["idle_cpu_ms_per_s"]
    print(f"\nidle CPU (no frames), ms per s: camera {idle['camera']}, server (process + "
          f"worker) {idle['server']}, receiver (this process) {idle['receiver']}")
    print("\nwhere the node's time goes (unloaded medians, ms):")
    for name, entry in out["images"].items():
        u, t = entry["unloaded"], entry.get("throughput")
        by = u["cpu_ms_per_frame"]["node_by_process"]
        print(f"  {name}: end-to-end {u['node']['median']:.1f} = server processing_time "
              f"{u['node_server_processing_ms']['median']:.1f} (bare "
              f"{u['bare']['median']:.1f}; difference {u['server_minus_bare_ms']:+.1f}: "
              f"process hand-off + matching) + {u['outside_server_ms']:.1f} outside it "
              f"(publish, DDS both ways, executor, latest-frame hand-off); CPU/frame by "
              f"process: camera {by['camera']}, server {by['server']} (main "
              f"{by['server_main']}, worker {by['server_workers']}), receiver {by['receiver']}")
        if t is not None:
            print(f"  {name}: throughput regime: published {t['publish_fps']} fps, node "
                  f"latency {t['node_latency_ms']['median']:.0f} ms, results "
                  f"{t['node_results']} of {t['node_published']} published; server main "
                  f"process CPU per published frame "
                  f"{t['server_main_cpu_ms_per_published_frame']['median']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
