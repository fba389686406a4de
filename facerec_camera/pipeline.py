"""The capture loop: read -> encode -> deliver at a fixed rate, in its own thread (no ROS).

Used by the ROS node (``deliver`` publishes a CompressedImage) and meant to be reused by a
non-ROS client (``deliver`` sends over a websocket). Behaviour:

* the rate is kept by :class:`~facerec_camera.rate.RateKeeper` (absolute deadlines, late
  ticks skipped, never bursts); ``deliver`` must not block for long (the ROS publisher uses
  best-effort depth-1 QoS, so a slow subscriber never stalls it);
* ``SourceError`` from a *live* source (a camera that disappeared) is logged and counted
  (``stats.lost``), then the source is re-opened with exponential back-off (0.5 s doubling up
  to 10 s) until it works again or the loop is stopped;
* a finite source that ends (a file with ``loop`` off) finishes the loop with exit code 0;
  an error from a non-live source finishes it with exit code 1;
* ``stop()`` interrupts any wait at once.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .encode import EncodeError, FrameEncoder
from .rate import RateKeeper
from .sources import Frame, FrameSource, SourceError

__all__ = ["CaptureLoop", "CaptureStats"]


@dataclass
class CaptureStats:
    frames: int = 0           # frames delivered
    bytes: int = 0            # JPEG bytes delivered
    skipped: int = 0          # rate ticks skipped because capture/encode/deliver ran late
    lost: int = 0             # times the source failed (camera disappeared, read error)
    reopens: int = 0          # successful re-opens after a failure
    encode_errors: int = 0
    deliver_errors: int = 0
    cpu_seconds: float = 0.0  # thread CPU time spent in read + encode + deliver


class CaptureLoop:
    def __init__(self, source: FrameSource, encoder: FrameEncoder, fps: float,
                 deliver: Callable[[bytes, Frame], None], logger=None,
                 on_finished: Optional[Callable[[int], None]] = None,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0):
        self.source = source
        self.encoder = encoder
        self._deliver = deliver
        self._log = logger if logger is not None else logging.getLogger("facerec_camera")
        self._on_finished = on_finished
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.exit_code: Optional[int] = None
        self.stats = CaptureStats()
        self._rate = RateKeeper(fps, sleep=self._stop.wait)
        self._pending_fps: Optional[float] = None
        self._thread: Optional[threading.Thread] = None

    # --- control (any thread) ---------------------------------------------------------------
    @property
    def fps(self) -> float:
        return self._pending_fps if self._pending_fps is not None else self._rate.rate

    def set_fps(self, fps: float) -> None:
        RateKeeper._period(fps)  # validate now, apply in the loop thread
        self._pending_fps = float(fps)

    def set_encoder(self, encoder: FrameEncoder) -> None:
        self.encoder = encoder  # a plain attribute swap: atomic for the loop thread

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture loop already started")
        self._thread = threading.Thread(target=self._run, name="facerec-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join; True when the thread has ended."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- one frame (also used by the benchmark) ---------------------------------------------
    def step(self) -> Optional[bool]:
        """Read, encode and deliver one frame. None at the end of the source, False when the
        frame was dropped (encode/deliver error), True when delivered. SourceError propagates.
        """
        started = time.thread_time()
        try:
            frame = self.source.read()
            if frame is None:
                return None
            try:
                data = self.encoder.encode(frame)
            except EncodeError as exc:
                self.stats.encode_errors += 1
                self._log.warning(f"frame dropped: {exc}")
                return False
            try:
                self._deliver(data, frame)
            except Exception as exc:  # a transport error must not end capture
                self.stats.deliver_errors += 1
                if not self._stop.is_set():
                    self._log.warning(f"frame not delivered: {exc}")
                return False
            self.stats.frames += 1
            self.stats.bytes += len(data)
            return True
        finally:
            self.stats.cpu_seconds += time.thread_time() - started

    # --- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        code = 1
        try:
            code = self._loop()
        except Exception as exc:  # a bug: report it instead of dying silently
            self._log.error(f"capture loop failed: {exc!r}")
            code = 1
        finally:
            self.exit_code = code
            self.finished.set()
            if self._on_finished is not None:
                self._on_finished(code)

    def _loop(self) -> int:
        rate = self._rate
        while not self._stop.is_set():
            if self._pending_fps is not None:
                rate.set_rate(self._pending_fps)
                self._pending_fps = None
            rate.wait()
            self.stats.skipped = rate.skipped
            if self._stop.is_set():
                break
            try:
                result = self.step()
            except SourceError as exc:
                self.stats.lost += 1
                if not self.source.live:
                    self._log.error(f"{exc}")
                    return 1
                self._log.error(f"{exc}; re-opening {self.source.description}")
                if not self._reopen():
                    break
                rate.reset()
                continue
            if result is None:
                self._log.info(f"end of {self.source.description} (loop is off): "
                               f"{self.stats.frames} frames sent")
                return 0
        return 0

    def _reopen(self) -> bool:
        delay = self.backoff_initial
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                self.source.close()
            except Exception as exc:  # closing a vanished device may fail; open decides
                self._log.debug(f"close failed: {exc!r}")
            try:
                self.source.open()
            except SourceError as exc:
                self._log.warning(f"re-open attempt {attempt} failed: {exc}; "
                                  f"next try in {delay:.1f} s")
                self._stop.wait(delay)
                delay = min(delay * 2.0, self.backoff_max)
                continue
            self.stats.reopens += 1
            self._log.info(f"{self.source.description} re-opened after {attempt} attempt(s)")
            return True
        return False
