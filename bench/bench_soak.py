#!/usr/bin/env python3
"""Soak: server and bridge for a long run with two cameras and two bridge clients (issue 21).

Everything is real and runs on this machine (loopback DDS, a random ROS_DOMAIN_ID, real
TLS): the installed console scripts ``facerec_server`` (two input topics), ``facerec_bridge``
(token auth, a throw-away CA), two ``facerec_camera`` nodes publishing a folder of registry
face images (skimage's astronaut, OpenCV's messi5 and mirrors of them) in a loop, and two
``facerec-ws-camera`` clients sending the same folder to the bridge. During the run:

* every ``--enroll-every`` seconds the bench enrolls "soak" through the server's
  ``~/enroll`` service (the astronaut photo), and forgets it the next time, so the gallery
  changes all run long and stays bounded;
* every ``--param-every`` seconds it changes a parameter with the real ``ros2 param set``
  (face.threshold of the server and of the bridge, alternately 0.55 and 0.6; the cameras'
  jpeg_quality 80/70);
* every ``--interval`` seconds (default 10) it samples, for each of the six processes with
  its child processes (face workers), the resident memory (RSS, MB) and the open file
  descriptors, and counts the FaceArray results of the server since the last sample.

The summary compares RSS at 5 minutes with RSS at the end, per process tree and in total
(the acceptance of issue 21: within 10 %), and the fd counts.

    python bench/bench_soak.py [--minutes 30] [--interval 10] [--fps 1.0]
                               [--enroll-every 60] [--param-every 45]
                               [--output bench/results/soak.json]

Writes ``bench/results/soak.json`` (every sample, the summary, the command).
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

SCRIPTS = REPO / "install" / "facerec" / "lib" / "facerec"
TOKENS = {"client1": "soak-client1-token-0123456789", "client2": "soak-client2-token-9876543210"}
MESSI = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"


def _script(name: str) -> str:
    path = SCRIPTS / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} is not installed: run `make setup` first")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _faces_folder(folder: pathlib.Path) -> list:
    """Registry face images: skimage's astronaut, OpenCV's messi5 (when opencv-doc is
    installed) and their mirror images."""
    from skimage import data
    folder.mkdir()
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    images = {"astronaut": astronaut}
    if os.path.exists(MESSI):
        images["messi"] = cv2.imread(MESSI)
    for name, image in list(images.items()):
        images[f"{name}_mirror"] = cv2.flip(image, 1)
    for name, image in images.items():
        cv2.imwrite(str(folder / f"{name}.jpg"), image)
    return sorted(images)


class Run:
    def __init__(self, args, tmp: pathlib.Path):
        self.args, self.tmp = args, tmp
        self.env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain),
                        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
        self.procs = {}  # name -> Popen

    def start(self, name: str, command: list) -> None:
        log = open(self.tmp / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(command, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=str(self.tmp),
                                            start_new_session=True)
        log.close()

    def params_file(self, name: str, node: str, values: dict) -> str:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({node: {"ros__parameters": values}}))
        return str(path)

    def stop_all(self) -> dict:
        codes = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def log_tail(self, name: str, chars: int = 1500) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-chars:]


def _tree(pid: int):
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _sample(procs: dict) -> dict:
    rss, fds = {}, {}
    for name, proc in procs.items():
        total_rss, total_fds = 0, 0
        for member in _tree(proc.pid):
            try:
                total_rss += member.memory_info().rss
                total_fds += member.num_fds()
            except psutil.NoSuchProcess:
                pass
        rss[name] = round(total_rss / 2 ** 20, 1)
        fds[name] = total_fds
    rss["total"] = round(sum(rss.values()), 1)
    fds["total"] = sum(fds.values())
    return {"rss_mb": rss, "fds": fds}


def _ros2_param_set(env: dict, node: str, name: str, value: str) -> bool:
    try:
        result = subprocess.run(["ros2", "param", "set", "--no-daemon", "--timeout", "20",
                                 node, name, value], env=env, capture_output=True, text=True,
                                timeout=90)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and "Set parameter successful" in result.stdout


def soak(args) -> dict:
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage

    from facerec_msgs.msg import FaceArray
    from facerec_msgs.srv import Enroll, Forget
    from facerec_server.bridge.certs import make_certs

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="facerec-soak-"))
    run = Run(args, tmp)
    folder = tmp / "faces"
    images = _faces_folder(folder)
    certs = make_certs(str(tmp / "certs"), ["localhost", "127.0.0.1"])
    tokens = tmp / "tokens"
    tokens.write_text("".join(f"{name}:{token}\n" for name, token in TOKENS.items()))
    gallery = str(tmp / "gallery.db")
    port = _free_port()
    topics = ["camera1/image/compressed", "camera2/image/compressed"]
    run.start("server", [_script("facerec_server"), "--ros-args", "--params-file",
                         run.params_file("server", "facerec_server", {
                             "gallery.path": gallery, "image_topics": topics})])
    run.start("bridge", [_script("facerec_bridge"), "--ros-args", "--params-file",
                         run.params_file("bridge", "facerec_bridge", {
                             "gallery.path": gallery, "bridge.host": "127.0.0.1",
                             "bridge.port": port, "bridge.certfile": certs["server"],
                             "bridge.keyfile": certs["server_key"],
                             "bridge.tokens_file": str(tokens)})])
    for number, topic in enumerate(topics, 1):
        run.start(f"camera{number}", [
            _script("facerec_camera"), "--ros-args", "-r", f"__node:=camera{number}",
            "-p", f"source:={folder}", "-p", f"topic:={topic}", "-p", f"fps:={args.fps}",
            "-p", "loop:=true"])
    time.sleep(5.0)  # the bridge's port is open once its node has started
    for name, token in TOKENS.items():
        token_file = tmp / f"{name}.token"
        token_file.write_text(token + "\n")
        run.start(name, [_script("facerec-ws-camera"), "--url", f"wss://127.0.0.1:{port}",
                         "--name", name, "--source", str(folder), "--loop",
                         "--fps", str(args.fps), "--token-file", str(token_file),
                         "--cafile", certs["ca"]])

    os.environ.update(run.env)
    rclpy.init()
    node = Node("facerec_soak")
    results = {"count": 0}
    node.create_subscription(FaceArray, "/facerec_server/faces",
                             lambda msg: results.__setitem__("count", results["count"] + 1),
                             10)
    enroll = node.create_client(Enroll, "/facerec_server/enroll")
    forget = node.create_client(Forget, "/facerec_server/forget")
    astronaut = (folder / "astronaut.jpg").read_bytes()

    def call(client, request, timeout=120.0):
        if not client.wait_for_service(timeout_sec=60.0):
            return None
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        return future.result()

    samples, events = [], []
    started = time.monotonic()
    end = started + args.minutes * 60.0
    next_sample, next_enroll, next_param = started, started + 30.0, started + 20.0
    enrolled, param_round = False, 0
    counted = 0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                dead = {n: p.returncode for n, p in run.procs.items() if p.poll() is not None}
                if dead:
                    events.append({"t": round(now - started, 1), "what": "process ended",
                                   "codes": dead, "logs": {n: run.log_tail(n) for n in dead}})
                    print(f"stopped: processes ended {dead}", flush=True)
                    break
                sample = {"t": round(now - started, 1), **_sample(run.procs),
                          "faces_results": results["count"] - counted}
                counted = results["count"]
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                next_sample += args.interval
            if now >= next_enroll:
                if not enrolled:
                    response = call(enroll, Enroll.Request(name="soak", images=[
                        CompressedImage(format="jpeg", data=astronaut)]))
                    ok = response is not None and response.success
                    enrolled = ok
                else:
                    response = call(forget, Forget.Request(name="soak"))
                    ok = response is not None
                    enrolled = not ok
                events.append({"t": round(now - started, 1),
                               "what": "enroll" if enrolled else "forget", "ok": ok})
                next_enroll += args.enroll_every
            if now >= next_param:
                value = ("0.55", "0.6")[param_round % 2]
                target = (("/facerec_server", "face.threshold", value),
                          ("/facerec_bridge", "face.threshold", value),
                          ("/camera1", "jpeg_quality", ("70", "80")[param_round % 2]),
                          ("/camera2", "jpeg_quality", ("70", "80")[param_round % 2])
                          )[param_round % 4]
                ok = _ros2_param_set(run.env, *target)
                events.append({"t": round(now - started, 1), "what": "param set",
                               "node": target[0], "name": target[1], "value": target[2],
                               "ok": ok})
                param_round += 1
                next_param += args.param_every
            rclpy.spin_once(node, timeout_sec=0.2)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        codes = run.stop_all()
    logs = {name: run.log_tail(name, 600) for name in run.procs}
    shutil.rmtree(tmp, ignore_errors=True)
    return {"samples": samples, "events": events, "exit_codes": codes, "images": images,
            "log_tails": logs, "summary": _summary(samples, events)}


def _at(samples, seconds):
    return min(samples, key=lambda s: abs(s["t"] - seconds)) if samples else None


def _summary(samples, events) -> dict:
    if not samples:
        return {}
    five, last = _at(samples, 300.0), samples[-1]
    growth = {name: round((last["rss_mb"][name] - five["rss_mb"][name])
                          / five["rss_mb"][name] * 100.0, 1) if five["rss_mb"][name] else None
              for name in five["rss_mb"]}
    return {
        "minutes": round(last["t"] / 60.0, 1),
        "rss_mb_at_5_min": five["rss_mb"], "rss_mb_at_end": last["rss_mb"],
        "rss_growth_percent_5_min_to_end": growth,
        "rss_mb_max": {name: max(s["rss_mb"][name] for s in samples) for name in last["rss_mb"]},
        "fds_at_5_min": five["fds"], "fds_at_end": last["fds"],
        "fds_max": {name: max(s["fds"][name] for s in samples) for name in last["fds"]},
        "faces_results": sum(s["faces_results"] for s in samples),
        "enrollments": sum(1 for e in events if e["what"] == "enroll"),
        "forgets": sum(1 for e in events if e["what"] == "forget"),
        "enroll_or_forget_failed": sum(1 for e in events if e["what"] in ("enroll", "forget")
                                       and not e["ok"]),
        "param_sets": sum(1 for e in events if e["what"] == "param set"),
        "param_sets_failed": sum(1 for e in events if e["what"] == "param set"
                                 and not e["ok"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--fps", type=float, default=1.0, help="frames/s of each camera")
    parser.add_argument("--enroll-every", type=float, default=60.0)
    parser.add_argument("--param-every", type=float, default=45.0)
    parser.add_argument("--domain", type=int, default=random.randint(150, 220))
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    result = soak(args)
    result.update({
        "command": "python bench/bench_soak.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "output"}})
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=1)
    print(json.dumps(result["summary"], indent=1))
    print(f"exit codes: {result['exit_codes']}; wrote {args.output}")
    return 0 if all(code == 0 for code in result["exit_codes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
