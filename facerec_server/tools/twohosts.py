"""Two simulated hosts on this machine: a "robot" and a "workstation" joined by a slow, lossy link.

Used by the two-host test and ``bench/bench_link.py`` (needs root, ``ip``, ``tc`` and ``nft``)::

    with TwoHosts(tag="mytest", rate_mbit=10, loss_permille=10) as hosts:
        camera = hosts.popen("robot", [...], env)       # a process on the robot
        hosts.set_link(False); ...; hosts.set_link(True)

Layout: two network namespaces ``<tag>-r`` and ``<tag>-w`` (unique per run: the tag should hold
the caller's name and pid), a veth pair with 192.0.2.1/24 (robot) and 192.0.2.2/24 (workstation),
MTU 1500, and a default route to the other side (so multicast discovery finds its way out as
on a LAN); each side has its own /dev/shm and /etc/machine-id, as two machines have. Each
side's egress is limited with ``tc tbf`` (``rate_mbit``, a queue of
``queue_ms`` at that rate) and each side's ingress drops ``loss_permille`` / 1000 of the
packets at random with nftables (``numgen random mod 1000 < N drop`` in a netdev ingress
chain), so the loss applies each way. ``close()`` deletes both namespaces (the veth pair and
everything in them go with them) and is safe to call twice.
``LISTENER`` is a small rclpy program for the workstation side: it enrolls a photo through the
server's ``~/enroll`` and writes every FaceArray and /diagnostics status as a JSON line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from typing import Dict, List, Optional

ROBOT, WORKSTATION = "robot", "workstation"
ADDRESSES = {ROBOT: "192.0.2.1", WORKSTATION: "192.0.2.2"}
TOOLS = ("ip", "tc", "nft")


class TwoHostsUnavailable(RuntimeError):
    """Namespaces, tc or nftables cannot be used here; the message names what is missing."""


def missing() -> Optional[str]:
    """Why two hosts cannot be simulated here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, as CI does)"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return (f"{', '.join(absent)} not found (Debian packages iproute2 and nftables; "
                "scripts/setup.sh installs nftables when run as root)")
    return None


def _run(args: List[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        raise TwoHostsUnavailable(f"`{' '.join(args)}` failed: {result.stderr.strip()}")
    return result


class TwoHosts:
    def __init__(self, tag: str, rate_mbit: float = 10.0, loss_permille: int = 10,
                 queue_ms: float = 100.0):
        reason = missing()
        if reason:
            raise TwoHostsUnavailable(reason)
        self.tag = tag
        self.rate_mbit = float(rate_mbit)
        self.loss_permille = int(loss_permille)
        self.queue_ms = float(queue_ms)
        self.ns = {ROBOT: f"{tag}-r", WORKSTATION: f"{tag}-w"}
        short = "".join(c for c in tag if c.isalnum())[-10:]
        self.dev = {ROBOT: f"{short}r", WORKSTATION: f"{short}w"}
        #: each host's own /dev/shm and /etc/machine-id (bind-mounted in its processes): with
        #: one machine's, Fast DDS takes the other side for the same host and talks to it
        #: through shared memory, which the other side cannot see (discovery then fails)
        self.home = {side: f"/run/facerec-{name}" for side, name in self.ns.items()}
        self._up = False

    # --- set-up ---------------------------------------------------------------------------
    def __enter__(self) -> "TwoHosts":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            for side in (ROBOT, WORKSTATION):
                _run(["ip", "netns", "add", self.ns[side]])
            self._up = True
            _run(["ip", "link", "add", self.dev[ROBOT], "netns", self.ns[ROBOT], "type", "veth",
                  "peer", "name", self.dev[WORKSTATION], "netns", self.ns[WORKSTATION]])
            for side in (ROBOT, WORKSTATION):
                ns, dev = self.ns[side], self.dev[side]
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{ADDRESSES[side]}/24", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up"])
                peer = ADDRESSES[WORKSTATION if side == ROBOT else ROBOT]
                _run(["ip", "-n", ns, "route", "add", "default", "via", peer])  # as a LAN has
                os.makedirs(os.path.join(self.home[side], "shm"), exist_ok=True)
                with open(os.path.join(self.home[side], "machine-id"), "w") as handle:
                    handle.write(uuid.uuid4().hex + "\n")
                self._shape(side)
                self._lossy(side)
            self.wait_for_carrier()
        except BaseException:
            self.close()
            raise

    def _shape(self, side: str) -> None:
        if self.rate_mbit <= 0:
            return
        rate = f"{self.rate_mbit:g}mbit"
        _run(["tc", "-n", self.ns[side], "qdisc", "replace", "dev", self.dev[side], "root", "tbf",
              "rate", rate, "burst", "16kb", "latency", f"{self.queue_ms:g}ms"])

    def _lossy(self, side: str) -> None:
        if self.loss_permille <= 0:
            return
        table = (f"table netdev loss {{\n chain ingress {{\n  type filter hook ingress device "
                 f"\"{self.dev[side]}\" priority 0; policy accept;\n"
                 f"  numgen random mod 1000 < {self.loss_permille} counter drop\n }}\n}}\n")
        result = subprocess.run(["ip", "netns", "exec", self.ns[side], "nft", "-f", "-"],
                                input=table, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise TwoHostsUnavailable(f"nftables rule for 1/1000 loss failed: "
                                      f"{result.stderr.strip()}")

    def close(self) -> None:
        if not self._up:
            return
        for side in (ROBOT, WORKSTATION):
            for pid in _run(["ip", "netns", "pids", self.ns[side]], check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", self.ns[side]], check=False)
            shutil.rmtree(self.home[side], ignore_errors=True)
        self._up = False

    # --- use --------------------------------------------------------------------------------
    def command(self, side: str, args: List[str]) -> List[str]:
        """``args`` run inside ``side``'s namespace, with that host's own /dev/shm."""
        return ["ip", "netns", "exec", self.ns[side], "sh", "-c",
                'mount --bind "$0/shm" /dev/shm && mount --bind "$0/machine-id" /etc/machine-id '
                '&& exec "$@"', self.home[side]] + list(args)

    def popen(self, side: str, args: List[str], env: Optional[Dict[str, str]] = None,
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(side, args), env=env, **kwargs)

    def wait_for_carrier(self, timeout: float = 10.0) -> None:
        """Wait until both ends report carrier. The kernel signals it up to a second after
        ``link set up``; Fast DDS lists the usable interfaces once, at start, and leaves out
        one without carrier: a process started earlier would only ever talk to itself."""
        deadline = time.monotonic() + timeout
        while True:
            states = [_run(["ip", "-n", self.ns[side], "-j", "link", "show", "dev",
                            self.dev[side]]).stdout for side in (ROBOT, WORKSTATION)]
            if all('"operstate":"UP"' in state.replace(" ", "") for state in states):
                return
            if time.monotonic() > deadline:
                raise TwoHostsUnavailable(f"the veth pair has no carrier after {timeout:g} s")
            time.sleep(0.05)

    def set_link(self, up: bool) -> None:
        """Take the link down (both ends) or bring it back (and wait for the carrier)."""
        for side in (ROBOT, WORKSTATION):
            _run(["ip", "-n", self.ns[side], "link", "set", self.dev[side],
                  "up" if up else "down"])
        if up:
            self.wait_for_carrier()

    def set_rate(self, rate_mbit: float) -> None:
        self.rate_mbit = float(rate_mbit)
        for side in (ROBOT, WORKSTATION):
            self._shape(side)

    def sent_bytes(self, side: str) -> int:
        """Bytes the side's tbf qdisc has sent so far (what crossed the link that way)."""
        out = _run(["tc", "-n", self.ns[side], "-s", "-j", "qdisc", "show", "dev",
                    self.dev[side]]).stdout
        for qdisc in json.loads(out or "[]"):
            if qdisc.get("kind") == "tbf":
                return int(qdisc.get("bytes", 0))
        return 0

    def dropped_by_queue(self, side: str) -> int:
        out = _run(["tc", "-n", self.ns[side], "-s", "-j", "qdisc", "show", "dev",
                    self.dev[side]]).stdout
        for qdisc in json.loads(out or "[]"):
            if qdisc.get("kind") == "tbf":
                return int(qdisc.get("drops", 0))
        return 0


# --- what runs on the two hosts (the two-host test and bench/bench_link.py) -----------------
def host_env(base: Dict[str, str], home: str) -> Dict[str, str]:
    """A node's environment on either host, discovery as the README's "Two machines" says
    (DDS's own multicast discovery on the LAN: ROS_AUTOMATIC_DISCOVERY_RANGE SUBNET), HOME of
    its own so nothing is written into the real one."""
    env = dict(base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_STATIC_PEERS", None)
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                 "FACEREC_LINK_BYTES_PER_10MS", "RMW_FASTRTPS_PUBLICATION_MODE"):
        env.pop(name, None)  # the launch files (or the caller) choose
    env["HOME"] = home
    env["ROS_LOG_DIR"] = os.path.join(home, "ros-log")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def face_video(path: str, width: int, height: int, frames: int = 30, fps: float = 10.0) -> str:
    """An MJPG video of ``width`` x ``height``: scikit-image's astronaut (the person the test
    and the bench enroll) moving over a textured wall with sensor-like noise, so that JPEGs
    of it are as large as a camera's."""
    import cv2
    import numpy as np

    from facerec_server.tools.registry_faces import astronaut_path
    face = cv2.imread(str(astronaut_path()), cv2.IMREAD_COLOR)
    head = face[20:330, 90:360]
    scale = 0.55 * height / head.shape[0]
    head = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    wall = cv2.GaussianBlur(rng.integers(40, 220, (height, width, 3), np.uint8), (0, 0), 1.5)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for index in range(frames):
        canvas = wall.copy()
        x = int((width - head.shape[1]) * (0.3 + 0.4 * index / max(frames - 1, 1)))
        y = (height - head.shape[0]) // 2
        canvas[y:y + head.shape[0], x:x + head.shape[1]] = head
        noise = rng.integers(-6, 7, canvas.shape, np.int16)
        writer.write(np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


LISTENER = '''
import json, sys, time
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage
from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import Enroll
out_path, server, name, image = sys.argv[1:5]
rclpy.init()
node = rclpy.create_node("twohosts_listener")
out = open(out_path, "a")
def write(**record):
    record["t"] = time.time()
    out.write(json.dumps(record) + "\\n"); out.flush()
def faces(msg):
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec / 1e9
    write(kind="faces", stamp=stamp, names=[f.name for f in msg.faces],
          latency=node.get_clock().now().nanoseconds / 1e9 - stamp)
def diagnostics(msg):
    for s in msg.status:
        write(kind="diag", name=s.name, level=s.level[0] if isinstance(s.level, bytes)
              else int(s.level), message=s.message, values={v.key: v.value for v in s.values})
node.create_subscription(FaceArray, server + "/faces", faces, 10)
node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, 10)
client = node.create_client(Enroll, server + "/enroll")
enrolled = name == ""
while rclpy.ok():
    if not enrolled and client.service_is_ready():
        # A request that arrives before the server matched this client's response reader
        # gets no response (rmw: "failed to send response (timeout)"), likelier across a
        # lossy link: give discovery a moment, and ask again when no answer comes (enrolling
        # the same photo twice is harmless).
        time.sleep(1.0)
        request = Enroll.Request(name=name, images=[CompressedImage(
            format="png", data=open(image, "rb").read())])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=20)
        if future.done():
            write(kind="enroll", success=future.result().success,
                  message=future.result().message)
            enrolled = future.result().success
        else:
            client.remove_pending_request(future)
            write(kind="enroll_timeout")
    rclpy.spin_once(node, timeout_sec=0.1)
'''


def read_records(path: str) -> List[dict]:
    """The listener's records so far (a half-written last line is left for next time)."""
    records = []
    try:
        with open(path) as handle:
            for line in handle:
                if line.endswith("\n"):
                    records.append(json.loads(line))
    except FileNotFoundError:
        pass
    return records
