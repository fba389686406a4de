"""The facerec_server instances on the ROS graph, as the bridge's web pages see them.

Used by ``facerec_bridge`` (a thin ROS adapter feeding the ROS-free
:class:`~facerec_server.bridge.board.Board`):

* ``/diagnostics``: every ``facerec_server`` publishes one status per input, named
  ``"<node>: <topic>"`` with ``hardware_id`` = the node and counters (``received``,
  ``processed``, ``dropped_*``, ``latency_median``...). A status with a ``received`` value is
  an input; its node is a server to watch.
* ``<node>/faces`` (FaceArray; ``source`` = the input topic): names recognised per input.
* ``<node>/annotated/compressed``: the server draws and encodes it only while someone
  subscribes, so it is subscribed only while someone looks at the Cameras page
  (``Board.viewing()``). The topic is shared by the node's inputs: a frame is matched to its
  input by its header (the FaceArray of the same frame carries the same header and the
  topic), or belongs to the node's only input.

Bounded: at most MAX_SERVERS servers (silent ones are forgotten after FORGET seconds), a
short table of recent headers per server.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from facerec_msgs.msg import FaceArray

MAX_SERVERS = 16
FORGET = 30.0  # seconds without a diagnostics message from a server
RECENT_HEADERS = 64
FRAME_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST, depth=1)


class _Server:
    def __init__(self, name: str):
        self.name = name
        self.seen = time.monotonic()
        self.faces_sub = None
        self.frames_sub = None
        self.recent: "OrderedDict[tuple, str]" = OrderedDict()  # (stamp, frame_id) -> topic


class ServerWatch:
    """Feeds ``board`` with the inputs of every facerec_server ``node`` can see."""

    def __init__(self, node, board, period: float = 1.0):
        self.node, self.board = node, board
        self._own = node.get_fully_qualified_name()
        self._servers: Dict[str, _Server] = {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics_callback, 10)
        node.create_timer(period, self.manage_callback)

    def diagnostics_callback(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            server = status.hardware_id
            values = {kv.key: kv.value for kv in status.values}
            if server == self._own or "received" not in values or ": " not in status.name:
                continue  # our own statuses, or not an input of a facerec_server
            topic = status.name.split(": ", 1)[1]
            with self._lock:
                entry = self._servers.get(server)
                if entry is None:
                    if len(self._servers) >= MAX_SERVERS:
                        continue
                    entry = self._servers[server] = _Server(server)
                entry.seen = time.monotonic()
            self.board.ros_diagnostics(server, topic, values)

    def manage_callback(self) -> None:
        """Subscribe to new servers, forget silent ones, and take annotated frames only
        while the Cameras page is open."""
        viewing = self.board.viewing()
        now = time.monotonic()
        with self._lock:
            servers = list(self._servers.values())
        for entry in servers:
            if now - entry.seen > FORGET:
                self._drop(entry)
                continue
            # no QoS event handlers on these subscriptions: they are destroyed from a
            # callback while the executor waits, and rclpy's executor fails on the event
            # handler of an entity destroyed under it (InvalidHandle)
            if entry.faces_sub is None:
                entry.faces_sub = self.node.create_subscription(
                    FaceArray, f"{entry.name}/faces",
                    lambda msg, e=entry: self.faces_callback(e, msg), 10,
                    event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
            if viewing and entry.frames_sub is None:
                entry.frames_sub = self.node.create_subscription(
                    CompressedImage, f"{entry.name}/annotated/compressed",
                    lambda msg, e=entry: self.frame_callback(e, msg), FRAME_QOS,
                    event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
            elif not viewing and entry.frames_sub is not None:
                self.node.destroy_subscription(entry.frames_sub)
                entry.frames_sub = None

    def faces_callback(self, entry: _Server, msg: FaceArray) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        with self._lock:
            entry.recent[key] = msg.source
            while len(entry.recent) > RECENT_HEADERS:
                entry.recent.popitem(last=False)
        self.board.ros_faces(entry.name, msg.source, [face.name for face in msg.faces])

    def frame_callback(self, entry: _Server, msg: CompressedImage) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        with self._lock:
            topic: Optional[str] = entry.recent.get(key)
        if topic is None:
            inputs = self.board.inputs_of(entry.name)
            if len(inputs) != 1:
                return  # cannot tell which input this frame belongs to
            topic = inputs[0]
        self.board.ros_frame(entry.name, topic, bytes(msg.data))

    def _drop(self, entry: _Server) -> None:
        with self._lock:
            self._servers.pop(entry.name, None)
        for sub in (entry.faces_sub, entry.frames_sub):
            if sub is not None:
                self.node.destroy_subscription(sub)
