"""Send the newest frame in a thread of its own: capture never waits for the network (no ROS).

The capture loop hands each encoded frame to :meth:`LatestSender.offer`, which never blocks: a
frame still waiting when the next one comes is replaced (counted in ``stats.replaced``), so
nothing queues up. The sender thread calls ``send(data, frame)`` for the newest frame and,
when a ``delivered`` check is given (a reliable publisher: "has every subscriber acknowledged
what was sent?"), waits for it before sending the next one, up to ``timeout`` seconds. A link
that is slower than the camera then costs frames per second, never the frames themselves:
each frame sent is the newest one, and it is sent whole before the next one starts.

``min_interval`` (seconds, settable at any time) spaces the sends: the camera node sets it from
the server's processing time per frame, so a frame arrives when the server is about to be
free instead of waiting there for the one being processed (and the link and the server's CPU
are not spent on frames it would drop). After such a wait the sender takes the next frame
captured, not one that was waiting during it, so what the server gets is fresh.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

__all__ = ["LatestSender", "SenderStats"]


@dataclass
class SenderStats:
    offered: int = 0        # frames handed over by the capture loop
    sent: int = 0           # frames sent
    replaced: int = 0       # frames never sent: a newer one came while the link was busy
    delivered: int = 0      # frames every subscriber acknowledged (reliable only)
    unacknowledged: int = 0  # frames not acknowledged within the time-out
    send_errors: int = 0
    delivery_seconds: float = 0.0  # time from send to acknowledgement of the last frame


class LatestSender:
    def __init__(self, send: Callable[[bytes, object], None],
                 delivered: Optional[Callable[[], bool]] = None, timeout: float = 2.0,
                 logger=None, poll: float = 0.004):
        self._send = send
        self._delivered = delivered
        self.timeout = float(timeout)
        self._poll = poll
        self._log = logger if logger is not None else logging.getLogger("facerec_camera")
        self._cond = threading.Condition()
        self._item: Optional[Tuple[bytes, object]] = None
        self._offered = 0.0  # time.monotonic() of the waiting frame's offer
        self._stop = threading.Event()
        self.stats = SenderStats()
        self.on_unacknowledged: Optional[Callable[[float], None]] = None
        self.min_interval = 0.0
        self._last_send = 0.0
        self._thread = threading.Thread(target=self._run, name="facerec-sender", daemon=True)
        self._thread.start()

    def offer(self, data: bytes, frame) -> None:
        """Hand over a frame to send (never blocks; replaces a frame still waiting)."""
        with self._cond:
            self.stats.offered += 1
            if self._item is not None:
                self.stats.replaced += 1
            self._item = (data, frame)
            self._offered = time.monotonic()
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self, offered_after: float = 0.0) -> Optional[Tuple[bytes, object]]:
        """The waiting frame (offered after ``offered_after``), waiting for one if needed."""
        with self._cond:
            while (self._item is None or self._offered < offered_after) \
                    and not self._stop.is_set():
                self._cond.wait(0.5)
            item, self._item = self._item, None
            return item

    def _run(self) -> None:
        fresh_after = 0.0
        while not self._stop.is_set():
            wait = self._last_send + self.min_interval - time.monotonic()
            if wait > 0:  # then send the next frame captured
                self._stop.wait(min(wait, 1.0))
                fresh_after = time.monotonic()
                continue
            item = self._take(fresh_after)
            if item is None:
                continue
            self._last_send = time.monotonic()
            try:
                self._send(*item)
            except Exception as exc:  # a transport error must not end sending
                self.stats.send_errors += 1
                if not self._stop.is_set():
                    self._log.warning(f"frame not sent: {exc}")
                continue
            self.stats.sent += 1
            if self._delivered is not None:
                self._wait_delivered()

    def _wait_delivered(self) -> None:
        """Poll (short sleeps: the check must not hold up the capture thread) until every
        subscriber has acknowledged the frame, or the time-out."""
        started = time.monotonic()
        deadline = started + self.timeout
        while not self._stop.is_set():
            try:
                delivered = self._delivered()
            except Exception as exc:  # like a send error: counted, and sending goes on
                self.stats.send_errors += 1
                if not self._stop.is_set():
                    self._log.warning(f"cannot tell whether the frame was delivered: {exc}")
                return
            if delivered:
                self.stats.delivered += 1
                self.stats.delivery_seconds = time.monotonic() - started
                return
            if time.monotonic() >= deadline:
                self.stats.unacknowledged += 1
                if self.on_unacknowledged is not None:
                    self.on_unacknowledged(self.timeout)
                return
            self._stop.wait(self._poll)
