"""What the diagnostics say about one image input: a level and a message saying what to check.

Plain data in, plain data out (no ROS): the server node gathers an :class:`InputView` once per
diagnostics period and turns the :func:`assess` result into a ``DiagnosticStatus`` and, for a
warning, a log line (:class:`WarningLog` keeps those from repeating every period).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

OK, WARN = 0, 1

#: Where the README explains the transport settings (named in the messages).
TRANSPORT_HINT = ("check the transport settings (README, 'Transport': config/fastdds.xml on both "
                  "hosts, UDP not blocked, MTU)")


@dataclass
class InputView:
    """One input at one diagnostics period."""

    received: int                     # frames received since start
    publishers: int                   # publishers matched now
    silent_for: Optional[float]       # seconds since the last frame (None: never had one)
    matched_for: Optional[float]      # seconds since a publisher matched (None: none)
    grew: Dict[str, int] = field(default_factory=dict)  # counters' growth in this period
    last_error: str = ""
    max_frame_age: float = 1.0
    input_timeout: float = 3.0


def assess(view: InputView) -> Tuple[int, str]:
    """(level, message) for one input; the most pressing problem wins."""
    grew = view.grew.get
    timeout = view.input_timeout
    if grew("decode_errors", 0) + grew("errors", 0):
        return WARN, view.last_error[:200]
    if grew("incompatible_qos", 0):
        return WARN, ("a publisher's QoS is incompatible with this input's (image_reliability "
                      "reliable needs a reliable publisher: set the camera's reliability)")
    if timeout > 0 and view.received == 0 and view.publishers and \
            view.matched_for is not None and view.matched_for > timeout:
        return WARN, (f"{view.publishers} publisher(s) matched for {view.matched_for:.0f} s "
                      f"but no frame arrived: frames too large or lost on the way; "
                      f"{TRANSPORT_HINT}")
    if timeout > 0 and view.received and view.silent_for is not None and \
            view.silent_for > timeout:
        if view.publishers:
            return WARN, (f"no frame for {view.silent_for:.0f} s although {view.publishers} "
                          f"publisher(s) are matched: is the link down or losing frames? "
                          f"{TRANSPORT_HINT}")
        return WARN, (f"no frame for {view.silent_for:.0f} s and no publisher: did the "
                      "camera stop?")
    if grew("dropped_future", 0):
        return WARN, (f"dropping frames stamped more than max_frame_age "
                      f"({view.max_frame_age:g} s) in the future: is the camera's clock "
                      "synchronised with this machine's (chrony/NTP)?")
    if grew("dropped_stale", 0):
        return WARN, (f"dropping frames older than max_frame_age ({view.max_frame_age:g} s): "
                      "is the camera's clock synchronised with this machine's (chrony/NTP), "
                      "or is the link that slow?")
    if grew("lost", 0):
        return WARN, (f"{grew('lost')} frame(s) lost on the way in this period (incomplete or "
                      f"dropped by the transport); {TRANSPORT_HINT}")
    if grew("dropped_replaced", 0):
        return OK, "dropping frames (input faster than processing)"
    if view.received == 0:
        return OK, ("no frames received yet" if view.publishers
                    else "no frames received yet (no publisher)")
    return OK, "ok"


class WarningLog:
    """Log a warning when it first appears or changes, then at most every ``repeat`` s."""

    def __init__(self, log: Callable[[str], None], repeat: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._repeat, self._clock = log, repeat, clock
        self._last: Dict[str, Tuple[str, float]] = {}  # key -> (kind, when)

    def __call__(self, key: str, level: int, message: str) -> None:
        if level < WARN:
            self._last.pop(key, None)
            return
        kind = re.sub(r"[0-9.]+", "#", message)  # numbers change every period; the kind not
        now = self._clock()
        previous = self._last.get(key)
        if previous is None or previous[0] != kind or now - previous[1] >= self._repeat:
            self._last[key] = (kind, now)
            self._log(f"{key}: {message}")
