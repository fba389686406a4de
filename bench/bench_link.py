#!/usr/bin/env python3
"""DDS and the websocket bridge over a slow, lossy link, side by side (needs root, ip, tc, nft).

Two simulated hosts (facerec_server.tools.twohosts: network namespaces, a veth pair, tc tbf at
``--rates`` Mbit/s, 1 % loss each way with nftables). On the workstation: facerec_server and
facerec_bridge (the enrolled astronaut in one gallery) and a listener for ~/faces and
/diagnostics; on the robot, in turn: facerec_camera (DDS) and facerec-ws-camera (bridge), each
streaming the same video (the astronaut moving; ``--sizes``; JPEG quality 80) at 10 fps for
``--seconds`` after its first result. Runs alternate DDS and bridge per size.

Per run: frames captured and sent by the robot side, received by the server, recognised
(results naming the astronaut), median and p95 latency (DDS: result time - capture stamp, one
clock; bridge: reply time - send time, as facerec-ws-camera measures it), the camera's capture
rate, and the share of the link used (bytes through the robot's tbf / rate x time).

DDS variants (``--variants``): ``default`` is what the launch files give (reliable, camera
through config/fastdds_link.xml with an 8 Mbit/s flow controller, server config/fastdds.xml);
``reliable-noflow`` (reliable, config/fastdds.xml on both: no flow controller),
``best_effort`` (best effort, config/fastdds.xml) and ``fastdds-defaults`` (best effort, no
profile: the project before issue 13) are the alternatives the defaults were chosen against.

    sudo python bench/bench_link.py [--rates 10 50] [--sizes 640x480 1280x720 1920x1080]
        [--seconds 30] [--variants default bridge]

Writes ``bench/results/link.json`` (or ``--output``).
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facerec_camera.transport import DEFAULT_MAX_BANDWIDTH, profile_env  # noqa: E402
from facerec_server.tools import twohosts  # noqa: E402
from facerec_server.tools.registry_faces import astronaut_path  # noqa: E402
from facerec_server.tools.twohosts import ROBOT, WORKSTATION, TwoHosts  # noqa: E402

NAME = "eileen"
FPS = 10.0
VARIANTS = {  # name: (reliability, camera profile, server profile)
    "default": ("reliable", "link", "general"),
    "reliable-noflow": ("reliable", "general", "general"),
    "best_effort": ("best_effort", "general", "general"),
    "fastdds-defaults": ("best_effort", None, None),
}


class Side:
    def __init__(self, hosts, side, folder, base_env):
        self.hosts, self.side, self.folder = hosts, side, folder
        home = folder / side
        home.mkdir(exist_ok=True)
        self.env = twohosts.host_env(base_env, str(home))
        self.procs = {}

    def start(self, name, args, env):
        log = open(self.folder / f"{name}.log", "wb")
        self.procs[name] = self.hosts.popen(self.side, args, env=dict(self.env, **env),
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=str(ROOT))

    def stop(self, name):
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def _params(folder, name, values):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({name: {"ros__parameters": values}}))
    return path


def _profile(kind):
    if kind is None:
        return {}
    if kind == "link":
        return profile_env(str(ROOT), DEFAULT_MAX_BANDWIDTH, environ={})
    return profile_env(str(ROOT), environ={})


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


class Bench:
    def __init__(self, args, hosts, folder):
        self.args, self.hosts, self.folder = args, hosts, folder
        base = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.robot = Side(hosts, ROBOT, folder, base)
        self.workstation = Side(hosts, WORKSTATION, folder, base)
        self.records = str(folder / "listener.jsonl")
        self.server_variant = None
        self.gallery = folder / "gallery.db"
        self._bridge_setup()

    def _bridge_setup(self):
        certs = self.folder / "certs"
        subprocess.run([sys.executable, "-m", "facerec_server.bridge.certs", "--out-dir",
                        str(certs), "--host", twohosts.ADDRESSES[WORKSTATION]], check=True,
                       capture_output=True, env=dict(os.environ))
        (certs / "tokens").write_text("robot:bench-token-0123456789\n")
        (self.folder / "token").write_text("bench-token-0123456789\n")
        self.certs = certs

    def records_since(self, since):
        return [r for r in twohosts.read_records(self.records) if r["t"] >= since]

    def ensure_server(self, variant):
        """facerec_server (+ bridge, listener) with the variant's reliability and profile."""
        reliability, _, profile = VARIANTS[variant]
        key = (reliability, profile)
        if self.server_variant == key:
            return
        self.workstation.stop_all()
        env = _profile(profile)
        server = _params(self.folder, "facerec_server", {
            "gallery.path": str(self.gallery), "workers": 1, "image_reliability": reliability})
        bridge = _params(self.folder, "facerec_bridge", {
            "gallery.path": str(self.gallery), "workers": 1,
            "bridge.certfile": str(self.certs / "server.pem"),
            "bridge.keyfile": str(self.certs / "server.key"),
            "bridge.tokens_file": str(self.certs / "tokens")})
        self.workstation.start("server", ["facerec_server", "--ros-args", "--params-file",
                                          str(server)], env)
        self.workstation.start("bridge", ["facerec_bridge", "--ros-args", "--params-file",
                                          str(bridge)], env)
        enroll = NAME if not self.gallery.exists() else ""
        started = time.time()
        self.workstation.start("listener", [sys.executable, "-c", twohosts.LISTENER,
                                            self.records, "/facerec_server", enroll,
                                            str(astronaut_path())], env)
        if enroll:
            self._wait(lambda: any(r["kind"] == "enroll" and r["success"]
                                   for r in self.records_since(started)), 120, "enrollment")
        self.server_variant = key

    @staticmethod
    def _wait(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        print(f"  ({what}: not within {timeout} s)", flush=True)
        return False

    def run_dds(self, variant, video, rate):
        reliability, camera_profile, _ = VARIANTS[variant]
        self.ensure_server(variant)
        params = _params(self.folder, "facerec_camera", {
            "source": video, "fps": FPS, "loop": True, "jpeg_quality": 80,
            "reliability": reliability})
        started = time.time()
        self.robot.start("camera", ["facerec_camera", "--ros-args", "--params-file",
                                    str(params)], _profile(camera_profile))
        if not self._wait(lambda: any(r["kind"] == "faces" for r in self.records_since(started)),
                          60, "first DDS result"):
            self.robot.stop("camera")
            return {"error": "no result within 60 s"}
        t0, bytes0 = time.time(), self.hosts.sent_bytes(ROBOT)
        diag0 = self._diag_values(t0 - 2.0, started)
        time.sleep(self.args.seconds)
        t1, bytes1 = time.time(), self.hosts.sent_bytes(ROBOT)
        diag1 = self._diag_values(t1 - 2.0, started)
        self.robot.stop("camera")
        results = [r for r in self.records_since(t0) if r["kind"] == "faces" and r["t"] <= t1]
        captured = self._delta(diag0, diag1, "camera", "frames_captured")
        return self._summary(t1 - t0, bytes1 - bytes0, rate, results,
                             [r["latency"] for r in results],
                             sent=self._delta(diag0, diag1, "camera", "frames_sent"),
                             received=self._delta(diag0, diag1, "server", "received"),
                             captured=captured)

    def _diag_values(self, since, started):
        """Newest camera and server input statuses at about ``since`` (of this run's camera,
        started at ``started``)."""
        out = {}
        for r in twohosts.read_records(self.records):
            if r["kind"] != "diag" or not r["name"].endswith("camera/image/compressed") \
                    or r["t"] < started:
                continue
            who = "camera" if "facerec_camera" in r["name"] else "server"
            if r["t"] <= since + 2.0:
                out[who] = r["values"]
        return out

    @staticmethod
    def _delta(before, after, who, key):
        try:
            return int(after[who][key]) - int(before.get(who, {}).get(key, 0))
        except (KeyError, ValueError):
            return None

    def run_bridge(self, video, rate):
        self.ensure_server(self.args.bridge_server)
        log = self.folder / "ws.log"
        self.robot.start("ws", ["facerec-ws-camera", "--url",
                                f"wss://{twohosts.ADDRESSES[WORKSTATION]}:50000",
                                "--name", "robot", "--token-file", str(self.folder / "token"),
                                "--cafile", str(self.certs / "ca.pem"), "--source", video,
                                "--loop", "--fps", str(FPS), "--quality", "80"], {})

        def lines():
            return [line for line in log.read_text(errors="replace").splitlines()
                    if line.startswith("robot faces:")]
        if not self._wait(lambda: lines(), 60, "first bridge result"):
            self.robot.stop("ws")
            return {"error": "no result within 60 s"}
        mark, t0, bytes0 = len(lines()), time.time(), self.hosts.sent_bytes(ROBOT)
        sent0 = self._bridge_frames(t0 - 2.0)
        time.sleep(self.args.seconds)
        t1, bytes1 = time.time(), self.hosts.sent_bytes(ROBOT)
        sent1 = self._bridge_frames(t1 - 2.0)
        window = lines()[mark:]
        self.robot.stop("ws")
        latencies = [int(line.rsplit("[", 1)[1].split()[0]) / 1000 for line in window
                     if line.endswith("ms]")]
        results = [{"names": [NAME] if NAME in line else []} for line in window]
        sent = None if sent0 is None or sent1 is None else sent1 - sent0
        return self._summary(t1 - t0, bytes1 - bytes0, rate, results, latencies, sent=sent,
                             received=sent, captured=sent)

    def _bridge_frames(self, since):
        value = None
        for r in twohosts.read_records(self.records):
            if r["kind"] == "diag" and r["name"].endswith(": bridge") \
                    and r["t"] <= since + 2.0:
                value = r["values"].get("frames_received", value)
        return None if value is None else int(value)

    @staticmethod
    def _summary(seconds, link_bytes, rate, results, latencies, sent, received, captured):
        recognised = sum(1 for r in results if NAME in r["names"])
        return {
            "seconds": round(seconds, 1), "frames_captured": captured, "frames_sent": sent,
            "frames_received": received, "results": len(results), "recognised": recognised,
            "recognised_per_s": round(recognised / seconds, 2),
            "capture_fps": None if captured is None else round(captured / seconds, 2),
            "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
            "latency_p95_s": round(_percentile(latencies, 0.95), 3) if latencies else None,
            "link_share": round(link_bytes * 8 / (rate * 1e6 * seconds), 3),
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--variants", nargs="+", default=["default", "bridge"],
                        choices=list(VARIANTS) + ["bridge"])
    parser.add_argument("--bridge-server", default="default", choices=list(VARIANTS),
                        help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "link.json"))
    parser.add_argument("--workdir", help="keep the node logs here (default: a temporary "
                                          "folder, removed at the end)")
    args = parser.parse_args(argv)
    reason = twohosts.missing()
    if reason:
        print(f"bench_link: {reason}", file=sys.stderr)
        return 2
    if shutil.which("facerec_server") is None:
        print("bench_link: facerec_server not on PATH: source scripts/env.sh", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    started = time.time()
    report = {"command": "python bench/bench_link.py " + " ".join(argv or sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.node()} {os.cpu_count()} cores, Python "
                         f"{platform.python_version()}",
              "load_before": os.getloadavg(), "loss_each_way": 0.01, "fps": FPS,
              "jpeg_quality": 80, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        folder = pathlib.Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for rate in args.rates:
            with TwoHosts(f"bl{os.getpid() % 100000}", rate_mbit=rate, loss_permille=10) as hosts:
                bench = Bench(args, hosts, folder)
                try:
                    for size in args.sizes:
                        width, height = (int(v) for v in size.split("x"))
                        video = twohosts.face_video(str(folder / f"{size}.avi"), width, height)
                        for variant in args.variants:
                            print(f"{rate:g} Mbit/s {size} {variant} ...", flush=True)
                            if variant == "bridge":
                                result = bench.run_bridge(video, rate)
                            else:
                                result = bench.run_dds(variant, video, rate)
                            result.update(rate_mbit=rate, size=size, variant=variant)
                            print("  " + json.dumps(result), flush=True)
                            report["runs"].append(result)
                finally:
                    bench.robot.stop_all()
                    bench.workstation.stop_all()
    report["load_after"] = os.getloadavg()
    report["runtime_s"] = round(time.time() - started)
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(table(report["runs"]))
    return 0


def table(runs):
    rows = ["| link | frames | side | sent | received | recognised (/s) | median / p95 latency "
            "| capture fps | link used |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: "
            "| ---: |"]
    for r in runs:
        if "error" in r:
            rows.append(f"| {r['rate_mbit']:g} Mbit/s | {r['size']} | {r['variant']} | "
                        f"{r['error']} | | | | | |")
            continue
        latency = (f"{r['latency_median_s']:.2f} / {r['latency_p95_s']:.2f} s"
                   if r["latency_median_s"] is not None else "-")
        rows.append(f"| {r['rate_mbit']:g} Mbit/s | {r['size']} | {r['variant']} | "
                    f"{r['frames_sent']} | {r['frames_received']} | {r['recognised']} "
                    f"({r['recognised_per_s']}) | {latency} | {r['capture_fps']} | "
                    f"{100 * r['link_share']:.0f} % |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
