"""A drift-free rate keeper (no ROS).

Deadlines are absolute: tick ``k`` is due at ``start + k * period`` on a monotonic clock, so
time spent working between ticks and sleep overshoot never accumulate. When the caller is late
by one or more whole periods, the missed deadlines are skipped (counted in ``skipped``) instead
of being run back to back; the schedule stays on the same grid.

The clock and sleep functions are injectable: tests drive it with a fake clock, and the capture
loop passes ``threading.Event.wait`` as ``sleep`` so that stopping interrupts a wait at once.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

__all__ = ["RateKeeper"]


class RateKeeper:
    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self.period = self._period(rate_hz)
        self._next: Optional[float] = None
        self.ticks = 0
        self.skipped = 0

    @staticmethod
    def _period(rate_hz: float) -> float:
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)):
            raise ValueError(f"rate must be a number of Hz, got {rate_hz!r}")
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate must be > 0 Hz, got {rate_hz}")
        return 1.0 / float(rate_hz)

    @property
    def rate(self) -> float:
        return 1.0 / self.period

    def set_rate(self, rate_hz: float) -> None:
        """Change the rate; the next tick is one new period after the last one."""
        period = self._period(rate_hz)
        if self._next is not None:
            self._next += period - self.period
        self.period = period

    def reset(self) -> None:
        """Start a new grid: the next ``wait()`` returns at once (e.g. after a re-open)."""
        self._next = None

    def wait(self) -> float:
        """Sleep until the next deadline and return it (the nominal time of this tick).

        The first call returns at once and starts the grid. ``sleep`` may return early (an
        interrupted wait); the caller is expected to check its own stop condition then.
        """
        now = self._clock()
        if self._next is None:
            self._next = now
        due = self._next
        if now < due:
            self._sleep(due - now)
        else:
            missed = int((now - due) // self.period)
            if missed:
                self.skipped += missed
                due += missed * self.period
        self._next = due + self.period
        self.ticks += 1
        return due
