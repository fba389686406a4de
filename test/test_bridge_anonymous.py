"""facerec_bridge gives its clients' strangers anonymous identities, as the server gives its
inputs' (issue 16): a real bridge process, a wss:// client streaming rendered registry faces
(the astronaut and messi5, neither enrolled), the results read from ``~/faces`` over DDS and
the gallery file read afterwards.
"""
import asyncio
import json
import re
import time

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect

from facerec_msgs.msg import FaceArray
from facerec_server.core.gallery import Gallery
from facerec_server.tools.track_scenes import Actor, Scene
from rosutil import Collector, jpeg
from test_bridge_node import start_bridge

TOKEN = "anonymous-token-0123456789"
CLIENT = "door_cam"
ANONYMOUS = re.compile(r"^unknown-\d+$")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bridge_anonymous")
    bridge = start_bridge(tmp, {"bridge.web": False, "gallery.path": str(tmp / "gallery.db"),
                                "workers": 1, "object_recognition.enabled": False},
                          node_key="/**", tokens=f"{CLIENT}:{TOKEN}\n")
    proc = bridge["proc"]
    yield dict(bridge, gallery=str(tmp / "gallery.db"))
    code = proc.stop()
    assert code == 0, f"bridge exit code {code}:\n{proc.output()}"


def test_a_clients_two_strangers_get_two_identities_with_pictures_and_sightings(bridge, graph):
    left = Actor.of("astronaut", "astronaut", [(0.0, 110, 170, 96), (1.5, 150, 175, 100)],
                    mirror=True)
    right = Actor.of("messi", "messi", [(0.0, 410, 180, 96), (1.5, 400, 178, 96)])
    scene = Scene(480, 360, 10.0, 1.5, [left, right])
    results = Collector()
    sub = graph.node.create_subscription(FaceArray, "/facerec_bridge/faces", results, 50)

    async def stream():
        async with connect(f"wss://127.0.0.1:{bridge['port']}", ssl=bridge["context"],
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert json.loads(await ws.recv()) == {"command": 9}
            # the scene twice, then its last frame for 6 s more (sightings are written
            # every 5 s while frames come)
            frames = [scene.render(i) for i in range(scene.frames)] * 2
            end = None
            index = 0
            while end is None or time.monotonic() < end:
                frame = frames[min(index, len(frames) - 1)]
                index += 1
                if index == len(frames):
                    end = time.monotonic() + 6.0
                sent = time.monotonic()
                await ws.send(jpeg(frame))
                while json.loads(await asyncio.wait_for(ws.recv(), 60))["command"] != 3:
                    pass
                # the scene's 10 fps, below the bridge's message rate limit (60/s: a fast
                # machine answered quicker and the bridge closed the connection, 1008)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))

    try:
        asyncio.run(stream())
        time.sleep(1.0)  # the last results arrive
    finally:
        graph.node.destroy_subscription(sub)

    last = [m for m in results.messages if len(m.faces) == 2][-5:]
    assert len(last) == 5, [len(m.faces) for m in results.messages]
    pairs = {tuple(f.anonymous_id for f in sorted(m.faces, key=lambda f: f.roi.x_offset))
             for m in last}
    assert len(pairs) == 1, pairs  # the same identities frame after frame
    [(astronaut, messi)] = pairs
    assert ANONYMOUS.match(astronaut) and ANONYMOUS.match(messi) and astronaut != messi
    assert all(f.name == "" for m in last for f in m.faces)  # known results unchanged
    assert all(m.source == CLIENT for m in last)

    with Gallery(bridge["gallery"]) as gallery:
        assert gallery.people() == []
        assert sorted(i["name"] for i in gallery.anonymous()) == sorted([astronaut, messi])
        for identity in (astronaut, messi):
            chips = gallery.chips(identity)
            assert chips, identity
            image = cv2.imdecode(np.frombuffer(chips[-1], np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape == (150, 150, 3)
            seen = gallery.sightings(identity)
            assert [s["input"] for s in seen] == [CLIENT], seen
            assert seen[0]["count"] >= 1 and seen[0]["last_seen"] >= seen[0]["first_seen"]
