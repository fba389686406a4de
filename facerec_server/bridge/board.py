"""What the web pages show about every input the recognition serves (no ROS, no I/O).

Two kinds of inputs feed one :class:`Board`:

* **bridge clients** (websocket devices and browsers): their frames and results come from
  the bridge itself (:meth:`Board.client_frame`, :meth:`Board.client_result`), counters from
  ``BridgeServer.stats()`` (:meth:`Board.client_counters`); their annotated frame is drawn
  here, on request, from the newest frame and its faces;
* **ROS topics** of ``facerec_server`` instances: counters and timings from the server's
  per-input ``/diagnostics``, names from its ``~/faces``, annotated frames from its
  ``~/annotated/compressed`` (a ROS host feeds these: ``facerec_server.server_watch``).

Once a second :meth:`Board.tick` appends a sample to a bounded history (frames per second,
latency, bytes per second, recognitions per person) for the Statistics page. Bounded
everywhere: at most MAX_INPUTS inputs (inputs silent for FORGET seconds are dropped), HISTORY
samples, MAX_NAMES people counted. Thread-safe (ROS callbacks and the bridge's event loop).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence

CLIENT, ROS = "client", "ros"
MAX_INPUTS = 64
MAX_NAMES = 100
HISTORY = 600  # samples, one per tick (10 minutes at the default 1 s)
FORGET = 120.0  # seconds without news after which an input leaves the board
VIEW_WINDOW = 5.0  # seconds a Cameras page request keeps annotated frames flowing
FRAME_CACHE = 1.0  # seconds a drawn client frame is reused ("a low rate")
UNKNOWN = "(unknown)"


@dataclass
class _Input:
    key: str
    kind: str
    name: str  # client name or topic
    server: str = ""  # the facerec_server node (ROS inputs) or "bridge"
    connected: bool = True
    received: int = 0
    processed: int = 0
    dropped: int = 0
    bytes_in: int = 0
    latency: Deque[float] = field(default_factory=lambda: deque(maxlen=100))  # clients:
    #                                   seconds from receipt to result, since the last tick
    latency_now: Optional[float] = None  # median of the last tick (ROS: of the server's period)
    fps: float = 0.0
    bytes_per_s: float = 0.0
    last_seen: float = 0.0
    frame: Optional[bytes] = None  # newest JPEG: raw (clients) or annotated (ROS)
    frame_stamp: float = 0.0
    faces: list = field(default_factory=list)  # clients: the faces found in ``frame``
    waiting: "OrderedDict[float, bytes]" = field(default_factory=OrderedDict)  # clients:
    #                                          frames whose result has not come yet
    drawn: Optional[bytes] = None
    drawn_at: float = -math.inf
    prev: Optional[tuple] = None  # (time, processed, bytes_in) at the last rate update


class Board:
    """Per-input state and history for the web pages (see the module docstring)."""

    def __init__(self, clock=time.monotonic, wall=time.time):
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._inputs: Dict[str, _Input] = {}
        self._history: Deque[dict] = deque(maxlen=HISTORY)
        self._recognitions: Dict[str, int] = {}  # cumulative, per person
        self._tick_recognitions: Dict[str, int] = {}  # since the last tick
        self._viewed = -math.inf

    # --- feeding: bridge clients ---------------------------------------------------------------
    def client_frame(self, name: str, jpeg: bytes, stamp: float) -> None:
        with self._lock:
            entry = self._entry(CLIENT, name, "bridge")
            entry.waiting[stamp] = jpeg  # until its result comes (or a newer frame's)
            while len(entry.waiting) > 3:  # one processed, one waiting, one arriving
                entry.waiting.popitem(last=False)
            if entry.frame is None:
                entry.frame, entry.frame_stamp = jpeg, stamp

    def client_result(self, name: str, stamp: float, faces: Optional[Sequence],
                      latency: float) -> None:
        """The result of the frame received at ``stamp``: that frame and its faces are
        what the Cameras page shows."""
        with self._lock:
            entry = self._entry(CLIENT, name, "bridge")
            entry.latency.append(latency)
            jpeg = entry.waiting.pop(stamp, None)
            if jpeg is not None:
                entry.frame, entry.frame_stamp = jpeg, stamp
                entry.faces, entry.drawn = list(faces or ()), None
            if faces is not None:
                self._count_names(face.name for face in faces)

    def client_counters(self, clients: Dict[str, dict]) -> None:
        """``BridgeServer.stats()["clients"]``: counters of every connected client."""
        with self._lock:
            for name, counters in clients.items():
                entry = self._entry(CLIENT, name, "bridge")
                entry.received = counters.get("frames_received", 0)
                entry.processed = counters.get("frames_processed", 0)
                entry.dropped = counters.get("frames_dropped", 0)
                entry.bytes_in = counters.get("bytes_received", 0)

    def client_left(self, name: str) -> None:
        with self._lock:
            entry = self._inputs.get(f"{CLIENT}:{name}")
            if entry is not None:
                entry.connected = False

    # --- feeding: ROS topics of facerec_server instances ---------------------------------------
    def ros_diagnostics(self, server: str, topic: str, values: Dict[str, str]) -> None:
        """One input's ``/diagnostics`` values (strings, as KeyValue carries them)."""
        def number(key: str) -> float:
            try:
                value = float(values.get(key) or 0.0)
            except ValueError:
                return 0.0
            return value if math.isfinite(value) else 0.0

        with self._lock:
            entry = self._entry(ROS, topic, server)
            entry.received, entry.processed = int(number("received")), int(number("processed"))
            entry.dropped = int(number("dropped_replaced") + number("dropped_stale"))
            latency = values.get("latency_median")
            entry.latency_now = number("latency_median") if latency else None

    def ros_faces(self, server: str, topic: str, names: Sequence[str]) -> None:
        with self._lock:
            self._entry(ROS, topic, server)
            self._count_names(names)

    def ros_frame(self, server: str, topic: str, jpeg: bytes) -> None:
        """The server's annotated frame (already drawn) of one of its inputs."""
        with self._lock:
            entry = self._entry(ROS, topic, server)
            entry.frame, entry.frame_stamp = jpeg, self._wall()

    def inputs_of(self, server: str) -> List[str]:
        with self._lock:
            return [e.name for e in self._inputs.values() if e.kind == ROS and e.server == server]

    # --- the pages ---------------------------------------------------------------------------
    def viewed(self) -> None:
        """Someone looks at the Cameras page: annotated frames are wanted for a while."""
        self._viewed = self._clock()

    def viewing(self) -> bool:
        return self._clock() - self._viewed < VIEW_WINDOW

    def cameras(self) -> List[dict]:
        with self._lock:
            entries = sorted(self._inputs.values(), key=lambda e: (e.kind != ROS, e.key))
            return [self._describe(e) for e in entries]

    def frame(self, key: str, draw=None) -> Optional[bytes]:
        """The newest annotated JPEG of an input; for clients drawn by ``draw(jpeg, faces)``
        at most once per FRAME_CACHE seconds."""
        with self._lock:
            entry = self._inputs.get(key)
            if entry is None or entry.frame is None:
                return None
            if entry.kind == ROS or draw is None:
                return entry.frame
            now = self._clock()
            if entry.drawn is not None and now - entry.drawn_at < FRAME_CACHE:
                return entry.drawn
            jpeg, faces = entry.frame, list(entry.faces)
        drawn = draw(jpeg, faces)
        with self._lock:
            entry.drawn, entry.drawn_at = drawn, now
        return drawn

    def tick(self) -> None:
        """Update rates and append one history sample (call about once a second)."""
        now = self._clock()
        with self._lock:
            for key, entry in list(self._inputs.items()):
                if now - entry.last_seen > FORGET:
                    del self._inputs[key]
                    continue
                if entry.prev is not None and now > entry.prev[0]:
                    elapsed = now - entry.prev[0]
                    entry.fps = max(0, entry.processed - entry.prev[1]) / elapsed
                    entry.bytes_per_s = max(0, entry.bytes_in - entry.prev[2]) / elapsed
                entry.prev = (now, entry.processed, entry.bytes_in)
                if entry.kind == CLIENT:
                    entry.latency_now = statistics.median(entry.latency) \
                        if entry.latency else None
                    entry.latency.clear()
            sample = {"t": self._wall(), "inputs": {
                key: {"fps": round(e.fps, 2), "latency_ms": _ms(e.latency_now),
                      "bytes_per_s": round(e.bytes_per_s), "bytes": e.bytes_in}
                for key, e in self._inputs.items()},
                "recognitions": dict(self._tick_recognitions)}
            self._tick_recognitions = {}
            self._history.append(sample)

    def statistics(self) -> dict:
        """History for the charts plus the cumulative recognitions per person."""
        with self._lock:
            return {"history": list(self._history),
                    "recognitions": dict(self._recognitions),
                    "inputs": {k: {"name": e.name, "kind": e.kind, "server": e.server}
                               for k, e in self._inputs.items()}}

    # --- internals -----------------------------------------------------------------------------
    def _entry(self, kind: str, name: str, server: str) -> _Input:
        key = f"{kind}:{server}:{name}" if kind == ROS else f"{kind}:{name}"
        entry = self._inputs.get(key)
        if entry is None:
            if len(self._inputs) >= MAX_INPUTS:  # the stalest input makes room
                stalest = min(self._inputs.values(), key=lambda e: e.last_seen)
                del self._inputs[stalest.key]
            entry = self._inputs[key] = _Input(key, kind, name, server)
        entry.last_seen = self._clock()
        entry.connected = True
        return entry

    def _count_names(self, names) -> None:
        for name in names:
            name = name or UNKNOWN
            for table in (self._recognitions, self._tick_recognitions):
                if name in table or len(table) < MAX_NAMES:
                    table[name] = table.get(name, 0) + 1

    def _describe(self, entry: _Input) -> dict:
        return {"id": entry.key, "kind": entry.kind, "name": entry.name,
                "server": entry.server, "connected": entry.connected,
                "received": entry.received, "processed": entry.processed,
                "dropped": entry.dropped, "fps": round(entry.fps, 2),
                "latency_ms": _ms(entry.latency_now), "bytes": entry.bytes_in,
                "bytes_per_s": round(entry.bytes_per_s),
                "seen_s_ago": round(self._clock() - entry.last_seen, 1),
                "has_frame": entry.frame is not None}


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000.0, 1)
