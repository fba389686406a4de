"""Frames of real sizes over real DDS between processes, with the project's transport settings.

The issue this answers: with Fast DDS's defaults, best-effort CompressedImage samples above
~512 KB never reach another process on the same host (a 2333x1434 phone photo, 596 KB, got no
result). config/fastdds.xml (used here through conftest.py, as by the launch files and the
demo) carries frames up to 8 MB.
"""
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage

from facerec_camera import transport
from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import Enroll
from rosutil import compressed, jpeg, start_node, wait_for_service

NODE = "/facerec_server"


def test_profile_env_respects_the_users_settings(tmp_path):
    share = str(tmp_path)
    general = transport.profile_env(share, environ={})
    assert general == {"FASTDDS_DEFAULT_PROFILES_FILE": f"{share}/config/fastdds.xml"}
    link = transport.profile_env(share, 8.0, environ={})
    assert link == {"FASTDDS_DEFAULT_PROFILES_FILE": f"{share}/config/fastdds_link.xml",
                    "FACEREC_LINK_BYTES_PER_10MS": "10000",
                    "RMW_FASTRTPS_PUBLICATION_MODE": "ASYNCHRONOUS"}
    assert transport.profile_env(share, 0, environ={})["FACEREC_LINK_BYTES_PER_10MS"] == "0"
    # the user's own profile wins; a flow controller cannot work with synchronous publishing
    assert transport.profile_env(share, 8.0, {"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}) == {}
    assert transport.profile_env(share, 8.0, {"FASTRTPS_DEFAULT_PROFILES_FILE": "/x.xml"}) == {}
    assert transport.profile_env(share, 8.0, {"RMW_FASTRTPS_PUBLICATION_MODE": "SYNCHRONOUS"}) \
        == general
    with pytest.raises(ValueError, match="max_bandwidth must be >= 0"):
        transport.profile_env(share, -1.0, environ={})


def test_shipped_profiles_are_what_the_settings_name():
    share = transport.default_share_dir()
    for name in (transport.PROFILE, transport.LINK_PROFILE):
        text = open(f"{share}/config/{name}").read()
        assert "<segment_size>16777216</segment_size>" in text  # two 8 MB frames
        assert "<port_queue_capacity>16384</port_queue_capacity>" in text  # their fragments
        assert "<maxMessageSize>1400</maxMessageSize>" in text  # below a 1500-byte MTU
    link = open(f"{share}/config/{transport.LINK_PROFILE}").read()
    assert "${" + transport.LINK_VARIABLE + "}" in link


def _sized_jpeg(face, width, height, at_least):
    """A photo-like JPEG of ``width`` x ``height`` with the face large in it and sensor noise,
    the noise level chosen so the file has at least ``at_least`` bytes (and < 10 % more)."""
    rng = np.random.default_rng(7)
    wall = cv2.GaussianBlur(rng.integers(40, 220, (height, width, 3), np.uint8), (0, 0), 3)
    scale = 0.8 * min(width / face.shape[1], height / face.shape[0])
    big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    y, x = (height - big.shape[0]) // 2, (width - big.shape[1]) // 2
    wall[y:y + big.shape[0], x:x + big.shape[1]] = big
    grain = rng.standard_normal((height, width, 3)).astype(np.float32)
    low, high = 0.0, 80.0
    for _ in range(25):
        sigma = (low + high) / 2
        data = jpeg(np.clip(wall + sigma * grain, 0, 255).astype(np.uint8), 92)
        if len(data) < at_least:
            low = sigma
        elif len(data) > at_least * 1.1:
            high = sigma
        else:
            return data
    raise AssertionError(f"could not make a JPEG of about {at_least} bytes")


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph, astronaut):
    tmp = tmp_path_factory.mktemp("transport")
    proc = start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "gallery.db"), "image_reliability": "best_effort",
        "max_frame_age": 30.0, "workers": 1})
    wait_for_service(module_graph, Enroll, f"{NODE}/enroll", proc)
    request = Enroll.Request(name="eileen", images=[CompressedImage(format="jpeg",
                                                                    data=jpeg(astronaut))])
    assert module_graph.call(Enroll, f"{NODE}/enroll", request, timeout=120).success
    yield proc
    assert proc.stop() == 0, proc.output()


def _received(messages):
    """The server's count of frames received on its input (-1 before the first status)."""
    for msg in reversed(messages):
        for status in msg.status:
            if status.name.endswith(": /camera/image/compressed"):
                return int({kv.key: kv.value for kv in status.values}["received"])
    return -1


@pytest.mark.parametrize("width, height, size, period", [
    (2333, 1434, 596_000, 0.5),      # the phone photo of the issue
    (4000, 3000, 8_000_000, 1.0),    # 8 MB: a 12 MP still at high quality
], ids=["596KB", "8MB"])
def test_large_jpegs_published_best_effort_arrive_and_get_results(
        server, module_graph, astronaut, width, height, size, period):
    """Every frame arrives (counted by the server), and the person in them is recognised."""
    data = _sized_jpeg(astronaut, width, height, size)
    assert size <= len(data) <= size * 1.1
    results = module_graph.subscribe(FaceArray, f"{NODE}/faces")
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = module_graph.publisher(CompressedImage, "camera/image/compressed",
                                 qos_profile_sensor_data)
    assert module_graph.wait_for_subscribers(pub)
    assert diagnostics.wait_for(lambda m: _received(m) >= 0, 10)
    time.sleep(1.5)  # a status written after the publisher matched
    before = _received(diagnostics.messages)
    sent = set()
    try:
        for _ in range(10):
            msg = compressed(module_graph, data)
            sent.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            pub.publish(msg)
            time.sleep(period)
        arrived = diagnostics.wait_for(lambda m: _received(m) - before >= 10, 15)
        assert arrived, (f"{_received(diagnostics.messages) - before} of 10 best-effort "
                         f"{len(data)}-byte frames arrived:\n{server.output()[-2000:]}")

        def ours(messages):
            return [m for m in messages if (m.header.stamp.sec, m.header.stamp.nanosec) in sent]
        assert results.wait_for(ours, 60), server.output()[-3000:]
    finally:
        module_graph.node.destroy_publisher(pub)
    names = [f.name for m in ours(results.messages) for f in m.faces]
    assert "eileen" in names, names
