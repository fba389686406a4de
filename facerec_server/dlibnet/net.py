"""Run a dlib network description on OpenCV DNN (default) or ONNX Runtime.

The description from :mod:`.reader` is converted to ONNX by :mod:`.convert` and loaded from
memory; nothing is written to disk except the reader's parse cache.
"""
from __future__ import annotations

import threading
from typing import Optional, Tuple

import numpy as np

from .convert import to_onnx
from .reader import NetDescription, load_net

BACKENDS = ("opencv", "onnxruntime")


class DlibNet:
    """A dlib network (without its loss layer) as an ONNX graph on a CPU inference engine.

    ``forward(blob)`` takes a float32 NCHW blob (RGB pixel values 0..255 when
    ``normalize_input`` is true, else the already normalised tensor) and returns the last
    layer's output as a numpy array. Calls are serialised with a lock (an OpenCV ``Net``
    keeps per-call state).
    """

    def __init__(self, model_path=None, backend: str = "opencv", cache_dir=None,
                 input_hw: Optional[Tuple[int, int]] = None, normalize_input: bool = True,
                 threads: Optional[int] = None, description: Optional[NetDescription] = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.description = description if description is not None else \
            load_net(model_path, cache_dir)
        self.backend = backend
        model = to_onnx(self.description, input_hw=input_hw, normalize_input=normalize_input)
        self._onnx_bytes = model.SerializeToString()
        self._lock = threading.Lock()
        if backend == "opencv":
            import cv2
            # default backend/target = OpenCV's own CPU implementation (setting a target
            # explicitly only produces a warning with OpenCV 5's graph engine)
            self._net = cv2.dnn.readNetFromONNX(np.frombuffer(self._onnx_bytes, np.uint8))
            if threads:
                cv2.setNumThreads(int(threads))
        else:
            import onnxruntime as ort
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            self._session = ort.InferenceSession(self._onnx_bytes, options,
                                                 providers=["CPUExecutionProvider"])

    @property
    def onnx_bytes(self) -> bytes:
        """The serialized ONNX model (e.g. to save it for inspection)."""
        return self._onnx_bytes

    def forward(self, blob: np.ndarray) -> np.ndarray:
        blob = np.ascontiguousarray(blob, dtype=np.float32)
        with self._lock:
            if self.backend == "opencv":
                self._net.setInput(blob)
                return np.array(self._net.forward(), copy=True)
            return self._session.run(None, {"data": blob})[0]
