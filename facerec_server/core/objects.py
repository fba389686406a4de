"""Object recognition backends behind one interface (ROS-free).

Backends (``ObjectModelConfig.type``):

* ``"mmod"``: dlib MMOD CNN detectors (``.dat``) loaded with
  ``dlib.cnn_face_detection_model_v1`` (which loads any dlib MMOD detector of the face
  detector's network design). Boxes with the detector's confidence.
* ``"hog"``: dlib HOG detectors (``.svm`` from ``dlib.train_simple_object_detector`` or
  imglab) read and run by :mod:`facerec_server.dlibhog` (dlib's boxes and SVM scores);
  ``"hog_dlib"``: the same files run by dlib's own ``fhog_object_detector``.
* ``"onnx"``: image classifiers in ONNX run with OpenCV's DNN module. Each frame is cut into
  ``crops`` chips (random square-ish crops of 7/15..7/8 of the short side with random
  horizontal flips, or a fixed centre/corners/flips set when ``deterministic``), resized to
  ``input_size``, scored in one batch; the per-chip probabilities are averaged and the top
  ``label_count`` labels are returned with a zero box.

Configuration arrives as plain dicts (see :func:`parse_object_model_configs`) or as flat ROS
parameters (see :func:`configs_from_parameters` and :data:`MODEL_PARAMETER_DEFAULTS`), is
validated into :class:`ObjectModelConfig` and loaded with :func:`load_object_models`; every
problem raises :class:`ObjectModelError` naming the model, the field and/or the file.

Thread safety: a model instance is meant to be used by one thread at a time (the scheduler's
worker). Note that dlib holds the GIL while it runs (an MMOD pass takes seconds on a CPU),
so run slow models in another process (``object_scheduler.RecognizerProcess``) when other
Python threads must stay responsive.
"""
from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from . import files
from .types import ObjectResult

MODEL_TYPES = ("mmod", "hog", "hog_dlib", "onnx")
SOFTMAX_MODES = ("auto", "true", "false")

#: Parameter prefix used by the server node.
PARAMETER_PREFIX = "object_recognition"

#: Node-level parameters under ``object_recognition.`` (name -> ROS-typed default), as the
#: server declares them (facerec_server/params.py). These names cannot be model names.
GLOBAL_PARAMETER_DEFAULTS: Dict[str, Any] = {
    "enabled": True,         # bool; run the object models at all
    "models": [""],          # string array; [""] or [] = no object models
    "max_rate": 1.0,         # double; most recognitions per second per input
    "label_count": 5,        # int; max labels per frame over all models
    "crops": 16,             # int; classifier chips per frame
    "deterministic": False,  # bool; fixed classifier crops instead of random ones
}

#: Per-model parameters ``object_recognition.<name>.<field>`` (field -> ROS-typed default).
#: Defaults are non-empty so that ROS can infer each parameter's type when declaring it.
MODEL_PARAMETER_DEFAULTS: Dict[str, Any] = {
    "type": "",                   # string: mmod | hog | hog_dlib | onnx (required)
    "path": "",                   # string: model file (required)
    "label": "",                  # string: detectors' label; "" = the model name
    "labels_file": "",            # string: classifier label file, one per line (onnx: required)
    "threshold": 0.0,             # double: minimum score (detector score / probability)
    "upsample": -1,               # int: detectors' upsampling; -1 = auto (hog: trained, mmod: 0)
    "max_side": 0,                # int: detectors downscale larger images to this; 0 = never
    "input_size": [227, 227],     # int array [width, height] (or one int): classifier input
    "mean": [0.0, 0.0, 0.0],      # double array (1 or 3): subtracted, blob channel order
    "scale": 1.0,                 # double: multiplied after the mean subtraction
    "std": [1.0, 1.0, 1.0],       # double array (1 or 3): divided after scaling
    "swap_rb": False,             # bool: feed RGB instead of BGR
    "softmax": "auto",            # string: auto | true | false
}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ObjectModelError(ValueError):
    """A bad object model configuration or model file.

    ``model``, ``field`` and ``path`` say what is wrong where (each may be empty).
    """

    def __init__(self, message: str, model: str = "", field: str = "", path: str = ""):
        super().__init__(message)
        self.model = model
        self.field = field
        self.path = path

    def __reduce__(self):  # picklable across processes despite the extra arguments
        return (type(self), (str(self), self.model, self.field, self.path))


@dataclass(frozen=True)
class ObjectModelConfig:
    """One validated object model description (see :data:`MODEL_PARAMETER_DEFAULTS`)."""

    name: str
    type: str
    path: str
    label: str = ""
    labels_file: str = ""
    threshold: float = 0.0
    upsample: int = -1
    max_side: int = 0
    input_size: Tuple[int, int] = (227, 227)
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    swap_rb: bool = False
    softmax: str = "auto"

    @property
    def model_id(self) -> str:
        """``"<type>:<name>"``, the ``ObjectResult.model`` of this model's results."""
        return f"{self.type}:{self.name}"

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> "ObjectModelConfig":
        """Validate one model's plain dict (keys as in :data:`MODEL_PARAMETER_DEFAULTS`)."""
        return _parse_model(name, spec)


@dataclass
class RecognitionSettings:
    """Per-call settings, may change between calls."""

    label_count: int = 5
    deterministic: bool = False
    crops: int = 16


# --------------------------------------------------------------------------------------------
# Configuration parsing
# --------------------------------------------------------------------------------------------

def _bad(name: str, key: str, message: str) -> ObjectModelError:
    return ObjectModelError(f"object model '{name}': field '{key}': {message}", name, key)


def _as_bool(name, key, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _bad(name, key, f"expected a boolean, got {value!r}")


def _as_int(name, key, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        raise _bad(name, key, f"expected an integer, got {value!r}")
    return int(value)


def _as_float(name, key, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise _bad(name, key, f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _bad(name, key, f"expected a finite number, got {value!r}")
    return value


def _as_str(name, key, value) -> str:
    if not isinstance(value, str):
        raise _bad(name, key, f"expected a string, got {value!r}")
    return value.strip()


def _as_floats3(name, key, value) -> Tuple[float, float, float]:
    """A number or a list of 1 or 3 numbers -> 3 floats."""
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if len(items) not in (1, 3):
        raise _bad(name, key, f"expected 1 or 3 numbers, got {value!r}")
    numbers = [_as_float(name, key, item) for item in items]
    return tuple(numbers * 3) if len(numbers) == 1 else tuple(numbers)


def _parse_model(name: Any, spec: Mapping[str, Any]) -> ObjectModelConfig:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ObjectModelError(
            f"object model name {name!r} is invalid: use letters, digits and '_', "
            "starting with a letter", str(name), "name")
    if name in GLOBAL_PARAMETER_DEFAULTS:
        raise ObjectModelError(
            f"object model name '{name}' is reserved (it is a parameter of "
            f"'{PARAMETER_PREFIX}')", name, "name")
    if not isinstance(spec, Mapping):
        raise ObjectModelError(f"object model '{name}': expected a mapping of fields, got "
                               f"{type(spec).__name__}", name)
    unknown = sorted(set(spec) - set(MODEL_PARAMETER_DEFAULTS) - {"name"})
    if unknown:
        raise _bad(name, unknown[0], "unknown field (known fields: "
                   + ", ".join(MODEL_PARAMETER_DEFAULTS) + ")")

    def get(key):
        return spec.get(key, MODEL_PARAMETER_DEFAULTS[key])

    kind = _as_str(name, "type", get("type")).lower()
    if kind not in MODEL_TYPES:
        raise _bad(name, "type", f"expected one of {', '.join(MODEL_TYPES)}, got {kind!r}")
    path = _as_str(name, "path", get("path"))
    if not path:
        raise _bad(name, "path", "the model file is required")
    path = os.path.expanduser(path)
    labels_file = os.path.expanduser(_as_str(name, "labels_file", get("labels_file")))
    if kind == "onnx" and not labels_file:
        raise _bad(name, "labels_file", "an onnx classifier needs a label file")

    upsample = _as_int(name, "upsample", get("upsample"))
    if upsample < -1:
        raise _bad(name, "upsample", f"expected -1 (auto) or >= 0, got {upsample}")
    max_side = _as_int(name, "max_side", get("max_side"))
    if max_side < 0:
        raise _bad(name, "max_side", f"expected 0 (never downscale) or > 0, got {max_side}")

    raw_size = get("input_size")
    items = list(raw_size) if isinstance(raw_size, (list, tuple, np.ndarray)) else [raw_size]
    if len(items) not in (1, 2):
        raise _bad(name, "input_size", f"expected [width, height] or one size, got {raw_size!r}")
    sizes = [_as_int(name, "input_size", item) for item in items]
    if len(sizes) == 1:
        sizes = sizes * 2
    if min(sizes) < 1:
        raise _bad(name, "input_size", f"sizes must be positive, got {raw_size!r}")

    scale = _as_float(name, "scale", get("scale"))
    if scale == 0.0:
        raise _bad(name, "scale", "must not be zero")
    std = _as_floats3(name, "std", get("std"))
    if any(value == 0.0 for value in std):
        raise _bad(name, "std", f"must not contain zero, got {get('std')!r}")

    softmax = get("softmax")
    if isinstance(softmax, (bool, np.bool_)):
        softmax = "true" if softmax else "false"
    softmax = _as_str(name, "softmax", softmax).lower()
    if softmax not in SOFTMAX_MODES:
        raise _bad(name, "softmax", f"expected one of {', '.join(SOFTMAX_MODES)}, got "
                   f"{softmax!r}")

    return ObjectModelConfig(
        name=name, type=kind, path=path,
        label=_as_str(name, "label", get("label")),
        labels_file=labels_file,
        threshold=_as_float(name, "threshold", get("threshold")),
        upsample=upsample, max_side=max_side,
        input_size=(sizes[0], sizes[1]),
        mean=_as_floats3(name, "mean", get("mean")),
        scale=scale, std=std,
        swap_rb=_as_bool(name, "swap_rb", get("swap_rb")),
        softmax=softmax)


def parse_object_model_configs(
        spec: Union[Sequence[Mapping[str, Any]], Mapping[str, Mapping[str, Any]], None]
) -> List[ObjectModelConfig]:
    """Validate plain-dict model descriptions.

    ``spec`` is either a list of dicts each holding a ``"name"`` key, or a mapping
    ``{name: fields}``. Names must be unique. Raises :class:`ObjectModelError`.
    """
    if not spec:
        return []
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for index, entry in enumerate(spec):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise ObjectModelError(
                    f"object model #{index}: expected a mapping with a 'name' field, got "
                    f"{entry!r}", f"#{index}", "name")
            items.append((entry["name"], entry))
    configs, seen = [], set()
    for name, fields_ in items:
        if name in seen:
            raise ObjectModelError(f"object model '{name}' is configured twice", str(name),
                                   "name")
        seen.add(name)
        configs.append(_parse_model(name, fields_))
    return configs


def model_names_from_parameter(value: Any) -> List[str]:
    """The ``object_recognition.models`` value as a clean list (empty strings dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    names = [str(item).strip() for item in value]
    return [name for name in names if name]


def _copy(value):
    return list(value) if isinstance(value, list) else value


def global_parameter_defaults(prefix: str = PARAMETER_PREFIX) -> Dict[str, Any]:
    """``{"<prefix>.<key>": default}`` for declaring the node-level ROS parameters."""
    return {f"{prefix}.{key}": _copy(default) for key, default in
            GLOBAL_PARAMETER_DEFAULTS.items()}


def model_parameter_defaults(name: str, prefix: str = PARAMETER_PREFIX) -> Dict[str, Any]:
    """``{"<prefix>.<name>.<field>": default}`` for declaring one model's ROS parameters."""
    return {f"{prefix}.{name}.{key}": _copy(default)
            for key, default in MODEL_PARAMETER_DEFAULTS.items()}


def configs_from_parameters(params: Mapping[str, Any],
                            prefix: str = PARAMETER_PREFIX) -> List[ObjectModelConfig]:
    """Build configs from flat ROS-style parameters.

    ``params`` maps full dotted names to values, e.g.
    ``{"object_recognition.models": ["vehicles"], "object_recognition.vehicles.type": "mmod",
    "object_recognition.vehicles.path": "/models/vehicles.dat", ...}``; missing per-model
    fields take :data:`MODEL_PARAMETER_DEFAULTS`. Keys of unlisted models are ignored.
    """
    names = model_names_from_parameter(params.get(f"{prefix}.models"))
    spec = {}
    for name in names:
        if name in spec:
            raise ObjectModelError(f"object model '{name}' is listed twice in "
                                   f"'{prefix}.models'", name, "models")
        head = f"{prefix}.{name}."
        spec[name] = {key[len(head):]: value for key, value in params.items()
                      if key.startswith(head)}
    return parse_object_model_configs(spec)


def settings_from_parameters(params: Mapping[str, Any],
                             prefix: str = PARAMETER_PREFIX) -> RecognitionSettings:
    """:class:`RecognitionSettings` from the flat ``<prefix>.label_count|crops|deterministic``."""
    def get(key):
        return params.get(f"{prefix}.{key}", GLOBAL_PARAMETER_DEFAULTS[key])
    return RecognitionSettings(label_count=int(get("label_count")),
                               deterministic=bool(get("deterministic")),
                               crops=int(get("crops")))


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------

def _check_image(image_bgr) -> np.ndarray:
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a BGR image of shape (height, width, 3), got {image.shape}")
    return image


def _check_file(config: ObjectModelConfig, path: str, key: str) -> None:
    """A model or labels file must exist and be a regular file of a sane size (a FIFO would
    hang the loader; core.files)."""
    if not os.path.lexists(path):
        raise ObjectModelError(
            f"object model '{config.name}': {key} file not found: {path}",
            config.name, key, path)
    limit = files.MAX_TEXT_FILE if key == "labels_file" else files.MAX_OBJECT_MODEL_FILE
    try:
        files.check_regular(path, f"{key} file", limit)
    except files.UnusableFile as error:
        raise ObjectModelError(f"object model '{config.name}': {error}", config.name, key,
                               path) from None


def _load_error(config: ObjectModelConfig, path: str, key: str, error: Exception):
    detail = " ".join(str(error).split())[:300]
    return ObjectModelError(
        f"object model '{config.name}': cannot load {config.type} {key} file {path}: "
        f"{type(error).__name__}: {detail}", config.name, key, path)


class ObjectModel:
    """Interface of every backend: ``recognize(image_bgr, settings) -> list[ObjectResult]``.

    Results are already filtered by the model's threshold; boxes are in input-image pixels.
    """

    def __init__(self, config: ObjectModelConfig):
        self.config = config
        self.calls = 0  # number of recognize() calls

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_id(self) -> str:
        return self.config.model_id

    def recognize(self, image_bgr: np.ndarray,
                  settings: RecognitionSettings) -> List[ObjectResult]:
        raise NotImplementedError


class _DlibDetector(ObjectModel):
    """Shared code of the dlib detectors: RGB conversion, optional downscale, box mapping."""

    default_upsample = 0

    @property
    def label(self) -> str:
        return self.config.label or self.config.name

    def recognize(self, image_bgr, settings):
        image = _check_image(image_bgr)
        self.calls += 1
        height, width = image.shape[:2]
        factor = 1.0
        limit = self.config.max_side
        if limit and max(height, width) > limit:
            factor = limit / float(max(height, width))
            image = cv2.resize(image, (max(1, round(width * factor)),
                                       max(1, round(height * factor))),
                               interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        upsample = self.config.upsample if self.config.upsample >= 0 else self.default_upsample
        results = []
        for rect, score in self._detect(rgb, upsample):
            if score < self.config.threshold:
                continue
            box = (int(math.floor(rect.left() / factor)), int(math.floor(rect.top() / factor)),
                   int(math.ceil((rect.right() + 1) / factor)),
                   int(math.ceil((rect.bottom() + 1) / factor)))
            box = (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            results.append(ObjectResult(self.label, float(score), box, self.model_id))
        results.sort(key=lambda result: -result.score)
        return results

    def _detect(self, rgb, upsample):
        raise NotImplementedError


class MmodDetector(_DlibDetector):
    """dlib MMOD CNN detector (``.dat``); score = the detection's confidence."""

    def __init__(self, config: ObjectModelConfig):
        super().__init__(config)
        import dlib
        _check_file(config, config.path, "path")
        try:
            self._net = dlib.cnn_face_detection_model_v1(config.path)
        except Exception as error:
            raise _load_error(config, config.path, "path", error) from error

    def _detect(self, rgb, upsample):
        return [(hit.rect, hit.confidence) for hit in self._net(rgb, upsample)]


class HogDetector(_DlibDetector):
    """dlib HOG (fhog) detector (``.svm``) run by :mod:`facerec_server.dlibhog`; score =
    the SVM score dlib's ``run`` gives (same boxes).

    ``upsample`` -1 uses the upsampling amount the detector was trained with (stored by
    ``train_simple_object_detector``; 0 when the file has none). Detections scoring above
    ``min(threshold, 0)`` are computed so that negative thresholds work.
    """

    def __init__(self, config: ObjectModelConfig):
        super().__init__(config)
        from facerec_server.dlibhog import FhogDetector, HogFormatError, read_svm
        _check_file(config, config.path, "path")
        try:
            model = read_svm(config.path)
        except (OSError, HogFormatError) as error:
            raise _load_error(config, config.path, "path", error) from error
        self.default_upsample = model.upsampling or 0
        self._detector = FhogDetector(model)

    def _detect(self, rgb, upsample):
        from facerec_server.dlibnet.mmod import _Rect
        hits = self._detector.detect(rgb, upsample, min(self.config.threshold, 0.0))
        return [(_Rect(rect), score) for rect, score, _ in hits]


class DlibHogDetector(_DlibDetector):
    """dlib HOG (fhog) detector (``.svm``) run by dlib's ``fhog_object_detector``."""

    def __init__(self, config: ObjectModelConfig):
        super().__init__(config)
        import dlib
        _check_file(config, config.path, "path")
        try:
            self._detector = dlib.fhog_object_detector(config.path)
        except Exception as error:
            raise _load_error(config, config.path, "path", error) from error
        try:  # the trained upsampling amount (only in train_simple_object_detector files)
            self.default_upsample = max(0, int(dlib.simple_object_detector(config.path)
                                               .upsampling_amount))
        except Exception:
            self.default_upsample = 0

    def _detect(self, rgb, upsample):
        rects, scores, _ = self._detector.run(rgb, upsample, min(self.config.threshold, 0.0))
        return list(zip(rects, scores))


# Crop scheme of the original server (dlib's dnn_imagenet_ex): random square crops whose
# side is 7/15..7/8 of the short image side, random offset, random horizontal flip.
CROP_MIN_SCALE = 7.0 / 15.0
CROP_MAX_SCALE = 7.0 / 8.0


def _crop_rect(width: int, height: int, aspect: float, scale: float, fx: float, fy: float):
    """A crop of aspect ``aspect`` (w/h), ``scale`` times the largest one that fits, placed
    at fraction (fx, fy) of the free space. Returns (left, top, crop_width, crop_height)."""
    fit_w = min(width, height * aspect)
    crop_w = max(1, int(round(fit_w * scale)))
    crop_h = max(1, min(height, int(round(crop_w / aspect))))
    left = int(round((width - crop_w) * fx))
    top = int(round((height - crop_h) * fy))
    return left, top, crop_w, crop_h


#: Deterministic chips: (fx, fy, flip) - centre and the four corners, then their mirrors.
DETERMINISTIC_CROPS = tuple((fx, fy, flip) for flip in (False, True)
                            for fx, fy in ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0),
                                           (0.0, 1.0), (1.0, 1.0)))


class OnnxClassifier(ObjectModel):
    """Whole-image classifier in ONNX run with ``cv2.dnn``.

    Blob = ((chip in BGR, or RGB if ``swap_rb``) - mean) * scale / std, NCHW float32.
    Counters for tests/diagnostics: ``forward_passes`` (``net.forward`` calls),
    ``chips_evaluated`` and ``last_batch_size``.
    """

    def __init__(self, config: ObjectModelConfig, rng: Optional[np.random.Generator] = None):
        super().__init__(config)
        self._rng = rng if rng is not None else np.random.default_rng()
        self.forward_passes = 0
        self.chips_evaluated = 0
        self.last_batch_size = 0
        self._batched = True
        _check_file(config, config.path, "path")
        _check_file(config, config.labels_file, "labels_file")
        try:
            text = files.read_regular(config.labels_file, "labels_file", files.MAX_TEXT_FILE)
            labels = [line.strip() for line in text.decode("utf-8").splitlines()]
        except (files.UnusableFile, UnicodeDecodeError) as error:
            raise _load_error(config, config.labels_file, "labels_file", error) from error
        while labels and not labels[-1]:
            labels.pop()
        if not labels:
            raise ObjectModelError(
                f"object model '{config.name}': labels_file {config.labels_file} holds no "
                "labels", config.name, "labels_file", config.labels_file)
        self.labels = labels
        try:
            self._net = cv2.dnn.readNetFromONNX(config.path)
        except Exception as error:
            raise _load_error(config, config.path, "path", error) from error
        width, height = config.input_size
        try:  # one forward pass now, so that a model/input_size mismatch fails at start-up
            probe = self._forward(np.zeros((1, 3, height, width), np.float32))
        except Exception as error:
            detail = " ".join(str(error).split())[:300]
            raise ObjectModelError(
                f"object model '{config.name}': {config.path} fails on a 1x3x{height}x{width}"
                f" input (check input_size): {type(error).__name__}: {detail}",
                config.name, "input_size", config.path) from error
        if probe.shape[1] != len(labels):
            raise ObjectModelError(
                f"object model '{config.name}': the model outputs {probe.shape[1]} scores "
                f"but labels_file {config.labels_file} has {len(labels)} labels",
                config.name, "labels_file", config.labels_file)
        self.forward_passes = 0
        self.chips_evaluated = 0

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        self._net.setInput(blob)
        out = np.asarray(self._net.forward(), dtype=np.float32)
        self.forward_passes += 1
        if out.ndim == 0 or out.shape[0] != blob.shape[0]:
            raise ValueError(f"output shape {out.shape} does not match batch {blob.shape[0]}")
        self.last_batch_size = blob.shape[0]
        self.chips_evaluated += blob.shape[0]
        return out.reshape(blob.shape[0], -1)

    def chips(self, image_bgr: np.ndarray, settings: RecognitionSettings) -> List[np.ndarray]:
        """The ``settings.crops`` chips (input_size, BGR uint8) cut from ``image_bgr``."""
        image = _check_image(image_bgr)
        count = int(settings.crops)
        if count < 1:
            raise ValueError(f"crops must be >= 1, got {settings.crops}")
        height, width = image.shape[:2]
        in_w, in_h = self.config.input_size
        aspect = in_w / float(in_h)
        if settings.deterministic:
            plan = [(CROP_MAX_SCALE,) + DETERMINISTIC_CROPS[i % len(DETERMINISTIC_CROPS)]
                    for i in range(count)]
        else:
            rng = self._rng
            plan = [(rng.uniform(CROP_MIN_SCALE, CROP_MAX_SCALE), rng.random(), rng.random(),
                     bool(rng.random() < 0.5)) for _ in range(count)]
        chips = []
        for scale, fx, fy, flip in plan:
            left, top, crop_w, crop_h = _crop_rect(width, height, aspect, scale, fx, fy)
            chip = image[top:top + crop_h, left:left + crop_w]
            shrink = crop_w > in_w or crop_h > in_h
            chip = cv2.resize(chip, (in_w, in_h),
                              interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if flip:
                chip = chip[:, ::-1]
            chips.append(chip)
        return chips

    def _blob(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        data = np.stack(chips).astype(np.float32)  # N, H, W, 3 (BGR)
        if self.config.swap_rb:
            data = data[..., ::-1]
        data = (data - np.asarray(self.config.mean, np.float32)) * np.float32(self.config.scale)
        data /= np.asarray(self.config.std, np.float32)
        return np.ascontiguousarray(data.transpose(0, 3, 1, 2))

    def probabilities(self, image_bgr: np.ndarray,
                      settings: RecognitionSettings) -> np.ndarray:
        """Class probabilities averaged over the chips, shape (len(labels),)."""
        blob = self._blob(self.chips(image_bgr, settings))
        out = None
        if self._batched:
            try:
                out = self._forward(blob)
            except Exception:
                if blob.shape[0] == 1:
                    raise
                self._batched = False  # fixed batch size 1: one chip per forward from now on
        if out is None:
            out = np.concatenate([self._forward(blob[i:i + 1]) for i in range(blob.shape[0])])
        return self._to_probabilities(out).mean(axis=0)

    def _to_probabilities(self, out: np.ndarray) -> np.ndarray:
        mode = self.config.softmax
        if mode == "auto":
            sums = out.sum(axis=1)
            already = (out.min() >= -1e-6 and out.max() <= 1.0 + 1e-6
                       and np.all(np.abs(sums - 1.0) < 1e-3))
            mode = "false" if already else "true"
        if mode == "false":
            return out
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def recognize(self, image_bgr, settings):
        self.calls += 1
        count = int(settings.label_count)
        if count < 1:
            return []
        probs = self.probabilities(image_bgr, settings)
        order = np.argsort(-probs, kind="stable")[:count]
        return [ObjectResult(self.labels[i], float(probs[i]), (0, 0, 0, 0), self.model_id)
                for i in order if probs[i] >= self.config.threshold]


BACKENDS = {"mmod": MmodDetector, "hog": HogDetector, "hog_dlib": DlibHogDetector,
            "onnx": OnnxClassifier}


def load_object_model(config: ObjectModelConfig) -> ObjectModel:
    """Load one model; raises :class:`ObjectModelError` naming a missing or corrupt file."""
    return BACKENDS[config.type](config)


def load_object_models(configs: Iterable[Union[ObjectModelConfig, Mapping[str, Any]]]
                       ) -> List[ObjectModel]:
    """Load every configured model (plain dicts with a ``name`` are validated first)."""
    parsed: List[ObjectModelConfig] = []
    for config in configs:
        if isinstance(config, ObjectModelConfig):
            parsed.append(config)
        else:
            parsed.extend(parse_object_model_configs([config]))
    names = [config.name for config in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ObjectModelError(f"object model '{name}' is configured twice", name, "name")
    return [load_object_model(config) for config in parsed]


class ObjectRecognizer:
    """Runs every model on a frame and merges the results.

    Results are sorted by score (descending) and cut to ``label_count``; each result's
    ``model`` is the producing model's ``"<type>:<name>"``. Not for concurrent use.
    """

    def __init__(self, models: Sequence[ObjectModel]):
        self.models = list(models)
        self._lock = threading.Lock()

    @classmethod
    def from_configs(cls, configs) -> "ObjectRecognizer":
        return cls(load_object_models(configs))

    def recognize(self, image_bgr: np.ndarray, label_count: int = 5,
                  deterministic: bool = False, crops: int = 16) -> List[ObjectResult]:
        label_count = int(label_count)
        if label_count < 1 or not self.models:
            return []
        if int(crops) < 1:
            raise ValueError(f"crops must be >= 1, got {crops}")
        settings = RecognitionSettings(label_count, bool(deterministic), int(crops))
        image = _check_image(image_bgr)
        results: List[ObjectResult] = []
        with self._lock:
            for model in self.models:
                results.extend(model.recognize(image, settings))
        results.sort(key=lambda result: -result.score)
        return results[:label_count]


__all__ = [
    "BACKENDS", "GLOBAL_PARAMETER_DEFAULTS", "MODEL_PARAMETER_DEFAULTS", "MODEL_TYPES",
    "PARAMETER_PREFIX", "DlibHogDetector", "HogDetector", "MmodDetector", "ObjectModel",
    "ObjectModelConfig",
    "ObjectModelError", "ObjectRecognizer", "OnnxClassifier", "RecognitionSettings",
    "configs_from_parameters", "load_object_model", "load_object_models",
    "global_parameter_defaults", "model_names_from_parameter",
    "model_parameter_defaults", "parse_object_model_configs",
    "settings_from_parameters",
]
