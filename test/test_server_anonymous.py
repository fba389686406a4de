"""People the robot has not been introduced to, through the running server over real DDS.

Two strangers (scikit-image's astronaut and opencv-doc's messi5, never enrolled) walk through
rendered videos (tools.track_scenes) published on the server's two image topics. The server
(its own process, default parameters) gives each one an anonymous identity kept in the
gallery; the test checks they differ, stay the same on the other input (another video: other
sizes, positions, the astronaut not mirrored) and after a restart of the server, and that
naming, rename, merge, remove-sample and "this face is not X" change the next results.
"""
import re

import cv2
import numpy as np
import pytest

from facerec_msgs.msg import Face
from facerec_msgs.srv import (ListAnonymous, ListSamples, Merge, NameIdentity, NotPerson,
                              RemoveSample, Rename, Sightings)
from facerec_server.core.gallery import Gallery
from facerec_server.tools.track_scenes import Actor, Scene
from rosutil import FrameStream, start_node, wait_for_service
from test_server_tracking import _by_position

NODE = "/facerec_server"
TOPICS = ("camera/image/compressed", "camera2/image/compressed")
ANONYMOUS = re.compile(r"^unknown-\d+$")


def _scene(variant):
    if variant == 0:
        left = Actor.of("astronaut", "astronaut", [(0.0, 110, 170, 96), (1.5, 150, 175, 100)],
                        mirror=True)
        right = Actor.of("messi", "messi", [(0.0, 410, 180, 96), (1.5, 400, 178, 96)])
    else:  # other sizes and places; the astronaut as photographed (not mirrored)
        left = Actor.of("astronaut", "astronaut", [(0.0, 150, 160, 112), (1.5, 120, 165, 108)])
        right = Actor.of("messi", "messi", [(0.0, 380, 170, 104), (1.5, 395, 172, 100)])
    return Scene(480, 360, 10.0, 1.5, [left, right], seed=variant)


class Server:
    """The server process on a gallery file that outlives it (restart = stop + start)."""

    def __init__(self, tmp, graph):
        self.tmp, self.graph, self.proc, self.runs = tmp, graph, None, 0
        self.gallery = str(tmp / "gallery.db")

    def start(self):
        self.runs += 1
        self.proc = start_node("facerec_server.server_node", self.tmp, f"server{self.runs}",
                               "facerec_server", {"gallery.path": self.gallery,
                                                  "max_frame_age": 30.0, "workers": 1,
                                                  "image_topics": list(TOPICS)})
        wait_for_service(self.graph, NameIdentity, f"{NODE}/name", self.proc)

    def stop(self):
        code = self.proc.stop()
        assert code == 0, f"server exit code {code}:\n{self.proc.output()}"

    def call(self, srv_type, service, **fields):
        return self.graph.call(srv_type, f"{NODE}/{service}", srv_type.Request(**fields),
                               timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph):
    server = Server(tmp_path_factory.mktemp("anonymous"), module_graph)
    server.start()
    yield server
    server.stop()


class Stream(FrameStream):
    """A FrameStream to the server's ``topic`` that plays scenes."""

    def __init__(self, graph, topic):
        super().__init__(graph, NODE, topic)

    def play(self, scene, frames=None):
        """(left face, right face) of each frame."""
        return [_by_position(self.send(scene.render(i)))
                for i in range(scene.frames if frames is None else frames)]


def _identities(pairs):
    """The anonymous ids of the last frames (confirmed tracks) of the left and right face."""
    last = pairs[-1]
    assert all(f.track_state == Face.TRACK_CONFIRMED for f in last)
    return last[0].anonymous_id, last[1].anonymous_id


def _stream(server, topic=TOPICS[0]):
    return Stream(server.graph, topic)


def test_two_strangers_two_identities_same_on_another_input_and_after_restart(server):
    stream = _stream(server)
    try:
        pairs = stream.play(_scene(0))
    finally:
        stream.close()
    astronaut, messi = _identities(pairs)
    assert ANONYMOUS.match(astronaut) and ANONYMOUS.match(messi) and astronaut != messi
    assert all(f.name == "" for pair in pairs for f in pair)  # names stay empty
    assert pairs[0][0].anonymous_id == ""  # a tentative track has none yet
    # each track keeps its identity from the frame it got one
    first = next(i for i, p in enumerate(pairs) if p[0].anonymous_id)
    assert {p[0].anonymous_id for p in pairs[first:]} == {astronaut}

    other = _stream(server, TOPICS[1])  # another input, another video of the same people
    try:
        assert _identities(other.play(_scene(1))) == (astronaut, messi)
    finally:
        other.close()
    listed = server.call(ListAnonymous, "list_anonymous")
    assert sorted(listed.anonymous_ids) == sorted([astronaut, messi])
    assert all(0 < n <= 20 for n in listed.samples)  # anonymous.max_samples

    sightings = server.call(Sightings, "sightings", name=astronaut)
    inputs = {s.rsplit("/", 3)[-3] for s in sightings.inputs}
    assert inputs == {"camera", "camera2"} and all(sightings.anonymous)
    assert all(c == 1 for c in sightings.counts)  # one visit (track) per input
    assert all(f <= last for f, last in zip(sightings.first_seen, sightings.last_seen))

    server.stop()  # the same strangers after a restart
    server.start()
    stream = _stream(server)
    try:
        assert _identities(stream.play(_scene(1))) == (astronaut, messi)
    finally:
        stream.close()
    with Gallery(server.gallery) as gallery:  # nobody was made a known person
        assert gallery.people() == []
        assert len(gallery.anonymous()) == 2
        # each identity keeps pictures of its face (150x150 aligned chips, as enrollment
        # stores them), so that a user can see whom to name (the web page's People view)
        for identity in (astronaut, messi):
            chips = gallery.chips(identity)
            assert chips, identity
            for chip in chips:
                image = cv2.imdecode(np.frombuffer(chip, np.uint8), cv2.IMREAD_COLOR)
                assert image is not None and image.shape == (150, 150, 3)
                assert image.std() > 10  # a picture, not a blank


def test_naming_renaming_merge_remove_sample_and_not_x(server):
    stream = _stream(server)
    scene = _scene(0)
    try:
        pairs = stream.play(scene, frames=6)
        astronaut, messi = _identities(pairs)
        # naming: the very next frame carries the name
        named = server.call(NameIdentity, "name", anonymous_id=astronaut, name="eileen")
        assert named.success and not named.merged and named.samples > 0, named.message
        left, right = _by_position(stream.send(scene.render(6)))
        assert (left.name, left.anonymous_id) == ("eileen", "")
        assert (right.name, right.anonymous_id) == ("", messi)
        assert server.call(NameIdentity, "name", anonymous_id=astronaut,
                           name="x").success is False  # it is not anonymous any more

        renamed = server.call(Rename, "rename", name="eileen", new_name="Eileen Collins")
        assert renamed.success, renamed.message
        left, _ = _by_position(stream.send(scene.render(7)))
        assert left.name == "Eileen Collins"
        refused = server.call(Rename, "rename", name="nobody", new_name="x")
        assert not refused.success and "nobody" in refused.message

        samples = server.call(ListSamples, "list_samples", name="Eileen Collins")
        assert len(samples.ids) == named.samples and set(samples.sources) == {"track"}
        removed = server.call(RemoveSample, "remove_sample", sample_id=samples.ids[0])
        assert removed.success and removed.name == "Eileen Collins", removed.message
        after = server.call(ListSamples, "list_samples", name="Eileen Collins")
        assert list(after.ids) == list(samples.ids[1:])

        # merge: the stranger on the right joins "Eileen Collins" (a wrong grouping fixed)
        merged = server.call(Merge, "merge", source=messi, target="Eileen Collins")
        assert merged.success and merged.samples > len(after.ids), merged.message
        left, right = _by_position(stream.send(scene.render(8)))
        assert (left.name, right.name) == ("Eileen Collins", "Eileen Collins")

        # not-X: "the face on the right is not Eileen Collins", by its track id
        refused = server.call(NotPerson, "not_person", name="Eileen Collins",
                              track_id=right.track_id)
        assert refused.success and refused.negatives_added > 0, refused.message
        left, right = _by_position(stream.send(scene.render(9)))
        assert left.name == "Eileen Collins" and right.name == ""
    finally:
        stream.close()
