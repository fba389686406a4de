"""Known people through the running server: live enrollment, forget, list, CLI, reference file.

The live stream comes from a separate process (the camera node playing a video the test
makes); the CLI is a separate process writing to the same gallery while the server runs.
"""
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from facerec_msgs.srv import Enroll, Forget, ListFaces
from rosutil import child_env, jpeg, recognise, start_node, wait_for_service

NODE = "/facerec_server"


def _video(path, frames):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _views(image, n):
    """n different views (scale 1.0-1.35, shift, mirror) of ``image`` on an 800x500 canvas."""
    out = []
    for i in range(n):
        scale = 1.0 + 0.07 * (i % 6)
        face = cv2.resize(image, None, fx=scale, fy=scale)
        if i % 2:
            face = face[:, ::-1]
        canvas = np.full((500, 800, 3), 40 + 10 * i, np.uint8)
        x = (i * 37) % (800 - face.shape[1] + 1)
        y = (i * 23) % (500 - face.shape[0] + 1)
        canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory, astronaut, messi):
    tmp = tmp_path_factory.mktemp("gallery")
    # messi5's face is ~38 px wide: the 40 px enrollment minimum needs it a little larger.
    cv2.imwrite(str(tmp / "messi.jpg"), cv2.resize(messi, None, fx=1.3, fy=1.3))
    cv2.imwrite(str(tmp / "eileen1.jpg"), astronaut)
    (tmp / "faces.json").write_text(json.dumps([
        {"tag": "eileen", "photos": ["eileen1.jpg"]},
        {"tag": "ghost", "photos": ["missing.jpg"]},
        {"photos": "eileen1.jpg"}]))
    return tmp


@pytest.fixture(scope="module")
def server(setup_dir, module_graph):
    proc = start_node("facerec_server.server_node", setup_dir, "server", "facerec_server", {
        "gallery.path": str(setup_dir / "gallery.db"), "face.upsample": 1,
        "gallery.reference_file": str(setup_dir / "faces.json"),
        "image_topics": ["camera/image/compressed", "live/image/compressed"]})
    wait_for_service(module_graph, Enroll, f"{NODE}/enroll", proc, timeout=120)
    yield proc
    assert proc.stop() == 0, proc.output()


def _people(graph, node=NODE):
    r = graph.call(ListFaces, f"{node}/list_faces", ListFaces.Request())
    return dict(zip(r.names, r.samples))


def _names_seen(graph, image, topic="camera/image/compressed", timeout=60, node=NODE):
    _, msg = recognise(graph, jpeg(image), node=node, topic=topic, timeout=timeout)
    return [f.name for f in msg.faces]


def test_reference_file_imported_at_startup_and_bad_entries_reported(server, module_graph):
    assert _people(module_graph) == {"eileen": 1}
    out = server.output()
    assert "missing.jpg" in out and "ghost" in out
    assert "bad tag" in out or "entry 3" in out


def test_live_enrollment_from_another_process_then_forget(server, module_graph, setup_dir,
                                                          messi):
    assert _names_seen(module_graph, messi) == [""]
    video = _video(setup_dir / "messi.avi", _views(messi, 12))
    camera = start_node("facerec_camera.camera_node", setup_dir, "camera", "facerec_camera", {
        "source": str(video), "fps": 5.0, "loop": True, "topic": "live/image/compressed",
        "frame_id": "live"})
    try:
        request = Enroll.Request(name="leo", source="live/image/compressed", samples=3,
                                 timeout=60.0)
        response = module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120)
        assert response.success, response.message + "\n" + server.output()[-2000:]
        assert response.samples_added == 3
    finally:
        camera.stop()
    assert _people(module_graph) == {"eileen": 1, "leo": 3}
    assert _names_seen(module_graph, messi) == ["leo"]  # from the next frame on
    forgot = module_graph.call(Forget, f"{NODE}/forget", Forget.Request(name="leo"))
    assert forgot.success and forgot.samples_removed == 3
    assert _people(module_graph) == {"eileen": 1}
    assert _names_seen(module_graph, messi) == [""]
    again = module_graph.call(Forget, f"{NODE}/forget", Forget.Request(name="leo"))
    assert not again.success and again.samples_removed == 0


def test_rejections_leave_the_gallery_unchanged(server, module_graph, astronaut):
    before = _people(module_graph)
    photo = CompressedImage(format="jpeg", data=jpeg(astronaut))
    blank = CompressedImage(format="jpeg", data=jpeg(np.zeros((200, 200, 3), np.uint8)))
    cases = [("", [photo]), ("x" * 200, [photo]), ("bad\x07name", [photo]),
             ("nobody", [blank]), ("impostor", [photo])]  # impostor: already eileen
    for name, images in cases:
        r = module_graph.call(Enroll, f"{NODE}/enroll", Enroll.Request(name=name, images=images))
        assert not r.success and r.samples_added == 0, (name, r.message)
        assert r.message, name
    r = module_graph.call(Enroll, f"{NODE}/enroll", Enroll.Request(
        name="nobody", source="no/such/topic", timeout=1.0))
    assert not r.success and "no/such/topic" in r.message
    assert _people(module_graph) == before


def test_cli_enrolls_while_the_server_runs(server, module_graph, setup_dir, messi):
    result = subprocess.run(
        [sys.executable, "-m", "facerec_server.enroll_cli", "--gallery",
         str(setup_dir / "gallery.db"), "add", "lionel", str(setup_dir / "messi.jpg"),
         "--upsample", "1"], env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "lionel" not in _people(module_graph):
        time.sleep(0.5)
    assert _people(module_graph).get("lionel") == 1
    assert _names_seen(module_graph, messi) == ["lionel"]  # no restart needed


def test_capture_does_not_block_other_inputs_and_shutdown_ends_it(setup_dir, module_graph,
                                                                  astronaut, tmp_path):
    """A capture waiting on a silent input; the other input keeps getting results; SIGINT
    during the capture ends the node promptly. (Its own node name and topics: the module's
    server may still be running.)"""
    node = "/facerec_server2"
    proc = start_node("facerec_server.server_node", tmp_path, "server2", "facerec_server2", {
        "gallery.path": str(tmp_path / "g.db"),
        "image_topics": ["cam2/image/compressed", "silent/image/compressed"]},
        extra_ros_args=["-r", "__node:=facerec_server2"])
    try:
        wait_for_service(module_graph, Enroll, f"{node}/enroll", proc, timeout=120)
        client = module_graph.node.create_client(Enroll, f"{node}/enroll")
        assert client.wait_for_service(timeout_sec=30)
        future = client.call_async(Enroll.Request(name="nobody", source="silent/image/compressed",
                                                  samples=5, timeout=60.0))
        time.sleep(1.0)
        seen = _names_seen(module_graph, astronaut, topic="cam2/image/compressed", timeout=30,
                           node=node)
        assert seen and set(seen) == {""}  # served meanwhile (unknown: the gallery is empty)
        assert _people(module_graph, node) == {}  # list_faces answers during the capture too
        assert not future.done()
        started = time.monotonic()
        code = proc.stop(timeout=20)
        assert code == 0, proc.output()
        assert time.monotonic() - started < 15
    finally:
        proc.stop()
