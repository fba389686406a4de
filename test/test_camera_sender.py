"""The camera's sender thread (no ROS): capture never waits, the newest frame goes out, a
reliable send waits for the acknowledgement, ``min_interval`` spaces the sends."""
import threading
import time

from facerec_camera.sender import LatestSender


class Link:
    """Stands for the publisher: records sends; ``acked`` is what the subscribers confirmed."""

    def __init__(self):
        self.sent, self.acked = [], threading.Event()

    def send(self, data, frame):
        self.acked.clear()
        self.sent.append((data, time.monotonic()))


def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_offer_never_blocks_and_only_the_newest_waiting_frame_is_sent():
    link = Link()
    sender = LatestSender(link.send, link.acked.is_set, timeout=5.0)
    try:
        sender.offer(b"first", None)
        _until(lambda: len(link.sent) == 1)
        started = time.monotonic()
        for index in range(50):  # the link is busy with "first": these replace each other
            sender.offer(b"frame%d" % index, None)
        assert time.monotonic() - started < 0.1
        time.sleep(0.1)
        assert len(link.sent) == 1  # waiting for the acknowledgement of "first"
        link.acked.set()
        _until(lambda: len(link.sent) == 2)
        assert link.sent[1][0] == b"frame49"
        assert sender.stats.replaced == 49 and sender.stats.delivered == 1
    finally:
        assert sender.stop()


def test_unacknowledged_frame_is_given_up_after_the_time_out():
    link = Link()
    timeouts = []
    sender = LatestSender(link.send, link.acked.is_set, timeout=0.2)
    sender.on_unacknowledged = timeouts.append
    try:
        sender.offer(b"lost", None)
        sender_time = time.monotonic()
        _until(lambda: sender.stats.unacknowledged == 1)
        assert time.monotonic() - sender_time >= 0.2 and timeouts == [0.2]
        sender.offer(b"next", None)
        _until(lambda: len(link.sent) == 2)
    finally:
        assert sender.stop()


def test_min_interval_spaces_the_sends():
    link = Link()
    sender = LatestSender(link.send)  # best effort: no acknowledgement to wait for
    sender.min_interval = 0.15
    try:
        for _ in range(40):
            sender.offer(b"x", None)
            time.sleep(0.01)
        _until(lambda: len(link.sent) >= 3)
        gaps = [b[1] - a[1] for a, b in zip(link.sent, link.sent[1:])]
        assert min(gaps) >= 0.14, gaps
    finally:
        assert sender.stop()
