"""Latest-frame hand-off between a producer (a subscription) and one worker thread.

Only the newest item waits: putting a new item replaces the waiting one, which is counted
as dropped. Nothing here can grow without bound.
"""
from __future__ import annotations

import collections
import statistics
import threading
from typing import Any, Callable, Deque, Dict, Optional


class LatestSlot:
    """A one-item mailbox. ``put`` never blocks; ``get`` waits for an item or ``close``."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; return True when it replaced an item that was still waiting."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Any:
        """Take the waiting item; None on timeout or when closed."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class InputStats:
    """Counters and recent timings of one input, read and reset once per diagnostics period.

    Timings are kept in bounded deques (the newest ``window`` values of the period).
    """

    COUNTERS = ("received", "processed", "dropped_replaced", "dropped_stale",
                "dropped_future", "dropped_disabled", "decode_errors", "errors", "lost",
                "incompatible_qos", "full_detections", "faces_described")

    def __init__(self, window: int = 1000):
        self._lock = threading.Lock()
        self.totals: Dict[str, int] = {name: 0 for name in self.COUNTERS}
        self._processing: Deque[float] = collections.deque(maxlen=window)
        self._latency: Deque[float] = collections.deque(maxlen=window)
        self.last_error = ""

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.totals[name] += n

    def error(self, name: str, message: str) -> None:
        with self._lock:
            self.totals[name] += 1
            self.last_error = message

    def timing(self, processing: float, latency: Optional[float]) -> None:
        with self._lock:
            self._processing.append(processing)
            if latency is not None:
                self._latency.append(latency)

    def snapshot(self) -> Dict[str, Any]:
        """Totals since start plus median/max timings of the period since the last snapshot."""
        with self._lock:
            processing, latency = list(self._processing), list(self._latency)
            self._processing.clear()
            self._latency.clear()
            out: Dict[str, Any] = dict(self.totals)
            out["last_error"] = self.last_error
        out["processing_time_median"] = statistics.median(processing) if processing else None
        out["processing_time_max"] = max(processing) if processing else None
        out["latency_median"] = statistics.median(latency) if latency else None
        out["latency_max"] = max(latency) if latency else None
        out["period_frames"] = len(processing)
        return out


class LatestWorker:
    """A thread that handles the newest item of a :class:`LatestSlot`, one at a time."""

    def __init__(self, name: str, handler: Callable[[Any], None],
                 on_error: Callable[[BaseException], None]):
        self.slot = LatestSlot()
        self._handler = handler
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Offer an item; True when an older waiting item was dropped for it."""
        return self.slot.put(item)

    def _run(self) -> None:
        while not self.slot.closed:
            item = self.slot.get(timeout=0.5)
            if item is None:
                continue
            try:
                self._handler(item)
            except BaseException as exc:  # noqa: B902 - a worker must never die silently
                self._on_error(exc)

    def stop(self, timeout: float = 5.0) -> None:
        self.slot.close()
        self._thread.join(timeout)
