"""facerec_bridge as a real process: wss:// client in, ROS topics out (real DDS, real dlib)."""
import asyncio
import json
import socket
import ssl
import time

import pytest
import trustme
from sensor_msgs.msg import CompressedImage
from websockets.asyncio.client import connect

from facerec_msgs.msg import FaceArray
from rosutil import jpeg, start_node

NODE = "/facerec_bridge"
TOKEN = "node-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"bridge exited ({proc.popen.returncode}):\n{proc.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"bridge not listening after {timeout} s:\n{proc.output()}")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory, astronaut):
    from facerec_server.core.gallery import Gallery
    from facerec_server.core.pipeline import FaceConfig, FacePipeline
    tmp = tmp_path_factory.mktemp("bridge_node")
    faces = FacePipeline(FaceConfig(upsample=1)).process(astronaut).faces
    biggest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    gallery = Gallery(str(tmp / "gallery.db"))
    gallery.add_samples("astronaut", [biggest.descriptor], source="test")
    gallery.close()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp / "server.key"))
    (tmp / "tokens").write_text(f"robot:{TOKEN}\n")
    port = _free_port()
    proc = start_node("facerec_server.bridge_node", tmp, "bridge", "facerec_bridge", {
        "bridge.host": "127.0.0.1", "bridge.port": port,
        "bridge.certfile": str(tmp / "server.pem"), "bridge.keyfile": str(tmp / "server.key"),
        "bridge.tokens_file": str(tmp / "tokens"), "gallery.path": str(tmp / "gallery.db"),
        "face.upsample": 1, "workers": 1, "diagnostics_period": 0.5})
    _wait_port(port, proc)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    yield {"port": port, "context": context, "proc": proc}
    code = proc.stop()
    assert code == 0, f"bridge exit code {code}:\n{proc.output()}"


def test_client_frames_and_results_are_published(bridge, graph, astronaut, messi):
    faces_topic = graph.subscribe(FaceArray, f"{NODE}/faces")
    images = graph.subscribe_sensor(CompressedImage, f"{NODE}/clients/robot_cam/image/compressed")
    frames = {"astronaut": jpeg(astronaut), "messi": jpeg(messi)}

    async def scenario():
        async with connect(f"wss://127.0.0.1:{bridge['port']}", ssl=bridge["context"],
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert json.loads(await ws.recv()) == {"command": 9}
            for text in ('{"command":1,"context":"Robot Cam"}', '{"command":5,"context":false}'):
                await ws.send(text)
                await ws.recv()
            tags = {}
            for who, data in frames.items():
                await ws.send(data)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert reply["command"] == 3
                tags[who] = [t["tag"] for t in reply["context"]]
            # DDS discovery takes a moment (the image publisher appears on connect): resend
            # until both topics delivered something
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (images.messages and any(
                    "astronaut" in [f.name for f in a.faces] for a in faces_topic.messages)):
                await ws.send(frames["astronaut"])
                await asyncio.wait_for(ws.recv(), 60)
            return tags

    tags = asyncio.run(scenario())
    assert "astronaut" in tags["astronaut"] and tags["messi"] == [""]
    assert faces_topic.wait_for(lambda m: any("astronaut" in [f.name for f in a.faces]
                                              for a in m), 20)
    result = next(a for a in faces_topic.messages if "astronaut" in [f.name for f in a.faces])
    assert result.source == "Robot Cam" and result.header.frame_id == "Robot Cam"
    assert result.header.stamp.sec > 0 and result.processing_time > 0
    assert images.messages, "no CompressedImage on the client's topic"
    image = images.messages[-1]
    assert image.header.frame_id == "Robot Cam" and image.format == "jpeg"
    assert bytes(image.data) in frames.values()


def test_refuses_to_start_without_certificate(tmp_path):
    proc = start_node("facerec_server.bridge_node", tmp_path, "nocert", "facerec_bridge",
                      {"bridge.port": _free_port(), "bridge.auth": "none"})
    code = proc.popen.wait(60)
    assert code == 1
    assert "facerec_server.bridge.certs" in proc.output()
