"""A robot and a workstation on two hosts, joined by a slow, lossy link (10 Mbit/s, 1 % loss each
way): network namespaces, a veth pair, tc tbf and nftables (facerec_server.tools.twohosts).

Started the way the README's "Two machines" section tells a user: ``ros2 launch facerec
camera.launch.py`` on the robot, ``ros2 launch facerec server.launch.py`` on the workstation,
the same ROS_DOMAIN_ID, DDS discovery on the LAN (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET), the
launch files' transport settings. The enrolled astronaut is recognised across the link; the link
goes down for 10 s and results come back by themselves with no backlog; the server restarts
while the camera runs; then the same with the websocket bridge and facerec-ws-camera on the
robot. Needs root, ip, tc and nft (CI runs as root); skips naming what is missing.
"""
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest
import yaml

from facerec_server.tools import twohosts
from facerec_server.tools.registry_faces import astronaut_path
from facerec_server.tools.twohosts import ROBOT, WORKSTATION, TwoHosts, read_records
from rosutil import REPO, child_env

NAME = "eileen"
OUTAGE = 10.0
pytestmark = pytest.mark.skipif(twohosts.missing() is not None,
                                reason=f"two hosts cannot be simulated: {twohosts.missing()}")


class Host:
    """Processes on one side, each in its own process group, output in a log file."""

    def __init__(self, hosts: TwoHosts, side: str, folder: pathlib.Path):
        self.hosts, self.side, self.folder = hosts, side, folder
        home = folder / side
        home.mkdir(exist_ok=True)
        self.env = twohosts.host_env(child_env(), str(home))
        self.procs = {}

    def start(self, name: str, args, **env) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        proc = self.hosts.popen(self.side, args, env=dict(self.env, **env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 20.0) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the launch left behind
        except ProcessLookupError:
            pass
        return proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=10.0)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-4000:]


def _launch(package_file: str, **arguments):
    """``ros2 launch facerec <file> name:=value ...``: what the README tells users."""
    return (["ros2", "launch", "facerec", package_file]
            + [f"{key}:={value}" for key, value in arguments.items()])


@pytest.fixture
def link(tmp_path):
    if shutil.which("ros2") is None:
        pytest.skip("the ROS 2 command line (ros2 launch) is not installed: scripts/setup.sh "
                    "installs it from ros-tools-src (FACEREC_ROS_TOOLS_SRC)")
    tag = f"tr{os.getpid() % 100000}"
    with TwoHosts(tag, rate_mbit=10, loss_permille=10) as hosts:
        robot, workstation = Host(hosts, ROBOT, tmp_path), Host(hosts, WORKSTATION, tmp_path)
        try:
            yield hosts, robot, workstation, tmp_path
        finally:
            robot.stop_all()
            workstation.stop_all()


def _params(tmp_path, name, node, values):
    source = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    key = next(iter(source))
    source[key]["ros__parameters"].update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(source))
    return path


def _wait(predicate, timeout, what, *logs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout:g} s\n" + "\n----\n".join(logs))


def _recognised(records, since):
    return [r for r in records if r["kind"] == "faces" and r["t"] >= since and NAME in r["names"]]


def test_camera_and_server_on_two_hosts_over_a_lossy_link(link):
    hosts, robot, workstation, tmp = link
    video = twohosts.face_video(str(tmp / "face.avi"), 640, 480, frames=30)
    server_yaml = _params(tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "gallery.db"), "workers": 1})
    camera_yaml = _params(tmp, "camera", "facerec_camera", {"fps": 10.0, "loop": True})
    records_path = str(tmp / "listener.jsonl")

    def records():
        return read_records(records_path)

    workstation.start("server", _launch("server.launch.py", params_file=server_yaml))
    workstation.start("listener", [sys.executable, "-c", twohosts.LISTENER, records_path,
                                   "/facerec_server", NAME, str(astronaut_path())])
    robot.start("camera", _launch("camera.launch.py", params_file=camera_yaml, source=video))

    def logs():
        return [workstation.log("server"), robot.log("camera"), workstation.log("listener")]

    _wait(lambda: any(r["kind"] == "enroll" and r["success"] for r in records()), 120,
          "enrollment through ~/enroll", *logs())
    start = time.time()
    _wait(lambda: len(_recognised(records(), start)) >= 10, 60,
          "10 frames recognised across the link", *logs())

    # --- the link goes down for 10 s: the server says so; results resume without backlog
    hosts.set_link(False)
    down = time.time()
    time.sleep(OUTAGE)
    hosts.set_link(True)
    up = time.time()
    silent = [r for r in records() if r["kind"] == "diag" and r["t"] > down and r["level"] == 1
              and r["name"].endswith("camera/image/compressed") and "no frame for" in r["message"]]
    assert silent, "the server's diagnostics did not report the silent input"
    first = _wait(lambda: _recognised(records(), up), 30, "results after the link came back",
                  *logs())[0]
    after = _wait(lambda: (lambda r: r if len(r) >= 5 else None)(_recognised(records(), up)),
                  30, "5 results after the link came back", *logs())
    print(f"results resumed {first['t'] - up:.1f} s after link-up; latencies "
          f"{[round(r['latency'], 2) for r in after[:5]]}")
    assert all(r["stamp"] > down for r in after[:5])  # frames from before the outage: none
    assert statistics.median(r["latency"] for r in after[:5]) < 1.5  # no backlog

    # --- the server restarts while the camera runs; this time with the websocket bridge too
    assert workstation.stop("server") == 0, workstation.log("server")
    certs = tmp / "certs"
    subprocess.run([sys.executable, "-m", "facerec_server.bridge.certs", "--out-dir",
                    str(certs), "--host", twohosts.ADDRESSES[WORKSTATION]],
                   check=True, env=child_env(), capture_output=True)
    (certs / "tokens").write_text("robot:two-hosts-token-0123456789\n")
    bridge_yaml = _params(tmp, "bridge", "facerec_bridge", {
        "bridge.certfile": str(certs / "server.pem"), "bridge.keyfile": str(certs / "server.key"),
        "bridge.tokens_file": str(certs / "tokens"), "gallery.path": str(tmp / "gallery.db"),
        "workers": 1})
    restarted = time.time()
    workstation.start("server", _launch("server.launch.py", params_file=server_yaml,
                                        use_bridge="true", bridge_params_file=bridge_yaml))
    _wait(lambda: len(_recognised(records(), restarted)) >= 3, 90,
          "results after the server restarted", *logs())
    assert robot.procs["camera"].poll() is None, robot.log("camera")

    # --- the websocket bridge: facerec-ws-camera on the robot
    robot.stop("camera")
    token = tmp / "token"
    token.write_text("two-hosts-token-0123456789\n")
    robot.start("ws", ["facerec-ws-camera", "--url",
                       f"wss://{twohosts.ADDRESSES[WORKSTATION]}:50000", "--name", "robot",
                       "--token-file", str(token), "--cafile", str(certs / "ca.pem"),
                       "--source", video, "--loop", "--fps", "10"])

    def ws_results(since_line=0):
        lines = (tmp / "ws.log").read_text(errors="replace").splitlines()[since_line:]
        return [line for line in lines if line.startswith("robot faces:") and NAME in line]

    def logs_ws():
        return [workstation.log("server"), robot.log("ws")]

    _wait(lambda: len(ws_results()) >= 5, 90, "5 bridge results", *logs_ws())
    hosts.set_link(False)
    time.sleep(OUTAGE)
    mark = len((tmp / "ws.log").read_text(errors="replace").splitlines())
    hosts.set_link(True)
    after = _wait(lambda: (lambda r: r if len(r) >= 8 else None)(ws_results(mark)), 60,
                  "8 bridge results after the link came back", *logs_ws())
    # the first replies can be for frames sent into TCP during the outage (given up on, so
    # printed without a latency); after them the newest frames again, without backlog
    latencies = [int(line.rsplit("[", 1)[1].split()[0]) / 1000 for line in after[4:8]
                 if line.endswith("ms]")]
    print(f"bridge latencies after the outage {latencies}")
    assert latencies and statistics.median(latencies) < 1.5
    # the bridge restarts while the client runs: it reconnects by itself
    assert workstation.stop("server") == 0, workstation.log("server")
    mark = len((tmp / "ws.log").read_text(errors="replace").splitlines())
    workstation.start("server", _launch("server.launch.py", params_file=server_yaml,
                                        use_bridge="true", bridge_params_file=bridge_yaml))
    _wait(lambda: len(ws_results(mark)) >= 3, 90, "bridge results after its restart",
          *logs_ws())
    assert robot.procs["ws"].poll() is None, robot.log("ws")
