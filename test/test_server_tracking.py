"""Face tracks through the running server: track ids and states over real DDS.

A test process publishes the frames of a rendered video (tools.track_scenes: the astronaut,
enrolled as 'eileen' through ~/enroll, walking past messi5's face, never enrolled) one at a
time on the server's image topic and reads ~/faces: the server (its own process, default
tracking parameters, HOG upsample 0) gives each person one track id and confirms the names.
"""

import pytest
from sensor_msgs.msg import CompressedImage

from facerec_msgs.msg import Face
from facerec_msgs.srv import Enroll
from facerec_server.tools.track_scenes import Actor, Scene
from rosutil import FrameStream, jpeg, set_parameters, start_node, wait_for_service

NODE = "/facerec_server"
TOPIC = "camera/image/compressed"


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph, astronaut):
    tmp = tmp_path_factory.mktemp("tracking")
    proc = start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "gallery.db"), "max_frame_age": 30.0})
    wait_for_service(module_graph, Enroll, f"{NODE}/enroll", proc)
    request = Enroll.Request(name="eileen", images=[CompressedImage(format="jpeg",
                                                                    data=jpeg(astronaut))])
    response = module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120)
    assert response.success, response.message
    yield proc
    code = proc.stop()
    assert code == 0, f"server exit code {code}:\n{proc.output()}"


@pytest.fixture(scope="module")
def scene():
    eileen = Actor.of("astronaut", "eileen", [(0.0, 100, 170, 96), (1.5, 160, 175, 100)],
                      mirror=True)
    messi = Actor.of("messi", "messi", [(0.0, 410, 180, 96), (1.5, 400, 178, 96)])
    scene = Scene(480, 360, 10.0, 1.5, [eileen, messi])
    assert all(t.hidden == 0 for i in range(scene.frames) for t in scene.truth(i))
    return scene


def _by_position(result):
    """(left face, right face) of a frame: eileen walks on the left, messi stands right."""
    assert len(result.faces) == 2, [(f.name, f.roi.x_offset) for f in result.faces]
    return sorted(result.faces, key=lambda f: f.roi.x_offset)


def test_each_person_keeps_a_track_id_and_names_are_confirmed(server, module_graph, scene):
    stream = FrameStream(module_graph, NODE, TOPIC)
    try:
        results = [stream.send(scene.render(i)) for i in range(scene.frames)]
    finally:
        stream.close()
    pairs = [_by_position(r) for r in results]
    eileen_ids = {left.track_id for left, _ in pairs}
    messi_ids = {right.track_id for _, right in pairs}
    assert len(eileen_ids) == 1 and len(messi_ids) == 1 and eileen_ids != messi_ids
    assert 0 not in eileen_ids | messi_ids
    states = [left.track_state for left, _ in pairs]
    assert states[0] == Face.TRACK_TENTATIVE and states[-1] == Face.TRACK_CONFIRMED
    assert states.index(Face.TRACK_CONFIRMED) <= 5  # confirm_votes 3: frame 3 at the latest
    assert {left.name for left, _ in pairs} == {"eileen"}
    assert {right.name for _, right in pairs} == {""}
    assert pairs[-1][1].track_state == Face.TRACK_CONFIRMED
    assert all(left.confidence > 0.5 for left, _ in pairs)
    assert pairs[-1][1].confidence == 0.0


def test_tracking_switched_off_and_on_at_runtime(server, module_graph, scene):
    stream = FrameStream(module_graph, NODE, TOPIC)
    try:
        [ok] = set_parameters(module_graph, NODE, {"face.tracking.enabled": False})
        assert ok.successful, ok.reason
        plain = _by_position(stream.send(scene.render(0)))
        assert [(f.track_id, f.track_state) for f in plain] == [(0, Face.TRACK_NONE)] * 2
        assert [f.name for f in plain] == ["eileen", ""]
        [ok] = set_parameters(module_graph, NODE, {"face.tracking.enabled": True})
        assert ok.successful, ok.reason
        first = _by_position(stream.send(scene.render(0)))
        second = _by_position(stream.send(scene.render(1)))
        assert [f.track_id for f in first] == [f.track_id for f in second]
        assert all(f.track_id > 0 and f.track_state == Face.TRACK_TENTATIVE for f in first)
        # a value out of its range is refused, with the reason
        [bad] = set_parameters(module_graph, NODE, {"face.tracking.detect_every": 0})
        assert not bad.successful and "face.tracking.detect_every" in bad.reason
    finally:
        set_parameters(module_graph, NODE, {"face.tracking.enabled": True})
        stream.close()
