"""What the server tells its user about each input: a real server process over real DDS.

Each input problem is a diagnostics WARN on that input and a log line that says what to check:
a publisher that is matched but whose frames never arrive, an input that goes silent, frames
dropped as stale (camera clock behind) or stamped in the future (camera clock ahead).
"""
import re
import sys
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage

from facerec_msgs.srv import ListFaces
from rosutil import Proc, compressed, jpeg, start_node, wait_for_service

NODE = "/facerec_server"
INPUTS = ["cam_silent", "cam_stale", "cam_future", "cam_blocked"]
WARN = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_graph):
    tmp = tmp_path_factory.mktemp("inputs")
    proc = start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
        "gallery.path": str(tmp / "gallery.db"), "image_topics": INPUTS,
        "max_frame_age": 1.0, "diagnostics_period": 0.5, "input_timeout": 2.0,
        "image_reliability": "best_effort"})  # best effort loses frames: what is reported
    wait_for_service(module_graph, ListFaces, f"{NODE}/list_faces", proc)
    yield proc
    assert proc.stop() == 0, proc.output()


def _level(status) -> int:
    return ord(status.level) if isinstance(status.level, bytes) else int(status.level)


def _statuses(messages, topic):
    return [s for m in messages for s in m.status if s.name.endswith(f": /{topic}")]


def _warned(diagnostics, topic, pattern, timeout=20.0):
    """The newest WARN of ``topic`` whose message matches ``pattern`` (None if none came)."""
    def found(messages):
        return any(_level(s) == WARN and re.search(pattern, s.message, re.I)
                   for s in _statuses(messages, topic))
    if not diagnostics.wait_for(found, timeout):
        return None
    return [s for s in _statuses(diagnostics.messages, topic)
            if _level(s) == WARN and re.search(pattern, s.message, re.I)][-1]


def _publisher(graph, topic):
    pub = graph.publisher(CompressedImage, topic, 1)
    assert graph.wait_for_subscribers(pub)
    time.sleep(0.3)
    return pub


def _stamped(graph, data, offset):
    msg = compressed(graph, data)
    nanoseconds = graph.node.get_clock().now().nanoseconds + int(offset * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(nanoseconds, 1_000_000_000)
    return msg


def test_an_input_that_goes_silent_is_reported(server, module_graph, astronaut):
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = _publisher(module_graph, "cam_silent")
    data = jpeg(astronaut)
    for _ in range(5):
        pub.publish(compressed(module_graph, data))
        time.sleep(0.2)
    status = _warned(diagnostics, "cam_silent", r"no frame for")
    assert status is not None, server.output()[-3000:]
    assert "publisher" in status.message  # says the publisher is still matched: the link
    assert re.search(r"cam_silent.*no frame for .*(link|camera)", server.output()), \
        server.output()[-3000:]
    module_graph.node.destroy_publisher(pub)


def test_stale_frames_are_reported_with_what_to_check(server, module_graph, astronaut):
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = _publisher(module_graph, "cam_stale")
    data = jpeg(astronaut)
    deadline = time.monotonic() + 20
    status = None
    while status is None and time.monotonic() < deadline:
        pub.publish(_stamped(module_graph, data, -2.0))  # a camera clock 2 s behind
        status = _warned(diagnostics, "cam_stale", r"older than max_frame_age", timeout=0.5)
    assert status is not None, server.output()[-3000:]
    assert re.search(r"cam_stale.*older than max_frame_age.*clock", server.output()), \
        server.output()[-3000:]
    module_graph.node.destroy_publisher(pub)


def test_frames_stamped_in_the_future_are_dropped_and_reported(server, module_graph, astronaut):
    diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
    pub = _publisher(module_graph, "cam_future")
    data = jpeg(astronaut)
    deadline = time.monotonic() + 20
    status = None
    while status is None and time.monotonic() < deadline:
        pub.publish(_stamped(module_graph, data, +2.0))  # a camera clock 2 s ahead
        status = _warned(diagnostics, "cam_future", r"in the future", timeout=0.5)
    assert status is not None, server.output()[-3000:]
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["dropped_future"]) >= 1
    assert int(values["processed"]) == 0  # never processed with a negative latency
    assert re.search(r"cam_future.*in the future.*clock", server.output()), \
        server.output()[-3000:]
    module_graph.node.destroy_publisher(pub)


def test_matched_publisher_whose_frames_never_arrive_is_reported(server, module_graph, tmp_path):
    """A camera started without the project's transport settings publishes 2.5 MB frames: Fast
    DDS's default 512 KB shared-memory segment cannot carry them (few or none arrive)."""
    script = tmp_path / "big_publisher.py"
    script.write_text(BIG_PUBLISHER)
    proc = Proc([sys.executable, str(script)], tmp_path, "big",
                FASTDDS_DEFAULT_PROFILES_FILE=None)
    try:
        diagnostics = module_graph.subscribe(DiagnosticArray, "/diagnostics")
        # none or few arrive: "matched ... but no frame arrived", or "N frame(s) lost on the
        # way" (Fast DDS reports the samples it could not complete)
        status = _warned(diagnostics, "cam_blocked",
                         r"(matched .* but no frame|lost on the way).*transport", timeout=40)
        assert status is not None, proc.output() + server.output()[-3000:]
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["publishers"]) == 1
        assert int(values["received"]) == 0 or int(values["lost"]) > 0, values
        assert re.search(r"cam_blocked: .*(matched .* but no frame|lost on the way)"
                         r".*transport settings", server.output()), server.output()[-3000:]
    finally:
        proc.stop()


BIG_PUBLISHER = '''
import time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
rclpy.init()
node = rclpy.create_node("big_publisher")
pub = node.create_publisher(CompressedImage, "cam_blocked", qos_profile_sensor_data)
import cv2, numpy
noise = numpy.random.default_rng(1).integers(0, 256, (1400, 1400, 3), numpy.uint8)
data = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
print(f"publishing {len(data)} byte JPEGs", flush=True)
try:
    while True:
        msg = CompressedImage(format="jpeg", data=data)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(0.2)
except KeyboardInterrupt:
    pass
'''
