"""Face pipeline in worker processes, so several inputs use several cores.

dlib's Python bindings hold the GIL while they compute (measured here: two threads running
the HOG detector use one core), so threads cannot spread face work over cores. This module
runs decode + detect + align + embed in ``spawn``-context worker processes; the caller keeps
the gallery and does the (cheap, numpy) matching itself. With face tracks
(:mod:`core.tracking`) the caller also keeps each input's tracker and sends a plan with the
frame: workers hold no per-input state, so any worker can take any input's next frame and a
restarted pool loses no track.

Bounded by construction: each caller (one thread per input, plus enrollment) has at most one
job in flight, so the executor's queue never holds more jobs than there are callers.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, List, Optional, Tuple

from facerec_server.core.images import DEFAULT_MAX_PIXELS, decode_image
from facerec_server.core.processes import worker_init
from facerec_server.core.types import FrameResult

# --- worker process side ------------------------------------------------------------------
_STATE: Optional[Tuple[Any, Any]] = None  # (FacePipeline, model_paths) of this process


def _pipeline(config, model_paths: Optional[Dict[str, str]]):
    """This process's pipeline, rebuilt when the model files change, else reconfigured."""
    global _STATE
    from facerec_server.core.pipeline import FacePipeline
    key = tuple(sorted((model_paths or {}).items()))
    if _STATE is None or _STATE[1] != key:
        pipeline = FacePipeline(config, model_paths=model_paths)
        pipeline.load()
        _STATE = (pipeline, key)
    else:
        _STATE[0].reconfigure(config)
    return _STATE[0]


def job_warmup(config, model_paths) -> int:
    """Load the models of ``config`` in this worker, and load once each other model file
    ``model_paths`` names (a detector not in use: its file must be sound too); raises
    ModelError when one is unusable."""
    from facerec_server.core.models import kinds_used, load_model
    _pipeline(config, model_paths)
    for kind, path in (model_paths or {}).items():
        if kind not in kinds_used(config.detector):
            load_model(kind, path)  # checked, then dropped
    return os.getpid()


def job_analyse(config, model_paths, data: bytes, fmt: str,
                max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decode one compressed image and run the face pipeline without matching.

    Returns ``(FrameResult, (height, width))``; faces carry descriptors, names are empty.
    Raises ImageDecodeError for data that is not a decodable image or that declares more
    than ``max_pixels`` pixels.
    """
    start = time.perf_counter()
    image = decode_image(data, fmt, max_pixels)
    result = _pipeline(config, model_paths).process(image)
    result.processing_time = time.perf_counter() - start
    return result, image.shape[:2]


def job_follow(config, model_paths, data: bytes, fmt: str, plan,
               max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decode one compressed image and run a tracking plan on it (``FacePipeline.follow``).

    Returns a ``core.tracking.TrackedFrame`` whose processing_time includes the decode.
    Raises ImageDecodeError for data that is not a decodable image or that declares more
    than ``max_pixels`` pixels.
    """
    start = time.perf_counter()
    image = decode_image(data, fmt, max_pixels)
    frame = _pipeline(config, model_paths).follow(image, plan)
    frame.processing_time = time.perf_counter() - start
    return frame


def job_describe(config, model_paths, data: bytes, fmt: str,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> List[Any]:
    """Every face of one compressed image with descriptor and aligned chip (for enrollment)."""
    image = decode_image(data, fmt, max_pixels)
    return _pipeline(config, model_paths).describe(image)


def job_describe_array(config, model_paths, image) -> List[Any]:
    """As :func:`job_describe` for an already decoded BGR image."""
    return _pipeline(config, model_paths).describe(image)


# --- caller side --------------------------------------------------------------------------
class WorkerCrashed(RuntimeError):
    """A worker process died (e.g. killed); the pool was restarted and the job lost."""


class FaceWorkerPool:
    """A restartable pool of face worker processes."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._executor = self._new_executor()
        self.restarts = 0

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.size, mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_init)

    def _restart(self, executor) -> None:
        with self._lock:
            if self._executor is executor:
                for process in list(getattr(executor, "_processes", {}).values()):
                    process.kill()  # a hung worker would otherwise keep its core busy
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                self.restarts += 1

    def run(self, fn, *args, timeout: Optional[float] = None):
        """Run ``fn(*args)`` in a worker and return its result (exceptions propagate).

        A worker that dies, or does not answer within ``timeout`` seconds, restarts the
        pool and raises :class:`WorkerCrashed`.
        """
        with self._lock:
            executor = self._executor
        try:
            return executor.submit(fn, *args).result(timeout)
        except BrokenProcessPool as exc:
            self._restart(executor)
            raise WorkerCrashed(f"a face worker process died ({exc}); pool restarted") from exc
        except concurrent.futures.TimeoutError as exc:
            self._restart(executor)
            raise WorkerCrashed(f"a face worker did not answer within {timeout} s; "
                                "pool restarted") from exc

    def recognise(self, config, model_paths, data: bytes, fmt: str, matcher, tracker=None,
                  stamp: float = 0.0, describe_all: bool = False,
                  timeout: Optional[float] = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> FrameResult:
        """The faces of one compressed frame, named against ``matcher`` (in this process).

        Without ``tracker``: every face from scratch (``job_analyse``). With the input's
        ``core.tracking.FaceTracker``: plan here, ``job_follow`` in a worker, update here;
        faces carry track ids, states and voted names (``stamp``: the frame's time in
        seconds; ``describe_all``: a descriptor for every face, e.g. while enrolling).
        A change of the settings that make descriptors (embedder, model, chip, jitter)
        ends the tracker's tracks: their descriptors would no longer compare.
        ``processing_time`` is the worker's. Errors as :meth:`run`.
        """
        if tracker is None:
            result, _ = self.run(job_analyse, config, model_paths, data, fmt, max_pixels,
                                 timeout=timeout)
            matcher.name_faces(result.faces, threshold=config.threshold)
            return result
        tracker.use_descriptors((config.embedder, config.chip_size, config.padding,
                                 config.jitter, (model_paths or {}).get("recognition")))
        plan = tracker.plan(stamp, describe_all)
        frame = self.run(job_follow, config, model_paths, data, fmt, plan, max_pixels,
                         timeout=timeout)
        faces = tracker.update(frame, stamp, matcher, config.threshold)
        return FrameResult(faces=faces, processing_time=frame.processing_time,
                           full_detection=frame.full_detection, described=frame.described)

    def warmup(self, config, model_paths, timeout: float = 300.0) -> List[int]:
        """Start every worker and load its models; raises the first worker's error.

        ModelError from a worker propagates; a crash or time-out becomes WorkerCrashed.
        """
        with self._lock:
            executor = self._executor
        futures = [executor.submit(job_warmup, config, model_paths) for _ in range(self.size)]
        try:
            return [f.result(timeout) for f in futures]
        except BrokenProcessPool as exc:
            self._restart(executor)
            raise WorkerCrashed(f"a face worker process died while loading models ({exc})") \
                from exc
        except concurrent.futures.TimeoutError as exc:
            self._restart(executor)
            raise WorkerCrashed(f"face workers did not load their models within {timeout} s") \
                from exc

    def load_if_changed(self, old, new, timeout: float = 300.0) -> None:
        """Load the models of ``new`` = ``(FaceConfig, model_paths)`` once in a worker when
        its files, detector or embedder differ from ``old``: a corrupt file raises here
        (ModelError, or WorkerCrashed), before a caller accepts the change."""
        def key(pair):
            config, paths = pair
            return paths, config.detector, config.embedder
        if key(old) != key(new):
            self.run(job_warmup, new[0], new[1], timeout=timeout)

    def shutdown(self) -> None:
        with self._lock:
            self._executor.shutdown(wait=True, cancel_futures=True)


class PoolDescriber:
    """``describe(image_bgr)`` for an :class:`~facerec_server.core.enroll.Enroller`: every
    face with descriptor and aligned chip, computed in a pool's worker processes.

    ``current()`` returns ``(pool, FaceConfig, model_paths)`` at the time of each call, so
    parameter changes (and a restarted pool) apply from the next image."""

    def __init__(self, current: Callable[[], Tuple["FaceWorkerPool", Any, Any]],
                 timeout: Optional[float] = None):
        self._current = current
        self.timeout = timeout

    def describe(self, image) -> List[Any]:
        pool, config, model_paths = self._current()
        return pool.run(job_describe_array, config, model_paths, image, timeout=self.timeout)
