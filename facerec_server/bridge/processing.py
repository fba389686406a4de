"""The bridge's processor contract and an adapter onto the recognition core.

A *processor* is a blocking callable, run by the bridge in a worker thread::

    processor(client_id: str, jpeg: bytes, settings: ClientSettings)
        -> (faces: list[FaceResult], objects: list[ObjectResult] | None)

It must not compute a part the client disabled (``settings.faces_enabled`` /
``settings.objects_enabled``); the bridge never calls it when both are off. ``objects`` may
be None: the frame's reply then carries faces only and the host delivers object results on
its own schedule with ``BridgeServer.send_objects`` (so a slow object model does not delay
the face reply; ``facerec_server.bridge_node`` works this way). It raises
:class:`UndecodableFrame` for a frame that is not a decodable image (counted as
``decode_errors``) and :class:`FrameFailed` when the frame could not be processed for a
reason outside the frame (e.g. its worker process died or timed out); that and any other
exception is counted as ``processing_errors``, logged (throttled; a traceback only for
exceptions other than FrameFailed) and reported to the client as a MESSAGE
``frame not processed: <reason>``. The client's next frame is processed as usual.
"""
from __future__ import annotations

import threading
from typing import Callable, List, Optional, Sequence, Tuple

from .protocol import ClientSettings

Processor = Callable[[str, bytes, ClientSettings], Tuple[Sequence, Optional[Sequence]]]


class UndecodableFrame(ValueError):
    """The frame's bytes are not a decodable JPEG."""


class FrameFailed(RuntimeError):
    """This frame was not processed for a reason outside the frame (the message says why,
    e.g. its worker process died or did not answer in time); the next frame may succeed."""


class PipelineProcessor:
    """Processor backed by ``core.pipeline.FacePipeline`` and ``core.objects.ObjectRecognizer``.

    ``face_pipeline`` needs ``process(image_bgr) -> FrameResult``; ``object_recognizer``
    needs ``recognize(image_bgr, label_count, deterministic, crops) -> list[ObjectResult]``.
    Either may be None (that part then yields nothing).

    It runs dlib in the bridge's worker thread, and dlib holds the GIL during detection
    (measured: the event loop stalls up to ~0.5 s per HOG call at upsample 1), which delays
    other clients' messages and pings. Fine for tests and a single client; a production
    host should run dlib in another process, as ``facerec_server.bridge_node`` does
    (face worker processes + the object recognizer's child process). ``decode`` defaults to
    ``core.images.decode_image``. The pipeline and recognizer are shared with other users
    (e.g. the ROS server node), so each call holds ``lock`` (one is made if not given).
    """

    def __init__(self, face_pipeline=None, object_recognizer=None, decode=None,
                 lock: Optional[threading.Lock] = None, object_crops: int = 16):
        self.face_pipeline = face_pipeline
        self.object_recognizer = object_recognizer
        self.object_crops = object_crops
        self.lock = lock or threading.Lock()
        if decode is None:
            from facerec_server.core.images import decode_image as decode
        self._decode = decode
        try:
            from facerec_server.core.images import ImageDecodeError
            self._decode_errors = (ImageDecodeError,)
        except ImportError:  # pragma: no cover - core not installed
            self._decode_errors = ()

    def __call__(self, client_id: str, jpeg: bytes,
                 settings: ClientSettings) -> Tuple[List, List]:
        try:
            image = self._decode(jpeg)
        except self._decode_errors as exc:
            raise UndecodableFrame(str(exc)) from None
        if image is None:
            raise UndecodableFrame("decoder returned no image")
        faces: List = []
        objects: List = []
        with self.lock:
            if settings.faces_enabled and self.face_pipeline is not None:
                faces = list(self.face_pipeline.process(image).faces)
            if settings.objects_enabled and self.object_recognizer is not None \
                    and settings.label_count > 0:
                objects = list(self.object_recognizer.recognize(
                    image, settings.label_count, settings.deterministic, self.object_crops))
        return faces, objects
