"""The end-to-end demo (``make demo``) as the user runs it: its Python entry in a subprocess.

The demo starts the server and the camera node as processes of their own, talking over DDS
(loopback, this run's domain from conftest.py), enrolls scikit-image's astronaut and streams a
video it makes from the astronaut (mirrored, scaled, moving; left half) and messi5 (never
enrolled; right half).
"""
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from rosutil import REPO, child_env

NAME = "eileen"
WIDTH = 512  # the made video's width: the astronaut stays in the left half, messi in the right
RESULT = re.compile(r"^  frame t\+.*latency +(\d+) ms \(processing +\d+ ms\)  (.*)$", re.M)
FACE = re.compile(r"(\w+) \(box x=(\d+) y=(\d+) w=(\d+) h=(\d+), distance ([\d.]+|inf)\)")
SUMMARY = re.compile(r"^summary: frames sent (\d+).*, processed (\d+), recognised (\d+) as "
                     r"'(\w+)', unknown faces in (\d+), median latency ([\d.]+) s", re.M)


def _demo(args, home, **popen):
    env = child_env(HOME=str(home))  # a gallery under ~/.ros would show up here
    for name in ("SOURCE", "ROS_LOG_DIR", "ROS_HOME"):  # as a user runs it (the test run
        env.pop(name, None)                             # sets ROS_LOG_DIR: conftest.py)
    return subprocess.Popen([sys.executable, "-m", "facerec_server.tools.demo"] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=str(REPO), **popen)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One demo run with a 30-frame video (3 s at 10 fps)."""
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    proc = _demo(["--output", str(out), "--frames", "30"], tmp / "home")
    try:
        text, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, text, out, tmp / "home"


def test_demo_ends_by_itself_with_a_summary(run):
    code, text, _, _ = run
    assert code == 0, text
    summary = SUMMARY.search(text)
    assert summary, f"no summary line:\n{text}"
    sent, processed, recognised, name, unknown = (summary.group(i) for i in range(1, 6))
    assert name == NAME
    assert int(sent) == 30, text  # the camera streamed the whole video, once
    assert 0 < int(recognised) <= int(processed), text
    assert int(unknown) > 0, text
    assert float(summary.group(6)) > 0


def test_each_result_names_the_right_person(run):
    """Every printed result: the enrolled person on the left, messi (unknown) on the right."""
    code, text, _, _ = run
    results = RESULT.findall(text)
    assert results, text
    seen = set()
    for latency, faces in results:
        assert int(latency) > 0
        for name, x, _, w, _, distance in FACE.findall(faces):
            centre = int(x) + int(w) / 2
            if name == NAME:
                assert centre < WIDTH / 2 and float(distance) < 0.6, faces
            else:
                assert name == "unknown" and centre > WIDTH / 2 and float(distance) >= 0.6, \
                    faces
            seen.add(name)
    assert seen == {NAME, "unknown"}, text


def test_outputs_video_snapshot_and_a_fresh_gallery(run):
    code, text, out, home = run
    assert code == 0, text
    cap = cv2.VideoCapture(str(out / "demo.avi"))
    try:
        assert cap.isOpened()
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        assert fourcc == "MJPG"
        frames = 0
        while cap.read()[0]:
            frames += 1
        assert frames == 30
    finally:
        cap.release()

    snapshot = cv2.imread(str(out / "snapshot.png"), cv2.IMREAD_COLOR)
    assert snapshot is not None and snapshot.shape == (384, WIDTH, 3)
    # the overlay's green (known) and red (unknown) boxes and labels are there
    pixels = snapshot.reshape(-1, 3).astype(int)
    green = np.abs(pixels - (0, 200, 0)).max(axis=1) < 50
    red = np.abs(pixels - (0, 0, 230)).max(axis=1) < 50
    assert green.sum() > 100 and red.sum() > 100, (green.sum(), red.sum())

    assert (out / "gallery.db").is_file()
    assert not (home / ".ros" / "facerec").exists(), "the demo touched ~/.ros/facerec"
    assert list((out / "ros-log").glob("*.log")), "ROS log files belong in the output folder"


def test_ctrl_c_stops_the_nodes(run, tmp_path):
    """SOURCE mode (the made video, looping) runs until Ctrl-C; then no child is left."""
    code, _, out, home = run
    assert code == 0
    proc = _demo(["--output", str(tmp_path / "live"), "--source", str(out / "demo.avi")],
                 home)
    lines, pids = [], []
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            lines.append(line)
            pids += [int(p) for p in re.findall(r"started facerec_\w+, pid (\d+)", line)]
            if RESULT.match(line.rstrip("\n")) or time.monotonic() > deadline:
                break
        assert len(pids) == 2 and all(_alive(p) for p in pids), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(lines) + rest
    assert proc.returncode == 0, text
    assert "Ctrl-C: stopping the camera and the server" in text
    assert SUMMARY.search(text), text
    assert not [p for p in pids if _alive(p)], f"children left running: {pids}\n{text}"
