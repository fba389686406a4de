"""The original project's own Python client against facerec_bridge (issue 14).

iot-facerecognition-client 1.2.0 (PyPI; installed by `make setup` as a test tool) runs
unchanged in a child process (test/original_client.py): wss:// without credentials and
without certificate checks, ``"\\x01:<name>"``, a JPEG per camera frame without flow control,
and ``json.loads`` on every text message it receives. Its camera is a video of registry faces
(the only stand-in). The bridge is the real node (auth none, as this client cannot send
credentials), real dlib, the astronaut enrolled, and a tiny ONNX colour classifier as object
model so that command 4 replies come too.
"""
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from facerec_msgs.msg import FaceArray
from facerec_server.tools import demo_video
from facerec_server.tools.make_test_classifier import SCALE, make_colour_classifier
from rosutil import REPO, child_env, start_node
from test_bridge_node import _free_port, _wait_port

# A mark, not a module-level skip: a skip raised while this module is imported makes
# launch_testing's pytest plugin collect nothing from the other test files either.
try:
    import iot_facerecognition_client  # noqa: F401
    _CLIENT = True
except ImportError:
    _CLIENT = False
pytestmark = pytest.mark.skipif(
    not _CLIENT, reason="iot-facerecognition-client 1.2.0 is not installed (make setup "
    "installs it from requirements/original-client.txt)")

NODE = "/facerec_bridge"
BLANK_FRAMES = 6


def _video(path, fps: float = 8.0, frames: int = 40) -> str:
    """Blank wall frames, then the demo's moving astronaut (enrolled) and messi (not)."""
    astronaut = demo_video.read_bgr(demo_video.astronaut_path())
    messi = demo_video.read_bgr(demo_video.messi_path())
    size = (demo_video.WIDTH, demo_video.HEIGHT)
    wall = np.full((size[1], size[0], 3), 110, np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for _ in range(BLANK_FRAMES):
        writer.write(wall)
    for index in range(frames):
        writer.write(demo_video.render_frame(index, frames, astronaut, messi, wall))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory, astronaut):
    from facerec_server.core.gallery import Gallery
    from facerec_server.core.pipeline import FaceConfig, FacePipeline
    tmp = tmp_path_factory.mktemp("original_client")
    faces = FacePipeline(FaceConfig(upsample=1)).process(astronaut).faces
    biggest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    gallery = Gallery(str(tmp / "gallery.db"))
    gallery.add_samples("astronaut", [biggest.descriptor], source="test")
    gallery.close()
    onnx_path, labels = make_colour_classifier(tmp / "colours.onnx", tmp / "colours.txt")
    import trustme
    server = trustme.CA().issue_cert("127.0.0.1")  # the client does not check it (CERT_NONE)
    server.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp / "server.key"))
    port = _free_port()
    proc = start_node("facerec_server.bridge_node", tmp, "bridge", "facerec_bridge", {
        "bridge.host": "127.0.0.1", "bridge.port": port, "bridge.auth": "none",
        "bridge.certfile": str(tmp / "server.pem"), "bridge.keyfile": str(tmp / "server.key"),
        "gallery.path": str(tmp / "gallery.db"), "face.upsample": 1, "workers": 1,
        "object_recognition.models": ["colours"], "object_recognition.max_rate": 4.0,
        "object_recognition.colours.type": "onnx",
        "object_recognition.colours.path": str(onnx_path),
        "object_recognition.colours.labels_file": str(labels),
        "object_recognition.colours.input_size": [227, 227],
        "object_recognition.colours.mean": [0.0, 0.0, 0.0],
        "object_recognition.colours.scale": SCALE,
        "object_recognition.colours.swap_rb": True})
    _wait_port(port, proc)
    yield {"port": port, "proc": proc, "video": _video(tmp / "faces.avi"), "tmp": tmp}
    code = proc.stop()
    assert code == 0, f"bridge exit code {code}:\n{proc.output()}"


def _run_client(bridge, *args, seconds: float = 120.0):
    """Run the original client; its received texts, frames sent and thread states."""
    command = [sys.executable, str(REPO / "test" / "original_client.py"),
               "--port", str(bridge["port"]), "--video", bridge["video"],
               "--seconds", str(seconds), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(),
                          timeout=seconds + 60)
    received, sent, status = [], 0, None
    for line in done.stdout.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "RECV":
            received.append(json.loads(value))
        elif kind == "SENT":
            sent += 1
        elif kind == "DONE":
            status = json.loads(value)
    assert status is not None, f"client did not finish:\n{done.stdout[-3000:]}\n{done.stderr}"
    return received, sent, status, done.stderr


def test_original_client_gets_only_json_and_its_person(bridge, graph):
    faces_topic = graph.subscribe(FaceArray, f"{NODE}/faces")
    deadline = time.monotonic() + 30  # matched before the client's results are published
    while graph.node.count_publishers(f"{NODE}/faces") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    received, sent, status, stderr = _run_client(
        bridge, "--name", "iot-door", "--send", "5:1", "--send", "6:2",
        "--until-tag", "astronaut")
    documents = []
    for text in received:  # every text message must be a JSON document
        try:
            documents.append(json.loads(text))
        except ValueError:
            pytest.fail(f"the bridge sent a text message that is not JSON: {text!r}")
    assert all(isinstance(d, dict) and isinstance(d.get("command"), int) for d in documents)
    # the client's own threads survived every message (its receiveloop dies on a bad one)
    assert status == {"mainloop": True, "receiveloop": True, "found": True}, stderr
    assert "Traceback" not in stderr, stderr
    assert sent >= BLANK_FRAMES

    assert documents[0] == {"command": 9}
    # the name and the settings it sent as "<chr(n)>:<context>" are acknowledged in JSON
    acks = [d for d in documents if d["command"] in (1, 5, 6)]
    assert acks == [{"command": 1, "context": "iot-door"}, {"command": 5, "context": True},
                    {"command": 6, "context": 2}]
    faces = [d["context"] for d in documents if d["command"] == 3]
    for context in faces:  # the original layout; an unknown face has the tag ""
        assert all(set(t) == {"tag", "x", "y", "width", "height"} for t in context)
        assert all(isinstance(t[k], int) for t in context for k in ("x", "y", "width", "height"))
    tags = [t["tag"] for context in faces for t in context]
    assert "astronaut" in tags and "" in tags
    # nothing found (the blank frames): an empty list, where the original sent nothing
    assert [] in faces
    objects = [d["context"] for d in documents if d["command"] == 4]
    assert objects, documents
    for context in objects:  # [{"label", "prediction"}], best first, at most label_count
        assert 1 <= len(context) <= 2
        assert all(set(t) == {"label", "prediction"} for t in context)
        assert all(isinstance(t["label"], str) and isinstance(t["prediction"], float)
                   for t in context)
        predictions = [t["prediction"] for t in context]
        assert predictions == sorted(predictions, reverse=True)
    # without credentials the client's own name is its ROS name
    assert faces_topic.wait_for(lambda m: any(a.source == "iot-door" for a in m), 20)
    assert {a.source for a in faces_topic.messages} == {"iot-door"}
