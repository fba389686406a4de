"""Where the dlib model files live, and loading them with errors that say what to do.

Default files come from the PyPI package ``face_recognition_models``
(``pip install face_recognition_models``); every model can be overridden by a path.
Nothing is loaded at import time: :func:`load_model` is called by the stages on first use.

The package directory is found with ``importlib.util.find_spec`` + ``importlib.resources``
semantics *without* importing the package, because its ``__init__`` imports ``pkg_resources``
(gone from recent setuptools).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import threading
from dataclasses import dataclass, fields, replace
from typing import Callable, Mapping, Optional, Union

from . import files

PathLike = Union[str, "os.PathLike[str]"]

#: Model kind -> file name inside ``face_recognition_models/models``.
MODEL_FILES = {
    "cnn_detector": "mmod_human_face_detector.dat",
    "shape_predictor": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}

DLIB_FILES_URL = "http://dlib.net/files/"
PACKAGE = "face_recognition_models"


class ModelError(RuntimeError):
    """A model file is missing, unreadable or not a dlib model. The message names the file."""


def default_model_dir() -> Optional[pathlib.Path]:
    """``.../face_recognition_models/models`` if that package is installed, else None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / "models"
        if candidate.is_dir():
            return candidate
    return None


def default_model_path(kind: str) -> Optional[pathlib.Path]:
    """Default path of a model kind ('cnn_detector', 'shape_predictor', 'recognition')."""
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_FILES)}")
    folder = default_model_dir()
    return folder / MODEL_FILES[kind] if folder is not None else None


def _how_to_get(kind: str) -> str:
    name = MODEL_FILES[kind]
    return (f"install it with `pip install {PACKAGE}` or download {DLIB_FILES_URL}{name}.bz2, "
            f"unpack it with bunzip2 and set the model path parameter to the .dat file")


@dataclass(frozen=True)
class ModelPaths:
    """Per-model path overrides; ``None``/"" means the ``face_recognition_models`` default."""

    cnn_detector: Optional[str] = None
    shape_predictor: Optional[str] = None
    recognition: Optional[str] = None

    @classmethod
    def from_mapping(cls, mapping: Optional[Mapping[str, Optional[PathLike]]]) -> "ModelPaths":
        """Build from a dict such as ``{'recognition': '/opt/models/resnet.dat'}``."""
        if mapping is None:
            return cls()
        if isinstance(mapping, ModelPaths):
            return mapping
        known = {f.name for f in fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"unknown model kinds {sorted(unknown)}; expected {sorted(known)}")
        return replace(cls(), **{k: (os.fspath(v) if v else None) for k, v in mapping.items()})

    def resolve(self, kind: str) -> pathlib.Path:
        """The path to use for ``kind``: the override, else the package default.

        Raises:
            ModelError: no override and ``face_recognition_models`` is not installed.
        """
        override = getattr(self, kind) if kind in MODEL_FILES else None
        if override:
            try:
                return pathlib.Path(files.expand_user(override, f"{kind} model file"))
            except files.UnusableFile as error:
                raise ModelError(str(error)) from None
        path = default_model_path(kind)
        if path is None:
            raise ModelError(f"no path given for the {kind} model ({MODEL_FILES[kind]}) and "
                             f"the {PACKAGE} package is not installed: {_how_to_get(kind)}")
        return path


def check_model_file(path: PathLike, kind: str) -> pathlib.Path:
    """Return ``path`` if it is a readable regular file of at most
    :data:`~facerec_server.core.files.MAX_FACE_MODEL_FILE` bytes, else raise
    :class:`ModelError` naming it (checked before anything reads it: a FIFO would hang the
    loader, a 4 GB file would be read whole before it could be refused)."""
    path = pathlib.Path(path)
    if not os.path.lexists(path):
        raise ModelError(f"{kind} model file not found: {files.shown(str(path))} "
                         f"({MODEL_FILES[kind]}); "
                         f"{_how_to_get(kind)}")
    try:
        files.check_regular(path, f"{kind} model file", files.MAX_FACE_MODEL_FILE)
    except files.UnusableFile as error:
        raise ModelError(f"{error} ({MODEL_FILES[kind]})") from None
    if not os.access(path, os.R_OK):
        raise ModelError(f"{kind} model file is not readable: {path}; fix its permissions")
    return path


def kinds_used(detector: str) -> tuple:
    """The model kinds a face pipeline with ``detector`` loads."""
    if detector in ("cnn", "cnn_opencv"):
        return ("cnn_detector", "shape_predictor", "recognition")
    return ("shape_predictor", "recognition")


def load_model(kind: str, path: PathLike):
    """Load one dlib model object ('cnn_detector', 'shape_predictor' or 'recognition').

    Raises:
        ModelError: the file is missing, unreadable or not a valid dlib model of that kind.
    """
    import dlib  # imported lazily: importing this module must stay cheap

    path = check_model_file(path, kind)
    constructors = {
        "cnn_detector": dlib.cnn_face_detection_model_v1,
        "shape_predictor": dlib.shape_predictor,
        "recognition": dlib.face_recognition_model_v1,
    }
    try:
        return constructors[kind](str(path))
    except (RuntimeError, ValueError) as error:
        detail = " ".join(str(error).split())  # dlib's messages span several lines
        raise ModelError(f"could not load the {kind} model from {path}: {detail}; the file is "
                         f"corrupt or not {MODEL_FILES[kind]}: {_how_to_get(kind)}") from error


class LazyModel:
    """A dlib object built by ``loader()`` on the first :meth:`get`, then shared.

    Stages rebuilt by ``with_settings`` keep the same holder, so a model is loaded once
    however often settings change, and whether the change happens before or after loading.
    """

    def __init__(self, loader: Callable[[], object], value=None) -> None:
        """``value``: an already loaded object to hold (None: load on first get)."""
        self._loader = loader
        self._value = value
        self._lock = threading.Lock()

    @property
    def value(self):
        """The loaded object, or None before the first :meth:`get`."""
        return self._value

    def get(self):
        """The loaded object, loading it now if needed (thread-safe; raises ModelError)."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._loader()
        return self._value
