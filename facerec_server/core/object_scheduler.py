"""Run object recognition beside the face pipeline without ever delaying it (ROS-free).

* :class:`ObjectScheduler`: a single latest-frame slot and a worker thread. ``submit`` only
  stores the frame (a newer frame replaces an unprocessed older one) and returns at once;
  the worker takes the latest frame at most ``max_rate_hz`` times per second, runs
  ``process(image)`` and calls ``callback(results, stamp)`` with the frame's stamp token.
* :class:`RecognizerProcess`: an :class:`~facerec_server.core.objects.ObjectRecognizer`
  hosted in a child process. dlib keeps the GIL while it runs (seconds per MMOD frame on a
  CPU), so in-process it would stall every other Python thread, the face pipeline and the
  ROS executor included; behind a pipe the worker thread just waits, GIL released. The
  child runs at a lower CPU priority (``nice``) so faces keep precedence.

Typical node wiring::

    recognizer = RecognizerProcess(configs)          # raises ObjectModelError at start-up
    scheduler = ObjectScheduler(
        rate_hz,
        lambda image: recognizer.recognize(image, label_count, deterministic, crops),
        lambda results, stamp: publish(results, stamp))
    ...
    scheduler.submit(image_bgr, header)              # per frame, never blocks
    ...
    scheduler.stop(); recognizer.close()
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from typing import Any, Callable, List, Optional, Sequence

from .objects import ObjectModelError, ObjectRecognizer, load_object_models
from .types import ObjectResult

_LOG = logging.getLogger(__name__)


class ObjectScheduler:
    """Latest-frame slot + worker thread, rate limited to ``max_rate_hz`` (<= 0: no limit).

    ``process(image) -> results`` and ``callback(results, stamp)`` run on the worker thread;
    exceptions from either go to ``on_error(exception)`` (default: logged) and the worker
    carries on. The image is kept by reference until processed: do not modify it after
    ``submit``. Counters: ``submitted``, ``replaced`` (dropped unprocessed), ``processed``,
    ``errors``; ``last_duration`` is the last ``process`` time in seconds.
    """

    def __init__(self, max_rate_hz: float,
                 process: Callable[[Any], List[ObjectResult]],
                 callback: Callable[[List[ObjectResult], Any], None],
                 on_error: Optional[Callable[[BaseException], None]] = None,
                 start: bool = True, name: str = "object-scheduler"):
        self._process = process
        self._callback = callback
        self._on_error = on_error or (lambda error: _LOG.error(
            "object recognition failed: %s", error, exc_info=error))
        self._cond = threading.Condition()
        self._slot = None  # (image, stamp) or None
        self._stopping = False
        self._busy = False
        self._last_start = None
        self._period = 0.0
        self.set_rate(max_rate_hz)
        self.submitted = 0
        self.replaced = 0
        self.processed = 0
        self.errors = 0
        self.last_duration = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self.start()

    def set_rate(self, max_rate_hz: float) -> None:
        """Change the maximum rate (takes effect for the next frame)."""
        rate = float(max_rate_hz)
        with self._cond:
            self._period = 1.0 / rate if rate > 0 else 0.0
            self._cond.notify_all()

    @property
    def max_rate_hz(self) -> float:
        return 1.0 / self._period if self._period > 0 else 0.0

    @property
    def busy(self) -> bool:
        """True while ``process``/``callback`` run."""
        return self._busy

    @property
    def pending(self) -> bool:
        """True when a frame waits in the slot."""
        return self._slot is not None

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def submit(self, image, stamp: Any = None) -> bool:
        """Offer a frame; returns at once. True if it replaced a frame still waiting (as
        ``latest.LatestSlot.put``). Ignored after ``stop``."""
        with self._cond:
            if self._stopping:
                return False
            replaced = self._slot is not None
            self._slot = (image, stamp)
            self.submitted += 1
            self.replaced += replaced
            self._cond.notify_all()
        return replaced

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop the worker (a pending frame is dropped); True if it has ended."""
        with self._cond:
            self._stopping = True
            self._slot = None
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _take(self):
        """Wait for a frame and for the rate limit; None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._slot is None:
                    self._cond.wait()
                    continue
                if self._last_start is not None and self._period > 0:
                    remaining = self._last_start + self._period - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)  # a newer frame may replace this one
                        continue
                frame, self._slot = self._slot, None
                self._last_start = time.monotonic()
                self._busy = True
                return frame

    def _run(self) -> None:
        while True:
            frame = self._take()
            if frame is None:
                return
            image, stamp = frame
            try:
                started = time.monotonic()
                try:
                    results = self._process(image)
                finally:
                    self.last_duration = time.monotonic() - started
                self.processed += 1
                self._callback(results, stamp)
            except Exception as error:  # keep serving frames
                self.errors += 1
                try:
                    self._on_error(error)
                except Exception:
                    _LOG.exception("object scheduler error handler failed")
            finally:
                self._busy = False


def _serve(conn, configs, nice: int) -> None:
    """Child process: load the models, then answer (image, settings) requests."""
    from .processes import worker_init
    worker_init()
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    try:
        recognizer = ObjectRecognizer(load_object_models(configs))
    except BaseException as error:
        conn.send(("error", _portable(error)))
        conn.close()
        return
    conn.send(("ready", [model.model_id for model in recognizer.models]))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # parent gone
        if request is None:
            return
        image, label_count, deterministic, crops = request
        try:
            reply = ("ok", recognizer.recognize(image, label_count, deterministic, crops))
        except Exception as error:
            reply = ("error", _portable(error))
        conn.send(reply)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError carrying its text."""
    import pickle
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class RecognizerProcess:
    """An :class:`ObjectRecognizer` in a child process (``spawn``), same ``recognize`` call.

    The constructor starts the child and waits until every model is loaded: a missing or
    corrupt model file raises :class:`ObjectModelError` here, at start-up. ``recognize``
    blocks the calling thread (GIL released) until the child answers; errors raised in the
    child are re-raised. If the child dies (e.g. a crash in native code) the call raises
    ``RuntimeError`` and the next call starts a fresh child. ``close()`` ends it.
    """

    def __init__(self, configs: Sequence, nice: int = 10, start_timeout: float = 120.0):
        self._configs = list(configs)
        self._nice = int(nice)
        self._start_timeout = float(start_timeout)
        self._lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")
        self._process = None
        self._conn = None
        self.model_ids: List[str] = []
        self.requests = 0
        self._closed = False
        self._start()

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve, args=(child, self._configs, self._nice),
                                    name="facerec-objects", daemon=True)
        process.start()
        child.close()
        try:
            if not parent.poll(self._start_timeout):
                raise RuntimeError(f"object recognition process did not start within "
                                   f"{self._start_timeout:.0f} s")
            kind, payload = parent.recv()
        except EOFError:
            process.join(5)
            kind, payload = "error", RuntimeError(
                f"object recognition process exited while loading (exit code "
                f"{process.exitcode})")
        except BaseException:
            self._kill(process, parent)
            raise
        if kind != "ready":
            self._kill(process, parent)
            raise payload
        self._process, self._conn, self.model_ids = process, parent, list(payload)

    @staticmethod
    def _kill(process, conn, timeout: float = 5.0) -> None:
        try:
            conn.close()
        except OSError:
            pass
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)

    def recognize(self, image_bgr, label_count: int = 5, deterministic: bool = False,
                  crops: int = 16) -> List[ObjectResult]:
        with self._lock:
            if self._closed:
                raise RuntimeError("object recognition process is closed")
            if self._process is None:
                self._start()
            self.requests += 1
            try:
                self._conn.send((image_bgr, int(label_count), bool(deterministic), int(crops)))
                kind, payload = self._conn.recv()
            except (EOFError, OSError) as error:
                process, conn = self._process, self._conn
                self._process = self._conn = None
                self._kill(process, conn)
                if self._closed:
                    raise RuntimeError("object recognition process is closed") from error
                raise RuntimeError(f"object recognition process died (exit code "
                                   f"{process.exitcode}); it restarts on the next frame"
                                   ) from error
        if kind != "ok":
            raise payload
        return payload

    def close(self, timeout: float = 2.0) -> None:
        """End the child: politely if no request is in flight within ``timeout`` seconds,
        else by killing it (the pending ``recognize`` then raises RuntimeError)."""
        self._closed = True
        if self._lock.acquire(timeout=max(0.0, timeout)):
            try:
                process, conn = self._process, self._conn
                self._process = self._conn = None
                if process is not None:
                    try:
                        conn.send(None)
                    except OSError:
                        pass
                    process.join(timeout)
                    self._kill(process, conn, 0.0)
            finally:
                self._lock.release()
        else:
            process = self._process
            if process is not None and process.is_alive():
                process.kill()  # the worker's recv() sees EOF and cleans up

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["ObjectModelError", "ObjectScheduler", "RecognizerProcess"]
